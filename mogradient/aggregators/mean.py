"""The plain average of the objectives."""

from __future__ import annotations

import numpy as np

from mogradient.aggregation.kinds import LossWeighting
from mogradient.aggregation.registry import register


@register("mean")
class Mean(LossWeighting):
    """(1/n) Σ Lᵢ: the single-objective baseline. One backward; no conflict handling at all."""

    uses_loss_values = False
    properties = frozenset(
        {
            "simplex_weights",
            "permutation_invariant",
            "scale_equivariant",
            "deterministic",
            "reset_restores",
            "non_differentiable",
        }
    )

    def _weigh(self, losses: np.ndarray) -> np.ndarray:
        return np.full(losses.shape[0], 1.0 / losses.shape[0])
