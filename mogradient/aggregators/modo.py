"""MoDo: Multi-objective gradient with Double sampling (Chen et al., JMLR 2024)."""

from __future__ import annotations

import numpy as np

from mogradient.aggregation.checks import positive_or_hint
from mogradient.aggregation.cross_gramian import CrossGramianWeighting
from mogradient.aggregation.registry import register
from mogradient.solvers.simplex import matvec, project_onto_simplex


@register("modo")
class MoDo(CrossGramianWeighting):
    """One projected gradient step per call on MGDA's problem min ½λᵀAλ over the simplex, with
    the matrix ``A = J₁J₂ᵀ`` of two independent batches: λ ← Π_Δ(λ − γ(Aλ + ρλ)); the update
    is Σ λᵢ(g₁ᵢ + g₂ᵢ)/2.

    The weights track MGDA's min-norm weights across steps instead of solving for them, and
    the double sampling makes ``Aλ`` an unbiased estimate of the true ``Gλ`` (a single batch's
    ``J Jᵀ`` is biased by the gradients' variance), which is what the paper's guarantees on
    optimisation, generalisation and conflict avoidance rest on. ρ > 0 adds an ℓ₂ pull of λ
    towards the uniform weights.

    State: λ (uniform at the first call; restarted when the number of objectives changes);
    :meth:`reset` clears it. Not scale-invariant: γ is in the units of ``1/A``. Cost: 2n
    backwards for the two Jacobians, then O(n²). Reference: Chen, Fernando, Ying, Chen,
    *Three-Way Trade-Off in Multi-Objective Learning: Optimization, Generalization and
    Conflict-Avoidance*, JMLR 25 (2024), eq. 2.9; TorchJD 0.18's ``MoDoWeighting``. See
    ``docs/aggregators/modo.md``.

    Args:
        gamma: the step size γ > 0 of the weights' update.
        rho: the ℓ₂ regularisation ρ ≥ 0 of the weights.
    """

    properties = frozenset(
        {
            "simplex_weights",
            "non_negative_weights",
            "permutation_invariant",
            "deterministic",
            "reset_restores",
            "non_differentiable",
        }
    )
    example_settings = ({"gamma": 1.0, "rho": 0.0}, {"gamma": 0.01, "rho": 1.0})

    def __init__(self, gamma: float = 0.1, rho: float = 0.1) -> None:
        self.gamma: float = positive_or_hint(
            "gamma", gamma, "it is the step size of the weights' update"
        )
        if (
            isinstance(rho, bool)
            or not isinstance(rho, (int, float))
            or not np.isfinite(rho)
            or rho < 0
        ):
            raise ValueError(f"rho must be a finite number ≥ 0 (0: no regularisation), got {rho!r}")
        self.rho: float = float(rho)
        self._lambda: np.ndarray | None = None

    def _hyperparameters(self) -> dict[str, object]:
        return {"gamma": self.gamma, "rho": self.rho}

    def reset(self) -> None:
        self._lambda = None

    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        n = gramian.shape[0]
        lam = self._lambda
        if lam is None or lam.shape[0] != n:
            lam = np.full(n, 1.0 / n)
        step = matvec(gramian, lam) + self.rho * lam
        self._lambda = project_onto_simplex(lam - self.gamma * step)
        return self._lambda.copy()
