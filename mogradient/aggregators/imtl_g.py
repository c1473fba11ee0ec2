"""IMTL-G: the gradient part of Impartial Multi-task Learning (Liu et al., ICLR 2021)."""

from __future__ import annotations

import numpy as np

from mogradient.aggregation.kinds import GramianWeighting
from mogradient.aggregation.registry import register
from mogradient.solvers.checked import imtl_g_into
from mogradient.solvers.imtl_g import imtl_g_weights


@register("imtl-g", "imtlg")
class IMTLG(GramianWeighting):
    """The combination d = Σ wᵢgᵢ with Σ wᵢ = 1 whose projection onto every unit gradient
    gᵢ/‖gᵢ‖ is the same.

    Reference: Liu et al., *Towards Impartial Multi-task Learning*, ICLR 2021 (IMTL-G, the
    gradient part of IMTL).

    With N = diag(‖gᵢ‖) and the cosine matrix Ĝ = N⁻¹GN⁻¹, w = N⁻¹Ĝ⁻¹1 / 1ᵀN⁻¹Ĝ⁻¹1
    (= G⁻¹N1 / 1ᵀG⁻¹N1). Solving in the cosine frame keeps gradients of very different norms
    impartial. Linearly dependent gradients take Ĝ⁺1, the least-squares solution in the same
    frame (TorchJD's G⁺N1 differs there: see the docs page). The weights are zero when the sum
    vanishes or every gradient is zero. Cost: n backwards for the Gramian, then one n×n
    eigendecomposition (a few µs). See ``docs/aggregators/imtl-g.md``.

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

    #: The compiled call itself (no Python frame in between: the call is a few µs in all).
    _checked_into = staticmethod(imtl_g_into)  # type: ignore[assignment]

    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        return imtl_g_weights(gramian)
