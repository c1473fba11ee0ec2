"""The plain average of the objectives."""

from __future__ import annotations

import numpy as np

from mogradient.aggregators.base import LossWeighting
from mogradient.aggregators.registry import register


@register("mean")
class Mean(LossWeighting):
    """(1/n) Σ Lᵢ: the single-objective baseline. One backward; no conflict handling at all."""

    def loss_weights(self, n_objectives: int) -> np.ndarray:
        return np.full(n_objectives, 1.0 / n_objectives)
