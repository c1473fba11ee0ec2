"""Multi-objective RLOO, as TRL 1.16's ``RLOOTrainer``: a per-objective leave-one-out baseline,
the KL in the reward, a sequence-level ratio and clip.

Each completion's reward is ``rᵢ − β Σₜ (log π_old − log π_ref)`` (k1 summed over the sequence,
Ahmadian et al. 2024), and its baseline the mean of the *other* completions of its group, per
objective: ``Aᵢ = rᵢ − mean_{j ≠ i} rⱼ``, unbiased because the baseline does not depend on the
completion itself; ``normalize_advantages`` then whitens them over the batch (every process's).
A loss weighting sums the rewards first (``Σ wᵢ rᵢ`` at TRL's scale, then the KL once); with
``normalize_then_sum`` (GDPO, not in TRL's RLOO) each objective's advantages are whitened, weighed
and whitened again over the batch. The loss is ``−min(u A, clip(u, 1 − ε, 1 + ε_high) A)`` per
sequence with ``u = π(y)/π_old(y)`` the sequence's ratio, averaged over the sequences.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from mogradient_llm.config import _help
from mogradient_llm.estimators.base import Estimate, EstimatorInputs, Minibatch, Scalarize
from mogradient_llm.estimators.grpo import (
    GroupConfig,
    GroupEstimator,
    batch_normalized,
    grouped,
    scalarized_rewards,
)
from mogradient_llm.estimators.kl import kl_estimate
from mogradient_llm.objectives.surrogate import TokenNormalization, clipped_surrogate


@dataclass
class MORLOOConfig(GroupConfig):
    """RLOO's hyper-parameters: :class:`GroupConfig` plus TRL's ``RLOOConfig`` options."""

    algorithm: ClassVar[str] = "rloo"

    beta: float = field(
        default=0.05,
        metadata=_help("KL coefficient (k1 summed per sequence, in the reward); 0: no reference"),
    )
    normalize_advantages: bool = field(
        default=False, metadata=_help("whiten the advantages over the batch (mean 0, std 1)")
    )


class RLOOEstimator(GroupEstimator[MORLOOConfig]):
    """Leave-one-out advantages per objective, the KL penalty in the reward."""

    algorithm = "rloo"
    config_class = MORLOOConfig
    #: Each sequence counts once (``policy_losses`` sums its tokens' log-probabilities).
    normalization: TokenNormalization = "sequence"
    kl_in_loss_only = False  # TRL's RLOO puts the KL into the reward, before the baseline

    def leave_one_out(self, rewards: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``rᵢ − mean of the others`` ``[k, B]`` over the valid entries of each group (0 where
        not valid or when no other completion of the group was scored)."""
        r, v = grouped(rewards, valid, self.config.num_generations)
        others = (v.sum(-1, keepdim=True) - v).clamp(min=1)
        baseline = (r.sum(-1, keepdim=True) - r) / others
        alone = v.sum(-1, keepdim=True) < 2
        return torch.where(alone, torch.zeros_like(r), (r - baseline) * v).view(rewards.shape)

    def _has_baseline(self, valid: torch.Tensor) -> torch.Tensor:
        """``[k, B]``: valid, and another completion of the group was scored (TRL's advantage is
        NaN otherwise, left out of the batch statistics)."""
        _, v = grouped(valid.float(), valid, self.config.num_generations)
        return valid & (v.sum(-1, keepdim=True) >= 2).expand_as(v).reshape(valid.shape)

    def advantages(
        self, rewards: torch.Tensor, valid: torch.Tensor, inputs: EstimatorInputs
    ) -> torch.Tensor:
        """Leave-one-out advantages ``[k, B]`` (whitened with ``normalize_advantages``)."""
        advantages = self.leave_one_out(rewards, valid)
        if self.config.normalize_advantages:
            advantages = batch_normalized(
                advantages, self._has_baseline(valid), inputs.all_reduce_sum
            )
        return advantages

    def estimate(self, inputs: EstimatorInputs, scalarize: Scalarize | None) -> Estimate:
        scores, valid = inputs.scores, inputs.valid
        kl = None
        if self.config.beta > 0 and inputs.ref_logprobs is not None:
            assert inputs.logprobs is not None  # the loop runs the policy with the reference
            kl = kl_estimate(inputs.logprobs, inputs.ref_logprobs, "k1") * inputs.mask
        penalty = 0.0 if kl is None else self.config.beta * kl.sum(1).to(scores.dtype)
        summed = self.config.multi_objective_aggregation == "sum_then_normalize"
        if scalarize is not None and summed:
            rewards, valid = scalarized_rewards(scores, valid, scalarize)
            advantages = self.advantages(rewards - penalty, valid, inputs)
        else:
            advantages = self.advantages(scores - penalty, valid, inputs)
            if scalarize is not None:  # GDPO: weigh the advantages, then whiten over the batch
                advantages = scalarize(advantages)
                valid = valid.any(0, keepdim=True)
                advantages = batch_normalized(advantages, valid, inputs.all_reduce_sum)
        tokens = advantages.to(inputs.mask.dtype)[:, :, None] * inputs.mask
        return Estimate(self.named_advantages(tokens, inputs, scalarize is not None), kl=kl)

    def policy_losses(
        self,
        logprobs: torch.Tensor,
        old_logprobs: torch.Tensor,
        advantages: torch.Tensor,
        weights: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One clipped-surrogate loss per advantage row ``[m]`` at the sequence level (TRL's RLOO):
        the ratio of the sequences' probabilities, one clip per sequence, the mean over sequences
        (``weights``, normalised per sequence, give each sequence its share)."""
        # Each sequence is one "token" of the shared surrogate: its summed log-probabilities,
        # its advantage (the mean over its tokens, all equal) and its total weight.
        mask = (weights > 0).to(logprobs.dtype)
        per_sequence = (advantages * mask).sum(-1) / mask.sum(-1).clamp(min=1)  # [m, b]
        # π_old's sums in their own dtype, as TRL stores them: a float64 copy of the log-probs
        # (the factorised Gramian's slopes) then meets the same rounded old sums as TRL's loss
        old_mask = mask.to(old_logprobs.dtype)
        return clipped_surrogate(
            (logprobs * mask).sum(1, keepdim=True),
            (old_logprobs * old_mask).sum(1, keepdim=True),
            per_sequence.unsqueeze(-1),
            weights.sum(1, keepdim=True),
            *self.clip_range,
        )

    def extra_loss(
        self, estimate: Estimate, rows: Minibatch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Nothing: RLOO's KL is in the reward."""
        return rows.logprobs.new_zeros(()), {}
