"""Linear scalarisation with fixed weights (MORLHF's baseline)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mogradient.aggregators.base import LossWeighting
from mogradient.aggregators.registry import register


@register("linear", "morlhf")
class Linear(LossWeighting):
    """Σ wᵢ Lᵢ with fixed non-negative weights (the MORLHF baseline of the PAMA paper).

    Needs no Gramian: training costs one backward of the weighted loss. Each weight vector
    reaches one point of a convex Pareto front; non-convex parts are unreachable.

    Args:
        weights: one non-negative weight per objective, not all zero; ``None`` means equal
            weights 1/n (then it equals ``mean``). Weights are used as given, not normalised.
    """

    def __init__(self, weights: Sequence[float] | None = None) -> None:
        if weights is None:
            self._weights = None
            return
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 1 or w.shape[0] == 0:
            raise ValueError(f"weights must be a non-empty 1-D sequence, got shape {w.shape}")
        if not np.isfinite(w).all() or (w < 0).any() or not (w > 0).any():
            raise ValueError(
                f"weights must be finite, non-negative and not all zero, got {w.tolist()}"
            )
        self._weights = w

    def _hyperparameters(self) -> dict[str, object]:
        return {"weights": None if self._weights is None else self._weights.tolist()}

    def loss_weights(self, n_objectives: int) -> np.ndarray:
        if self._weights is None:
            return np.full(n_objectives, 1.0 / n_objectives)
        if self._weights.shape[0] != n_objectives:
            raise ValueError(
                f"{self!r} has {self._weights.shape[0]} weights but got {n_objectives} "
                "objectives; pass one weight per objective"
            )
        return self._weights.copy()
