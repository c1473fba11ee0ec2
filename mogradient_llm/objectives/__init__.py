"""The multi-objective loss: what turns per-objective advantages and per-token log-probability
ratios into the policy loss under any aggregator kind, knowing nothing of the engine around it
(our loop, TRL's trainers and verl call the same code)."""
