"""The implicit gradient step of a learned log-scale per objective (``uw``, ``imtl-l``): the
backward-Euler step of ``½e^(−s)L + ½s`` in s, solved exactly with the Lambert W function."""

from __future__ import annotations

import math

import numpy as np

#: The log-variances are kept in [-S_MAX, S_MAX] so that exp(∓s) stays finite in float64.
S_MAX = 700.0


def _log_lambert_w_exp(a: np.ndarray) -> np.ndarray:
    """log W(eᵃ) for real ``a`` (W: the principal Lambert W), without forming eᵃ.

    y = log W(eᵃ) is the root of g(y) = eʸ + y − a, convex and increasing in y, so Newton's
    method converges from any start; after its first step the iterates decrease monotonically.
    The start min(a, log a) (log a for a > 1) keeps eʸ finite for any finite a.
    """
    y = np.where(a > 1.0, np.log(np.maximum(a, 1.0)), a)
    for _ in range(100):
        ey = np.exp(y)
        step = (ey + y - a) / (ey + 1.0)
        y = y - step
        if np.all(np.abs(step) <= 1e-15 * (1.0 + np.abs(y))):
            break
    return y


def implicit_step(s: np.ndarray, losses: np.ndarray, lr: float) -> np.ndarray:
    """The s' solving s' = s − lr·½(1 − L·e^(−s')), clipped to [-700, 700].

    With u = s' − s + lr/2 this reads u·eᵘ = (lr/2)·L·e^(lr/2 − s), so u = W((lr/2)·L·e^(lr/2−s))
    (principal branch), computed in log space as y = log u = log W(eᵃ), a = log(lr/2) + log L +
    lr/2 − s. Then s' = s − lr/2 + u, or equivalently (taking logs of u·eᵘ = ...)
    s' = log L − (y − log(lr/2)); the first form is used while lr/2 and u are ≤ 1 (no
    cancellation), the second beyond (no cancellation of two large terms: as lr → ∞ it tends to
    the minimiser log L). A zero loss gives u = 0: s' = s − lr/2.
    """
    half = 0.5 * lr
    out = s - half  # the zero-loss step
    positive = losses > 0
    if positive.any():
        log_l = np.log(losses[positive])
        y = _log_lambert_w_exp(math.log(half) + log_l + half - s[positive])
        u = np.exp(y)
        small = (u <= 1.0) & (half <= 1.0)
        out[positive] = np.where(small, s[positive] - half + u, log_l - (y - math.log(half)))
    return np.clip(out, -S_MAX, S_MAX)


def checked_init(init: object, exponential: str) -> float:
    """``init``, a finite number within ``[-S_MAX, S_MAX]`` (``exponential``: what of it must
    stay finite, named in the error)."""
    if isinstance(init, bool) or not isinstance(init, (int, float)) or not math.isfinite(init):
        raise ValueError(f"init must be a finite number, got {init!r}")
    if abs(init) > S_MAX:
        raise ValueError(
            f"init must lie in [-{S_MAX:g}, {S_MAX:g}] ({exponential} must stay finite), "
            f"got {init!r}"
        )
    return float(init)
