"""CAGrad: conflict-averse gradient descent (Liu et al., NeurIPS 2021)."""

from __future__ import annotations

import math

import numpy as np

from mogradient.aggregators.base import GramianWeighting
from mogradient.aggregators.registry import register
from mogradient.solvers import cagrad_weights


@register("cagrad")
class CAGrad(GramianWeighting):
    """The update d = g₀ + (√φ/‖g_w‖) g_w that maximises the worst objective's improvement
    inside the ball ‖d − g₀‖ ≤ c‖g₀‖ around the mean gradient g₀ (φ = c²‖g₀‖²).

    w solves the inner problem min over the simplex of g_wᵀg₀ + √φ‖g_w‖, exactly, on the Gramian
    (:func:`mogradient.solvers.cagrad_weights`); the returned loss weights are
    1/n + (√φ/‖g_w‖) w, so ``c = 0`` gives the mean exactly. Cost: n backwards for the Gramian,
    then a solve of a few µs (the reference code calls scipy SLSQP at 0.7–53 ms).

    Args:
        c: radius of the ball relative to ‖g₀‖, ``c ≥ 0`` (the paper uses 0.4–0.5). Larger c
            trades average progress for the worst objective's progress.
    """

    properties = frozenset(
        {
            "non_negative_weights",
            "permutation_invariant",
            "scale_equivariant",
            "deterministic",
            "reset_restores",
            "non_differentiable",
        }
    )

    def __init__(self, c: float = 0.4) -> None:
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or c < 0:
            raise ValueError(f"c must be a finite number >= 0, got {c!r}")
        self.c = float(c)

    def _hyperparameters(self) -> dict[str, object]:
        return {"c": self.c}

    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        n = gramian.shape[0]
        mean = np.full(n, 1.0 / n)
        w = cagrad_weights(gramian, self.c)
        sqrt_phi = self.c * math.sqrt(max(float(mean @ gramian @ mean), 0.0))
        gw_norm = math.sqrt(max(float(w @ gramian @ w), 0.0))
        if sqrt_phi == 0.0 or gw_norm <= 1e-12 * math.sqrt(float(np.max(np.diag(gramian)))):
            return mean  # c = 0, zero gradients, or g_w = 0: the ball's best point is g₀ itself
        return mean + (sqrt_phi / gw_norm) * w
