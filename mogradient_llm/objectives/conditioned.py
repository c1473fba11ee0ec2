"""Each sample's own preference in the multi-objective loss (a preference-conditioned policy).

A conditioned batch holds prompts read under different preferences (one ``[k]`` row per
sample, :mod:`mogradient_llm.inputs.preferences`). The method's weighting is then decided per
preference, by an aggregator of the configured method built for that preference
(:class:`PerPreference`), afresh at every step (so no method's state mixes preferences):

* loss weightings (``linear``, ``tchebycheff``, ``stch``, ``pbi``, ``cosmos``): sample ``b``'s
  advantage is ``Σᵢ wᵢ(p_b) Aᵢ,b``, with ``w(p_b)`` the weights that method gives the batch's
  loss values under ``p_b`` (``linear``: ``p_b`` itself);
* advantage combiners (``softmin``): each preference's samples are combined alone, by the
  combiner built for it (its normalisation over those samples' tokens, on each rank alone);
* Gramian weightings are refused (:func:`check_conditionable`): one weighting per preference
  would need one Gramian, so one backward, per prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from mogradient import AdvantageCombiner, Aggregator, LossWeighting, registered
from mogradient_llm.objectives.advantages import Advantages

#: Builds the configured method for one preference (a list of k floats summing to 1).
AggregatorFactory = Callable[[Sequence[float]], Aggregator]
Stats = dict[str, float]


def check_conditionable(aggregator: Aggregator, constrained: bool) -> None:
    """Raise unless ``aggregator``'s method can weigh each sample by its own preference."""
    name = type(aggregator).__name__
    aware = sorted(n for n, c in registered().items() if c.preference_aware)
    per_sample = sorted(
        n
        for n, c in registered().items()
        if c.preference_aware and issubclass(c, LossWeighting | AdvantageCombiner)
    )
    if not type(aggregator).preference_aware:
        raise ValueError(
            f"a conditioned policy is trained with each prompt's own preference, and {name} "
            f"takes no preference, so the loss would ignore it; use a preference-aware method "
            f"({', '.join(per_sample)})"
        )
    if not isinstance(aggregator, LossWeighting | AdvantageCombiner):
        raise ValueError(
            f"{name} decides one weighting per batch from the Gramian of the objectives' "
            f"gradients; a conditioned batch holds one preference per prompt, which would need "
            f"one Gramian (one backward) per prompt. Use a loss- or advantage-level "
            f"preference-aware method ({', '.join(per_sample)}), or train one policy per "
            f"preference with {name}: mogradient-llm sweep without --conditioned "
            f"(preference-aware methods: {', '.join(aware)})"
        )
    if constrained:
        raise ValueError(
            "constraints and --conditioned cannot be combined: a constrained objective's "
            "multiplier is one number for the whole batch, not one per preference; drop the "
            "constraints or train without --conditioned"
        )


def _groups(preferences: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct rows of ``preferences`` ``[B, k]`` and each sample's row index ``[B]``."""
    unique, index = torch.unique(preferences.double().cpu(), dim=0, return_inverse=True)
    return unique, index


class PerPreference:
    """The configured method per preference: one aggregator from ``factory`` per distinct
    preference of a batch.

    Args:
        factory: ``preference -> Aggregator`` of a loss weighting or an advantage combiner.
        names: the objectives, in the order of the preferences' entries.
        normalize_weights: rescale each preference's loss weights to sum to 1 (then to
            ``total``, see :meth:`sample_weights`).
    """

    def __init__(self, factory: AggregatorFactory, names: Sequence[str], normalize_weights: bool):
        self.factory = factory
        self.names = tuple(names)
        self.normalize_weights = normalize_weights

    def _check(self, preferences: torch.Tensor, batch: int) -> None:
        k = len(self.names)
        if preferences.shape != (batch, k):
            raise ValueError(
                f"preferences of shape {tuple(preferences.shape)}; expected one row of {k} "
                f"weights per sample, [{batch}, {k}]"
            )

    def sample_weights(
        self, preferences: torch.Tensor, losses: torch.Tensor, total: float = 1.0
    ) -> tuple[torch.Tensor, Stats]:
        """Loss weightings: the weights ``[k, B]`` of every sample, those the method gives the
        objectives' loss values ``losses [k]`` under that sample's preference (with
        ``normalize_weights``: rescaled to sum to ``total``); the stats are their means over
        the samples."""
        unique, index = _groups(preferences)
        rows = []
        for p in unique.tolist():
            aggregator = self.factory(p)
            if not isinstance(aggregator, LossWeighting):
                raise TypeError(f"{aggregator!r} is not a loss weighting; it does not scalarize")
            w = aggregator.weights(losses.detach().to(torch.float64).cpu())
            if self.normalize_weights and float(w.sum()) > 0:
                w = w / w.sum() * total
            rows.append(w)
        weights = torch.stack(rows)[index].T.contiguous()  # [k, B]
        stats = {f"agg/weight/{n}": float(w.mean()) for n, w in zip(self.names, weights)}
        stats["agg/weight_sum"] = float(weights.sum(0).mean())
        return weights, stats

    def scalarize(
        self, values: torch.Tensor, preferences: torch.Tensor, losses: torch.Tensor, total: float
    ) -> tuple[torch.Tensor, Stats]:
        """``values [k, B, ...]`` → ``[1, B, ...]``: each sample's ``Σᵢ wᵢ(p_b) valuesᵢ,b``."""
        self._check(preferences, values.shape[1])
        weights, stats = self.sample_weights(preferences, losses, total)
        weights = weights.to(values).reshape(*weights.shape, *[1] * (values.ndim - 2))
        return (weights * values).sum(0, keepdim=True), stats

    def combine(
        self, advantages: Advantages, mask: torch.Tensor, preferences: torch.Tensor
    ) -> tuple[Advantages, Stats]:
        """Advantage combiners: each preference's samples (``mask`` ``[B, T]`` rows) combined
        alone by the combiner built for that preference; ``[1, B, T]`` and the stats."""
        values = advantages.per_token(mask)
        self._check(preferences, values.shape[1])
        valid = advantages.valid_per_token()
        kwargs = {} if valid is None or bool(valid.all()) else {"valid": valid}
        unique, index = _groups(preferences)
        index = index.to(mask.device)
        combined = torch.zeros_like(values[0])
        weight_sums = torch.zeros(values.shape[0], dtype=torch.float64)
        for g, p in enumerate(unique.tolist()):
            combiner = self.factory(p)
            if not isinstance(combiner, AdvantageCombiner):
                raise TypeError(f"{combiner!r} is not an advantage combiner")
            group_mask = mask * (index == g).to(mask.dtype)[:, None]
            s, w, _ = combiner.combine(values, group_mask, None, **kwargs)
            combined += s.to(combined) * group_mask
            tokens = group_mask.double().cpu()
            w = w.double().cpu()
            weight_sums += (w * tokens).sum((1, 2)) if w.ndim > 1 else w * float(tokens.sum())
        means = weight_sums / float(mask.sum().clamp(min=1))
        stats = {f"agg/weight/{n}": float(m) for n, m in zip(self.names, means)}
        stats["agg/weight_sum"] = 1.0
        return Advantages.combined(combined.unsqueeze(0)), stats
