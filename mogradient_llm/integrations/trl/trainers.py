"""``MOGRPOTrainer`` and ``MORLOOTrainer``: TRL 1.16's trainers with any mogradient aggregator."""

from __future__ import annotations

from typing import Any

import torch
from accelerate.utils import gather
from trl import GRPOTrainer, RLOOTrainer

from mogradient_llm.integrations.trl.mixin import MultiObjectiveMixin


class MOGRPOTrainer(MultiObjectiveMixin, GRPOTrainer):
    """TRL's ``GRPOTrainer`` with ``args=MOGRPOConfig(aggregator=...)``: every reward function
    is one objective; generation (vLLM included), accelerate/DeepSpeed, PEFT, logging and the
    loss types stay TRL's."""

    mo_algorithm = "grpo"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._setup_multi_objective()


class MORLOOTrainer(MultiObjectiveMixin, RLOOTrainer):
    """TRL's ``RLOOTrainer`` with ``args=MORLOOConfig(aggregator=...)``; the KL penalty
    (``β``, in the reward) is subtracted from every objective's reward."""

    mo_algorithm = "rloo"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._setup_multi_objective()
        self._mo_passes: list[torch.Tensor] | None = None

    def _get_per_token_logps_and_entropies(self, *args: Any, **kwargs: Any) -> Any:
        """TRL's; while a batch is generated, the no-grad passes' log-probs are kept (the
        policy's, then the reference's) for the KL in the reward."""
        out = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if self._mo_passes is not None:
            self._mo_passes.append(out[0])
        return out

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        self._mo_passes = []
        try:
            return super()._generate_and_score_completions(inputs)
        finally:
            self._mo_passes = None

    def _sequence_kl(self, output: dict[str, Any]) -> torch.Tensor | None:
        """TRL's ``Σₜ (log π_old − log π_ref)`` per sequence, over every process's batch."""
        if self.beta == 0.0:
            return None
        assert self._mo_passes is not None and len(self._mo_passes) == 2
        old, ref = self._mo_passes
        return gather(((old - ref) * output["completion_mask"]).sum(-1))
