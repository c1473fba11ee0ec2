"""MGDA: the exact min-norm point of the convex hull of the gradients (Désidéri 2012)."""

from __future__ import annotations

import numpy as np

from mogradient.aggregation.kinds import GramianWeighting
from mogradient.aggregation.registry import register
from mogradient.solvers import min_norm
from mogradient.solvers.checked import min_norm_into


@register("mgda")
class MGDA(GramianWeighting):
    """Weights c on the simplex minimising ‖Σ cᵢ gᵢ‖² = cᵀGc (Désidéri 2012; Sener & Koltun 2018).

    The direction d = Σ cᵢ gᵢ satisfies gᵢ·d ≥ ‖d‖² ≥ 0 for every objective: it never makes any
    objective worse to first order, and it is zero exactly at Pareto-stationary points. Solved
    exactly on the n×n Gramian by an active-set (Wolfe) method with incremental Cholesky updates
    (:func:`mogradient.solvers.min_norm`). Cost: n backwards for the Gramian (or n backwards to
    a shared representation, the MGDA-UB bound, via ``mogradient.backward(..., features=h)``)
    plus a solve of a few µs.

    Args:
        warm_start: start each solve from the previous step's support (same exact answer, fewer
            iterations on a slowly drifting Gramian). Cleared by :meth:`reset`.
    """

    properties = frozenset(
        {
            "simplex_weights",
            "non_conflicting",
            "permutation_invariant",
            "scale_equivariant",
            "min_norm_kkt",
            "deterministic",
            "reset_restores",
            "non_differentiable",
        }
    )
    example_settings = ({"warm_start": True},)

    def __init__(self, warm_start: bool = False) -> None:
        if not isinstance(warm_start, bool):
            raise TypeError(f"warm_start must be True or False, got {warm_start!r}")
        self.warm_start = warm_start
        self._previous: np.ndarray | None = None

    def _hyperparameters(self) -> dict[str, object]:
        return {"warm_start": self.warm_start}

    def _checked_into(self, address: int, n: int, out: int) -> bool:
        # with a warm start, the general path keeps the previous weights
        return not self.warm_start and min_norm_into(address, n, out)

    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        previous = self._previous
        if previous is not None and previous.shape[0] != gramian.shape[0]:
            previous = None
        w = min_norm(gramian, warm_start=previous if self.warm_start else None)
        if self.warm_start:
            self._previous = w
        return w

    def reset(self) -> None:
        self._previous = None
