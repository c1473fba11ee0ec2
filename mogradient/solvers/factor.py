"""The state of an active-set solve (:class:`FreeSet`): the free set S and the Cholesky factor
of ``M_S = G_SS + σ11ᵀ``, updated in place, never recomputed (numba, float64); and the
primitives that update it.

σ = 1 on the simplex, 0 on the orthant. A point enters with one new row of the factor
(:func:`new_row`, :func:`accept`, O(|S|²)) and leaves with Givens rotations (:func:`delete`,
O(|S|²)); the forward solutions ``L⁻¹1`` and ``L⁻¹b_S`` are carried along, so the minimiser on
S costs one triangular solve (:func:`free_minimiser`).

Constants passed to another kernel are written ``bool(True)``, ``int(0)``: numba compiles a
separate copy of the callee for every literal argument (``docs/cold-start.md``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

#: Fast-math flags for the dot products only: reassociation lets LLVM vectorise the reductions;
#: no ``nnan``/``ninf``, so the finiteness checks stay.
FAST = {"reassoc", "nsz", "contract"}


class FreeSet(NamedTuple):
    """The state of an active-set solve on n objectives, allocated by :func:`new_state`.

    ``size[0]`` is m, the number of free points; ``support[:m]`` the free set in factor order;
    ``lower[:m, :m]`` the Cholesky factor of ``M_S``; ``y1[:m] = L⁻¹1`` and ``yb[:m] = L⁻¹b_S``
    its forward solutions; ``scratch`` three rows of length n (the minimiser on the free set,
    work space, the gradient).

    A tuple of arrays, which numba compiles like the separate arrays it replaces: the
    active-set functions take one, and unpack it once, so that the primitives below, called in
    their loops, take plain arrays (reading a field of a tuple inside a small kernel costs a
    reference-count update, which made the solves 15-25 % slower when every primitive took the
    record).
    """

    size: np.ndarray
    support: np.ndarray
    lower: np.ndarray
    y1: np.ndarray
    yb: np.ndarray
    scratch: np.ndarray


@njit(cache=True)
def new_state(n: int) -> FreeSet:
    """An empty free set (m = 0) for n objectives."""
    return FreeSet(
        np.zeros(1, dtype=np.int64),
        np.empty(n, dtype=np.int64),
        np.empty((n, n)),
        np.empty(n),
        np.empty(n),
        np.empty((3, n)),
    )


@njit(cache=True, fastmath=FAST)  # not inline="always": numba-level inlining drops the flags
def dot(a: np.ndarray, b: np.ndarray, m: int) -> float:
    """``Σₖ<ₘ aₖbₖ``."""
    acc = 0.0
    for k in range(m):
        acc += a[k] * b[k]
    return acc


@njit(cache=True)
def cholesky_in_place(a: np.ndarray) -> bool:
    """Overwrite the lower triangle of the symmetric ``a`` (read from its lower triangle) with
    its Cholesky factor L, ``a = LLᵀ``; False at the first non-positive pivot (``a`` is then
    not positive definite, and partly overwritten). The upper triangle is left as it was."""
    n = a.shape[0]
    for j in range(n):
        s = a[j, j]
        for k in range(j):
            s -= a[j, k] * a[j, k]
        if not s > 0.0:
            return False
        d = math.sqrt(s)
        a[j, j] = d
        for i in range(j + 1, n):
            s = a[i, j]
            for k in range(j):
                s -= a[i, k] * a[j, k]
            a[i, j] = s / d
    return True


@njit(cache=True)
def back_substitute(lower: np.ndarray, m: int, rhs: np.ndarray, out: np.ndarray) -> None:
    """Solve ``Lᵀ out = rhs`` (rhs is overwritten); column-oriented, contiguous rows."""
    for k in range(m - 1, -1, -1):
        zk = rhs[k] / lower[k, k]
        out[k] = zk
        row = lower[k]
        for t in range(k):
            rhs[t] -= zk * row[t]


@njit(cache=True)
def new_row(
    g: np.ndarray, sigma: float, support: np.ndarray, m: int, lower: np.ndarray, j: int
) -> float:
    """Write row ``m`` of the factor of ``M_{S+j}`` (off-diagonal part); return the squared
    pivot. The caller stores the pivot, the forward entries and ``j`` once it accepts them."""
    row = lower[m]
    gj = g[j]
    for k in range(m):
        row[k] = (gj[support[k]] + sigma - dot(lower[k], row, k)) / lower[k, k]
    return g[j, j] + sigma - dot(row, row, m)


@njit(cache=True)
def accept(
    lower: np.ndarray,
    support: np.ndarray,
    m: int,
    j: int,
    d2: float,
    bj: float,
    y1: np.ndarray,
    yb: np.ndarray,
) -> int:
    """Append ``j`` whose row ``m`` was written by :func:`new_row`; extend ``L⁻¹1, L⁻¹b``."""
    row = lower[m]
    piv = math.sqrt(d2)
    row[m] = piv
    y1[m] = (1.0 - dot(row, y1, m)) / piv
    yb[m] = (bj - dot(row, yb, m)) / piv
    support[m] = j
    return m + 1


@njit(cache=True)
def delete(
    lower: np.ndarray, support: np.ndarray, m: int, pos: int, y1: np.ndarray, yb: np.ndarray
) -> int:
    """Remove support position ``pos``: drop its row, restore triangularity with Givens
    rotations of the columns, and rotate the forward solutions alike."""
    for r in range(pos, m - 1):
        support[r] = support[r + 1]
        for k in range(r + 2):
            lower[r, k] = lower[r + 1, k]
    for r in range(pos, m - 1):
        a = lower[r, r]
        b = lower[r, r + 1]
        h = math.hypot(a, b)
        cs = a / h
        sn = b / h
        lower[r, r] = h
        lower[r, r + 1] = 0.0
        for k in range(r + 1, m - 1):
            x = lower[k, r]
            y = lower[k, r + 1]
            lower[k, r] = cs * x + sn * y
            lower[k, r + 1] = cs * y - sn * x
        x = y1[r]
        y = y1[r + 1]
        y1[r] = cs * x + sn * y
        y1[r + 1] = cs * y - sn * x
        x = yb[r]
        y = yb[r + 1]
        yb[r] = cs * x + sn * y
        yb[r + 1] = cs * y - sn * x
    return m - 1


@njit(cache=True)
def free_minimiser(
    lower: np.ndarray,
    m: int,
    y1: np.ndarray,
    yb: np.ndarray,
    s: float,
    simplex: bool,
    z: np.ndarray,
    work: np.ndarray,
) -> None:
    """Minimiser of ``½xᵀGx + s·bᵀx`` on the free set (``Σx = 1`` on the simplex) into z.

    Simplex: ``z = ((1 + s·1ᵀM⁻¹b)/1ᵀM⁻¹1)·M⁻¹1 − s·M⁻¹b``; orthant: ``z = −s·M⁻¹b``, with
    ``1ᵀM⁻¹1 = ‖L⁻¹1‖²`` and ``1ᵀM⁻¹b = (L⁻¹1)·(L⁻¹b)``: one backward solve.
    """
    if simplex:
        alpha = (1.0 + s * dot(y1, yb, m)) / dot(y1, y1, m)
        for k in range(m):
            work[k] = alpha * y1[k] - s * yb[k]
    else:
        for k in range(m):
            work[k] = -s * yb[k]
    back_substitute(lower, m, work, z)
