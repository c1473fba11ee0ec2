"""Which prompts a step trains on: reshuffled passes over the prompt rows, resumable."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mogradient_llm.inputs.prompts import as_prompt_rows


class PromptSampler:
    """``per_step`` rows at a time from a reshuffled pass over ``rows`` (a new permutation each
    pass, from a generator seeded with ``seed``); its state is checkpointed per rank."""

    def __init__(self, rows: list[dict[str, Any]], per_step: int, seed: int):
        if len(rows) < per_step:
            raise ValueError(
                f"need at least batch_size / num_generations = {per_step} prompts, got {len(rows)}"
            )
        self.rows = rows
        self.per_step = per_step
        self._rng = torch.Generator().manual_seed(seed)
        self._order: list[int] = []

    def next(self) -> list[dict[str, Any]]:
        """The next ``per_step`` rows."""
        out: list[dict[str, Any]] = []
        while len(out) < self.per_step:
            if not self._order:
                self._order = torch.randperm(len(self.rows), generator=self._rng).tolist()
            out.append(self.rows[self._order.pop()])
        return out

    def step_rows(self, prompts: Sequence[Any] | None) -> list[dict[str, Any]]:
        """A step's rows: ``prompts`` (exactly ``per_step`` of them), or the next ones."""
        if prompts is not None and not len(prompts):
            raise ValueError("the prompt batch is empty; pass at least one prompt")
        rows = self.next() if prompts is None else as_prompt_rows(prompts)
        if len(rows) != self.per_step:  # a step is batch_size completions, no other
            raise ValueError(
                f"step(prompts) takes batch_size / num_generations = {self.per_step} prompts "
                f"(batch_size completions), got {len(rows)}; pass that many, or change batch_size"
            )
        return rows

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self._rng.get_state(), "order": list(self._order)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._rng.set_state(state["rng"])
        self._order = list(state["order"])
