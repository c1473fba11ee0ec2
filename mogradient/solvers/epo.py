"""EPO's linear programs (Mahapatra & Rajan, ICML 2020), solved exactly by a dense simplex method.

Exact Pareto Optimal search steers the losses onto the ray ``r₁l₁ = r₂l₂ = … = rₙlₙ`` of a
preference ``r > 0`` while descending. Each step it measures how far the weighted losses are
from the ray by the non-uniformity ``μ = Σ l̂ᵢ log(n l̂ᵢ)`` (``l̂ = r∘l / Σ rⱼlⱼ``, the KL
divergence of ``l̂`` from uniform) and the adjustment ``aᵢ = rᵢ(log(n l̂ᵢ) − μ)``, the gradient of
μ up to a positive factor; ``d_bal = Σ aⱼ gⱼ`` would move the losses towards the ray, and
``c = G a`` holds ``gᵢ·d_bal``. Then it picks simplex weights α for ``d = Σ αᵢ gᵢ`` by an LP:

* *balance* (``μ > eps``): maximise ``αᵀc`` (align d with d_bal) subject to ``(Gα)ᵢ ≥ cᵢ`` for
  every objective with ``cᵢ ≤ 0`` (do not raise those losses faster than d_bal would) and
  ``(Gα)ᵢ ≥ 0`` for the objectives with the largest ``rᵢlᵢ`` (never raise the worst one) — or
  ``Gα ≥ 0`` everywhere when no ``cᵢ`` is positive;
* *descent* (``μ ≤ eps``, on the ray): maximise ``1ᵀGα`` (the total first-order decrease)
  subject to ``Gα ≥ 0`` (no loss rises) and, unless relaxed, ``αᵀc ≥ min(max c, 0)`` (do not
  leave the ray).

Either LP can be infeasible (the descent one when ``Gα ≥ 0`` and the ray constraint cannot both
hold); the reference code then falls back to ``α = r/Σr``, and so do we, saying so in the
returned mode. The LPs are tiny (n variables, at most
n + 2 constraints) and solved by a two-phase dense simplex method on the scaled data with
Dantzig's rule, Bland's rule after a run of degenerate pivots (no cycling) and a stable ratio
test; the vertex it returns is optimal to rounding (the tests check it against HiGHS and the
reference formulation in cvxpy). Where the optimum is not unique any optimal vertex may be
returned.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

#: Status of :func:`simplex_lp`.
LP_OPTIMAL = 0
LP_INFEASIBLE = 1
LP_ITERATION_LIMIT = 2

#: The EPO modes of :func:`epo_weights`.
BALANCE = 0
DESCENT = 1
FALLBACK = 2  # the LP was infeasible: α = r/Σr, as in the reference code

PIVOT_TOL = 1e-11
COST_TOL = 1e-12
FEASIBILITY_TOL = 1e-9
DEGENERATE_RUN = 20


@njit(cache=True)
def _pivot(t: np.ndarray, obj: np.ndarray, row: int, col: int) -> None:
    rows, width = t.shape
    p = t[row, col]
    for j in range(width):
        t[row, j] /= p
    t[row, col] = 1.0
    for i in range(rows):
        if i != row:
            f = t[i, col]
            if f != 0.0:
                for j in range(width):
                    t[i, j] -= f * t[row, j]
                t[i, col] = 0.0
    f = obj[col]
    if f != 0.0:
        for j in range(width):
            obj[j] -= f * t[row, j]
        obj[col] = 0.0


@njit(cache=True)
def _run(
    t: np.ndarray,
    obj: np.ndarray,
    basis: np.ndarray,
    allowed: np.ndarray,
    active: np.ndarray,
    max_iter: int,
) -> int:
    """Maximise over the tableau ``t`` (last column: right-hand side) with reduced costs ``obj``."""
    rows, width = t.shape
    rhs = width - 1
    degenerate = 0
    for _ in range(max_iter):
        bland = degenerate >= DEGENERATE_RUN
        col = int(-1)
        best = COST_TOL
        for j in range(rhs):
            if allowed[j] and obj[j] > best:
                col = j
                if bland:
                    break
                best = obj[j]
        if col < 0:
            return LP_OPTIMAL
        row = int(-1)
        ratio = math.inf
        for i in range(rows):
            if not active[i] or t[i, col] <= PIVOT_TOL:
                continue
            r = max(t[i, rhs], 0.0) / t[i, col]
            if row < 0 or r < ratio - 1e-12 * (1.0 + ratio):
                row, ratio = i, r
            elif r <= ratio + 1e-12 * (1.0 + ratio):  # a tie
                if bland:
                    if basis[i] < basis[row]:
                        row, ratio = i, min(r, ratio)
                elif t[i, col] > t[row, col]:
                    row, ratio = i, min(r, ratio)
        if row < 0:  # unbounded: impossible here (the simplex constraint bounds every x)
            return LP_ITERATION_LIMIT
        degenerate = degenerate + 1 if ratio == 0.0 else 0
        _pivot(t, obj, row, col)
        basis[row] = col
    return LP_ITERATION_LIMIT


@njit(cache=True)
def simplex_lp(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, int]:
    """Maximise ``cᵀx`` subject to ``Σx = 1``, ``x ≥ 0`` and ``a x ≥ b`` (``a``: ``[k, n]``).

    Returns ``(x, status)``; ``x`` is zero unless ``status == LP_OPTIMAL``. The data are scaled
    (``a``, ``b`` by ``max |a|``, ``c`` by ``max |c|``) so that the tolerances are relative.
    """
    k, n = a.shape
    x = np.zeros(n)
    scale_a = 0.0
    for i in range(k):
        for j in range(n):
            scale_a = max(scale_a, abs(a[i, j]))
    if scale_a == 0.0:
        scale_a = 1.0
    scale_c = 0.0
    for j in range(n):
        scale_c = max(scale_c, abs(c[j]))
    if scale_c == 0.0:
        scale_c = 1.0
    # Rows 0..k-1: a x − s = b (flipped to −a x + s = −b when b ≤ 0, so s is basic there);
    # row k: Σx = 1. Artificial variables for the rows that need one.
    rows = k + 1
    need = np.zeros(rows, dtype=np.bool_)
    n_art = 0
    for i in range(k):
        if b[i] / scale_a > 0.0:
            need[i] = True
            n_art += 1
    need[k] = True
    n_art += 1
    width = n + k + n_art + 1
    rhs = width - 1
    t = np.zeros((rows, width))
    basis = np.empty(rows, dtype=np.int64)
    art = n + k
    for i in range(k):
        sign = 1.0 if need[i] else -1.0
        for j in range(n):
            t[i, j] = sign * a[i, j] / scale_a
        t[i, n + i] = -sign
        t[i, rhs] = sign * b[i] / scale_a
        if need[i]:
            t[i, art] = 1.0
            basis[i] = art
            art += 1
        else:
            basis[i] = n + i
    for j in range(n):
        t[k, j] = 1.0
    t[k, rhs] = 1.0
    t[k, art] = 1.0
    basis[k] = art
    active = np.ones(rows, dtype=np.bool_)
    allowed = np.ones(width - 1, dtype=np.bool_)
    max_iter = 50 * (width + rows)
    # Phase 1: maximise −Σ artificials.
    obj = np.zeros(width)
    for i in range(rows):
        if basis[i] >= n + k:
            for j in range(width):
                obj[j] += t[i, j]
            obj[basis[i]] = 0.0
    status = _run(t, obj, basis, allowed, active, max_iter)
    if status != LP_OPTIMAL:
        return x, status
    if obj[rhs] > FEASIBILITY_TOL:  # obj[rhs] = Σ artificials left
        return x, LP_INFEASIBLE
    # Drive the artificials (at zero) out of the basis; a row where that is impossible is
    # redundant and is dropped.
    for i in range(rows):
        if basis[i] >= n + k:
            col = int(-1)
            for j in range(n + k):
                if abs(t[i, j]) > PIVOT_TOL and (col < 0 or abs(t[i, j]) > abs(t[i, col])):
                    col = j
            if col < 0:
                active[i] = False
            else:
                _pivot(t, obj, i, col)
                basis[i] = col
    for j in range(n + k, width - 1):
        allowed[j] = False
    # Phase 2: reduced costs of cᵀx for the current basis.
    obj[:] = 0.0
    for j in range(n):
        obj[j] = c[j] / scale_c
    for i in range(rows):
        if active[i] and basis[i] < n:
            f = obj[basis[i]]
            if f != 0.0:
                for j in range(width):
                    obj[j] -= f * t[i, j]
                obj[basis[i]] = 0.0
    status = _run(t, obj, basis, allowed, active, max_iter)
    if status != LP_OPTIMAL:
        return x, status
    total = 0.0
    for i in range(rows):
        if active[i] and basis[i] < n:
            x[basis[i]] = max(t[i, rhs], 0.0)
            total += x[basis[i]]
    if not total > 0.0:
        return np.zeros(n), LP_INFEASIBLE
    for j in range(n):
        x[j] /= total
    return x, LP_OPTIMAL


@njit(cache=True)
def epo_adjustments(losses: np.ndarray, preference: np.ndarray) -> tuple[np.ndarray, float]:
    """``(a, μ)``: EPO's adjustment ``aᵢ = rᵢ(log(n l̂ᵢ) − μ)`` and non-uniformity ``μ``."""
    n = losses.shape[0]
    total = 0.0
    for i in range(n):
        total += preference[i] * losses[i]
    eps = 2.220446049250313e-16
    mu = 0.0
    for i in range(n):
        lhat = preference[i] * losses[i] / total
        if lhat > eps:  # the reference skips shares below machine epsilon in μ
            mu += lhat * math.log(lhat * n)
    a = np.empty(n)
    for i in range(n):
        a[i] = preference[i] * (math.log(preference[i] * losses[i] / total * n) - mu)
    return a, mu


@njit(cache=True)
def epo_lp(
    gramian: np.ndarray, losses: np.ndarray, preference: np.ndarray, eps: float, relax: bool
) -> tuple[np.ndarray, int, float]:
    """EPO's step: ``(α, mode, μ)`` with α on the simplex (see the module docstring)."""
    n = gramian.shape[0]
    a, mu = epo_adjustments(losses, preference)
    ca = gramian @ a
    if mu > eps:
        mode = BALANCE
        positive = False
        for i in range(n):
            if ca[i] > 0.0:
                positive = True
        worst = -math.inf
        for i in range(n):
            worst = max(worst, preference[i] * losses[i])
        keep = np.zeros(n, dtype=np.bool_)
        rhs = np.zeros(n)
        for i in range(n):
            if not positive:
                keep[i] = True  # Gα ≥ 0
            elif preference[i] * losses[i] == worst:
                keep[i] = True  # the objectives with the largest rᵢlᵢ: (Gα)ᵢ ≥ 0
            elif ca[i] <= 0.0:
                keep[i] = True
                rhs[i] = ca[i]
        k = 0
        for i in range(n):
            if keep[i]:
                k += 1
        rows = np.empty((k, n))
        b = np.empty(k)
        r = 0
        for i in range(n):
            if keep[i]:
                rows[r] = gramian[i]
                b[r] = rhs[i]
                r += 1
        x, status = simplex_lp(ca, rows, b)
    else:
        mode = DESCENT
        k = n if relax else n + 1
        rows = np.empty((k, n))
        b = np.zeros(k)
        for i in range(n):
            rows[i] = gramian[i]
        if not relax:
            rows[n] = ca
            top = -math.inf
            for i in range(n):
                top = max(top, ca[i])
            b[n] = min(top, 0.0)
        c = np.zeros(n)
        for j in range(n):
            for i in range(n):
                c[j] += gramian[i, j]
        x, status = simplex_lp(c, rows, b)
    if status != LP_OPTIMAL:
        total = 0.0
        for i in range(n):
            total += preference[i]
        return preference / total, FALLBACK, mu
    return x, mode, mu


def epo_weights(
    gramian: np.ndarray,
    losses: np.ndarray,
    preference: np.ndarray,
    eps: float = 1e-4,
    relax: bool = False,
) -> tuple[np.ndarray, int, float]:
    """EPO's simplex weights for the Gramian, the loss values (> 0) and the preference (> 0).

    Returns ``(α, mode, μ)``: ``mode`` is :data:`BALANCE`, :data:`DESCENT` or :data:`FALLBACK`
    (infeasible LP: ``α = r/Σr``), ``μ`` the non-uniformity of ``r∘l``.
    """
    g = np.ascontiguousarray(gramian, dtype=np.float64)
    l_ = np.ascontiguousarray(losses, dtype=np.float64)
    r = np.ascontiguousarray(preference, dtype=np.float64)
    n = g.shape[0]
    if g.shape != (n, n) or l_.shape != (n,) or r.shape != (n,):
        raise ValueError(
            f"EPO needs a square Gramian and one loss value and one preference entry per "
            f"objective; got shapes {g.shape}, {l_.shape}, {r.shape}"
        )
    if not (np.isfinite(l_).all() and (l_ > 0).all()):
        raise ValueError(
            f"EPO needs finite loss values > 0 (it compares them on the ray r∘l = const), "
            f"got {l_.tolist()}; shift the losses by a known lower bound to make them positive"
        )
    if not (np.isfinite(r).all() and (r > 0).all()):
        raise ValueError(f"EPO needs a preference with every entry > 0, got {r.tolist()}")
    return epo_lp(g, l_, r, float(eps), bool(relax))
