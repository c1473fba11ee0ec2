"""The CAGrad inner problem, solved exactly from the Gramian (numba, float64).

Minimise ``F(w) = bᵀw + α‖g_w‖`` on the simplex, with ``b = G1/n`` (so ``bᵀw = g_w·g₀``),
``α = c‖g₀‖`` and ``‖g_w‖ = √(wᵀGw)``. Linearising the norm at the optimum shows that the
solution also minimises the quadratic ``½wᵀGw + s·bᵀw`` with ``s = ‖g_w‖/α`` — the point of the
hull nearest to ``−s·g₀``. On a fixed support that quadratic's minimiser is ``p + s·q``
(:func:`~mogradient.solvers.min_norm.affine_parts`) and, since ``Gp ∝ 1`` on S and ``1ᵀq = 0``,
``‖g_w‖² = pᵀGp + s²·qᵀGq``: the fixed point ``α²s² = ‖g_w‖²`` has the closed form
``s = √(pᵀGp / (α² − qᵀGq))``. We alternate exact active-set solves of the quadratic (the
min-norm kernel with a linear term) with this closed form, inside a bracket on ``s`` with
bisection as the safeguard; it stops when the support reproduces its own ``s``. ``s = 0`` is the
case ``g_w = 0`` (the min-norm point), where CAGrad's direction is ``g₀`` itself.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from mogradient.solvers.min_norm import (
    KKT_TOL,
    OK,
    affine_parts,
    check_square,
    gramian_status,
    normalised,
    refine,
    seed_support,
    solve_simplex_qp,
    status_message,
)

#: ``‖g₀‖²`` below this (normalised Gramian) means the mean gradient is zero: F is flat.
ZERO_MEAN_TOL = 1e-15
#: Relative change of ``s`` at which the support reproduces its own fixed point.
S_RTOL = 1e-12
#: ``‖g_w‖`` below this (normalised Gramian) at ``s = 0`` means the hull contains the origin.
ZERO_NORM_TOL = 1e-7
MAX_OUTER = 100


@njit(cache=True)
def _objective(g: np.ndarray, b: np.ndarray, alpha: float, w: np.ndarray) -> tuple[float, float]:
    """``(F(w), ‖g_w‖)``."""
    n = g.shape[0]
    lin = 0.0
    quad = 0.0
    for i in range(n):
        if w[i] != 0.0:
            lin += b[i] * w[i]
            acc = 0.0
            for j in range(n):
                acc += g[i, j] * w[j]
            quad += w[i] * acc
    r = math.sqrt(max(quad, 0.0))
    return lin + alpha * r, r


@njit(cache=True)
def _support_fixed_point(
    g: np.ndarray,
    b: np.ndarray,
    alpha: float,
    support: np.ndarray,
    m: int,
    lower: np.ndarray,
    p: np.ndarray,
    q: np.ndarray,
    work: np.ndarray,
) -> float:
    """The ``s`` solving ``α²s² = pᵀGp + s²·qᵀGq`` on this support (inf if none); fills p, q."""
    affine_parts(b, support, m, lower, p, q, work)
    fp = 0.0
    fq = 0.0
    for k in range(m):
        rp = 0.0
        rq = 0.0
        row = g[support[k]]
        for t in range(m):
            rp += row[support[t]] * p[t]
            rq += row[support[t]] * q[t]
        fp += p[k] * rp
        fq += q[k] * rq
    room = alpha * alpha - fq
    if room <= 0.0:
        return np.inf
    if fp <= ZERO_NORM_TOL * ZERO_NORM_TOL:  # 0 ∈ aff(S) up to rounding: the root is s = 0
        return 0.0
    return math.sqrt(fp / room)


@njit(cache=True)
def _certified(
    g: np.ndarray,
    b: np.ndarray,
    s: float,
    p: np.ndarray,
    q: np.ndarray,
    support: np.ndarray,
    m: int,
    out: np.ndarray,
) -> bool:
    """Write ``p + s·q`` on the support into ``out``; is it optimal for the quadratic at s?

    Saves one more active-set pass when the support found at the previous s is already right.
    """
    out[:] = 0.0
    for k in range(m):
        value = p[k] + s * q[k]
        if value <= 0.0:
            return False
        out[support[k]] = value
    n = g.shape[0]
    grad = s * b
    for k in range(m):
        wk = out[support[k]]
        row = g[support[k]]
        for i in range(n):
            grad[i] += wk * row[i]
    mean = 0.0
    for k in range(m):
        mean += out[support[k]] * grad[support[k]]
    return grad.min() >= mean - KKT_TOL * (1.0 + s)


@njit(cache=True)
def _cagrad_kernel(gramian: np.ndarray, c: float) -> tuple[np.ndarray, int, int, int]:
    n = gramian.shape[0]
    status, i, j = gramian_status(gramian)
    if status != OK:
        return np.empty(0), status, i, j
    uniform = np.full(n, 1.0 / n)
    g, scale = normalised(gramian)
    if c == 0.0 or scale == 0.0 or n == 1:
        return uniform, OK, 0, 0
    b = g.sum(axis=1) / n
    g0sq = b.sum() / n
    if g0sq <= ZERO_MEAN_TOL:
        return uniform, OK, 0, 0
    alpha = c * math.sqrt(g0sq)
    support = np.empty(n, dtype=np.int64)
    lower = np.empty((n, n))
    work = np.empty(n)
    p = np.empty(n)
    q = np.empty(n)
    candidate = np.empty(n)
    w = np.zeros(n)  # start from the best vertex (faster than from the full support)
    w[np.argmin(b + alpha * np.sqrt(np.maximum(np.diag(g), 0.0)))] = 1.0
    m = seed_support(g, w, support, lower, work)
    best = uniform.copy()
    best_f = _objective(g, b, alpha, uniform)[0]
    s = 1.0 / c  # exact when g_w = g₀, i.e. at the uniform weights
    lo = 0.0
    hi = np.inf
    for _ in range(MAX_OUTER):
        m, status = solve_simplex_qp(g, b, s, w, support, m, lower)
        if status != OK:
            return np.empty(0), status, 0, 0
        f, r = _objective(g, b, alpha, w)
        if f < best_f:
            best_f = f
            best[:] = w
        if s == 0.0 and r <= ZERO_NORM_TOL:
            if best_f >= -ZERO_NORM_TOL * alpha:  # nothing beats F = 0: g_w = 0 is optimal
                refine(g, w, support, m, lower)  # g_w = 0 to rounding, not to √rounding
                return w / w.sum(), OK, 0, 0
            break
        if alpha * s < r:
            lo = s
        else:
            hi = s
        s_new = _support_fixed_point(g, b, alpha, support, m, lower, p, q, work)
        if abs(s_new - s) <= S_RTOL * s:
            break
        if lo < s_new < hi and _certified(g, b, s_new, p, q, support, m, candidate):
            if _objective(g, b, alpha, candidate)[0] <= best_f:
                best[:] = candidate
            break
        if not (lo < s_new < hi or s_new == lo == 0.0):  # outside the bracket: bisect
            s_new = 4.0 * max(lo, s) if hi == np.inf else 0.5 * (lo + hi)
        if s_new == s:
            break
        s = s_new
    return best / best.sum(), OK, 0, 0


def cagrad_weights(gramian: object, c: float) -> np.ndarray:
    """Simplex weights ``w`` minimising CAGrad's ``g_wᵀg₀ + c‖g₀‖‖g_w‖`` for a Gramian ``G = J Jᵀ``.

    Exact (active set with a closed-form fixed point, not SLSQP). The CAGrad direction is then
    ``g₀ + (c‖g₀‖/‖g_w‖) g_w``. ``c = 0`` (or a zero mean gradient) returns the uniform weights,
    so CAGrad reduces exactly to the mean. Raises ``ValueError`` for ``c < 0`` and for the same
    Gramian problems as :func:`~mogradient.solvers.min_norm.min_norm`.
    """
    c = float(c)
    if not (c >= 0.0 and math.isfinite(c)):
        raise ValueError(
            f"c must be a finite number >= 0 (the radius of CAGrad's ball relative to ‖g₀‖; "
            f"the paper uses 0.4-0.5), got {c!r}"
        )
    g = np.ascontiguousarray(gramian, dtype=np.float64)  # one compiled layout
    check_square(g)
    w, status, i, j = _cagrad_kernel(g, c)
    if status != OK:
        raise ValueError(status_message(status, i, j, g))
    return w
