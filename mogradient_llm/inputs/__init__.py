"""What a run reads: prompts and datasets, reward functions (TRL's convention), ``--reward``
specs, and what rewards are called with (trainer state, logging hooks)."""
