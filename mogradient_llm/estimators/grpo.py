"""Multi-objective GRPO (critic-free): per-objective group-relative advantages.

For each objective ``i`` and each group of ``num_generations`` completions of one prompt,
``Aᵢ = (rᵢ − mean_group rᵢ) / (std rᵢ + ε)`` (``scale_rewards``: the group's std, the batch's,
or none), shared by the completion's tokens — so every aggregator applies: PAMA per sequence,
Gramian methods on the per-objective policy losses. A loss weighting combines where
``multi_objective_aggregation`` says: ``sum_then_normalize`` weighs the rewards and normalises
the sum (TRL's default), ``normalize_then_sum`` (GDPO) normalises each objective, weighs, then
normalises over the batch. ``None`` rewards take no part in their objective's statistics and
get no advantage. The KL to the reference is ``β`` × the k3 estimate per token, in the loss,
once, outside the aggregator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from mogradient_llm.batch import RolloutBatch
from mogradient_llm.config import MOConfig, _help
from mogradient_llm.estimators.base import (
    AllReduceSum,
    Estimate,
    Estimator,
    EstimatorInputs,
    Scalarize,
)
from mogradient_llm.kl import kl_estimate
from mogradient_llm.loss import TokenNormalization

SCALE_REWARDS = ("group", "batch", "none")
LOSS_TYPES: dict[str, TokenNormalization] = {
    "grpo": "sequence",
    "dapo": "token",
    "dr_grpo": "constant",
}
MULTI_OBJECTIVE_AGGREGATIONS = ("sum_then_normalize", "normalize_then_sum")
#: Added to the standard deviation divided by (TRL's value).
STD_EPS = 1e-4


@dataclass
class MOGRPOConfig(MOConfig):
    """GRPO's hyper-parameters, TRL's names, on top of :class:`MOConfig`.

    ``batch_size`` counts completions (prompts × ``num_generations``). ``loss_type``: ``grpo``
    (mean over each sequence's tokens, then over sequences), ``dapo`` (over all tokens of the
    minibatch), ``dr_grpo`` (sum over tokens / (sequences × ``max_new_tokens``)). ``noon`` is
    off by default: GRPO as TRL's; turn it on for Noon GRPO (PAMA's Theorem 1 then picks the
    smallest positive advantage of each sequence).
    """

    algorithm: ClassVar[str] = "grpo"

    learning_rate: float = field(default=1e-6, metadata=_help("AdamW learning rate"))
    batch_size: int = field(
        default=16, metadata=_help("completions per step and process (prompts × num_generations)")
    )
    mini_batch_size: int = field(
        default=16, metadata=_help("completions per optimiser step (a multiple of the micro-batch)")
    )
    num_generations: int = field(default=4, metadata=_help("completions per prompt (a group)"))
    noon: bool = field(default=False, metadata=_help("clip every advantage at 0 (Noon GRPO)"))
    num_iterations: int = field(default=1, metadata=_help("passes over each step's rollouts"))
    beta: float = field(
        default=0.0, metadata=_help("KL coefficient (k3, in the loss); 0 loads no reference")
    )
    epsilon: float = field(default=0.2, metadata=_help("lower ratio clip ε"))
    epsilon_high: float | None = field(
        default=None, metadata=_help("upper ratio clip (default: epsilon)")
    )
    scale_rewards: Literal["group", "batch", "none"] = field(
        default="group", metadata=_help("divide advantages by the group's std, the batch's, none")
    )
    loss_type: Literal["grpo", "dapo", "dr_grpo"] = field(
        default="dapo", metadata=_help("token-loss normalisation")
    )
    multi_objective_aggregation: Literal["sum_then_normalize", "normalize_then_sum"] = field(
        default="sum_then_normalize",
        metadata=_help("loss weightings: weigh then normalise, or GDPO's normalise then weigh"),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_generations < 2:
            raise ValueError(
                f"num_generations={self.num_generations}: group-relative advantages need at "
                "least 2 completions per prompt"
            )
        if self.num_iterations <= 0:
            raise ValueError(f"num_iterations must be positive, got {self.num_iterations}")
        if self.beta < 0 or self.epsilon < 0:
            raise ValueError(f"beta and epsilon must be >= 0, got {self.beta}, {self.epsilon}")
        if self.epsilon_high is not None and self.epsilon_high < 0:
            raise ValueError(f"epsilon_high must be >= 0, got {self.epsilon_high}")
        for name, valid in (
            ("scale_rewards", SCALE_REWARDS),
            ("loss_type", tuple(LOSS_TYPES)),
            ("multi_objective_aggregation", MULTI_OBJECTIVE_AGGREGATIONS),
        ):
            if getattr(self, name) not in valid:
                raise ValueError(f"{name} must be one of {valid}, got {getattr(self, name)!r}")

    @property
    def epochs(self) -> int:
        return self.num_iterations


def _moments(
    x: torch.Tensor, valid: torch.Tensor, all_reduce_sum: AllReduceSum | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased std of ``x [k, B]`` over the valid entries of each row, over every
    process's batch."""
    x = torch.where(valid, x, torch.zeros_like(x)).double()
    sums = torch.stack([valid.sum(1).double(), x.sum(1), (x**2).sum(1)])
    if all_reduce_sum is not None:
        sums = all_reduce_sum(sums)
    n, first, second = sums
    mean = first / n.clamp(min=1)
    var = (second - n * mean**2).clamp(min=0) / (n - 1).clamp(min=1)
    return mean.to(x.dtype), var.sqrt()


class GRPOEstimator(Estimator[MOGRPOConfig]):
    """Group-relative advantages per objective; the KL term (β > 0) is the extra loss."""

    algorithm = "grpo"
    config_class = MOGRPOConfig
    kl_in_loss_only = True

    def __init__(self, config: MOGRPOConfig, names: list[str]):
        super().__init__(config, names)
        self.normalization = LOSS_TYPES[config.loss_type]

    @property
    def needs_reference(self) -> bool:
        return self.config.beta > 0

    @property
    def clip_range(self) -> tuple[float, float | None]:
        return self.config.epsilon, self.config.epsilon_high

    def grouped(
        self, rewards: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``rewards`` (0 where not valid) and ``valid`` as ``[k, prompts, num_generations]``."""
        k, b = rewards.shape
        groups = (k, b // self.config.num_generations, self.config.num_generations)
        r = torch.where(valid, rewards, torch.zeros_like(rewards)).view(groups)
        return r, valid.view(groups).to(r.dtype)

    def baseline_advantages(self, rewards: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``rᵢ − mean of its group`` ``[k, B]`` over the valid entries (0 where not valid)."""
        r, v = self.grouped(rewards, valid)
        mean = r.sum(-1, keepdim=True) / v.sum(-1, keepdim=True).clamp(min=1)
        return ((r - mean) * v).view(rewards.shape)

    def _group_std(self, rewards: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The unbiased std of each completion's group ``[k, B]`` over its valid entries."""
        r, v = self.grouped(rewards, valid)
        n = v.sum(-1, keepdim=True)
        mean = r.sum(-1, keepdim=True) / n.clamp(min=1)
        var = (((r - mean) * v) ** 2).sum(-1, keepdim=True) / (n - 1).clamp(min=1)
        return var.sqrt().expand_as(r).reshape(rewards.shape)

    def normalized(
        self, rewards: torch.Tensor, valid: torch.Tensor, all_reduce_sum: AllReduceSum | None
    ) -> torch.Tensor:
        """Per-objective group-relative advantages ``[k, B]`` under ``scale_rewards``."""
        advantages = self.baseline_advantages(rewards, valid)
        scale = self.config.scale_rewards
        if scale == "group":
            advantages = advantages / (self._group_std(rewards, valid) + STD_EPS)
        elif scale == "batch":
            _, std = _moments(rewards, valid, all_reduce_sum)
            advantages = advantages / (std[:, None].to(advantages) + STD_EPS)
        return advantages * valid

    def estimate(self, inputs: EstimatorInputs, scalarize: Scalarize | None) -> Estimate:
        scores, valid = inputs.scores, inputs.valid
        if (
            scalarize is not None
            and self.config.multi_objective_aggregation == "sum_then_normalize"
        ):
            # a missing reward adds nothing to the weighted sum; a row none can score: no advantage
            scores = scalarize(scores.nan_to_num(0.0))
            valid = valid.any(0, keepdim=True)
            advantages = self.normalized(scores, valid, inputs.all_reduce_sum)
        else:
            advantages = self.normalized(scores, valid, inputs.all_reduce_sum)
            if scalarize is not None:  # GDPO: weigh the normalised advantages, then the batch
                advantages = scalarize(advantages)
                valid = valid.any(0, keepdim=True)
                mean, std = _moments(advantages, valid, inputs.all_reduce_sum)
                advantages = (advantages - mean[:, None]) / (std[:, None] + STD_EPS) * valid
        kl = None
        if inputs.ref_logprobs is not None and inputs.logprobs is not None:
            kl = kl_estimate(inputs.logprobs, inputs.ref_logprobs, "k3") * inputs.mask
        tokens = advantages.to(inputs.mask.dtype)[:, :, None] * inputs.mask
        return Estimate(tokens, kl=kl)

    def extra_loss(
        self,
        batch: RolloutBatch,
        index: torch.Tensor,
        logprobs: torch.Tensor,
        values: torch.Tensor | None,
        weights: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``β`` × the k3 KL to the reference, normalised like the policy loss."""
        if batch.ref_logprobs is None:
            return logprobs.new_zeros(()), {}
        kl = kl_estimate(logprobs, batch.ref_logprobs[index], "k3")
        loss = (kl * weights.to(kl.dtype)).sum()
        return self.config.beta * loss, {"loss/kl": loss.detach()}
