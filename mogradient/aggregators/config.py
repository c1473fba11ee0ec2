"""ConFIG: conflict-free inverse gradients (Liu et al., ICLR 2025, arXiv 2408.11104)."""

from __future__ import annotations

import numpy as np

from mogradient.aggregation.kinds import GramianWeighting
from mogradient.aggregation.preference import PreferenceAware
from mogradient.aggregation.registry import register
from mogradient.solvers.config_method import config_weights


@register("config", "conflict-free")
class ConFIG(PreferenceAware, GramianWeighting):
    """The direction ŭ = U⁺p with projections p on the unit gradients U, rescaled to the sum
    of the gradients' projections on it: d = (Σᵢ gᵢ·û) û, û = ŭ/‖ŭ‖.

    Reference: Liu, Chu, Thuerey, *ConFIG: Towards Conflict-free Training of Physics Informed
    Neural Networks*, ICLR 2025 (arXiv 2408.11104, Eq. 2).

    For linearly independent gradients and p = 1, every unit gradient has the same projection
    on û, so no objective conflicts with d. From the Gramian, ŭ = Jᵀβ with β = N⁻¹Ĝ⁺p
    (Ĝ the cosine matrix), returned as loss weights β·(Σᵢ gᵢ·ŭ)/‖ŭ‖². Cost: n backwards for the
    Gramian, then one n×n eigendecomposition (a few µs). See ``docs/aggregators/config.md``.

    Args:
        preference: the target projections p (non-negative, normalised to sum to 1; only the
            direction of p matters); ``None``: equal projections.
    """

    properties = frozenset(
        {
            "scale_equivariant",
            "deterministic",
            "reset_restores",
            "non_differentiable",
        }
    )  # plus "permutation_invariant" with the uniform preference: see claims()

    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        return config_weights(gramian, self.preference.resolve(gramian.shape[0]))
