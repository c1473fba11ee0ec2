"""RLHF adapter: multi-objective PPO on top of the ``mogradient`` aggregators."""
