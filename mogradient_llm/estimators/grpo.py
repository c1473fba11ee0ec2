"""Multi-objective GRPO (critic-free): per-objective group-relative advantages, as TRL 1.16's.

For each objective ``i`` and each group of ``num_generations`` completions of one prompt,
``Aᵢ = (rᵢ − mean_group rᵢ) / (std rᵢ + 10⁻⁴)`` (``scale_rewards``: the group's std, the batch's,
or none), shared by the completion's tokens — so every aggregator applies: PAMA per sequence,
Gramian methods on the per-objective policy losses. A loss weighting combines where
``multi_objective_aggregation`` says: ``sum_then_normalize`` weighs the rewards (``Σ wᵢ rᵢ`` at
TRL's scale: the weights sum to ``Σ reward_weights``, ``k`` without them) and normalises the sum
(TRL's default); ``normalize_then_sum`` (GDPO) normalises each objective by its group's std
whatever ``scale_rewards`` says, weighs, then normalises over the batch — TRL's formulas. ``None``
rewards take no part in their objective's statistics and get no advantage. The KL to the
reference is ``β`` × the k3 estimate per token (times ``π/π_old`` with
``use_bias_correction_kl``), in the loss, once, outside the aggregator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

import torch

from mogradient_llm.config import MOConfig, _help
from mogradient_llm.estimators.base import (
    AllReduceSum,
    Estimate,
    Estimator,
    EstimatorInputs,
    Minibatch,
    Scalarize,
)
from mogradient_llm.estimators.kl import kl_estimate
from mogradient_llm.objectives.surrogate import TokenNormalization

SCALE_REWARDS = ("group", "batch", "none")
LOSS_TYPES: dict[str, TokenNormalization] = {
    "grpo": "sequence",
    "dapo": "global_token",
    "bnpo": "micro_token",
    "dr_grpo": "constant",
}
MULTI_OBJECTIVE_AGGREGATIONS = ("sum_then_normalize", "normalize_then_sum")
#: Added to the standard deviation divided by (TRL's value).
STD_EPS = 1e-4


@dataclass
class GroupConfig(MOConfig):
    """What GRPO and RLOO share, TRL's names and defaults, on top of :class:`MOConfig`.

    ``batch_size`` counts completions (prompts × ``num_generations``). ``noon`` is off by
    default: the algorithm as TRL's; turn it on for Noon GRPO/RLOO (PAMA's Theorem 1 then picks
    the smallest positive advantage of each sequence).
    """

    demo_preset: ClassVar[dict[str, Any]] = {
        "num_generations": 4,
        "num_iterations": 2,
        "beta": 0.05,
        "noon": True,
    }
    tiny_preset: ClassVar[dict[str, Any]] = {"num_generations": 4}

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
        self._check_choices()

    def _check_choices(self) -> None:
        """Every ``Literal`` field holds one of its values."""
        for name, valid in self._choices().items():
            if getattr(self, name) not in valid:
                raise ValueError(f"{name} must be one of {valid}, got {getattr(self, name)!r}")

    def _choices(self) -> dict[str, tuple[str, ...]]:
        return {"multi_objective_aggregation": MULTI_OBJECTIVE_AGGREGATIONS}

    @property
    def epochs(self) -> int:
        return self.num_iterations


@dataclass
class MOGRPOConfig(GroupConfig):
    """GRPO's hyper-parameters: :class:`GroupConfig` plus TRL's ``GRPOConfig`` options.

    ``loss_type``: ``grpo`` (mean over each sequence's tokens, then over sequences), ``dapo``
    (over the tokens of an optimiser step on every process, TRL's default), ``bnpo`` (over each
    micro-batch's tokens on its process), ``dr_grpo`` (sum over tokens / (sequences ×
    ``max_new_tokens``)).
    """

    algorithm: ClassVar[str] = "grpo"

    scale_rewards: Literal["group", "batch", "none"] = field(
        default="group", metadata=_help("divide advantages by the group's std, the batch's, none")
    )
    loss_type: Literal["grpo", "dapo", "bnpo", "dr_grpo"] = field(
        default="dapo", metadata=_help("token-loss normalisation")
    )
    use_bias_correction_kl: bool = field(
        default=True,
        metadata=_help("multiply the per-token KL by the ratio π/π_old (TRL's default)"),
    )

    def _choices(self) -> dict[str, tuple[str, ...]]:
        return {
            **super()._choices(),
            "scale_rewards": SCALE_REWARDS,
            "loss_type": tuple(LOSS_TYPES),
        }


def moments(
    x: torch.Tensor, valid: torch.Tensor, all_reduce_sum: AllReduceSum | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased std of ``x [k, B]`` over the valid entries of each row, over every
    process's batch (TRL's ``nanmean``/``nanstd`` of the gathered rewards)."""
    x = torch.where(valid, x, torch.zeros_like(x)).double()
    sums = torch.stack([valid.sum(1).double(), x.sum(1), (x**2).sum(1)])
    if all_reduce_sum is not None:
        sums = all_reduce_sum(sums)
    n, first, second = sums
    mean = first / n.clamp(min=1)
    var = (second - n * mean**2).clamp(min=0) / (n - 1).clamp(min=1)
    return mean.to(x.dtype), var.sqrt()


def last_moments(x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased std over the valid entries of the last dimension (kept, size 1), in
    the order of TRL's ``nanmean``/``nanstd`` (the biased variance times ``n / (n − 1)``): the
    same float32 rounding, so TRL's trainers and ours take bit-identical steps."""
    x = torch.where(valid, x, torch.zeros_like(x))
    mean, _, std = centred_moments(x, valid.to(x.dtype))
    return mean, std


def centred_moments(
    x: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The mean (kept, size 1), the centred values (0 where not valid) and the unbiased std
    (kept) over the last dimension of ``x`` (0 where not valid), ``valid`` a 0/1 float mask:
    :func:`last_moments` in one pass that also returns what it centred."""
    n = valid.sum(-1, keepdim=True)
    count = n.clamp(min=1)
    mean = x.sum(-1, keepdim=True) / count
    centred = (x - mean) * valid
    biased = (centred**2).sum(-1, keepdim=True) / count
    return mean, centred, (biased * (n / (n - 1).clamp(min=1))).sqrt()


def batch_normalized(
    x: torch.Tensor, valid: torch.Tensor, all_reduce_sum: AllReduceSum | None
) -> torch.Tensor:
    """``(x − mean) / (std + 10⁻⁴)`` of each row ``[k, B]`` over its valid entries of every
    process (0 where not valid); in one process in TRL's float32 order (:func:`last_moments`)."""
    if all_reduce_sum is None:
        mean, std = last_moments(x, valid)
    else:
        mean, std = (m[:, None].to(x) for m in moments(x, valid, all_reduce_sum))
    out = (x - mean) / (std + STD_EPS)
    return torch.where(valid, out, torch.zeros_like(out))


def grouped(
    rewards: torch.Tensor, valid: torch.Tensor, num_generations: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``rewards`` (0 where not valid) and ``valid`` as ``[k, prompts, num_generations]``."""
    k, b = rewards.shape
    groups = (k, b // num_generations, num_generations)
    r = torch.where(valid, rewards, torch.zeros_like(rewards)).view(groups)
    return r, valid.view(groups).to(r.dtype)


def scalarized_rewards(
    scores: torch.Tensor, valid: torch.Tensor, scalarize: Scalarize
) -> tuple[torch.Tensor, torch.Tensor]:
    """TRL's ``Σ wᵢ rᵢ`` ``[1, B]``: a missing reward adds nothing to the weighted sum; a row
    none can score is not valid."""
    return scalarize(scores.nan_to_num(0.0)), valid.any(0, keepdim=True)


GroupConfigT = TypeVar("GroupConfigT", bound=GroupConfig)


class GroupEstimator(Estimator[GroupConfigT]):
    """What GRPO and RLOO share: the reward weights' scale, the reference, the clip."""

    @property
    def weight_total(self) -> float:
        """TRL's scale of the weighted sum: ``Σ reward_weights`` (each weight 1 by default)."""
        weights = self.config.reward_weights
        return float(sum(weights)) if weights is not None else float(len(self.names))

    @property
    def needs_reference(self) -> bool:
        return self.config.beta > 0

    @property
    def clip_range(self) -> tuple[float, float | None]:
        return self.config.epsilon, self.config.epsilon_high


class GRPOEstimator(GroupEstimator[MOGRPOConfig]):
    """Group-relative advantages per objective; the KL term (β > 0) is the extra loss."""

    algorithm = "grpo"
    config_class = MOGRPOConfig
    kl_in_loss_only = True

    def __init__(self, config: MOGRPOConfig, names: list[str]):
        super().__init__(config, names)
        self.normalization = LOSS_TYPES[config.loss_type]

    def normalized(
        self,
        rewards: torch.Tensor,
        valid: torch.Tensor,
        all_reduce_sum: AllReduceSum | None,
        scale: str | None = None,
    ) -> torch.Tensor:
        """Per-objective group-relative advantages ``[k, B]`` under ``scale`` (default:
        ``scale_rewards``): every objective's groups in one ``[k, prompts, G]`` pass."""
        r, v = grouped(rewards, valid, self.config.num_generations)
        _, advantages, std = centred_moments(r, v)
        scale = scale or self.config.scale_rewards
        if scale == "group":
            advantages = advantages / (std + STD_EPS)
        advantages = advantages.view(rewards.shape)
        if scale == "batch":
            _, batch_std = moments(rewards, valid, all_reduce_sum)
            advantages = advantages / (batch_std[:, None].to(advantages) + STD_EPS)
        return advantages * valid

    def estimate(self, inputs: EstimatorInputs, scalarize: Scalarize | None) -> Estimate:
        scores, valid = inputs.scores, inputs.valid
        if scalarize is None:
            advantages = self.normalized(scores, valid, inputs.all_reduce_sum)
        elif self.config.multi_objective_aggregation == "sum_then_normalize":
            scores, valid = scalarized_rewards(scores, valid, scalarize)
            advantages = self.normalized(scores, valid, inputs.all_reduce_sum)
        else:  # GDPO (TRL): each objective by its group's std, weigh, then over the batch
            advantages = scalarize(self.normalized(scores, valid, inputs.all_reduce_sum, "group"))
            valid = valid.any(0, keepdim=True)
            advantages = batch_normalized(advantages, valid, inputs.all_reduce_sum)
        kl = None
        if inputs.ref_logprobs is not None and inputs.logprobs is not None:
            kl = kl_estimate(inputs.logprobs, inputs.ref_logprobs, "k3") * inputs.mask
        tokens = advantages.to(inputs.mask.dtype)[:, :, None] * inputs.mask
        return Estimate(self.named_advantages(tokens, inputs, scalarize is not None), kl=kl)

    def extra_loss(
        self, estimate: Estimate, rows: Minibatch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``β`` × the k3 KL to the reference (times ``π/π_old`` with ``use_bias_correction_kl``,
        TRL's importance-sampling correction), normalised like the policy loss."""
        logprobs = rows.logprobs
        if rows.ref_logprobs is None:
            return logprobs.new_zeros(()), {}
        kl = kl_estimate(logprobs, rows.ref_logprobs, "k3")
        if self.config.use_bias_correction_kl:
            kl = kl * torch.exp(logprobs - rows.old_logprobs)
        loss = (kl * rows.weights.to(kl.dtype)).sum()
        return self.config.beta * loss, {"loss/kl": loss.detach()}
