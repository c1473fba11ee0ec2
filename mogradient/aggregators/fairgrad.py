"""FairGrad: α-fair resource allocation among the objectives (Ban & Ji, ICML 2024)."""

from __future__ import annotations

import numpy as np

from mogradient.aggregation.checks import positive_number
from mogradient.aggregation.kinds import GramianWeighting
from mogradient.aggregation.registry import register
from mogradient.aggregators._norm_cap import check_max_norm
from mogradient.solvers.fairgrad import fairgrad_weights


@register("fairgrad")
class FairGrad(GramianWeighting):
    """Weights w > 0 with ``(G w)ᵢ = wᵢ^(−1/α)``: the update ``d = Σ wᵢ gᵢ`` maximises the
    α-fair utility ``Σ (gᵢ·d)^(1−α)/(1−α) − ½‖d‖²`` of the objectives' improvements.

    ``α → 0`` approaches the plain sum, ``α = 1`` is proportional fairness (Nash-MTL's system,
    exactly), larger α favours the objective that improves least (``α → ∞``: max-min fairness).
    Solved exactly on the Gramian by Newton's method on a strictly convex potential
    (:func:`mogradient.solvers.fairgrad.fairgrad_weights`), to machine precision in a few µs;
    the reference code calls ``scipy.optimize.least_squares``. Every objective improves to first
    order (``gᵢ·d = wᵢ^(−1/α) > 0``). Under ``J → aJ`` the direction scales as
    ``a^((1−α)/(1+α))``: it is scale-equivariant only in the α → 0 limit and scale-invariant at
    α = 1. Zero gradients get weight 0; Pareto-stationary gradients get all-zero weights (no
    solution exists). Cost: n backwards for the Gramian plus the solve.

    Reference: Ban & Ji, *Fair Resource Allocation in Multi-Task Learning*, ICML 2024
    (arXiv:2402.15638).

    Args:
        alpha: the fairness exponent, ``α > 0`` (the reference code's default is 1; the paper
            tunes it per benchmark, e.g. 2 on QM9). For α = 0 (the sum) use ``linear``/``mean``.
        max_norm: scale the weights down so that ‖Σ wᵢ gᵢ‖ ≤ ``max_norm`` (the reference code
            clips the shared gradient to 1.0 after the backward). ``None`` disables it, as in
            TorchJD's ``FairGrad``, which has no clipping.
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
    example_settings = ({"alpha": 0.5}, {"alpha": 2.0}, {"max_norm": None})

    def __init__(self, alpha: float = 1.0, max_norm: float | None = 1.0) -> None:
        self.alpha = positive_number(
            "alpha",
            alpha,
            "alpha=0 makes the system degenerate (its limit is the plain sum of the losses); "
            "use get_aggregator('linear') or 'mean' for that, or pass alpha > 0",
        )
        self.max_norm = check_max_norm(max_norm)

    def _hyperparameters(self) -> dict[str, object]:
        return {"alpha": self.alpha, "max_norm": self.max_norm}

    def weight_exponent(self) -> float:
        """``(κGw)ᵢ = wᵢ^(−1/α)`` is solved by ``κ^(−α/(1+α)) w``: ``p = −α/(1+α)``."""
        return -self.alpha / (1.0 + self.alpha)

    def norm_cap(self) -> float | None:
        return self.max_norm

    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        return fairgrad_weights(gramian, self.alpha)
