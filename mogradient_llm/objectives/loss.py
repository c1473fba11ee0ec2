"""The multi-objective policy loss under any aggregator kind, for any engine.

:class:`MultiObjectiveLoss` turns per-objective advantages (:class:`Advantages`, rows named)
and the engine's own policy loss (a callable: advantage rows ``[m, B, T]`` → one loss per row
``[m]``, with the engine's ratios, clipping and token normalisation) into one scalar to
backward. It takes an :class:`~mogradient.Aggregator` *instance* and knows nothing of the
rollout, the batch type, the optimiser or ``.grad``: our loop, TRL's ``compute_loss`` and
verl's actor call the same code. By kind (:func:`mogradient.dispatch`, the only switch):

* advantage combiners (PAMA): after the Noon clip, one advantage per token (over the
  objectives that scored each sample), then the policy loss of that one row;
* loss weightings (``linear``/``morlhf``, ``mean``, ``stch``, ``famo``, ...): ``Σ wᵢ Aᵢ`` with
  ``w`` decided from the objectives' loss values — where an estimator calls
  :meth:`MultiObjectiveLoss.scalarizer` inside its pipeline (PPO: before whitening; GRPO: on
  the rewards or the group-normalised advantages), else here, then the loss of that one row;
* Gramian weightings (``mgda``, ``upgrad``, ``cagrad``, ...): one loss ``Lᵢ`` per objective,
  the weights decided without grad from the Gramian of their gradients at the ``features``
  level (a hidden state the engine hands over: MGDA-UB) or the ``parameters`` level, then
  ``Σ wᵢ Lᵢ``.
* Jacobian weightings (``excess-mtl``, ``db-mtl``, ``moco``): one loss per objective, the
  direction decided without grad from the k×d Jacobian of their gradients over the parameters
  (the ``parameters`` level only: the method's state follows the parameters' coordinates from
  step to step), then the linear surrogate ``Σ_p ⟨d_p, p⟩`` whose gradient is that direction.

Engines that accumulate the Gramian over micro-batches or record it layer by layer (our loop)
call the stages themselves: :meth:`~MultiObjectiveLoss.prepare`, :meth:`~MultiObjectiveLoss.decide`
and :meth:`~MultiObjectiveLoss.reduce`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from mogradient import (
    AdvantageCombiner,
    Aggregator,
    GramianAccumulator,
    LossWeighting,
    dispatch,
)
from mogradient_llm.objectives.advantages import Advantages, noon_clip
from mogradient_llm.objectives.conditioned import (
    AggregatorFactory,
    PerPreference,
    check_conditionable,
)
from mogradient_llm.objectives.constraints import Lagrangian
from mogradient_llm.objectives.diagnostics import (
    Correlation,
    advantage_correlation,
    correlation_stats,
    score_correlation,
)
from mogradient_llm.objectives.gradient_stages import GradientStages, Level, Stats

#: Sums a tensor over the processes (``None`` in one process).
AllReduceSum = Callable[[torch.Tensor], torch.Tensor]
#: The engine's policy loss: advantage rows ``[m, B, T]`` → one loss per row ``[m]``.
PolicyLosses = Callable[[torch.Tensor], torch.Tensor]
#: A loss weighting's ``x [k, ...] → Σ wᵢ xᵢ [1, ...]``.
Scalarize = Callable[[torch.Tensor], torch.Tensor]
Kind = Literal["advantages", "losses", "gramian", "jacobian"]


@dataclass
class LossOutput:
    """What :meth:`MultiObjectiveLoss.__call__` returns: the scalar to backward, the policy loss
    of each row it was made of, the weights (Gramian and loss weightings) and the stats."""

    loss: torch.Tensor
    losses: torch.Tensor
    weights: torch.Tensor | None
    stats: Stats = field(default_factory=dict)


def objective_losses(
    scores: torch.Tensor, all_reduce_sum: AllReduceSum | None = None
) -> torch.Tensor:
    """The loss values loss-reading methods decide from: ``−`` each objective's mean raw score
    ``[k, B] → [k]`` over every process's batch (so all ranks decide alike), leaving out the
    scores a reward could not give (NaN).

    Methods that need positive losses (GLS, DWA, FAMO, UW) then need rewards that stay
    negative; they say so by name if not.
    """
    valid = ~torch.isnan(scores)
    totals = torch.cat([scores.nan_to_num(0.0).sum(1), valid.sum(1).to(scores)])
    if all_reduce_sum is not None:
        totals = all_reduce_sum(totals)
    k = scores.shape[0]
    return -(totals[:k] / totals[k:].clamp(min=1))


class MultiObjectiveLoss(GradientStages):
    """The policy loss of ``names``' objectives combined by ``aggregator``.

    Args:
        aggregator: any ``mogradient`` aggregator instance (its state, if any, lives on).
        names: the objectives, in the order of the advantage rows.
        level: where Gramian weightings take the Gramian: ``"features"`` (the gradients with
            respect to a hidden state the engine passes, MGDA-UB) or ``"parameters"``.
        normalize_weights: rescale the weights to Σw = 1 whatever the method.
        noon: clip every objective's advantage at zero first (Noon PPO).
        constraints: Lagrange multipliers of constrained objectives
            (:class:`~mogradient_llm.objectives.constraints.Lagrangian`): the aggregator then
            combines the unconstrained objectives only, and the constrained ones join at the
            advantage level, Safe RLHF's way. A Gramian weighting with several unconstrained
            objectives is refused (constraints are combined at the advantage level).
        per_preference: for a preference-conditioned policy, ``preference -> Aggregator`` of
            ``aggregator``'s method: the stages that take ``preferences`` (one row per sample)
            then weigh each sample under its own
            (:class:`~mogradient_llm.objectives.conditioned.PerPreference`); Gramian
            weightings and constraints are refused.
    """

    def __init__(
        self,
        aggregator: Aggregator,
        names: Sequence[str],
        *,
        level: Level = "parameters",
        normalize_weights: bool = False,
        noon: bool = False,
        constraints: Lagrangian | None = None,
        per_preference: AggregatorFactory | None = None,
    ):
        if not isinstance(aggregator, Aggregator):
            raise TypeError(
                f"aggregator must be a mogradient Aggregator instance, got {aggregator!r}; build "
                "one with mogradient.get_aggregator(name, **kwargs)"
            )
        if level not in ("features", "parameters"):
            raise ValueError(f"level must be 'features' or 'parameters', got {level!r}")
        if aggregator.needs_two_batches:
            raise ValueError(
                f"{aggregator!r} decides from the product J₁J₂ᵀ of two independent batches' "
                "Jacobians (needs_two_batches), which the RL update does not form (one "
                "minibatch per step); pick a one-batch Gramian method such as mgda or upgrad, "
                "or train it with mogradient.backward(losses, second_losses=...)"
            )
        self.aggregator = aggregator
        self.names = tuple(names)
        if not self.names or len(set(self.names)) != len(self.names):
            raise ValueError(f"give one unique name per objective, got {list(self.names)}")
        self.level: Level = level
        self.normalize_weights = normalize_weights
        self.noon = noon
        self.kind: Kind = dispatch(
            aggregator,
            losses=lambda _: "losses",
            advantages=lambda _: "advantages",
            gramian=lambda _: "gramian",
            jacobian=lambda _: "jacobian",
        )
        if self.kind == "jacobian" and level != "parameters":
            raise ValueError(
                f"{aggregator!r} decides from the k×d Jacobian over the parameters and keeps "
                "state in their coordinates across steps, which a hidden state (level="
                f"{level!r}) does not have: use gramian_level='parameters' (in our loop with "
                "parameter_gramian='jacobian')"
            )
        self.constraints = constraints
        #: the objectives the aggregator decides over: the unconstrained ones
        self.aggregated = self.names if constraints is None else tuple(constraints.primary)
        gradients = self.kind in ("gramian", "jacobian")
        if constraints is not None and gradients and len(self.aggregated) > 1:
            raise ValueError(
                f"constraints join the objectives at the advantage level (Safe RLHF); "
                f"{aggregator!r} decides from gradients, which cannot weigh the "
                f"{len(self.aggregated)} unconstrained objectives {list(self.aggregated)} there: "
                "use an advantage- or loss-level aggregator (pama, linear, mean, ...) or keep one "
                "unconstrained objective"
            )
        self.conditioned: PerPreference | None = None
        if per_preference is not None:
            check_conditionable(aggregator, constraints is not None)
            self.conditioned = PerPreference(per_preference, self.names, normalize_weights)

    def _per_sample(self) -> PerPreference:
        """The per-preference weighting; raises if this loss was built without one."""
        if self.conditioned is None:
            raise ValueError(
                "per-sample preferences were passed to a loss built without per_preference; "
                "build it with per_preference=<preference -> Aggregator> (config.conditioned)"
            )
        return self.conditioned

    @property
    def gradient_level(self) -> bool:
        """Whether the update is decided from gradients (a Gramian or Jacobian weighting,
        unconstrained)."""
        return self.kind in ("gramian", "jacobian") and self.constraints is None

    @property
    def decides_direction(self) -> bool:
        """Whether the update is a direction decided from the k×d Jacobian (a Jacobian
        weighting, unconstrained): :meth:`decide_direction` then :meth:`along`."""
        return self.kind == "jacobian" and self.constraints is None

    @property
    def reads_loss_values(self) -> bool:
        """Whether the aggregator decides from the objectives' loss values."""
        return self.kind == "losses" or getattr(self.aggregator, "uses_loss_values", False)

    def nonfinite_losses(self, losses: torch.Tensor) -> str | None:
        """For methods that read the loss values: which objective's mean score is not finite
        (finite rewards whose mean overflows in float32), or ``None``."""
        if not self.reads_loss_values or bool(torch.isfinite(losses).all()):
            return None
        i = int((~torch.isfinite(losses)).nonzero()[0])
        return (
            f"the mean score of objective {self.names[i]!r} is not finite in float32 "
            f"({-float(losses[i])}); rescale that reward"
        )

    # ------------------------------------------------------------------ advantage stage
    def scalarize(self, values: torch.Tensor, losses: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        """Loss weightings: ``values [k, ...]`` → ``Σ wᵢ valuesᵢ`` ``[1, ...]`` with ``w`` decided
        from the objectives' ``losses [k]``."""
        if not isinstance(self.aggregator, LossWeighting):
            raise TypeError(f"{self.aggregator!r} is not a loss weighting; it does not scalarize")
        raw = self.aggregator.weights(losses.to(torch.float64))
        weights, stats = self._normalized(raw)
        weights = weights.to(values)
        stats.update(self._weight_stats(weights))
        # products then one sum per entry (not a dot product's fused kernel): TRL's float32
        # rounding of its weighted sum of rewards, so ``linear`` steps bit for bit as TRL
        weights = weights.reshape(-1, *[1] * (values.ndim - 1))
        return (weights * values).sum(0, keepdim=True), stats

    def scalarizer(
        self,
        losses: torch.Tensor,
        stats: Stats,
        total: float = 1.0,
        preferences: torch.Tensor | None = None,
    ) -> Scalarize | None:
        """For an estimator's pipeline: a loss weighting's ``x [k, ...] → Σ wᵢ xᵢ [1, ...]``
        with the weights of ``losses`` (their stats go into ``stats``); ``None`` for other kinds.

        ``total``: with ``normalize_weights``, what the weights sum to instead of 1 (GRPO and
        RLOO weigh the rewards at TRL's scale, ``Σ reward_weights``). ``preferences``
        ``[B, k]``: each sample weighed under its own (a conditioned policy)."""
        if self.kind != "losses" or self.constraints is not None:
            return None  # with constraints, the combine stage weighs the unconstrained rows
        factor = total if self.normalize_weights else 1.0
        if preferences is not None:
            per_sample, p = self._per_sample(), preferences

            def conditioned(x: torch.Tensor) -> torch.Tensor:
                out, weight_stats = per_sample.scalarize(x, p, losses, factor)
                stats.update(weight_stats)
                return out

            return conditioned

        def scalarize(x: torch.Tensor) -> torch.Tensor:
            out, weight_stats = self.scalarize(x, losses)
            stats.update(weight_stats)
            return out * factor if factor != 1.0 else out

        return scalarize

    def _combine(
        self, advantages: Advantages, mask: torch.Tensor, all_reduce_sum: AllReduceSum | None
    ) -> tuple[Advantages, Stats]:
        """Advantage combiners: one advantage per token over the objectives that scored."""
        assert isinstance(self.aggregator, AdvantageCombiner)
        values = advantages.per_token(mask)
        valid = advantages.valid_per_token()
        if valid is None or bool(valid.all()):
            # every objective scored every sample: the call of a combiner that predates the
            # validity mask (combine(advantages, mask, all_reduce_sum))
            combined, weights, s_star = self.aggregator.combine(values, mask, all_reduce_sum)
        else:
            combined, weights, s_star = self.aggregator.combine(
                values, mask, all_reduce_sum, valid=valid
            )
        stats: Stats = {"agg/weight_sum": 1.0}  # on the simplex per token / batch
        token_mask = mask.to(weights.dtype)
        if weights.ndim > 1:
            per_objective = (weights * token_mask).sum((1, 2)) / token_mask.sum().clamp(min=1)
            stats["agg/s_star"] = float((s_star * mask).sum() / mask.sum().clamp(min=1))
        else:
            per_objective = weights
            stats["agg/s_star"] = float(s_star)
        stats.update(self._weight_stats(per_objective))
        stats["agg/used_token_frac"] = float(((combined != 0) & mask.bool()).sum() / mask.sum())
        return Advantages.combined(combined.to(values.dtype).unsqueeze(0)), stats

    def clip(self, advantages: Advantages, mask: torch.Tensor) -> Advantages:
        """The advantages per token of ``mask`` ``[B, T]`` (the response tokens), after the Noon
        clip with ``noon``: what the combine and the diagnostics read."""
        if not advantages.is_combined and advantages.names != self.names:
            raise ValueError(
                f"advantages of objectives {list(advantages.names)}; this loss combines "
                f"{list(self.names)}"
            )
        values = advantages.per_token(mask)
        return advantages.with_values(noon_clip(values) if self.noon else values)

    def combine(
        self,
        clipped: Advantages,
        mask: torch.Tensor,
        losses: torch.Tensor | None = None,
        all_reduce_sum: AllReduceSum | None = None,
        preferences: torch.Tensor | None = None,
    ) -> tuple[Advantages, Stats]:
        """Advantage combiners combine and loss weightings scalarize (with the objectives' loss
        values ``losses [k]``) what is not combined yet; Gramian weightings keep one row per
        objective. ``clipped``: from :meth:`clip`; ``preferences`` ``[B, k]``: each sample
        weighed under its own (a conditioned policy)."""
        if self.constraints is not None and not clipped.is_combined:
            return self._constrained(clipped, mask, losses, all_reduce_sum)
        if clipped.is_combined or self.kind in ("gramian", "jacobian"):
            return clipped, {}
        if preferences is not None:
            return self._combine_per_sample(clipped, mask, losses, preferences)
        if self.kind == "advantages":
            return self._combine(clipped, mask, all_reduce_sum)
        if losses is None:
            raise ValueError(
                f"{self.aggregator!r} weighs the objectives by their loss values: pass losses "
                "(e.g. objective_losses(scores))"
            )
        scalarized, stats = self.scalarize(clipped.values, losses)
        return Advantages.combined(scalarized), stats

    def _combine_per_sample(
        self,
        clipped: Advantages,
        mask: torch.Tensor,
        losses: torch.Tensor | None,
        preferences: torch.Tensor,
    ) -> tuple[Advantages, Stats]:
        """:meth:`combine` with one preference per sample."""
        per_sample = self._per_sample()
        if self.kind == "advantages":
            return per_sample.combine(clipped, mask, preferences)
        if losses is None:
            raise ValueError(f"{self.aggregator!r} reads the loss values: pass losses")
        scalarized, stats = per_sample.scalarize(clipped.values, preferences, losses, 1.0)
        return Advantages.combined(scalarized), stats

    def _constrained(
        self,
        clipped: Advantages,
        mask: torch.Tensor,
        losses: torch.Tensor | None,
        all_reduce_sum: AllReduceSum | None,
    ) -> tuple[Advantages, Stats]:
        """The unconstrained rows combined by the aggregator (one row: as it is), then the
        constrained ones joined with their multipliers."""
        assert self.constraints is not None
        rows = self.constraints.primary_rows
        valid = None if clipped.valid is None else clipped.valid[rows]
        primary = Advantages(clipped.values[rows], self.aggregated, valid)
        stats: Stats = {}
        if len(rows) == 1:
            combined = primary.values[0]
        elif self.kind == "advantages":
            joined, stats = self._combine(primary, mask, all_reduce_sum)
            combined = joined.values[0]
        else:
            if losses is None:
                raise ValueError(f"{self.aggregator!r} reads the loss values: pass losses")
            scalarized, stats = self.scalarize(primary.values, losses[rows])
            combined = scalarized[0]
        merged = self.constraints.merge(combined, clipped.values[self.constraints.rows])
        return Advantages.combined(merged.unsqueeze(0)), stats

    def update_constraints(self, losses: torch.Tensor) -> Stats:
        """After a step: the multipliers follow the objectives' measured mean scores
        (``−losses``, over every process); returns their stats (none without constraints)."""
        if self.constraints is None:
            return {}
        self.constraints.update(-losses.detach().double().cpu())
        return self.constraints.stats()

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps besides the aggregator's own state: the multipliers."""
        return {} if self.constraints is None else {"constraints": self.constraints.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.constraints is not None and "constraints" in state:
            self.constraints.load_state_dict(state["constraints"])

    def prepare(
        self,
        advantages: Advantages,
        mask: torch.Tensor,
        losses: torch.Tensor | None = None,
        all_reduce_sum: AllReduceSum | None = None,
        preferences: torch.Tensor | None = None,
    ) -> tuple[Advantages, Stats]:
        """The advantage stage, :meth:`clip` then :meth:`combine`: ``[1, B, T]`` or
        ``[k, B, T]`` advantages and stats."""
        clipped = self.clip(advantages, mask)
        return self.combine(clipped, mask, losses, all_reduce_sum, preferences)

    def correlation(
        self, clipped: Advantages, mask: torch.Tensor, scores: torch.Tensor
    ) -> Correlation | None:
        """What :meth:`diagnostics` reads, for engines that compute it only when they log
        (:func:`~mogradient_llm.objectives.diagnostics.correlation_stats`); ``None``: nothing
        to log."""
        if self.kind in ("gramian", "jacobian") or len(self.names) < 2:
            return None
        if clipped.is_combined:
            return score_correlation(scores)
        return advantage_correlation(clipped.values, mask)

    def diagnostics(self, clipped: Advantages, mask: torch.Tensor, scores: torch.Tensor) -> Stats:
        """How much the objectives conflict, for kinds that decide without gradients: the
        correlation of the objectives' advantages (``clipped``, from :meth:`clip`) over the
        response tokens, or of the ``scores`` ``[k, B]`` once a loss weighting summed the
        advantages. Gramian weightings log gradient cosines (:meth:`decide`); one objective:
        nothing."""
        correlation = self.correlation(clipped, mask, scores)
        return {} if correlation is None else correlation_stats([correlation], self.names)[0]

    # ------------------------------------------------------------------ loss stage
    def __call__(
        self,
        advantages: Advantages,
        policy_losses: PolicyLosses,
        mask: torch.Tensor,
        *,
        gradient_of: torch.Tensor | Sequence[torch.Tensor] | None = None,
        losses: torch.Tensor | None = None,
        all_reduce_sum: AllReduceSum | None = None,
    ) -> LossOutput:
        """The one scalar to backward for ``advantages`` (``[k, B]`` or ``[k, B, T]``).

        ``policy_losses``: the engine's loss of advantage rows ``[m, B, T]`` (``[m]``, with a
        graph); ``mask`` ``[B, T]``: the response tokens; ``gradient_of``: what Gramian
        weightings differentiate (the hidden state at the features level, the parameters at
        the parameters level); ``losses``: the objectives' loss values ``[k]`` for methods
        that read them (see :func:`objective_losses`).
        """
        prepared, stats = self.prepare(advantages, mask, losses, all_reduce_sum)
        row_losses = policy_losses(prepared.values)
        weights = None
        if self.gradient_level:
            if gradient_of is None:
                raise ValueError(
                    f"{self.aggregator!r} decides from the Gramian at the {self.level} level: "
                    "pass gradient_of (the hidden state for 'features', the trainable parameters "
                    "for 'parameters')"
                )
            if self.decides_direction:
                params = [gradient_of] if isinstance(gradient_of, torch.Tensor) else gradient_of
                accumulator = GramianAccumulator("parameters")
                accumulator.add(row_losses.unbind(), list(params), retain_graph=True)
                direction, decided = self.decide_direction(accumulator.jacobian(), losses)
                stats.update(decided)
                loss = self.along(direction, params)
                return LossOutput(loss, row_losses.detach(), None, stats)
            weights, decided = self.decide(self.gramian(row_losses, gradient_of), losses)
            stats.update(decided)
            weights = weights.to(row_losses)
        return LossOutput(self.reduce(row_losses, weights), row_losses.detach(), weights, stats)
