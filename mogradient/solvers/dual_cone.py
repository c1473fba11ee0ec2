"""Projections onto the dual cone of the gradients, on the Gramian (UPGrad, DualProj).

The dual cone of the gradients is ``P = {d : gᵢ·d ≥ 0 for all i}``, the directions that conflict
with no objective. For ``y = Jᵀu`` its projection is ``π_P(y) = Jᵀv`` with

    v = argmin_{v ≥ u} vᵀGv                                   (Quinton & Rey 2024, Prop. 1)

— the nearest point to ``−Jᵀu`` of the cone spanned by the gradients, moved by ``Jᵀu``. With
``x = v − u`` this is ``min ½xᵀGx + (Gu)ᵀx`` over ``x ≥ 0``: the orthant instance of the
active-set kernel (:mod:`mogradient.solvers.qp`, Lawson–Hanson with an updated Cholesky factor
of ``G_SS``), exact and with no ridge. ``x`` stays 0 for the objectives that ``Jᵀu`` does not
conflict with, so a projection costs O(n) when nothing conflicts and O(n·|S| + |S|³) in
general, S being the set of objectives whose constraint binds.

* UPGrad: ``w = Σᵢ pᵢ vᵢ`` with ``vᵢ`` the projection of ``gᵢ`` (``u = eᵢ``), p the preference.
* DualProj: ``w = v`` for ``u = p`` (the projection of the preference-weighted mean).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from mogradient.solvers.active_set import active_set, refine, seed_violators
from mogradient.solvers.factor import FreeSet, new_state
from mogradient.solvers.validation import (
    NONFINITE_VECTOR,
    OK,
    prepare,
    status_message,
    validated_normalised,
)


@njit(cache=True)
def project_normalised(
    g: np.ndarray,
    b: np.ndarray,
    bnorm: float,
    x: np.ndarray,
    st: FreeSet,
    rows: np.ndarray,
    tol: float,
) -> int:
    """``x = argmin_{x ≥ 0} ½xᵀGx + bᵀx`` for a normalised Gramian and ``b = Gu``.

    ``bnorm`` bounds ``Σ|uₖ|‖gₖ‖`` (rounding scale of b); ``st`` is any free set of n
    objectives (overwritten), ``rows`` n×n scratch. Returns the kernel status; v = u + x.
    When no ``bⱼ`` is negative (``Jᵀu`` conflicts with no gradient) x = 0 is optimal and the
    active set would stop at once without moving it: that case returns before it, the same x.
    """
    x[:] = 0.0
    conflict = False
    for j in range(b.shape[0]):
        conflict |= not b[j] >= 0.0  # NaN counts as a conflict: the kernel decides
    if not conflict:
        return OK
    seed_violators(g, b, st, rows, bnorm)
    status, _ = active_set(g, b, 1.0, bool(False), x, st, bnorm, tol, bool(False))
    if status != OK:
        return status
    refine(g, b, 1.0, bool(False), x, st)
    return OK


@njit(cache=True)
def dual_cone_normalised(g: np.ndarray, u: np.ndarray, v: np.ndarray, tol: float) -> int:
    """``v = argmin_{v ≥ u} vᵀGv`` for a normalised Gramian (v is written)."""
    n = g.shape[0]
    st = new_state(n)
    b = np.zeros(n)
    bnorm = 0.0
    for k in range(n):
        uk = u[k]
        if uk != 0.0:
            row = g[k]
            for i in range(n):
                b[i] += uk * row[i]
            bnorm += abs(uk) * math.sqrt(g[k, k])
    rows = np.empty((n, n))
    status = project_normalised(g, b, bnorm, v, st, rows, tol)
    for k in range(n):
        v[k] += u[k]
    return status


@njit(cache=True)
def _first_nonfinite(u: np.ndarray) -> int:
    for i in range(u.shape[0]):
        if not np.isfinite(u[i]):
            return i
    return -1


@njit(cache=True)
def _project_kernel(
    gramian: np.ndarray, us: np.ndarray, tol: float, validate: bool
) -> tuple[np.ndarray, int, int, int]:
    n = gramian.shape[0]
    g, scale, status, i, j = validated_normalised(gramian, tol, validate)
    if status != OK:
        return np.empty((0, 0)), status, i, j
    for r in range(us.shape[0]):
        bad = _first_nonfinite(us[r])
        if bad >= 0:
            return np.empty((0, 0)), NONFINITE_VECTOR, bad, bad
    out = us.copy()
    if scale == 0.0:  # every vᵀGv is 0: the smallest feasible v is u itself
        return out, OK, 0, 0
    v = np.empty(n)
    for r in range(us.shape[0]):
        status = dual_cone_normalised(g, us[r], v, tol)
        if status != OK:
            return np.empty((0, 0)), status, 0, 0
        out[r] = v
    return out, OK, 0, 0


@njit(cache=True)
def _upgrad_kernel(
    gramian: np.ndarray, pref: np.ndarray, tol: float, validate: bool
) -> tuple[np.ndarray, int, int, int]:
    n = gramian.shape[0]
    g, scale, status, i, j = validated_normalised(gramian, tol, validate)
    if status != OK:
        return np.empty(0), status, i, j
    bad = _first_nonfinite(pref)
    if bad >= 0:
        return np.empty(0), NONFINITE_VECTOR, bad, bad
    w = pref.copy()
    if scale == 0.0:
        return w, OK, 0, 0
    st = new_state(n)
    rows = np.empty((n, n))
    x = np.empty(n)
    for i in range(n):
        if pref[i] == 0.0:
            continue
        # v = eᵢ + x with x = argmin_{x ≥ 0} ½xᵀGx + G[i]ᵀx: b is row i of G, no product
        status = project_normalised(g, g[i], math.sqrt(g[i, i]), x, st, rows, tol)
        if status != OK:
            return np.empty(0), status, 0, 0
        for k in range(n):
            w[k] += pref[i] * x[k]
    return w, OK, 0, 0


@njit(cache=True)
def _dualproj_kernel(
    gramian: np.ndarray, pref: np.ndarray, tol: float, validate: bool
) -> tuple[np.ndarray, int, int, int]:
    n = gramian.shape[0]
    g, scale, status, i, j = validated_normalised(gramian, tol, validate)
    if status != OK:
        return np.empty(0), status, i, j
    bad = _first_nonfinite(pref)
    if bad >= 0:
        return np.empty(0), NONFINITE_VECTOR, bad, bad
    if scale == 0.0:
        return pref.copy(), OK, 0, 0
    v = np.empty(n)
    status = dual_cone_normalised(g, pref, v, tol)
    if status != OK:
        return np.empty(0), status, 0, 0
    return v, OK, 0, 0


def _preference(preference: object, n: int) -> np.ndarray:
    if preference is None:
        return np.full(n, 1.0 / n)
    p = np.ascontiguousarray(preference, dtype=np.float64)
    if p.shape != (n,):
        raise ValueError(
            f"the preference must be a vector of {n} entries (one per objective), got shape "
            f"{p.shape}"
        )
    return p


def project_dual_cone(gramian: object, u: object) -> np.ndarray:
    """``v = argmin_{v ≥ u} vᵀGv``: ``Jᵀv`` is the projection of ``Jᵀu`` onto the dual cone
    ``{d : Jd ≥ 0}`` of the gradients (Quinton & Rey 2024, Prop. 1).

    ``u`` is one weight vector ``[n]`` or a batch ``[k, n]`` (one projection per row). Exact
    (active set, no ridge); raises ``ValueError`` for a bad Gramian or a u of the wrong shape.
    """
    g, tol, validate = prepare(gramian)
    n = g.shape[0]
    us = np.ascontiguousarray(u, dtype=np.float64)
    single = us.ndim == 1
    us2 = us.reshape(1, -1) if single else us
    if us2.ndim != 2 or us2.shape[1] != n:
        raise ValueError(
            f"u must be a vector of {n} weights or a batch [k, {n}], got shape {us.shape}"
        )
    v, status, i, j = _project_kernel(g, us2, tol, validate)
    if status != OK:
        raise ValueError(status_message(status, i, j, g))
    return v[0] if single else v


def upgrad_weights(gramian: object, preference: object = None) -> np.ndarray:
    """UPGrad's loss weights ``Σᵢ pᵢ vᵢ``, ``vᵢ = argmin_{v ≥ eᵢ} vᵀGv`` (p: the preference as
    given, default uniform 1/n; Quinton & Rey 2024). The direction ``Σ wᵢ gᵢ`` is the p-weighted
    sum of the gradients each projected onto the dual cone, so with p ≥ 0 it conflicts with no
    objective."""
    g, tol, validate = prepare(gramian)
    w, status, i, j = _upgrad_kernel(g, _preference(preference, g.shape[0]), tol, validate)
    if status != OK:
        raise ValueError(status_message(status, i, j, g))
    return w


def dualproj_weights(gramian: object, preference: object = None) -> np.ndarray:
    """DualProj's loss weights ``argmin_{v ≥ p} vᵀGv`` (p: the preference as given, default
    uniform 1/n): the p-weighted mean gradient projected onto the dual cone of the gradients."""
    g, tol, validate = prepare(gramian)
    w, status, i, j = _dualproj_kernel(g, _preference(preference, g.shape[0]), tol, validate)
    if status != OK:
        raise ValueError(status_message(status, i, j, g))
    return w
