"""mogradient inside other RL engines: TRL's trainers (:mod:`.trl`) and verl's advantage
estimators (:mod:`.verl`). Each integration is imported on its own and is the only place that
imports its engine, so ``import mogradient_llm`` never needs one installed."""
