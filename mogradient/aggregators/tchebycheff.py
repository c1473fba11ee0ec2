"""Tchebycheff scalarisation: the preference-weighted worst objective."""

from __future__ import annotations

import numpy as np

from mogradient.aggregation.registry import register
from mogradient.aggregators._ideal_point import IdealPointWeighting


@register("tchebycheff", "chebyshev")
class Tchebycheff(IdealPointWeighting):
    """max over i of pᵢ(Lᵢ − zᵢ): the worst objective, weighted by the preference p, measured
    from an ideal point z.

    Its (sub)gradient is pⱼ∇Lⱼ for the arg-max j, so the weights are **pⱼ on the arg-max and 0
    elsewhere**; exact ties share, wⱼ = pⱼ/|T| on each of the |T| tied objectives (the mean of the
    tied subgradients, which is what ``torch.amax`` back-propagates). Unlike a weighted sum, every
    Pareto-optimal point, including those on non-convex parts of the front, is the minimiser for
    some preference. Only one objective moves at a time, so training zig-zags when several are
    close; ``stch`` is the smooth version. The ideal point defaults to 0, a lower bound for
    the usual non-negative losses; it should lie below the losses (with Lᵢ < zᵢ the preference's
    meaning is inverted: with a non-uniform preference a ``UserWarning`` says so, once per
    instance). Cost: one backward of
    the weighted loss; O(n) per call, no state.
    See ``docs/aggregators/tchebycheff.md``.

    Reference: Bowman, *On the Relationship of the Tchebycheff Norm and the Efficient Frontier
    of Multiple-Criteria Objectives*, 1976; Steuer & Choo, Mathematical Programming 1983;
    Miettinen, *Nonlinear Multiobjective Optimization*, Kluwer 1999.

    Args:
        preference: one non-negative entry per objective, not all zero, normalised to sum to 1
            (:class:`~mogradient.aggregators.Preference`); ``None``: uniform.
        ideal: the ideal (utopia) point z: ``None`` (0), one number for every objective, or
            one finite number per objective.
    """

    example_settings = ({"ideal": 0.0},)

    def _weigh(self, losses: np.ndarray) -> np.ndarray:
        p, values = self._gaps(losses)
        tied = values == values.max()
        return np.where(tied, p / np.count_nonzero(tied), 0.0)
