"""The policy side: rollouts and their forwards, sampling settings, sharded generation,
dropout, LoRA and the tiny offline policies."""
