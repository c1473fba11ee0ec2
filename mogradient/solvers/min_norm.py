"""Exact min-norm point of the convex hull of the gradients, computed from their Gramian (MGDA).

Minimise ``cᵀGc`` over the simplex: the instance ``s = 0`` of the active-set kernel
(:mod:`mogradient.solvers.qp`, Wolfe's nearest-point method with an updated Cholesky factor of
``M_S = G_SS + 11ᵀ``). Frank–Wolfe, which most implementations use, stalls above the optimum on
conflicting low-rank gradients; this is exact up to rounding.

Start: from the full support (one Cholesky of ``M = G + 11ᵀ``), which is the answer when every
weight of the minimiser on the affine hull is positive — the common case when the gradients are
many-dimensional and roughly independent; otherwise (a dependent gradient, or more than n/8
negative weights) from the vertex of the shortest gradient, adding points one by one. With a
warm start the previous weights' support is factored first.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from mogradient.solvers.active_set import (
    active_set,
    refine,
    seed_support,
    start_full,
    start_vertex,
)
from mogradient.solvers.factor import new_state
from mogradient.solvers.validation import OK, prepare, status_message, validated_normalised

WARM_LENGTH = 101
WARM_INVALID = 102
WARM_EMPTY = 103


@njit(cache=True)
def warm_status(warm: np.ndarray, n: int) -> tuple[int, int]:
    """Check a warm start: length n, finite, non-negative, not all zero."""
    if warm.shape[0] != n:
        return WARM_LENGTH, warm.shape[0]
    total = 0.0
    for i in range(n):
        if not (warm[i] >= 0.0 and np.isfinite(warm[i])):
            return WARM_INVALID, i
        total += warm[i]
    if total <= 0.0:
        return WARM_EMPTY, 0
    return OK, 0


@njit(cache=True)
def _two(g: np.ndarray) -> np.ndarray:
    """Closed form for two objectives; identical gradients give ``[0.5, 0.5]``."""
    off = 0.5 * (g[0, 1] + g[1, 0])
    den = g[0, 0] - 2.0 * off + g[1, 1]
    num = g[1, 1] - off
    if den > 0.0:
        gamma = min(max(num / den, 0.0), 1.0)
    elif num != 0.0:
        gamma = 1.0 if num > 0.0 else 0.0
    else:
        gamma = 0.5
    out = np.empty(2)
    out[0] = gamma
    out[1] = 1.0 - gamma
    return out


@njit(cache=True)
def min_norm_normalised(g: np.ndarray, w: np.ndarray, warm: bool, tol: float) -> int:
    """Min-norm weights of a normalised Gramian into w (w: the warm start if ``warm``).

    Returns the kernel status. Shared by :func:`min_norm` and the CAGrad solver.
    """
    n = g.shape[0]
    st = new_state(n)
    zero = np.zeros(n)
    full = True  # a warm start on the full support gains nothing over the full start
    if warm:
        for i in range(n):
            full = full and w[i] > 0.0
    if warm and not full:
        seed_support(g, zero, 1.0, w, st)
    elif not start_full(g, zero, 0.0, w, st):
        start_vertex(g, zero, 0.0, w, st)
    status, _ = active_set(g, zero, 0.0, bool(True), w, st, 0.0, tol, bool(False))
    if status != OK:
        return status
    refine(g, zero, 0.0, bool(True), w, st)
    w /= w.sum()
    return OK


@njit(cache=True)
def _min_norm_kernel(
    gramian: np.ndarray, warm: np.ndarray, has_warm: bool, tol: float, validate: bool
) -> tuple[np.ndarray, int, int, int]:
    n = gramian.shape[0]
    g, scale, status, i, j = validated_normalised(gramian, tol, validate)
    if status != OK:
        return np.empty(0), status, i, j
    if has_warm:
        status, i = warm_status(warm, n)
        if status != OK:
            return np.empty(0), status, i, 0
    if n == 1:
        return np.ones(1), OK, 0, 0
    if n == 2 and gramian[0, 0] + gramian[1, 1] > 0.0:
        return _two(gramian), OK, 0, 0  # scale-invariant as it stands
    if scale == 0.0:
        return np.full(n, 1.0 / n), OK, 0, 0
    w = warm.copy() if has_warm else np.empty(n)
    status = min_norm_normalised(g, w, has_warm, tol)
    if status != OK:
        return np.empty(0), status, 0, 0
    return w, OK, 0, 0


_NO_WARM_START = np.empty(0)


def min_norm(gramian: object, *, warm_start: object = None) -> np.ndarray:
    """Weights ``c`` on the simplex minimising ``‖Σ cᵢ gᵢ‖² = cᵀGc`` for a Gramian ``G = J Jᵀ``.

    Exact (active set, not Frank–Wolfe) and scale-invariant. ``gramian`` is anything
    ``np.asarray`` accepts (numpy, CPU torch). ``warm_start``: the previous step's weights, whose
    support seeds the active set; the answer is the same, only found sooner when the Gramian
    drifts slowly. All-zero gradients give uniform weights. Raises ``ValueError`` for a
    Gramian that is not square, not finite, not symmetric or not PSD, and for a bad warm start.
    """
    g, tol, validate = prepare(gramian)
    if warm_start is None:
        w, status, i, j = _min_norm_kernel(g, _NO_WARM_START, False, tol, validate)
    else:
        warm = np.ascontiguousarray(warm_start, dtype=np.float64)
        if warm.ndim != 1:
            raise ValueError(
                f"warm_start must be a 1-D vector of {g.shape[0]} weights, got shape "
                f"{warm.shape}; pass the weights returned by the previous call"
            )
        w, status, i, j = _min_norm_kernel(g, warm, True, tol, validate)
    if status != OK:
        raise ValueError(_message(status, i, j, g))
    return w


def _message(status: int, i: int, j: int, g: np.ndarray) -> str:
    n = g.shape[0]
    if status == WARM_LENGTH:
        return (
            f"warm_start has {i} weights but the Gramian has {n} objectives; pass the previous "
            "step's weights for the same objectives, or None"
        )
    if status == WARM_INVALID:
        return (
            f"warm_start[{i}] is negative or not finite; pass the previous step's weights "
            "(non-negative, finite), or None"
        )
    if status == WARM_EMPTY:
        return "warm_start has no positive weight; pass the previous step's weights, or None"
    return status_message(status, i, j, g)
