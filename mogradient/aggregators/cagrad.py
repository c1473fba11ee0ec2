"""CAGrad: conflict-averse gradient descent (Liu et al., NeurIPS 2021)."""

from __future__ import annotations

import math

import numpy as np

from mogradient.aggregation.kinds import GramianWeighting, Property
from mogradient.aggregation.registry import register
from mogradient.solvers import cagrad_update


@register("cagrad")
class CAGrad(GramianWeighting):
    """The update d that maximises the worst objective's improvement ``minᵢ gᵢ·d`` inside the
    ball ``‖d − g₀‖ ≤ c‖g₀‖`` around the mean gradient g₀.

    Its dual is ``min_w g_wᵀg₀ + c‖g₀‖‖g_w‖`` over the simplex, solved exactly on the Gramian
    (:func:`mogradient.solvers.cagrad_update`; the reference code calls scipy SLSQP at 0.7–53 ms,
    TorchJD cvxpy), and ``d = g₀ + (c‖g₀‖/‖g_w‖) g_w``: loss weights ``1/n + (c‖g₀‖/‖g_w‖) w``.
    When ``g_w = 0`` (the hull of the gradients contains 0 and no w makes the dual negative:
    always the case for c ≥ 1 at such points) every d of the ball with ``minᵢ gᵢ·d ≥ 0`` is
    optimal and the one nearest to g₀ is returned: the projection of g₀ onto the dual cone of
    the gradients, not g₀ itself. So with ``c ≥ 1`` the update conflicts with no objective, and
    ``c = 0`` gives the mean exactly. Cost: n backwards for the Gramian, then a solve of a few µs.
    Reference: Liu, Liu, Jin, Stone & Liu, *Conflict-Averse Gradient Descent for Multi-task
    Learning*, NeurIPS 2021.

    Args:
        c: radius of the ball relative to ‖g₀‖, ``c ≥ 0`` (the paper uses 0.4–0.5). Larger c
            trades average progress for the worst objective's progress; from c = 1 on, no
            objective gets worse to first order.
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
    example_settings = ({"c": 0.0}, {"c": 0.9}, {"c": 1.0}, {"c": 2.5})

    def __init__(self, c: float = 0.4) -> None:
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or c < 0:
            raise ValueError(
                f"c must be a finite number >= 0 (the radius of the ball around the mean "
                f"gradient, relative to its norm; the paper uses 0.4-0.5), got {c!r}"
            )
        self.c = float(c)

    #: Near a Pareto-stationary point ``c‖g₀‖/‖g_w‖`` is large (up to ``c·10³``) and the sum
    #: cancels, so a float32 or bfloat16 Jacobian is combined in float64 blocks and rounded once.
    combine_in_float64 = True

    def claims(self) -> frozenset[Property]:
        if self.c >= 1.0:  # F(w) ≥ (c − 1)‖g₀‖‖g_w‖ ≥ 0, and minᵢ gᵢ·d equals min F
            return self.properties | {"non_conflicting"}
        return self.properties

    def _hyperparameters(self) -> dict[str, object]:
        return {"c": self.c}

    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        return cagrad_update(gramian, self.c)
