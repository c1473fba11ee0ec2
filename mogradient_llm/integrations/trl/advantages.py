"""Per-objective advantages of TRL's gathered rewards, through our GRPO/RLOO estimators and the
advantage stage of :class:`~mogradient_llm.objectives.loss.MultiObjectiveLoss`.

TRL's ``_calculate_rewards`` returns the rewards of every process's completions
``[B_global, k]`` (NaN where a reward returned ``None``); every group statistic is computed here,
on that global batch, before TRL shuffles and splits the batch into micro-batches that no longer
hold whole groups. Our estimators compute TRL's formulas (``tests/test_llm_trl_parity.py``), so
``linear`` with ``reward_weights`` is TRL's weighted sum and GDPO its ``normalize_then_sum``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mogradient_llm.estimators.base import EstimatorInputs
from mogradient_llm.estimators.grpo import GroupEstimator, GRPOEstimator
from mogradient_llm.estimators.grpo import MOGRPOConfig as EstimatorGRPOConfig
from mogradient_llm.estimators.rloo import MORLOOConfig as EstimatorRLOOConfig
from mogradient_llm.estimators.rloo import RLOOEstimator
from mogradient_llm.objectives.diagnostics import Correlation
from mogradient_llm.objectives.loss import MultiObjectiveLoss, Stats, objective_losses


@dataclass
class ObjectiveAdvantages:
    """What the advantage stage gives for the global batch.

    ``combined`` ``[B]``: one advantage per completion (advantage combiners, loss weightings and
    constrained objectives; ``None`` for unconstrained Gramian weightings, which keep
    ``per_objective`` ``[B, k]``, batch-first so that TRL's shuffle and split keep it aligned).
    ``losses`` ``[k]``: the objectives' loss values (−mean score), for methods that decide from
    them and for the constraints' measured values (``None`` where neither reads them).
    ``correlation``: what the conflict diagnostics read, computed when TRL logs
    (:func:`~mogradient_llm.objectives.diagnostics.correlation_stats`)."""

    combined: torch.Tensor | None
    per_objective: torch.Tensor
    losses: torch.Tensor | None
    stats: Stats
    correlation: Correlation | None


def group_estimator(
    algorithm: str, names: list[str], num_generations: int, trainer: Any
) -> GroupEstimator[Any]:
    """Our GRPO or RLOO estimator with the TRL trainer's advantage settings (its
    ``num_generations`` for the mode, ``scale_rewards``, ``multi_objective_aggregation``,
    ``normalize_advantages``, ``beta``, ``reward_weights``)."""
    args = trainer.args
    common: dict[str, Any] = {
        "num_generations": num_generations,
        "batch_size": num_generations,
        "mini_batch_size": num_generations,
        "reward_weights": None if args.reward_weights is None else list(args.reward_weights),
        "aggregator": "linear",
    }
    if algorithm == "grpo":
        config = EstimatorGRPOConfig(
            **common,
            scale_rewards=trainer.scale_rewards,
            multi_objective_aggregation=trainer.multi_objective_aggregation,
        )
        return GRPOEstimator(config, names)
    rloo = EstimatorRLOOConfig(
        **common, beta=trainer.beta, normalize_advantages=trainer.normalize_advantages
    )
    return RLOOEstimator(rloo, names)


def needs_loss_values(objective: MultiObjectiveLoss) -> bool:
    """Whether the objectives' loss values are read: by the aggregator's decision
    (``uses_loss_values``; ``linear`` and ``mean`` read only their number) or by the
    constraints' measurements."""
    uses = getattr(objective.aggregator, "uses_loss_values", False)
    return bool(uses) or objective.constraints is not None


def objective_advantages(
    objective: MultiObjectiveLoss,
    estimator: GroupEstimator[Any],
    rewards: torch.Tensor,
    kl: torch.Tensor | None = None,
) -> ObjectiveAdvantages:
    """The advantages of the gathered ``rewards`` ``[B, k]`` (RLOO: ``kl`` ``[B]``, each
    sequence's summed k1 KL to the reference, enters the reward as ``−β kl``).

    The estimator scalarises where a loss weighting does (GRPO: the rewards, or GDPO's
    group-normalised advantages), then the Noon clip and an advantage combiner (PAMA) act on
    the per-objective rows; Gramian weightings keep them."""
    scores = rewards.T.contiguous()
    mask = scores.new_ones(scores.shape[1], 1)
    logprobs = ref = None
    if kl is not None:  # k1 of (kl, 0) summed over one "token" is kl itself
        logprobs, ref = kl.to(scores)[:, None], torch.zeros_like(mask)
    inputs = EstimatorInputs(scores, mask, estimator.config.num_generations, logprobs, ref)
    losses = objective_losses(scores) if needs_loss_values(objective) else None
    # a method that reads only their number gets placeholders (no device sync)
    values = torch.zeros(scores.shape[0], dtype=torch.float64) if losses is None else losses
    stats: Stats = {}
    scalarize = objective.scalarizer(values, stats, estimator.weight_total)
    estimate = estimator.estimate(inputs, scalarize)
    clipped = objective.clip(estimate.advantages, mask)
    combined, combine_stats = objective.combine(clipped, mask, values)
    stats.update(combine_stats)
    per_objective = clipped.values[..., 0].T.contiguous()
    single = None if objective.gradient_level else combined.values[0, :, 0]
    correlation = objective.correlation(clipped, mask, scores)
    return ObjectiveAdvantages(single, per_objective, losses, stats, correlation)
