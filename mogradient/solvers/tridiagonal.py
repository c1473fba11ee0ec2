"""Symmetric eigendecomposition for a few objectives: Householder tridiagonalisation and the
implicit QL algorithm (numba, float64).

The EISPACK routines ``tred2`` and ``tql2`` (Wilkinson & Reinsch, *Handbook for Automatic
Computation II*, 1971), as in JAMA's ``EigenvalueDecomposition``: backward stable, every
eigenvalue accurate to about ``n·ε·λ_max`` as LAPACK's ``eigh``, at an O(n³) cost several
times below the cyclic Jacobi sweeps (:func:`mogradient.solvers.imtl_g.jacobi_eigh`) and
without LAPACK's call overhead at n ≤ 12. Jacobi stays the choice for graded matrices, whose
small eigenvalues it gets to a relative accuracy.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

#: QL iterations allowed per eigenvalue (it converges in two or three in practice); beyond
#: it :func:`tridiagonal_eigh` reports failure.
MAX_QL_ITERATIONS = 64


@njit(cache=True, inline="always")
def _hypot(a: float, b: float) -> float:
    """``√(a² + b²)`` without overflow or underflow, to a few ulps (``math.hypot`` costs about
    25 times as much in compiled code, and the QL steps call it O(n²) times)."""
    a = abs(a)
    b = abs(b)
    if a < b:
        a, b = b, a
    if a == 0.0 or a == np.inf:
        return a
    r = b / a
    return a * math.sqrt(1.0 + r * r)


@njit(cache=True)
def _tred2(v: np.ndarray, d: np.ndarray, e: np.ndarray) -> None:
    """Reduce the symmetric ``v`` (overwritten with the orthogonal transformation) to the
    tridiagonal ``(d, e)`` (diagonal, subdiagonal in ``e[1:]``)."""
    n = v.shape[0]
    for j in range(n):
        d[j] = v[n - 1, j]
    for i in range(n - 1, 0, -1):
        scale = 0.0
        h = 0.0
        for k in range(i):
            scale += abs(d[k])
        if scale == 0.0:
            e[i] = d[i - 1]
            for j in range(i):
                d[j] = v[i - 1, j]
                v[i, j] = 0.0
                v[j, i] = 0.0
        else:
            for k in range(i):
                d[k] /= scale
                h += d[k] * d[k]
            f = d[i - 1]
            g = math.sqrt(h)
            if f > 0.0:
                g = -g
            e[i] = scale * g
            h -= f * g
            d[i - 1] = f - g
            for j in range(i):
                e[j] = 0.0
            for j in range(i):
                f = d[j]
                v[j, i] = f
                g = e[j] + v[j, j] * f
                for k in range(j + 1, i):
                    g += v[k, j] * d[k]
                    e[k] += v[k, j] * f
                e[j] = g
            f = 0.0
            for j in range(i):
                e[j] /= h
                f += e[j] * d[j]
            hh = f / (h + h)
            for j in range(i):
                e[j] -= hh * d[j]
            for j in range(i):
                f = d[j]
                g = e[j]
                for k in range(j, i):
                    v[k, j] -= f * e[k] + g * d[k]
                d[j] = v[i - 1, j]
                v[i, j] = 0.0
        d[i] = h
    for i in range(n - 1):
        v[n - 1, i] = v[i, i]
        v[i, i] = 1.0
        h = d[i + 1]
        if h != 0.0:
            for k in range(i + 1):
                d[k] = v[k, i + 1] / h
            for j in range(i + 1):
                g = 0.0
                for k in range(i + 1):
                    g += v[k, i + 1] * v[k, j]
                for k in range(i + 1):
                    v[k, j] -= g * d[k]
        for k in range(i + 1):
            v[k, i + 1] = 0.0
    for j in range(n):
        d[j] = v[n - 1, j]
        v[n - 1, j] = 0.0
    v[n - 1, n - 1] = 1.0
    e[0] = 0.0


@njit(cache=True)
def _tql2(vt: np.ndarray, d: np.ndarray, e: np.ndarray) -> bool:
    """Diagonalise the tridiagonal ``(d, e)`` by implicit QL steps, accumulating them into
    the rows of ``vt`` (the transformation transposed: its rows are contiguous); ``d`` ends
    up holding the eigenvalues. False if an eigenvalue does not converge within
    :data:`MAX_QL_ITERATIONS`."""
    n = vt.shape[0]
    for i in range(1, n):
        e[i - 1] = e[i]
    e[n - 1] = 0.0
    f = 0.0
    tst1 = 0.0
    eps = np.finfo(np.float64).eps
    for l in range(n):  # noqa: E741 (the algorithm's name for the active block's start)
        tst1 = max(tst1, abs(d[l]) + abs(e[l]))
        m = l
        while m < n - 1 and abs(e[m]) > eps * tst1:
            m += 1
        if m > l:
            iterations = 0
            while True:
                iterations += 1
                if iterations > MAX_QL_ITERATIONS:
                    return False
                g = d[l]
                p = (d[l + 1] - g) / (2.0 * e[l])
                r = _hypot(p, 1.0)
                if p < 0.0:
                    r = -r
                d[l] = e[l] / (p + r)
                d[l + 1] = e[l] * (p + r)
                dl1 = d[l + 1]
                h = g - d[l]
                for i in range(l + 2, n):
                    d[i] -= h
                f += h
                p = d[m]
                c = 1.0
                c2 = c
                c3 = c
                el1 = e[l + 1]
                s = 0.0
                s2 = 0.0
                for i in range(m - 1, l - 1, -1):
                    c3 = c2
                    c2 = c
                    s2 = s
                    g = c * e[i]
                    h = c * p
                    r = _hypot(p, e[i])
                    e[i + 1] = s * r
                    s = e[i] / r
                    c = p / r
                    p = c * d[i] - s * g
                    d[i + 1] = h + s * (c * g + s * d[i])
                    row = vt[i]
                    nxt = vt[i + 1]
                    for k in range(n):
                        h = nxt[k]
                        nxt[k] = s * row[k] + c * h
                        row[k] = c * row[k] - s * h
                p = -s * s2 * c3 * el1 * e[l] / dl1
                e[l] = s * p
                d[l] = c * p
                if not abs(e[l]) > eps * tst1:
                    break
        d[l] += f
        e[l] = 0.0
    return True


@njit(cache=True)
def tridiagonal_eigh(g: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(eigenvalues ascending, eigenvectors as columns, converged)`` of the symmetric part of
    ``g``."""
    n = g.shape[0]
    v = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            v[i, j] = 0.5 * (g[i, j] + g[j, i])
    d = np.empty(n)
    e = np.empty(n)
    _tred2(v, d, e)
    vt = v.T.copy()
    if not _tql2(vt, d, e):
        return d, v, False
    order = np.argsort(d)
    lam = np.empty(n)
    for c in range(n):
        lam[c] = d[order[c]]
        row = vt[order[c]]
        for r in range(n):
            v[r, c] = row[r]
    return lam, v, True
