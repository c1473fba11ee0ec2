"""Multi-objective RLOO: GRPO's loop with a per-objective leave-one-out baseline.

Each completion's baseline is the mean reward of the *other* completions of its group, per
objective: ``Aᵢ = rᵢ − mean_{j ≠ i} rⱼ = G/(G−1) · (rᵢ − mean_group r)`` (Ahmadian et al. 2024),
unbiased because the baseline does not depend on the completion itself. By default the
advantages are not divided by a standard deviation (``scale_rewards="none"``); everything else
— rewards that return ``None``, loss weightings, the KL term, the clip — is GRPO's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from mogradient_llm.config import _help
from mogradient_llm.estimators.grpo import GRPOEstimator, MOGRPOConfig


@dataclass
class MORLOOConfig(MOGRPOConfig):
    """:class:`MOGRPOConfig` with RLOO's defaults (no std scaling)."""

    algorithm: ClassVar[str] = "rloo"

    scale_rewards: Literal["group", "batch", "none"] = field(
        default="none", metadata=_help("divide advantages by the group's std, the batch's, none")
    )


class RLOOEstimator(GRPOEstimator):
    """GRPO with the leave-one-out baseline."""

    algorithm = "rloo"
    config_class = MORLOOConfig
    kl_in_loss_only = False  # TRL's RLOO puts the KL into the reward, before the baseline

    def baseline_advantages(self, rewards: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``rᵢ − mean of the others`` ``[k, B]`` over the valid entries of each group (0 where
        not valid or when no other completion of the group was scored)."""
        r, v = self.grouped(rewards, valid)
        others = (v.sum(-1, keepdim=True) - v).clamp(min=1)
        baseline = (r.sum(-1, keepdim=True) - r) / others
        alone = v.sum(-1, keepdim=True) < 2
        return torch.where(alone, torch.zeros_like(r), (r - baseline) * v).view(rewards.shape)
