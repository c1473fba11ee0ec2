"""One exact active-set kernel for every quadratic program on the Gramian (numba, float64).

Every Gramian method with a quadratic weight problem solves an instance of

    minimise ½xᵀGx + s·bᵀx   subject to   x ≥ 0   and, optionally,   Σx = 1 (the simplex)

on the n×n Gramian ``G = J Jᵀ`` (lower bounds ``x ≥ l`` are shifted to 0 by the callers):

* min-norm (MGDA): the simplex, ``s = 0``;
* CAGrad's inner problem: the simplex, ``b = G1/n`` and a scalar ``s`` that an outer fixed point
  adjusts (:mod:`mogradient.solvers.cagrad`);
* projections onto the dual cone of the gradients (UPGrad, DualProj): ``min vᵀGv`` over
  ``v ≥ u`` is ``x = v − u ≥ 0`` with ``b = Gu``, ``s = 1`` (:mod:`mogradient.solvers.dual_cone`).

The method is a primal active set (Wolfe's nearest-point method on the simplex, Lawson–Hanson on
the orthant). On the free set S the minimiser solves ``M_S z = …`` with ``M_S = G_SS + σ11ᵀ``
(σ = 1 on the simplex, 0 on the orthant): the Gramian of the lifted points ``(gᵢ, 1)`` or of
the gradients themselves, positive definite exactly when they are affinely (linearly)
independent, which the entering rule keeps true. Its Cholesky factor is updated, never
recomputed: one row when a point enters (O(|S|²)), Givens rotations when one leaves (O(|S|²)),
and the forward solutions ``L⁻¹1`` and ``L⁻¹b_S`` are carried along, so the minimiser on S costs
one triangular solve. Exact up to rounding, unlike Frank–Wolfe or a ridge-regularised quadprog.

The kernel is in three parts: validation and the status codes
(:mod:`mogradient.solvers.validation`), the free set and its factor
(:mod:`mogradient.solvers.factor`), and the active-set method itself
(:mod:`mogradient.solvers.active_set`); this module is the general entry point,
:func:`solve_qp`.

Constants passed to another kernel, here and in the solvers that call this one, are written
``bool(True)``, ``int(0)``, ``int(-1)`` (also where a loop variable starts): numba compiles a
separate copy of the callee for every literal argument, which made the first call compile
75 specialisations instead of 56 (``docs/cold-start.md``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from mogradient.solvers.active_set import active_set, refine, start_full, start_vertex
from mogradient.solvers.factor import new_state
from mogradient.solvers.validation import (
    INFEASIBLE,
    NOT_IN_RANGE,
    OK,
    prepare,
    status_message,
    validated_normalised,
)


@njit(cache=True)
def _qp_kernel(
    gramian: np.ndarray,
    linear: np.ndarray,
    lower_bounds: np.ndarray,
    simplex: bool,
    tol: float,
    validate: bool,
) -> tuple[np.ndarray, int, int, int]:
    n = gramian.shape[0]
    g, scale, status, i, j = validated_normalised(gramian, tol, validate)
    if status != OK:
        return np.empty(0), status, i, j
    # shift x = l + y: linear term c + G l (normalised by the scale), Σy = 1 − Σl
    c = np.empty(n)
    for i in range(n):
        acc = 0.0
        for k in range(n):
            acc += g[i, k] * lower_bounds[k]
        c[i] = acc + (linear[i] / scale if scale > 0.0 else linear[i])
    total = 1.0 - lower_bounds.sum()
    y = np.zeros(n)
    if simplex:
        if total < -1e-12:
            return np.empty(0), INFEASIBLE, 0, 0
        if total <= 0.0:
            return lower_bounds.copy(), OK, 0, 0
        for i in range(n):
            c[i] /= total  # y = total·ŷ: ½ŷᵀGŷ + (c/total)ᵀŷ
    if scale == 0.0:
        if simplex:  # a linear program on the simplex: the best vertex (uniform over ties)
            best = c.min()
            count = 0
            for i in range(n):
                if c[i] == best:
                    count += 1
            for i in range(n):
                y[i] = total / count if c[i] == best else 0.0
            return lower_bounds + y, OK, 0, 0
        for i in range(n):
            if c[i] < 0.0:
                return np.empty(0), NOT_IN_RANGE, i, 0
        return lower_bounds.copy(), OK, 0, 0
    st = new_state(n)
    if simplex and not start_full(g, c, 1.0, y, st):
        start_vertex(g, c, 1.0, y, st)
    bnorm = 0.0  # a bound on the terms of c: |cᵢ| ≤ ‖gᵢ‖·bnorm when c = G·β, Σ|βₖ|‖gₖ‖ ≤ bnorm
    for i in range(n):
        if c[i] != 0.0:
            bnorm = max(bnorm, abs(c[i]) / max(math.sqrt(g[i, i]), 1e-150))
    bnorm = min(bnorm, 1e150)
    status, i = active_set(g, c, 1.0, simplex, y, st, bnorm, tol, bool(True))
    if status != OK:
        return np.empty(0), status, i, i
    refine(g, c, 1.0, simplex, y, st)
    if simplex:
        y *= total / y.sum()
    return lower_bounds + y, OK, 0, 0


def solve_qp(
    gramian: object,
    linear: object = None,
    *,
    lower: object = None,
    simplex: bool = False,
) -> np.ndarray:
    """Exact ``argmin ½xᵀGx + linearᵀx`` subject to ``x ≥ lower`` (and ``Σx = 1`` if
    ``simplex``) for a PSD Gramian G.

    ``linear`` (default 0) must lie in the range of G when ``simplex`` is False (it does when
    G is positive definite, or when it is ``G @ z``); otherwise the problem is unbounded and a
    ``ValueError`` says so. ``lower`` defaults to 0. Raises ``ValueError`` for a Gramian that
    is not square, finite, symmetric or PSD, for bounds of the wrong length, and for lower
    bounds summing to more than 1 on the simplex.
    """
    g, tol, validate = prepare(gramian)
    n = g.shape[0]
    vectors = []
    for name, value in (("linear", linear), ("lower", lower)):
        v = np.zeros(n) if value is None else np.ascontiguousarray(value, dtype=np.float64)
        if v.shape != (n,) or not np.isfinite(v).all():
            raise ValueError(
                f"{name} must be a finite vector of {n} entries (one per objective), got "
                f"shape {v.shape}"
            )
        vectors.append(v)
    x, status, i, j = _qp_kernel(g, vectors[0], vectors[1], bool(simplex), tol, validate)
    if status != OK:
        raise ValueError(status_message(status, i, j, g))
    return x
