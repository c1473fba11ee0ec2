"""Exact min-norm point of the convex hull of the gradients, computed from their Gramian (MGDA).

Minimise ``cᵀGc`` over the simplex with Wolfe's nearest-point (active-set) algorithm. On a
support S the affine minimiser is ``c_S ∝ M_S⁻¹1`` with ``M_S = G_SS + 11ᵀ``, which is positive
definite exactly when the points of S are affinely independent (Wolfe's entering rule keeps them
so). The Cholesky factor of ``M_S`` is updated in O(|S|²): one new row when a point enters,
Givens rotations when one leaves. The finite method is exact up to rounding, unlike
Frank–Wolfe, which stalls above the optimum on conflicting low-rank gradients (docs/solvers.md).

The active-set kernel solves the slightly more general ``min ½wᵀGw + s·bᵀw`` on the simplex
(``b`` in the range of G), which the CAGrad solver reuses; ``s = 0`` is the min-norm problem.
Validation runs inside the same compiled call and reports a status code, which the thin Python
wrapper turns into a ``ValueError`` naming the objective.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from mogradient._checks import GRAMIAN_TOL

#: Up to this many objectives the cold solve starts from the full support (one Cholesky), which
#: is immediately optimal when every weight of ``G⁻¹1`` is positive; tuned by benchmarks/solvers.
FULL_START_MAX_N = 30
#: A point enters the support only if it lowers the gradient below its mean on S by more than
#: this, relative to the size of the terms in both (so tiny gradients are still resolved).
KKT_TOL = 1e-13
#: Seeds keep M_S well conditioned: a point with a smaller relative pivot is left out.
SEED_TOL = 1e-10
#: A new point whose Schur complement in ``M_S`` is below this is affinely dependent on S.
DEPENDENT_TOL = 1e-15

OK = 0
NONFINITE = 1
NEGATIVE_DIAGONAL = 2
ASYMMETRIC = 3
NOT_PSD = 4
WARM_LENGTH = 5
WARM_INVALID = 6
WARM_EMPTY = 7


@njit(cache=True)
def gramian_status(g: np.ndarray) -> tuple[int, int, int]:
    """Check a square Gramian: finite, non-negative diagonal, symmetric, 2×2 minors PSD.

    Returns ``(status, i, j)`` with the offending objective(s); tolerances are ``GRAMIAN_TOL``
    relative to the largest diagonal entry.
    """
    n = g.shape[0]
    for i in range(n):
        for j in range(n):
            if not np.isfinite(g[i, j]):
                return NONFINITE, i, j
    scale = 0.0
    for i in range(n):
        scale = max(scale, abs(g[i, i]))
    tol = GRAMIAN_TOL * scale
    for i in range(n):
        if g[i, i] < -tol:
            return NEGATIVE_DIAGONAL, i, i
    root = np.sqrt(np.maximum(np.diag(g), 0.0))  # √Gᵢᵢ√Gⱼⱼ cannot underflow like √(GᵢᵢGⱼⱼ)
    for i in range(n):
        for j in range(i + 1, n):
            if abs(g[i, j] - g[j, i]) > tol:
                return ASYMMETRIC, i, j
            if abs(g[i, j]) > root[i] * root[j] + tol:
                return NOT_PSD, i, j
    return OK, 0, 0


@njit(cache=True)
def normalised(g: np.ndarray) -> tuple[np.ndarray, float]:
    """Symmetrised ``G / max diag`` and that scale (0 when every gradient is zero)."""
    n = g.shape[0]
    scale = 0.0
    for i in range(n):
        scale = max(scale, g[i, i])
    out = np.zeros((n, n))
    if scale > 0.0:
        pre = 1e300 if scale < 1e-290 else 1.0  # 1/scale would overflow for subnormal scales
        inv = 1.0 / (scale * pre)
        for i in range(n):
            for j in range(n):
                out[i, j] = ((0.5 * g[i, j] + 0.5 * g[j, i]) * pre) * inv
    return out, scale


@njit(cache=True)
def _forward(lower: np.ndarray, m: int, rhs: np.ndarray, out: np.ndarray) -> None:
    for i in range(m):
        acc = rhs[i]
        for k in range(i):
            acc -= lower[i, k] * out[k]
        out[i] = acc / lower[i, i]


@njit(cache=True)
def _backward(lower: np.ndarray, m: int, rhs: np.ndarray, out: np.ndarray) -> None:
    for i in range(m - 1, -1, -1):
        acc = rhs[i]
        for k in range(i + 1, m):
            acc -= lower[k, i] * out[k]
        out[i] = acc / lower[i, i]


@njit(cache=True)
def insert(
    g: np.ndarray, support: np.ndarray, m: int, lower: np.ndarray, j: int, work: np.ndarray
) -> float:
    """Write row ``m`` of the Cholesky factor of ``M_{S+j}``; return its squared pivot.

    The pivot is stored (and ``j`` appended) by the caller once it has checked the sign.
    """
    for k in range(m):
        work[k] = g[j, support[k]] + 1.0
    row = lower[m]
    _forward(lower, m, work, row)
    d2 = g[j, j] + 1.0
    for k in range(m):
        d2 -= row[k] * row[k]
    return d2


@njit(cache=True)
def _delete(lower: np.ndarray, support: np.ndarray, m: int, pos: int) -> int:
    """Remove support position ``pos``: drop its row, restore triangularity with Givens."""
    for r in range(pos, m - 1):
        support[r] = support[r + 1]
        for k in range(r + 2):
            lower[r, k] = lower[r + 1, k]
    for r in range(pos, m - 1):
        a = lower[r, r]
        b = lower[r, r + 1]
        h = np.hypot(a, b)
        cs = a / h
        sn = b / h
        lower[r, r] = h
        lower[r, r + 1] = 0.0
        for k in range(r + 1, m - 1):
            x = lower[k, r]
            y = lower[k, r + 1]
            lower[k, r] = cs * x + sn * y
            lower[k, r + 1] = cs * y - sn * x
    return m - 1


@njit(cache=True)
def affine_parts(
    b: np.ndarray,
    support: np.ndarray,
    m: int,
    lower: np.ndarray,
    p: np.ndarray,
    q: np.ndarray,
    work: np.ndarray,
) -> None:
    """Affine minimiser of ``½wᵀGw + s·bᵀw`` on aff(S) as ``p + s·q`` (``1ᵀp = 1, 1ᵀq = 0``).

    From ``M w + s b = ν1`` with ``M = G_SS + 11ᵀ``: ``p = M⁻¹1 / 1ᵀM⁻¹1`` (the min-norm point of
    aff(S)) and ``q = (1ᵀM⁻¹b / 1ᵀM⁻¹1) M⁻¹1 − M⁻¹b``. ``b`` empty means ``s = 0``: q is left alone.
    """
    for k in range(m):
        work[k] = 1.0
    _forward(lower, m, work, work)
    _backward(lower, m, work, p)
    a = 0.0
    for k in range(m):
        a += p[k]
    for k in range(m):
        p[k] /= a
    if b.shape[0] == 0:
        return
    for k in range(m):
        work[k] = b[support[k]]
    _forward(lower, m, work, work)
    _backward(lower, m, work, q)
    beta = 0.0
    for k in range(m):
        beta += q[k]
    for k in range(m):
        q[k] = beta * p[k] - q[k]


@njit(cache=True)
def seed_support(
    g: np.ndarray, w: np.ndarray, support: np.ndarray, lower: np.ndarray, work: np.ndarray
) -> int:
    """Factor the support of a feasible ``w`` (largest weights first), dropping dependent points.

    Returns the support size. A seed only speeds the solve up, so nearly dependent points are
    dropped generously (the solve brings them back if they matter).
    """
    order = np.argsort(-w)
    m = 0
    for i in order:
        if w[i] <= 0.0:
            break
        d2 = insert(g, support, m, lower, i, work)
        if d2 <= SEED_TOL * (g[i, i] + 1.0):
            w[i] = 0.0
            continue
        lower[m, m] = np.sqrt(d2)
        support[m] = i
        m += 1
    total = 0.0
    for k in range(m):
        total += w[support[k]]
    for k in range(m):
        w[support[k]] /= total
    return m


@njit(cache=True)
def solve_simplex_qp(
    g: np.ndarray,
    b: np.ndarray,
    s: float,
    w: np.ndarray,
    support: np.ndarray,
    m: int,
    lower: np.ndarray,
) -> tuple[int, int]:
    """Minimise ``½wᵀGw + s·bᵀw`` over the simplex by Wolfe's active-set method, in place.

    ``g`` is normalised (largest diagonal 1) and symmetric, ``b`` lies in its range (``b`` empty:
    ``s = 0``, the min-norm problem); ``w`` is feasible with support ``support[:m]`` whose
    factor is in ``lower``. On return ``w`` is optimal and ``support[:m]``/``lower`` describe its
    support. Returns ``(m, status)``; status is ``NOT_PSD`` when ``wᵀGw`` turns negative.
    """
    n = g.shape[0]
    p = np.empty(n)
    q = np.empty(n)
    work = np.empty(n)
    grad = np.empty(n)
    linear = b.shape[0] > 0
    norms = np.sqrt(np.maximum(np.diag(g), 0.0))
    entered = -1
    for _ in range(50 * n + 100):
        # Minor cycle: move towards the affine minimiser of S, dropping points that reach 0.
        affine_parts(b, support, m, lower, p, q, work)
        if linear:
            for k in range(m):
                p[k] += s * q[k]
        theta = 1.0
        drop = -1
        for k in range(m):
            if p[k] <= 0.0:
                wk = w[support[k]]
                t = wk / (wk - p[k]) if wk > 0.0 else 0.0
                if t < theta or drop < 0:
                    theta = t
                    drop = k
        if drop >= 0:
            for k in range(m):
                i = support[k]
                w[i] = max(w[i] + theta * (p[k] - w[i]), 0.0)
            w[support[drop]] = 0.0
            stalled = theta == 0.0 and support[drop] == entered
            m = _delete(lower, support, m, drop)
            if stalled:  # the entering point cannot move: optimal to working precision
                return m, OK
            entered = -1
            continue
        for k in range(m):
            w[support[k]] = p[k]
        # Major cycle: optimal unless some point lowers the gradient below its mean on S.
        for i in range(n):
            grad[i] = s * b[i] if linear else 0.0
        for k in range(m):
            wk = w[support[k]]
            row = g[support[k]]
            for i in range(n):
                grad[i] += wk * row[i]
        mean = 0.0
        curvature = 0.0
        rho = 0.0  # Σ wₖ‖gₖ‖ bounds the size of each term in Gw, hence its rounding
        lin = 0.0
        for k in range(m):
            i = support[k]
            mean += w[i] * grad[i]
            rho += w[i] * norms[i]
            if linear:
                curvature += w[i] * (grad[i] - s * b[i])
                lin += w[i] * abs(b[i])
            else:
                curvature += w[i] * grad[i]
        if curvature < -GRAMIAN_TOL:
            return m, NOT_PSD
        j = -1  # the most violating point outside S (exactly those with w = 0 here)
        for i in range(n):
            if w[i] == 0.0 and (j < 0 or grad[i] < grad[j]):
                j = i
        if j < 0:
            return m, OK
        # Tolerance relative to the terms that make up grad[j] and the mean, not to the largest
        # gradient: a tiny gradient next to a huge one still gets its exact share.
        tol = KKT_TOL * (norms[j] * rho + rho * rho)
        if linear:
            tol += KKT_TOL * s * (abs(b[j]) + lin)
        if grad[j] >= mean - tol:
            return m, OK
        d2 = insert(g, support, m, lower, j, work)
        if d2 <= DEPENDENT_TOL * (g[j, j] + 1.0):  # j is in aff(S) to working precision
            return m, OK
        lower[m, m] = np.sqrt(d2)
        support[m] = j
        w[j] = 0.0
        m += 1
        entered = j
    return m, OK


@njit(cache=True)
def refine(g: np.ndarray, w: np.ndarray, support: np.ndarray, m: int, lower: np.ndarray) -> None:
    """One step of iterative refinement of the affine minimiser on the final support.

    The residual ``G_SS w − (wᵀGw)1`` is computed on G itself (not on ``M = G_SS + 11ᵀ``, whose
    unit shift hides entries far below the largest one), so a near-zero optimum comes out
    accurate relative to the gradients involved, not only to the largest one.
    """
    res = np.empty(m)
    y = np.empty(m)
    z = np.empty(m)
    work = np.empty(m)
    mean = 0.0
    for k in range(m):
        row = g[support[k]]
        acc = 0.0
        for t in range(m):
            acc += row[support[t]] * w[support[t]]
        res[k] = acc
        mean += w[support[k]] * acc
    for k in range(m):
        res[k] -= mean
        work[k] = 1.0
    _forward(lower, m, res, res)
    _backward(lower, m, res, y)
    _forward(lower, m, work, work)
    _backward(lower, m, work, z)
    ratio = y.sum() / z.sum()
    for k in range(m):
        if w[support[k]] - y[k] + ratio * z[k] <= 0.0:
            return
    for k in range(m):
        w[support[k]] += ratio * z[k] - y[k]


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
def _min_norm_kernel(
    gramian: np.ndarray, warm: np.ndarray, has_warm: bool
) -> tuple[np.ndarray, int, int, int]:
    n = gramian.shape[0]
    status, i, j = gramian_status(gramian)
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
    g, scale = normalised(gramian)
    if scale == 0.0:
        return np.full(n, 1.0 / n), OK, 0, 0
    support = np.empty(n, dtype=np.int64)
    lower = np.empty((n, n))
    work = np.empty(n)
    if has_warm:
        w = warm.copy()
    elif n <= FULL_START_MAX_N:
        w = np.full(n, 1.0 / n)
    else:
        w = np.zeros(n)
        w[np.argmin(np.diag(g))] = 1.0
    m = seed_support(g, w, support, lower, work)
    m, status = solve_simplex_qp(g, np.empty(0), 0.0, w, support, m, lower)
    if status != OK:
        return np.empty(0), status, 0, 0
    refine(g, w, support, m, lower)
    return w / w.sum(), OK, 0, 0


_NO_WARM_START = np.empty(0)


def min_norm(gramian: object, *, warm_start: object = None) -> np.ndarray:
    """Weights ``c`` on the simplex minimising ``‖Σ cᵢ gᵢ‖² = cᵀGc`` for a Gramian ``G = J Jᵀ``.

    Exact (active set, not Frank–Wolfe) and scale-invariant. ``gramian`` is anything
    ``np.asarray`` accepts (numpy, CPU torch). ``warm_start``: the previous step's weights, whose
    support seeds the active set; the answer is the same, only found sooner when the Gramian
    drifts slowly. All-zero gradients give uniform weights. Raises ``ValueError`` for a
    Gramian that is not square, not finite, not symmetric or not PSD, and for a bad warm start.
    """
    g = np.ascontiguousarray(gramian, dtype=np.float64)  # one compiled layout
    check_square(g)
    if warm_start is None:
        w, status, i, j = _min_norm_kernel(g, _NO_WARM_START, False)
    else:
        warm = np.ascontiguousarray(warm_start, dtype=np.float64)
        if warm.ndim != 1:
            raise ValueError(
                f"warm_start must be a 1-D vector of {g.shape[0]} weights, got shape "
                f"{warm.shape}; pass the weights returned by the previous call"
            )
        w, status, i, j = _min_norm_kernel(g, warm, True)
    if status != OK:
        raise ValueError(status_message(status, i, j, g))
    return w


def check_square(g: np.ndarray) -> None:
    """Raise unless ``g`` is a non-empty square matrix."""
    if g.ndim != 2 or g.shape[0] != g.shape[1]:
        raise ValueError(
            f"expected a square Gramian of shape [n_objectives, n_objectives], got shape "
            f"{g.shape}; form it as J @ J.T from a Jacobian of shape [n_objectives, d]"
        )
    if g.shape[0] == 0:
        raise ValueError("the Gramian has zero objectives; pass at least one")


def status_message(status: int, i: int, j: int, g: np.ndarray) -> str:
    """Explain a kernel status code (what is wrong, and how to fix it)."""
    n = g.shape[0]
    if status == NONFINITE:
        return (
            f"the Gramian has NaN or Inf in row {i} (objective {i}, entry [{i}, {j}] = "
            f"{g[i, j]}); that objective's gradient is not finite: check its loss or skip "
            "this batch"
        )
    if status == NEGATIVE_DIAGONAL:
        return (
            f"the Gramian has a negative diagonal entry G[{i}, {i}] = {g[i, i]:.3g} (objective "
            f"{i}); a squared gradient norm cannot be negative: pass J @ J.T"
        )
    if status == ASYMMETRIC:
        return (
            f"the Gramian is not symmetric: G[{i}, {j}] = {g[i, j]:.6g} but G[{j}, {i}] = "
            f"{g[j, i]:.6g}; pass J @ J.T, or symmetrise it with (G + G.T) / 2"
        )
    if status == NOT_PSD:
        where = (
            f" (|G[{i}, {j}]| > sqrt(G[{i}, {i}] * G[{j}, {j}]))"
            if i != j
            else " (negative curvature found during the solve)"
        )
        return (
            f"the Gramian is not positive semi-definite{where}; a Gramian must be J @ J.T for "
            "some Jacobian J: form it that way instead of editing its entries"
        )
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
    return "warm_start has no positive weight; pass the previous step's weights, or None"
