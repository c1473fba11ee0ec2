"""The typed batch a training step builds once and its updates read: :class:`RolloutBatch`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from mogradient_llm.estimators import Estimate
from mogradient_llm.objectives.advantages import Advantages
from mogradient_llm.policy.rollout import Rollout


@dataclass
class RolloutBatch:
    """One step's completions and everything the updates need, rows = completions.

    ``k`` objectives, ``B`` completions, ``T`` response tokens. ``advantages`` are what the
    policy losses are made of: one row per objective for Gramian methods, the one combined row
    once a loss weighting or an advantage combiner (PAMA) has combined them. What only one
    algorithm reads (PPO's value targets) stays in its ``estimate``.
    """

    input_ids: torch.Tensor  #: ``[B, Q + T]`` prompt (left-padded) and response tokens
    attention_mask: torch.Tensor  #: ``[B, Q + T]``
    query_length: int  #: ``Q``
    mask: torch.Tensor  #: ``[B, T]`` float, 1 on response tokens up to the first EOS
    scores: torch.Tensor  #: ``[k, B]`` raw rewards, NaN where a reward could not score
    objective_losses: torch.Tensor  #: ``[k]`` −mean raw score, over every process
    estimate: Estimate  #: the estimator's output (its advantages before the Noon clip)
    objective_advantages: torch.Tensor  #: ``[m, B, T]`` after the Noon clip, before the combine
    advantages: torch.Tensor  #: ``[m', B, T]`` what the policy losses are made of
    advantage_names: tuple[str, ...]  #: the objective of each row (or ``("combined",)``)
    old_logprobs: torch.Tensor | None = None  #: ``[B, T]``; ``None``: the live ones, detached
    ref_logprobs: torch.Tensor | None = None  #: ``[B, T]`` of the KL reference, if any
    kl: torch.Tensor | None = None  #: ``[B, T]`` per-token KL estimate to the reference
    stats: dict[str, float] = field(default_factory=dict)  #: logged with the step
    #: ``[B, T]`` the update's own log-probs, detached, filled as it runs, when no forward ran
    #: before it (``old_logprobs`` is ``None``): what the step's KL and entropy are logged from
    live_logprobs: torch.Tensor | None = None

    @classmethod
    def of(
        cls,
        rollout: Rollout,
        scores: torch.Tensor,
        losses: torch.Tensor,
        estimate: Estimate,
        clipped: Advantages,
        combined: Advantages,
        logprobs: torch.Tensor | None,
        ref_logprobs: torch.Tensor | None,
        stats: dict[str, float],
    ) -> RolloutBatch:
        """The batch of ``rollout``: its ``scores``, the objectives' loss values, the estimate,
        the advantages after the Noon clip and after the combine, the forwards' log-probs."""
        mask = rollout.response_mask.float()
        return cls(
            input_ids=rollout.input_ids,
            attention_mask=rollout.attention_mask,
            query_length=rollout.query_ids.shape[1],
            mask=mask,
            scores=scores,
            objective_losses=losses,
            estimate=estimate,
            objective_advantages=clipped.values,
            advantages=combined.values,
            advantage_names=combined.names,
            old_logprobs=logprobs,
            ref_logprobs=ref_logprobs,
            kl=estimate.kl,
            stats=stats,
            live_logprobs=mask.new_full(mask.shape, math.nan) if logprobs is None else None,
        )

    @property
    def size(self) -> int:
        """The number of completions ``B``."""
        return int(self.input_ids.shape[0])
