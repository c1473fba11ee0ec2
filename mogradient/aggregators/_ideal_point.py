"""What Tchebycheff and STCH share (private: the registry skips it): the ideal point z, its
validation, and the preference-weighted gaps pᵢ(Lᵢ − zᵢ)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from mogradient.aggregation.kinds import LossWeighting, Property
from mogradient.aggregation.preference import Preference

Ideal = float | Sequence[float] | np.ndarray | None


def check_ideal(ideal: Ideal) -> float | np.ndarray | None:
    """Validate an ideal point: ``None`` (0), one number for every objective, or one per
    objective; returned as a float or a float64 vector."""
    if ideal is None:
        return None
    if isinstance(ideal, bool):
        raise TypeError(f"ideal must be a number, a sequence of numbers or None, got {ideal!r}")
    if isinstance(ideal, (int, float, np.floating, np.integer)):
        if not math.isfinite(float(ideal)):
            raise ValueError(f"ideal must be finite, got {ideal!r}")
        return float(ideal)
    if isinstance(ideal, (str, bytes)) or not hasattr(ideal, "__len__"):
        raise TypeError(f"ideal must be a number, a sequence of numbers or None, got {ideal!r}")
    z = np.asarray(ideal, dtype=np.float64)
    if z.ndim != 1 or z.shape[0] == 0:
        raise ValueError(f"ideal must be a number or a non-empty 1-D sequence, got shape {z.shape}")
    if not np.isfinite(z).all():
        raise ValueError(f"ideal must be finite, got {z.tolist()}")
    return z.copy()


def resolve_ideal(ideal: float | np.ndarray | None, n: int) -> np.ndarray:
    """The ideal point as a float64 vector of length ``n`` (length checked)."""
    if ideal is None:
        return np.zeros(n)
    if isinstance(ideal, float):
        return np.full(n, ideal)
    if ideal.shape[0] != n:
        raise ValueError(
            f"the ideal point has {ideal.shape[0]} entries but got {n} objectives; pass one "
            "entry per objective (or one number for all)"
        )
    return ideal


def ideal_repr(ideal: float | np.ndarray | None) -> object:
    if ideal is None or isinstance(ideal, float):
        return ideal
    return [float(v) for v in ideal]


def is_uniform(preference: Preference, ideal: float | np.ndarray | None) -> bool:
    """Whether neither the preference nor the ideal point tells the objectives apart."""
    p = preference.values
    uniform_p = p is None or bool(np.all(p == p[0]))
    uniform_z = not isinstance(ideal, np.ndarray) or bool(np.all(ideal == ideal[0]))
    return uniform_p and uniform_z


class IdealPointWeighting(LossWeighting):
    """What Tchebycheff and STCH share: a preference p and an ideal point z (validated here),
    the scaled gaps pᵢ(Lᵢ − zᵢ), and their claims (permutation-invariant only when neither p
    nor z tells the objectives apart)."""

    properties = frozenset(
        {
            "non_negative_weights",
            "scale_equivariant",
            "deterministic",
            "reset_restores",
            "non_differentiable",
        }
    )  # plus "permutation_invariant" with a uniform preference and ideal point: see claims()
    preference_aware = True

    def __init__(
        self,
        preference: Sequence[float] | None = None,
        ideal: float | Sequence[float] | None = None,
    ) -> None:
        self.preference = Preference(preference)
        self.ideal = check_ideal(ideal)
        #: Whether the losses-below-the-ideal-point warning was given (once per instance).
        self.warned_below_ideal = False

    def claims(self) -> frozenset[Property]:
        if is_uniform(self.preference, self.ideal):
            return self.properties | {"permutation_invariant"}
        return self.properties

    def _hyperparameters(self) -> dict[str, object]:
        return {"preference": self.preference, "ideal": ideal_repr(self.ideal)}

    def _gaps(self, losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The preference p resolved for ``losses`` and the scaled gaps p ⊙ (L − z)."""
        n = losses.shape[0]
        p = self.preference.resolve(n)
        gaps = losses - resolve_ideal(self.ideal, n)
        if not self.warned_below_ideal and (gaps < 0).any() and p.max() > p.min():
            self.warned_below_ideal = True
            below = np.flatnonzero(gaps < 0)
            warnings.warn(
                f"{self!r}: the losses of objectives {below.tolist()} "
                f"({losses[below].tolist()}) lie below the ideal point "
                f"({resolve_ideal(self.ideal, n)[below].tolist()}), so pᵢ(Lᵢ − zᵢ) < 0 and a "
                "larger preference pᵢ makes objective i less likely to count as the worst: the "
                "preference is inverted. Pass ideal= a lower bound of the losses (e.g. "
                "ideal=min(losses) - 1), or shift the losses by a constant so that they stay "
                "above it. (Warned once per instance.)",
                UserWarning,
                stacklevel=4,
            )
        return p, p * gaps
