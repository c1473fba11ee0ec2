"""Where the objectives are combined: the level follows the aggregator's kind.

The core's :func:`mogradient.dispatch` picks one of three levels when the combiner is built;
nothing else here looks at the kind or the name.

* loss weightings (``linear``/``morlhf``, ``mean``, ``stch``, ``famo``, ...): at the advantage
  level, where the estimator says (:meth:`ObjectiveCombiner.scalarizer`) — PPO: ``A = Σ wᵢ Aᵢ``
  of the per-objective GAE advantages before whitening, which is GAE on ``Σ wᵢ rᵢ`` with the
  value ``Σ wᵢ Vᵢ`` (GAE is linear): the MORLHF baseline; GRPO: the weighted sum of the rewards
  or of the normalised advantages (GDPO). Methods that read the loss values get the
  objectives' losses (:meth:`ObjectiveCombiner.objective_losses`), once per rollout batch.
* advantage combiners (PAMA): at the advantage level, after the Noon clip — one advantage per
  token (:meth:`mogradient.AdvantageCombiner.combine`), over the objectives that scored the
  completion (a reward that returned ``None`` takes no part).
* Gramian weightings (``mgda``, ``upgrad``, ``cagrad``, ...): at the gradient level — the
  weights come from the Gramian of the per-objective policy-loss gradients over the policy
  parameters or over the last hidden states (MGDA-UB), all-reduced over the processes and
  accumulated over the micro-batches of a minibatch (:class:`mogradient.GramianAccumulator`);
  the update is then one ``accelerator.backward`` of ``Σ wᵢ Lᵢ`` plus the value loss, like
  every other method's.

The value loss is never aggregated: it is added (sum over heads) outside the aggregator.
With ``normalize_weights`` the weights are rescaled to Σw = 1 whatever the method.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from mogradient import (
    AdvantageCombiner,
    Aggregator,
    GramianWeighting,
    LossWeighting,
    dispatch,
    get_aggregator,
    registered,
)
from mogradient_llm.config import MOConfig

AllReduceSum = Callable[[torch.Tensor], torch.Tensor]
Stats = dict[str, float]


def build_aggregator(config: MOConfig) -> Aggregator:
    """The registry aggregator named by ``config.aggregator`` with ``aggregator_kwargs`` (and
    ``reward_weights`` as its preference)."""
    cls = registered().get(config.aggregator)
    if config.reward_weights is not None and cls is not None:
        if not cls.preference_aware:
            aware = sorted(name for name, c in registered().items() if c.preference_aware)
            raise TypeError(
                f"reward_weights={config.reward_weights} are the preference of a "
                f"preference-aware aggregator ({', '.join(aware)}), and {config.aggregator!r} "
                "takes none; drop reward_weights or pick such an aggregator"
            )
    return get_aggregator(config.aggregator, **config.aggregator_arguments())


def _normalized(weights: torch.Tensor, normalize: bool) -> tuple[torch.Tensor, Stats]:
    """``weights / Σ weights`` when ``normalize`` (and the sum is positive); logs the raw sum."""
    total = float(weights.sum())
    if normalize and total > 0:
        weights = weights / total
    return weights, {"agg/weight_sum": total}


class _Level:
    """What one kind of aggregator does at each stage; the default at every stage: nothing."""

    gradient_level = False

    def __init__(self, combiner: ObjectiveCombiner):
        self.names = combiner.names
        self.normalize = combiner.config.normalize_weights

    def _weight_stats(self, weights: torch.Tensor) -> Stats:
        return {f"agg/weight/{n}": float(w) for n, w in zip(self.names, weights)}

    def scalarize(
        self, advantages: torch.Tensor, losses: torch.Tensor
    ) -> tuple[torch.Tensor, Stats]:
        return advantages, {}

    def combine(
        self,
        advantages: torch.Tensor,
        mask: torch.Tensor,
        all_reduce_sum: AllReduceSum | None,
        valid: torch.Tensor | None,
    ) -> tuple[torch.Tensor, Stats]:
        return advantages, {}

    def gramian_weights(
        self, gramian: torch.Tensor, losses: torch.Tensor
    ) -> tuple[torch.Tensor, Stats]:
        raise TypeError("only Gramian weightings decide weights from a Gramian")


class _LossLevel(_Level):
    """Loss weightings: ``Σ wᵢ Aᵢ`` before whitening and Noon (MORLHF)."""

    def __init__(self, combiner: ObjectiveCombiner, aggregator: LossWeighting):
        super().__init__(combiner)
        self.aggregator = aggregator

    def scalarize(
        self, advantages: torch.Tensor, losses: torch.Tensor
    ) -> tuple[torch.Tensor, Stats]:
        raw = self.aggregator.weights(losses.to(torch.float64))
        weights, stats = _normalized(raw, self.normalize)
        weights = weights.to(advantages)
        stats.update(self._weight_stats(weights))
        return torch.tensordot(weights, advantages, dims=1).unsqueeze(0), stats


class _AdvantageLevel(_Level):
    """Advantage combiners (PAMA): one advantage per token after the Noon clip."""

    def __init__(self, combiner: ObjectiveCombiner, aggregator: AdvantageCombiner):
        super().__init__(combiner)
        self.aggregator = aggregator

    def combine(
        self,
        advantages: torch.Tensor,
        mask: torch.Tensor,
        all_reduce_sum: AllReduceSum | None,
        valid: torch.Tensor | None,
    ) -> tuple[torch.Tensor, Stats]:
        if valid is None or bool(valid.all()):
            # every objective scored every completion: the call of a combiner that predates
            # the validity mask (combine(advantages, mask, all_reduce_sum))
            combined, weights, s_star = self.aggregator.combine(advantages, mask, all_reduce_sum)
        else:  # [k, B] per completion → every token of it
            valid = valid.reshape(*valid.shape, *[1] * (advantages.ndim - valid.ndim))
            combined, weights, s_star = self.aggregator.combine(
                advantages, mask, all_reduce_sum, valid=valid.expand_as(advantages)
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
        return combined.to(advantages.dtype).unsqueeze(0), stats


class _GradientLevel(_Level):
    """Gramian weightings: weights from the global Gramian, then one backward of Σ wᵢ Lᵢ."""

    gradient_level = True

    def __init__(self, combiner: ObjectiveCombiner, aggregator: GramianWeighting):
        super().__init__(combiner)
        self.aggregator = aggregator

    def gramian_weights(
        self, gramian: torch.Tensor, losses: torch.Tensor
    ) -> tuple[torch.Tensor, Stats]:
        # Only methods that read the loss values get them: the others would refuse an
        # overflowing mean they never use.
        values = losses.to(torch.float64) if self.aggregator.uses_loss_values else None
        raw = self.aggregator.weights(gramian, values)
        weights, stats = _normalized(raw, self.normalize)
        stats.update(self._weight_stats(weights))
        return weights, stats


class ObjectiveCombiner:
    """Applies one aggregator at the level its kind calls for: ``aggregator``, or the registry's
    one that ``config`` names."""

    def __init__(
        self, config: MOConfig, names: Sequence[str], aggregator: Aggregator | None = None
    ):
        self.config = config
        self.names = list(names)
        self.aggregator = build_aggregator(config) if aggregator is None else aggregator
        self._level: _Level = dispatch(
            self.aggregator,
            losses=lambda agg: _LossLevel(self, agg),
            advantages=lambda agg: _AdvantageLevel(self, agg),
            gramian=lambda agg: _GradientLevel(self, agg),
        )

    @property
    def gradient_level(self) -> bool:
        """Whether the weights are decided from gradients (a Gramian method)."""
        return self._level.gradient_level

    @staticmethod
    def objective_losses(
        scores: torch.Tensor, all_reduce_sum: AllReduceSum | None = None
    ) -> torch.Tensor:
        """The loss values that loss-reading methods decide from: ``−`` each objective's mean
        raw score ``[k, B] → [k]`` over every process's batch (so all ranks decide alike),
        leaving out the scores a reward could not give (NaN).

        Methods that need positive losses (GLS, DWA, FAMO, UW) then need rewards that stay
        negative; they say so by name if not.
        """
        valid = ~torch.isnan(scores)
        totals = torch.cat([scores.nan_to_num(0.0).sum(1), valid.sum(1).to(scores)])
        if all_reduce_sum is not None:
            totals = all_reduce_sum(totals)
        k = scores.shape[0]
        return -(totals[:k] / totals[k:].clamp(min=1))

    def scalarize(
        self, advantages: torch.Tensor, losses: torch.Tensor
    ) -> tuple[torch.Tensor, Stats]:
        """Loss weightings: ``[k, ...]`` → ``Σ wᵢ Aᵢ`` ``[1, ...]`` with ``w`` decided from the
        objectives' ``losses [k]``; other kinds: unchanged."""
        return self._level.scalarize(advantages, losses)

    def scalarizer(
        self, losses: torch.Tensor, stats: Stats, total: float = 1.0
    ) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """For an estimator: loss weightings' ``x [k, ...] → Σ wᵢ xᵢ [1, ...]`` with the weights
        of ``losses`` (their stats go into ``stats``); ``None`` for every other kind.

        ``total``: with ``normalize_weights``, what the weights sum to instead of 1 (GRPO and RLOO
        weigh the rewards at TRL's scale, ``Σ reward_weights``)."""
        if not isinstance(self._level, _LossLevel):
            return None
        factor = total if self.config.normalize_weights else 1.0

        def scalarize(x: torch.Tensor) -> torch.Tensor:
            out, weight_stats = self._level.scalarize(x, losses)
            stats.update(weight_stats)
            return out * factor if factor != 1.0 else out

        return scalarize

    def combine_advantages(
        self,
        advantages: torch.Tensor,
        mask: torch.Tensor,
        all_reduce_sum: AllReduceSum | None = None,
        valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Stats]:
        """Advantage combiners (after the Noon clip): ``[k, B, T]`` → ``[1, B, T]``; other
        kinds: unchanged. ``all_reduce_sum`` lets batch statistics span the processes;
        ``valid`` (``[k, B]`` or ``[k, B, T]``, bool) says which objectives scored each
        completion: the combine is over those only (a reward that returned ``None`` takes no
        part), and a completion none scored gets 0."""
        return self._level.combine(advantages, mask, all_reduce_sum, valid)

    def gramian_weights(
        self, gramian: torch.Tensor, losses: torch.Tensor
    ) -> tuple[torch.Tensor, Stats]:
        """Gramian methods: the weights for a global Gramian (normalised per the config; from
        :class:`mogradient.GramianAccumulator`) and the objectives' ``losses``, and stats."""
        return self._level.gramian_weights(gramian, losses)

    def policy_loss(self, losses: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        """``Σ wᵢ Lᵢ`` at the gradient level; the single combined loss otherwise."""
        if weights is None:
            return losses[0]
        return weights.to(losses) @ losses
