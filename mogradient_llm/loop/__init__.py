"""Our training loop: the trainer's staged step, the minibatch updates, checkpoints (atomic
directories), the finiteness guard, the typed rollout batch and the metrics files."""
