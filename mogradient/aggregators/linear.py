"""Linear scalarisation with a fixed preference (MORLHF's baseline)."""

from __future__ import annotations

import numpy as np

from mogradient.aggregation.kinds import LossWeighting
from mogradient.aggregation.preference import DRAWN_SPARSE_PREFERENCE, PreferenceAware
from mogradient.aggregation.registry import register


@register("linear", "morlhf")
class Linear(PreferenceAware, LossWeighting):
    """Σ pᵢ Lᵢ with a fixed preference p on the simplex (the MORLHF baseline of the PAMA paper).

    Needs no Gramian and no loss values: training costs one backward of the weighted loss. Each
    preference reaches one point of a convex Pareto front; non-convex parts are unreachable.
    Reference: the weighted-sum method (Zadeh 1963); MORLHF in Wu et al. 2023.

    Args:
        preference: one non-negative entry per objective, not all zero, normalised to sum to 1
            (:class:`~mogradient.aggregators.Preference`); ``None``: uniform (then it equals
            ``mean``).
    """

    uses_loss_values = False
    properties = frozenset(
        {
            "simplex_weights",
            "scale_equivariant",
            "deterministic",
            "reset_restores",
            "non_differentiable",
        }
    )  # plus "permutation_invariant" with the uniform preference: see claims()
    example_settings = ({"preference": DRAWN_SPARSE_PREFERENCE},)

    def _weigh(self, losses: np.ndarray) -> np.ndarray:
        return self.preference.resolve(losses.shape[0])
