"""The primal active-set method on the Gramian: its starts, seeds, major and minor cycles, and a
final refinement (numba, float64).

Wolfe's nearest-point method on the simplex, Lawson–Hanson on the orthant
(:mod:`mogradient.solvers.qp` states the problem). Every function works on a
:class:`~mogradient.solvers.factor.FreeSet`: the free set S and the Cholesky factor of
``M_S = G_SS + σ11ᵀ``, positive definite exactly when the lifted points ``(gᵢ, 1)`` (simplex)
or the gradients (orthant) of S are affinely (linearly) independent, which the entering rule
keeps true.

Constants passed to another kernel are written ``bool(True)``, ``int(0)``, ``int(-1)`` (also
where a loop variable starts): numba compiles a separate copy of the callee for every literal
argument (``docs/cold-start.md``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from mogradient.solvers.factor import (
    FreeSet,
    accept,
    back_substitute,
    delete,
    dot,
    free_minimiser,
    new_row,
)
from mogradient.solvers.validation import NOT_IN_RANGE, NOT_PSD, OK

#: A point enters the free set only if it lowers the gradient below its bound by more than this,
#: relative to the size of the terms in both (so tiny gradients are still resolved).
KKT_TOL = 1e-13
#: Seeds keep M_S well conditioned: a point with a smaller relative pivot is left out.
SEED_TOL = 1e-10
#: A new point whose Schur complement in ``M_S`` is below this (relative to its diagonal entry),
#: or not clearly above its own rounding, is dependent on S.
DEPENDENT_TOL = 1e-15
#: Rounding of a Schur complement: ``ROUNDING·(m + 1)·eps`` times the size of its terms.
ROUNDING = 16.0
#: On the orthant a pivot is accepted only this many times above its rounding (≤ 0.1% relative
#: error): a less accurate one makes every later solve on ``G_SS`` unreliable. On the simplex the
#: unit shift of ``M_S`` bounds that amplification, and pivots down to the rounding count.
RELIABLE = 1000.0
EPS = float(np.finfo(np.float64).eps)
#: Above this relative violation a dependent point means the linear term is not in range(G).
RANGE_TOL = 1e-7


@njit(cache=True)
def set_vertex(g: np.ndarray, b: np.ndarray, i: int, x: np.ndarray, st: FreeSet) -> None:
    """Simplex start at the vertex ``eᵢ`` (m = 1)."""
    x[:] = 0.0
    x[i] = 1.0
    piv = math.sqrt(g[i, i] + 1.0)
    st.lower[0, 0] = piv
    st.y1[0] = 1.0 / piv
    st.yb[0] = b[i] / piv
    st.support[0] = i
    st.size[0] = 1


@njit(cache=True)
def start_vertex(g: np.ndarray, b: np.ndarray, s: float, x: np.ndarray, st: FreeSet) -> None:
    """Simplex start at the best vertex ``argmin ½Gᵢᵢ + s·bᵢ`` (m = 1)."""
    n = g.shape[0]
    best = int(0)
    for i in range(1, n):
        if 0.5 * g[i, i] + s * b[i] < 0.5 * g[best, best] + s * b[best]:
            best = i
    set_vertex(g, b, best, x, st)


@njit(cache=True)
def start_full(g: np.ndarray, b: np.ndarray, s: float, x: np.ndarray, st: FreeSet) -> bool:
    """Simplex start from the full support: one Cholesky of ``M = G + 11ᵀ``.

    When the minimiser on the whole affine hull is positive (every objective active, the usual
    case when the gradients are many-dimensional and roughly independent) it is the answer and
    x is set to it. If a few weights (at most n/8) come out non-positive, x is the uniform point
    and the active set drops them. Returns False (m = 0) when the full support is a bad start
    (a dependent point, or many negative weights): the caller then starts from a vertex.
    """
    n = g.shape[0]
    lower = st.lower
    y1 = st.y1
    yb = st.yb
    st.size[0] = 0
    # Column-oriented (left-looking) Cholesky: the n − j dot products of column j are
    # independent of each other, unlike the row-by-row forward substitutions of an insertion.
    for j in range(n):
        lj = lower[j]
        d2 = g[j, j] + 1.0 - dot(lj, lj, j)
        if d2 <= SEED_TOL * (g[j, j] + 1.0):
            return False
        piv = math.sqrt(d2)
        lj[j] = piv
        inv = 1.0 / piv
        gj = g[j]
        for i in range(j + 1, n):
            lower[i, j] = (gj[i] + 1.0 - dot(lower[i], lj, j)) * inv
        y1[j] = (1.0 - dot(lj, y1, j)) * inv
        yb[j] = (b[j] - dot(lj, yb, j)) * inv
        st.support[j] = j
    st.size[0] = n
    z = st.scratch[0]
    free_minimiser(lower, n, y1, yb, s, bool(True), z, st.scratch[1])
    negative = 0
    for i in range(n):
        if z[i] <= 0.0:
            negative += 1
    if negative == 0:
        x[:] = z
    elif 8 * negative <= n:
        x[:] = 1.0 / n
    else:
        st.size[0] = 0
        return False
    return True


@njit(cache=True)
def factor_order(
    g: np.ndarray,
    b: np.ndarray,
    sigma: float,
    order: np.ndarray,
    count: int,
    st: FreeSet,
    rows: np.ndarray,
) -> None:
    """Factor ``M_S`` for the candidates ``order[:count]`` in that order, leaving out those
    whose relative pivot is below ``SEED_TOL`` (dependent on the ones before).

    Left-looking by columns: accepting candidate c fills its column for every later candidate
    at once (independent dot products, unlike the row-by-row forward substitutions of single
    insertions); ``rows`` (at least ``count × count``) holds the candidates' rows meanwhile.
    """
    lower = st.lower
    y1 = st.y1
    yb = st.yb
    m = int(0)
    for c in range(count):
        j = order[c]
        rc = rows[c]
        d2 = g[j, j] + sigma - dot(rc, rc, m)
        if d2 <= SEED_TOL * (g[j, j] + sigma):
            continue
        piv = math.sqrt(d2)
        inv = 1.0 / piv
        gj = g[j]
        for c2 in range(c + 1, count):
            r2 = rows[c2]
            r2[m] = (gj[order[c2]] + sigma - dot(r2, rc, m)) * inv
        row = lower[m]
        for k in range(m):
            row[k] = rc[k]
        row[m] = piv
        y1[m] = (1.0 - dot(row, y1, m)) * inv
        yb[m] = (b[j] - dot(row, yb, m)) * inv
        st.support[m] = j
        m += 1
    st.size[0] = m


@njit(cache=True)
def seed_support(g: np.ndarray, b: np.ndarray, sigma: float, x: np.ndarray, st: FreeSet) -> None:
    """Factor the support of a feasible ``x`` (largest entries first), dropping dependent
    points. A seed only speeds the solve up, so nearly dependent points are dropped
    generously (the solve brings them back if they matter); on the simplex x is renormalised.
    """
    order = np.argsort(-x)
    count = 0
    while count < order.shape[0] and x[order[count]] > 0.0:
        count += 1
    rows = np.empty((count, count))
    factor_order(g, b, sigma, order, count, st, rows)
    m = st.size[0]
    kept = np.zeros(x.shape[0], dtype=np.bool_)
    for k in range(m):
        kept[st.support[k]] = True
    total = 0.0
    for i in range(x.shape[0]):
        if not kept[i]:
            x[i] = 0.0
        total += x[i]
    if sigma > 0.0:
        for k in range(m):
            x[st.support[k]] /= total


@njit(cache=True)
def seed_violators(
    g: np.ndarray, b: np.ndarray, st: FreeSet, rows: np.ndarray, bnorm: float
) -> None:
    """Orthant start at x = 0 with every objective whose gradient ``bⱼ`` is negative already
    free (most negative first, dependent ones left out): the usual final free set when the
    gradients are nearly orthogonal, where adding them one major cycle at a time costs
    O(n·|S|²). Those that should not be free leave in the first minor cycles."""
    n = g.shape[0]
    order = np.argsort(b)
    count = 0
    while (
        count < n and b[order[count]] < -KKT_TOL * math.sqrt(g[order[count], order[count]]) * bnorm
    ):
        count += 1
    factor_order(g, b, 0.0, order, count, st, rows)


@njit(cache=True)
def active_set(
    g: np.ndarray,
    b: np.ndarray,
    s: float,
    simplex: bool,
    x: np.ndarray,
    st: FreeSet,
    bnorm: float,
    tol: float,
    check_range: bool,
) -> tuple[int, int]:
    """Minimise ``½xᵀGx + s·bᵀx`` over x ≥ 0 (and Σx = 1 if ``simplex``), in place.

    ``g`` is normalised (largest diagonal 1) and symmetric; ``x`` is feasible, its free set is
    ``st`` (every entry of x outside it is 0). On return x is optimal and ``st`` describes its
    free set. ``bnorm`` bounds the size of the terms of b: ``b = Gβ`` with
    ``Σ|βₖ|‖gₖ‖ ≤ bnorm`` (for the KKT tolerance). Returns ``(status, index)``: ``NOT_PSD``
    when ``xᵀGx`` turns negative beyond ``n·tol``; with ``check_range`` (orthant),
    ``NOT_IN_RANGE`` when a dependent point still lowers the objective, i.e. b has a component
    outside range(G): unbounded.
    """
    n = g.shape[0]
    sigma = 1.0 if simplex else 0.0
    support = st.support
    lower = st.lower
    y1 = st.y1
    yb = st.yb
    z = st.scratch[0]
    work = st.scratch[1]
    grad = st.scratch[2]
    m = st.size[0]
    bnorm = bnorm * abs(s)
    entered = -1
    status = OK
    index = 0
    for _ in range(50 * n + 100):
        # Minor cycle: move towards the minimiser on the free set, dropping blocking points.
        free_minimiser(lower, m, y1, yb, s, simplex, z, work)
        theta = 1.0
        drop = int(-1)
        for k in range(m):
            if z[k] <= 0.0:
                xk = x[support[k]]
                t = xk / (xk - z[k]) if xk > 0.0 else 0.0
                if drop < 0 or t < theta:
                    theta = t
                    drop = k
        if drop >= 0:
            for k in range(m):
                i = support[k]
                x[i] = max(x[i] + theta * (z[k] - x[i]), 0.0)
            x[support[drop]] = 0.0
            stalled = theta == 0.0 and support[drop] == entered
            m = delete(lower, support, m, drop, y1, yb)
            if stalled:  # the entering point cannot move: optimal to working precision
                break
            entered = -1
            continue
        for k in range(m):
            x[support[k]] = z[k]
        # Major cycle: optimal unless a point outside lowers the gradient below its bound.
        for i in range(n):
            grad[i] = s * b[i]
        rho = 0.0  # Σ xₖ‖gₖ‖ bounds the size of each term in Gx, hence its rounding
        sq = 0.0
        for k in range(m):
            i = support[k]
            xi = x[i]
            row = g[i]
            for t in range(n):
                grad[t] += xi * row[t]
            rho += xi * math.sqrt(g[i, i])
            sq += xi * xi
        level = 0.0  # the multiplier of Σx = 1 (0 on the orthant)
        curvature = 0.0
        lin = 0.0
        for k in range(m):
            i = support[k]
            curvature += x[i] * (grad[i] - s * b[i])
            if simplex:
                level += x[i] * grad[i]
                lin += x[i] * abs(s * b[i])
        if curvature < -n * tol * sq:
            status = NOT_PSD
            break
        j = int(-1)
        for i in range(n):
            if x[i] == 0.0 and (j < 0 or grad[i] < grad[j]):
                j = i
        if j < 0:
            break
        # Tolerance relative to the terms that make up grad[j] and the level, not to the
        # largest gradient: a tiny gradient next to a huge one still gets its exact share.
        nj = math.sqrt(g[j, j])
        scale_j = nj * (rho + bnorm)
        if simplex:
            scale_j += rho * (rho + bnorm) + lin
        if grad[j] >= level - KKT_TOL * scale_j:
            break
        d2 = new_row(g, sigma, support, m, lower, j)
        diag = g[j, j] + sigma
        # The complement's rounding grows with ‖row‖² = diag − d2: a nearly singular factor
        # (points almost dependent already) makes it unreliable, not negative.
        noise = ROUNDING * (m + 1) * EPS * (2.0 * diag - d2)
        if not simplex:  # without the +11ᵀ shift a near-singular G_SS amplifies the rounding
            noise *= RELIABLE
        if d2 <= DEPENDENT_TOL * diag + noise:  # j depends on S to working precision
            if check_range and not simplex and grad[j] < level - RANGE_TOL * scale_j:
                status = NOT_IN_RANGE
                index = j
            break
        m = accept(lower, support, m, j, d2, b[j], y1, yb)
        x[j] = 0.0
        entered = j
    st.size[0] = m
    return status, index


@njit(cache=True)
def refine(
    g: np.ndarray, b: np.ndarray, s: float, simplex: bool, x: np.ndarray, st: FreeSet
) -> None:
    """One step of iterative refinement of the minimiser on the final free set.

    The residual ``G_SS x_S + s·b_S − ν1`` is computed on G itself (not on ``M = G_SS + 11ᵀ``,
    whose unit shift hides entries far below the largest one), so a near-zero optimum comes
    out accurate relative to the gradients involved, not only to the largest one. Skipped if
    it would make a weight non-positive. ``y1 = L⁻¹1`` is the carried forward solution.
    """
    m = st.size[0]
    if m == 0:
        return
    n = g.shape[0]
    support = st.support
    lower = st.lower
    res = np.empty(m)
    corr = np.empty(m)
    work = np.empty(m)
    identity = m == n  # the full support in natural order (start_full): contiguous rows
    for k in range(m):
        identity = identity and support[k] == k
    level = 0.0
    for k in range(m):
        i = support[k]
        row = g[i]
        if identity:
            acc = s * b[i] + dot(row, x, n)
        else:
            acc = s * b[i]
            for t in range(m):
                acc += row[support[t]] * x[support[t]]
        res[k] = acc
        level += x[i] * acc
    for k in range(m):
        if simplex:
            res[k] -= level
        res[k] = -res[k]
    # forward solve L y = -res, then Lᵀ corr = y
    for k in range(m):
        res[k] = (res[k] - dot(lower[k], res, k)) / lower[k, k]
    back_substitute(lower, m, res, corr)
    if simplex:  # keep Σx = 1: remove the M⁻¹1 = L⁻ᵀ(L⁻¹1) component that changes the sum
        for k in range(m):
            res[k] = st.y1[k]
        back_substitute(lower, m, res, work)
        ratio = corr.sum() / work.sum()
        for k in range(m):
            corr[k] -= ratio * work[k]
    for k in range(m):
        if x[support[k]] + corr[k] <= 0.0:
            return
    for k in range(m):
        x[support[k]] += corr[k]
