"""Constraint objectives in TRL's trainers: the Lagrange multipliers' dual ascent after each
optimizer step, their logs, and their place in TRL's checkpoints.

The multipliers enter the advantages when a generation batch is scored
(:meth:`~mogradient_llm.objectives.loss.MultiObjectiveLoss.combine`, Safe RLHF's Lagrangian);
the measured constraint values are that batch's mean scores over every process (TRL gathers the
rewards before the adapter reads them), so every rank takes the same ascent step. After an
optimizer step that consumed a new generation batch, :class:`ConstraintCallback` moves the
multipliers once on its measurement (a batch reused by several steps, ``num_iterations > 1`` or
``steps_per_generation > gradient_accumulation_steps``, is counted once, as our loop counts a
rollout batch once) and appends ``constraint/<objective>/multiplier|value|satisfied`` to TRL's
metrics (averaged over the logging window, like every TRL metric). The multipliers are saved
as ``mogradient_state.json`` in each checkpoint folder and read back by
``train(resume_from_checkpoint=...)``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from transformers import TrainerCallback

#: The file the multi-objective state takes in a TRL checkpoint folder.
STATE_FILE = "mogradient_state.json"


class ConstraintCallback(TrainerCallback):
    """Projected dual ascent of ``trainer.mo_objective``'s multipliers after each optimizer
    step, on the latest measurement (:meth:`measured`) not used yet."""

    def __init__(self, trainer: Any):
        self.trainer = trainer
        self.pending: torch.Tensor | None = None

    def measured(self, losses: torch.Tensor) -> None:
        """A training generation batch's objective losses ``[k]`` (−mean score, global)."""
        self.pending = losses.detach()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.pending is None:
            return
        stats = self.trainer.mo_objective.update_constraints(self.pending)
        self.pending = None
        metrics = self.trainer._metrics["train"]
        for key, value in stats.items():
            metrics[key].append(float(value))


def save_state(objective: Any, output_dir: str) -> None:
    """Writes the multi-objective state (the multipliers) into the checkpoint ``output_dir``."""
    state = objective.state_dict()
    if state:
        with open(os.path.join(output_dir, STATE_FILE), "w") as f:
            json.dump(state, f)


def load_state(objective: Any, checkpoint: str) -> None:
    """Reads it back; a checkpoint written without constraints leaves the multipliers as they
    are, one with other constraints is refused."""
    path = os.path.join(checkpoint, STATE_FILE)
    if objective.constraints is None or not os.path.exists(path):
        return
    with open(path) as f:
        state = json.load(f)
    saved = len(state.get("constraints", {}).get("multipliers", []))
    if saved != len(objective.constraints.constraints):
        raise ValueError(
            f"{path} holds {saved} constraint multipliers and the config has "
            f"{len(objective.constraints.constraints)} constraints: resume with the constraints "
            "the checkpoint was trained with"
        )
    objective.load_state_dict(state)
