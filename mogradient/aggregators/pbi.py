"""PBI: penalty-based boundary intersection (Zhang & Li, MOEA/D, 2007)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mogradient.aggregation.kinds import LossWeighting, Property
from mogradient.aggregation.preference import DRAWN_PREFERENCE, Preference
from mogradient.aggregation.registry import register
from mogradient.aggregators._ideal_point import (
    check_ideal,
    ideal_repr,
    is_uniform,
    resolve_ideal,
)
from mogradient.aggregators._scalarizer import non_negative

U64 = 2.0**-53


@register("pbi")
class PBI(LossWeighting):
    """d₁ + θ·d₂ for f = L − z: the distance d₁ = f·ŵ along the preference direction
    ŵ = p/‖p‖ plus θ times the distance d₂ = ‖f − d₁ŵ‖ from that ray.

    Its gradient in L gives the weights **w = ŵ + θ·(f − d₁ŵ)/d₂**: the preference direction
    plus a pull back towards the ray (so weights can be negative). On the ray (d₂ = 0, also
    when d₂ is below the rounding of f − d₁ŵ, 2√n·γₙ₊₃‖f‖) the second term is 0, the
    subgradient of least norm. TorchJD smooths d₂ as √(d₂² + 10⁻¹²) instead, which differs
    from this by less than 10⁻¹²/(2d₂²) relative. Cost: one backward of the weighted loss;
    O(n) per call, no state. See ``docs/aggregators/pbi.md``.

    Reference: Zhang, Li, *MOEA/D: A Multiobjective Evolutionary Algorithm Based on
    Decomposition*, IEEE Trans. Evol. Comput. 11(6), 2007.

    Args:
        theta: the penalty θ ≥ 0 on the distance from the ray (the paper uses 5; 0 is the
            projection on ŵ, a linear scalarisation).
        preference: the direction w, one non-negative entry per objective, not all zero;
            ``None``: uniform.
        ideal: the reference point z: ``None`` (0), one number, or one number per objective.
    """

    properties = frozenset(
        {"scale_equivariant", "deterministic", "reset_restores", "non_differentiable"}
    )  # plus "permutation_invariant" with a uniform preference and ideal point: see claims()
    preference_aware = True
    example_settings = ({"theta": 0.0}, {"theta": 1.0, "preference": DRAWN_PREFERENCE})

    def __init__(
        self,
        theta: float = 5.0,
        preference: Sequence[float] | None = None,
        ideal: float | Sequence[float] | None = None,
    ) -> None:
        self.theta = non_negative("theta", theta)
        self.preference = Preference(preference)
        self.ideal = check_ideal(ideal)

    def claims(self) -> frozenset[Property]:
        if is_uniform(self.preference, self.ideal):
            return self.properties | {"permutation_invariant"}
        return self.properties

    def _hyperparameters(self) -> dict[str, object]:
        return {"theta": self.theta, "preference": self.preference, "ideal": ideal_repr(self.ideal)}

    def _weigh(self, losses: np.ndarray) -> np.ndarray:
        n = losses.shape[0]
        p = self.preference.resolve(n)
        direction = p / np.linalg.norm(p)
        f = losses - resolve_ideal(self.ideal, n)
        perpendicular = f - (f @ direction) * direction
        d2 = float(np.linalg.norm(perpendicular))
        rounding = 2 * np.sqrt(n) * (n + 3) * U64 / (1 - (n + 3) * U64) * float(np.linalg.norm(f))
        if self.theta == 0 or d2 <= rounding:
            return direction
        return direction + self.theta * perpendicular / d2
