"""IMTL-G: the gradient part of Impartial Multi-task Learning (Liu et al., ICLR 2021)."""

from __future__ import annotations

import numpy as np

from mogradient.aggregators.base import GramianWeighting
from mogradient.aggregators.registry import register
from mogradient.solvers.imtl_g import imtl_g_weights


@register("imtl-g", "imtlg")
class IMTLG(GramianWeighting):
    """The combination d = Σ wᵢgᵢ with Σ wᵢ = 1 whose projection onto every unit gradient
    gᵢ/‖gᵢ‖ is the same (Liu et al., *Towards Impartial Multi-task Learning*, ICLR 2021).

    From the Gramian, w = G⁻¹n / 1ᵀG⁻¹n with n the gradient norms; it is solved in the cosine
    frame (eigendecomposition of N⁻¹GN⁻¹), so gradients of very different norms are still
    treated impartially. Linearly dependent gradients use G⁺ (Quinton & Rey, *Jacobian Descent
    for Multi-Objective Optimization*, arXiv 2406.16232, 2024, as TorchJD). The weights are
    zero when 1ᵀG⁺n vanishes or every gradient is zero. Cost: n backwards for the Gramian, then
    one or two n×n eigendecompositions (a few µs). See ``docs/aggregators/imtl-g.md``.

    The common projection can be negative (every objective then gets worse to first order), so
    IMTL-G is not claimed to be non-conflicting.
    """

    properties = frozenset(
        {
            "permutation_invariant",
            "scale_equivariant",
            "deterministic",
            "reset_restores",
            "non_differentiable",
        }
    )

    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        return imtl_g_weights(gramian)
