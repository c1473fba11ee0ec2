"""Nash-MTL: the Nash bargaining solution of the objectives (Navon et al., ICML 2022)."""

from __future__ import annotations

import numpy as np

from mogradient.aggregation.kinds import GramianWeighting
from mogradient.aggregation.registry import register
from mogradient.aggregators._norm_cap import check_max_norm
from mogradient.solvers.nash_mtl import nash_mtl_weights


@register("nash-mtl", "nashmtl")
class NashMTL(GramianWeighting):
    """Weights α > 0 with ``αᵢ (G α)ᵢ = 1`` for every objective: the update ``d = Σ αᵢ gᵢ``
    maximises ``Σ log(gᵢ·d)`` (the Nash bargaining solution) for its norm.

    Solved exactly on the Gramian by Newton's method on ``½αᵀGα − Σ log αᵢ`` (strictly convex),
    in the cosine-normalised form (:func:`mogradient.solvers.nash_mtl.nash_mtl_weights`), to
    machine precision in a few µs; the reference code runs up to 20 cvxpy/ECOS solves per step.
    Every objective improves to first order (``gᵢ·d = 1/αᵢ > 0``) and the unclipped direction
    has norm √n: it does not change when J is scaled or when one objective's loss is scaled.
    Zero gradients get weight 0; Pareto-stationary gradients (0 in their convex hull, to working
    precision) have no bargaining solution and get all-zero weights. Cost: n backwards for the
    Gramian plus the solve.

    Reference: Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik, Fetaya, *Multi-Task
    Learning as a Bargaining Game*, ICML 2022 (arXiv:2202.01017).

    Args:
        max_norm: scale the weights down so that ‖Σ αᵢ gᵢ‖ ≤ ``max_norm`` (the reference code
            clips the shared gradient's norm to 1.0 after the backward; same effect). The exact
            direction has norm √n, so for n ≥ 2 the default always yields a unit-norm update.
            ``None`` disables it (the reference's and TorchJD's ``max_norm=0``).
    """

    properties = frozenset(
        {
            "non_negative_weights",
            "non_conflicting",
            "permutation_invariant",
            "deterministic",
            "reset_restores",
            "non_differentiable",
        }
    )
    example_settings = ({"max_norm": None},)

    def __init__(self, max_norm: float | None = 1.0) -> None:
        self.max_norm = check_max_norm(max_norm)

    def _hyperparameters(self) -> dict[str, object]:
        return {"max_norm": self.max_norm}

    def weight_exponent(self) -> float:
        """``αᵢ(κGα)ᵢ = 1`` is solved by ``α/√κ``: ``p = −1/2`` (the direction does not change
        when J is scaled)."""
        return -0.5

    def norm_cap(self) -> float | None:
        return self.max_norm

    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        return nash_mtl_weights(gramian)
