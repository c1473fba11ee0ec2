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

Validation runs in compiled code too (:func:`gramian_status`): the Python wrappers only check
the shape and turn a status code into a ``ValueError`` that names the objective
(:func:`status_message`). Its tolerance depends on the precision the Gramian arrived in
(:func:`precision_tolerance`): a float32 Gramian of a rank-deficient Jacobian is PSD only to
float32 rounding. A Gramian that already passed :func:`mogradient._checks.check_gramian`
arrives as a :class:`CheckedGramian` and is not validated twice.

Constants passed to another kernel, here and in the solvers that call this one, are written
``bool(True)``, ``int(0)``, ``int(-1)`` (also where a loop variable starts): numba compiles a
separate copy of the callee for every literal argument, which made the first call compile
75 specialisations instead of 56 (``docs/cold-start.md``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

#: Relative tolerance (to the largest diagonal entry) for symmetry, the diagonal and the PSD
#: checks of a float64 Gramian; lower-precision inputs get :func:`precision_tolerance`.
GRAMIAN_TOL = 1e-8
#: A float32 (or float16, bfloat16) Gramian is trusted to ``LOW_PRECISION_FACTOR·n·eps`` of its
#: largest diagonal entry. Measured: float32 ``J Jᵀ`` of rank-deficient Jacobians (n ≤ 60,
#: d ≤ 10⁴) reach ``−0.27·n·eps`` in eigenvalue and ``1.9·eps`` in 2×2 minors.
LOW_PRECISION_FACTOR = 8.0
#: Up to this many objectives validation includes a full PSD test (a pivoted Cholesky, about a
#: µs); above it, 2×2 minors plus the negative curvature the solve itself runs into (a full test
#: would cost more than the solve: 4 µs at n = 32 against 10 µs for the whole min-norm solve).
PSD_CHECK_MAX_N = 16
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

#: Fast-math flags for the dot products only: reassociation lets LLVM vectorise the reductions;
#: no ``nnan``/``ninf``, so the finiteness checks stay.
FAST = {"reassoc", "nsz", "contract"}

OK = 0
NONFINITE = 1
NEGATIVE_DIAGONAL = 2
ASYMMETRIC = 3
NOT_PSD = 4
NOT_PSD_PIVOT = 5
NOT_IN_RANGE = 6
INFEASIBLE = 7
NONFINITE_VECTOR = 8


class CheckedGramian(np.ndarray):
    """A float64 C-contiguous Gramian that passed validation with relative tolerance ``tol``.

    Returned by :func:`mogradient._checks.check_gramian`, so that a solver called on it from
    an aggregator's ``_solve`` skips a second validation and uses the tolerance of the
    precision the Gramian arrived in. Anything derived from it (slices, copies, arithmetic)
    has ``tol = None`` and is validated again.
    """

    #: Set on the instance by ``check_gramian``; views, copies and results of arithmetic are new
    #: objects without it, so they read this class default.
    tol: float | None = None

    def __array_wrap__(  # type: ignore[override]
        self, arr: np.ndarray, context: object = None, return_scalar: bool = False
    ) -> object:
        out = np.asarray(arr)
        return out[()] if return_scalar else out


def precision_tolerance(eps: float | None, n: int) -> float:
    """Relative tolerance for a Gramian of ``n`` objectives that arrived with machine epsilon
    ``eps`` (None: integers, lists, float64 and wider: :data:`GRAMIAN_TOL`)."""
    if eps is None or eps <= np.finfo(np.float64).eps:
        return GRAMIAN_TOL
    return max(GRAMIAN_TOL, LOW_PRECISION_FACTOR * n * eps)


def prepare(gramian: object) -> tuple[np.ndarray, float, bool]:
    """``(float64 C-contiguous Gramian, tolerance, still to validate)`` for a solver's input.

    Accepts anything ``np.asarray`` does (numpy, CPU torch tensors, nested lists); raises
    ``ValueError`` unless it is a non-empty square matrix.
    """
    if type(gramian) is CheckedGramian and gramian.tol is not None:
        return gramian.view(np.ndarray), gramian.tol, False
    dtype = getattr(gramian, "dtype", None)
    eps = None
    if dtype is not None and not isinstance(dtype, np.dtype):  # a torch tensor
        import torch

        if gramian.is_floating_point():  # type: ignore[attr-defined]
            eps = torch.finfo(dtype).eps
        gramian = gramian.detach().to("cpu", torch.float64).numpy()  # type: ignore[attr-defined]
    elif dtype is not None and dtype.kind == "f":
        eps = float(np.finfo(dtype).eps)
    g = np.ascontiguousarray(gramian, dtype=np.float64)
    check_square(g)
    return g, precision_tolerance(eps, g.shape[0]), True


def check_square(g: np.ndarray) -> None:
    """Raise unless ``g`` is a non-empty square matrix."""
    if g.ndim != 2 or g.shape[0] != g.shape[1]:
        raise ValueError(
            f"expected a square Gramian of shape [n_objectives, n_objectives], got shape "
            f"{g.shape}; form it as J @ J.T from a Jacobian of shape [n_objectives, d]"
        )
    if g.shape[0] == 0:
        raise ValueError("the Gramian has zero objectives; pass at least one")


# -- validation ------------------------------------------------------------------------------


@njit(cache=True)
def _psd_pivoted(g: np.ndarray, tol: float) -> tuple[int, int, int]:
    """Pivoted Cholesky of a normalised Gramian: negative curvature beyond ``n·tol`` →
    NOT_PSD_PIVOT.

    Eliminates the largest remaining diagonal entry while it is above the tolerance; what
    remains (the Schur complement) must then be zero to the tolerance. By Sylvester's law of
    inertia a negative eigenvalue of G survives into that remainder. Reports the objectives of
    the offending entry. Left-looking, O(n·r²) for rank r.
    """
    n = g.shape[0]
    a = g  # normalised: largest diagonal entry 1
    perm = np.arange(n)
    diag = np.empty(n)
    for i in range(n):
        diag[i] = a[i, i]
    low = np.zeros((n, n))
    bound = n * tol
    for k in range(n):
        p = k
        for i in range(k + 1, n):
            if diag[i] > diag[p]:
                p = i
        if p != k:
            perm[k], perm[p] = perm[p], perm[k]
            diag[k], diag[p] = diag[p], diag[k]
            for t in range(k):
                low[k, t], low[p, t] = low[p, t], low[k, t]
        pivot = diag[k]
        if pivot <= bound:  # the remainder must vanish
            for i in range(k, n):
                if diag[i] < -bound:
                    return NOT_PSD_PIVOT, perm[i], perm[i]
                ai = a[perm[i]]
                for j in range(i + 1, n):
                    if abs(ai[perm[j]] - _dot(low[i], low[j], k)) > bound:
                        return NOT_PSD_PIVOT, perm[i], perm[j]
            return OK, 0, 0
        r = math.sqrt(pivot)
        low[k, k] = r
        inv = 1.0 / r
        lk = low[k]
        ak = a[perm[k]]
        for i in range(k + 1, n):
            v = (ak[perm[i]] - _dot(low[i], lk, k)) * inv
            low[i, k] = v
            diag[i] -= v * v
    return OK, 0, 0


@njit(cache=True)
def _scan(g: np.ndarray, tol: float, out: np.ndarray, write: bool) -> tuple[bool, float]:
    """One branch-free pass: ``(anything wrong?, largest diagonal entry)``; with ``write``,
    ``out = sym(G) / max diag`` (pre-scaled so that subnormal Gramians do not overflow).

    "Wrong" is any of: a non-finite entry, a diagonal entry below ``−tol·scale``, an
    asymmetry or a 2×2 minor beyond ``tol·scale`` (NaN fails every comparison). With
    ``write`` the entries are first scaled row by row (contiguous), then symmetrised in place.
    """
    n = g.shape[0]
    top = 0.0
    scale = 0.0
    for i in range(n):
        top = max(top, abs(g[i, i]))
        scale = max(scale, g[i, i])
    bound = tol * top
    pre = 1e300 if 0.0 < scale < 1e-290 else 1.0  # 1/scale would overflow for subnormals
    inv = 1.0 / (scale * pre) if scale > 0.0 else 0.0
    root = np.empty(n)
    ok = top < np.inf
    for i in range(n):
        gii = g[i, i]
        ok &= gii >= -bound
        root[i] = math.sqrt(max(gii, 0.0))  # √Gᵢᵢ√Gⱼⱼ cannot underflow like √(GᵢᵢGⱼⱼ)
    if write:
        for i in range(n):
            gi = g[i]
            oi = out[i]
            ri = root[i]
            for j in range(n):
                a = gi[j]
                ok &= abs(a) <= ri * root[j] + bound
                oi[j] = (a * pre) * inv
        for i in range(n):
            oi = out[i]
            for j in range(i + 1, n):
                a = oi[j]
                b = out[j, i]
                ok &= abs(g[i, j] - g[j, i]) <= bound
                v = 0.5 * a + 0.5 * b
                oi[j] = v
                out[j, i] = v
        return not ok, scale
    for i in range(n):
        gi = g[i]
        ri = root[i]
        for j in range(i + 1, n):
            a = gi[j]
            b = g[j, i]
            ok &= abs(a - b) <= bound
            ok &= abs(a) <= ri * root[j] + bound
    return not ok, scale


@njit(cache=True)
def _locate(g: np.ndarray, tol: float) -> tuple[int, int, int]:
    """The first problem :func:`_scan` flags, with the objective(s) concerned."""
    n = g.shape[0]
    for i in range(n):
        for j in range(n):
            if not np.isfinite(g[i, j]):
                return NONFINITE, i, j
    scale = 0.0
    for i in range(n):
        scale = max(scale, abs(g[i, i]))
    bound = tol * scale
    for i in range(n):
        if g[i, i] < -bound:
            return NEGATIVE_DIAGONAL, i, i
    for i in range(n):
        ri = math.sqrt(max(g[i, i], 0.0))
        for j in range(i + 1, n):
            if abs(g[i, j] - g[j, i]) > bound:
                return ASYMMETRIC, i, j
            if abs(g[i, j]) > ri * math.sqrt(max(g[j, j], 0.0)) + bound:
                return NOT_PSD, i, j
    return OK, 0, 0


@njit(cache=True)
def validated_normalised(
    gramian: np.ndarray, tol: float, validate: bool
) -> tuple[np.ndarray, float, int, int, int]:
    """``(sym(G) / max diag, max diag, status, i, j)`` in one pass over G.

    With ``validate``: finite, diagonal ≥ 0, symmetric and PSD, all to ``tol`` relative to the
    largest diagonal entry (``n·tol`` for curvature); PSD is tested in full up to
    ``PSD_CHECK_MAX_N`` objectives, by its 2×2 minors above (the solves report negative
    curvature they meet). A normalised copy is returned even when the status is not OK.
    """
    n = gramian.shape[0]
    out = np.empty((n, n))
    bad, scale = _scan(gramian, tol, out, bool(True))
    scale = max(scale, 0.0)
    if not validate:
        return out, scale, OK, 0, 0
    if bad:
        status, i, j = _locate(gramian, tol)
        if status != OK:
            return out, scale, status, i, j
    if 2 < n <= PSD_CHECK_MAX_N and scale > 0.0:
        status, i, j = _psd_pivoted(out, tol)
        if status != OK:
            return out, scale, status, i, j
    return out, scale, OK, 0, 0


@njit(cache=True)
def normalised(g: np.ndarray) -> tuple[np.ndarray, float]:
    """Symmetrised ``G / max diag`` and that scale (0 when every gradient is zero)."""
    out, scale, _, _, _ = validated_normalised(g, 0.0, bool(False))
    return out, scale


@njit(cache=True)
def gramian_status(g: np.ndarray, tol: float) -> tuple[int, int, int]:
    """Check a square Gramian: finite, diagonal ≥ 0, symmetric, positive semi-definite.

    Returns ``(status, i, j)`` with the offending objective(s); see :func:`validated_normalised`
    for the tolerances.
    """
    n = g.shape[0]
    if 2 < n <= PSD_CHECK_MAX_N:
        return validated_normalised(g, tol, bool(True))[2:]
    bad, _ = _scan(g, tol, g, bool(False))
    if bad:
        return _locate(g, tol)
    return OK, 0, 0


def status_message(status: int, i: int, j: int, g: np.ndarray) -> str:
    """Explain a kernel status code (what is wrong, and how to fix it)."""
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
    if status in (NOT_PSD, NOT_PSD_PIVOT):
        if status == NOT_PSD and i != j:
            where = f" (|G[{i}, {j}]| > sqrt(G[{i}, {i}] * G[{j}, {j}]))"
        elif status == NOT_PSD_PIVOT:
            where = (
                f" (negative curvature: a combination of the objectives with objectives "
                f"{i} and {j} has a negative squared norm)"
            )
        else:
            where = " (negative curvature found during the solve)"
        return (
            f"the Gramian is not positive semi-definite{where}; a Gramian must be J @ J.T for "
            "some Jacobian J: form it that way instead of editing its entries"
        )
    if status == NOT_IN_RANGE:
        return (
            f"the linear term is not in the range of the Gramian (objective {i} is dependent "
            "on the free ones but its gradient is not): the problem is unbounded; pass a "
            "linear term of the form G @ z"
        )
    if status == INFEASIBLE:
        return "the lower bounds sum to more than 1: no point of the simplex satisfies them"
    if status == NONFINITE_VECTOR:
        return f"entry {i} (objective {i}) of the weight vector is NaN or Inf; pass finite weights"
    return f"unknown status {status}"


# -- factor primitives -----------------------------------------------------------------------


@njit(cache=True, fastmath=FAST)  # not inline="always": numba-level inlining drops the flags
def _dot(a: np.ndarray, b: np.ndarray, m: int) -> float:
    acc = 0.0
    for k in range(m):
        acc += a[k] * b[k]
    return acc


@njit(cache=True)
def _backward(lower: np.ndarray, m: int, rhs: np.ndarray, out: np.ndarray) -> None:
    """Solve ``Lᵀ out = rhs`` (rhs is overwritten); column-oriented, contiguous rows."""
    for k in range(m - 1, -1, -1):
        zk = rhs[k] / lower[k, k]
        out[k] = zk
        row = lower[k]
        for t in range(k):
            rhs[t] -= zk * row[t]


@njit(cache=True)
def _new_row(
    g: np.ndarray, sigma: float, support: np.ndarray, m: int, lower: np.ndarray, j: int
) -> float:
    """Write row ``m`` of the factor of ``M_{S+j}`` (off-diagonal part); return the squared
    pivot. The caller stores the pivot, the forward entries and ``j`` once it accepts them."""
    row = lower[m]
    gj = g[j]
    for k in range(m):
        row[k] = (gj[support[k]] + sigma - _dot(lower[k], row, k)) / lower[k, k]
    return g[j, j] + sigma - _dot(row, row, m)


@njit(cache=True)
def _accept(
    lower: np.ndarray,
    support: np.ndarray,
    m: int,
    j: int,
    d2: float,
    bj: float,
    y1: np.ndarray,
    yb: np.ndarray,
) -> int:
    """Append ``j`` whose row ``m`` was written by :func:`_new_row`; extend ``L⁻¹1, L⁻¹b``."""
    row = lower[m]
    piv = math.sqrt(d2)
    row[m] = piv
    y1[m] = (1.0 - _dot(row, y1, m)) / piv
    yb[m] = (bj - _dot(row, yb, m)) / piv
    support[m] = j
    return m + 1


@njit(cache=True)
def _delete(
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
        alpha = (1.0 + s * _dot(y1, yb, m)) / _dot(y1, y1, m)
        for k in range(m):
            work[k] = alpha * y1[k] - s * yb[k]
    else:
        for k in range(m):
            work[k] = -s * yb[k]
    _backward(lower, m, work, z)


# -- the active-set method -------------------------------------------------------------------


class State:
    """Documentation only: the arrays a solve carries (all allocated by :func:`new_state`).

    ``support[:m]`` the free set in factor order, ``lower`` the Cholesky factor of ``M_S``,
    ``y1[:m] = L⁻¹1``, ``yb[:m] = L⁻¹b_S``, ``z``/``work``/``grad`` scratch of length n.
    """


@njit(cache=True)
def new_state(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(support, lower, y1, yb, scratch)`` for n objectives; scratch is ``[3, n]``."""
    return (
        np.empty(n, dtype=np.int64),
        np.empty((n, n)),
        np.empty(n),
        np.empty(n),
        np.empty((3, n)),
    )


@njit(cache=True)
def set_vertex(
    g: np.ndarray,
    b: np.ndarray,
    i: int,
    x: np.ndarray,
    support: np.ndarray,
    lower: np.ndarray,
    y1: np.ndarray,
    yb: np.ndarray,
) -> int:
    """Simplex start at the vertex ``eᵢ``; returns m = 1."""
    x[:] = 0.0
    x[i] = 1.0
    piv = math.sqrt(g[i, i] + 1.0)
    lower[0, 0] = piv
    y1[0] = 1.0 / piv
    yb[0] = b[i] / piv
    support[0] = i
    return int(1)


@njit(cache=True)
def start_vertex(
    g: np.ndarray,
    b: np.ndarray,
    s: float,
    x: np.ndarray,
    support: np.ndarray,
    lower: np.ndarray,
    y1: np.ndarray,
    yb: np.ndarray,
) -> int:
    """Simplex start at the best vertex ``argmin ½Gᵢᵢ + s·bᵢ``; returns m = 1."""
    n = g.shape[0]
    best = int(0)
    for i in range(1, n):
        if 0.5 * g[i, i] + s * b[i] < 0.5 * g[best, best] + s * b[best]:
            best = i
    return set_vertex(g, b, best, x, support, lower, y1, yb)


@njit(cache=True)
def start_full(
    g: np.ndarray,
    b: np.ndarray,
    s: float,
    x: np.ndarray,
    support: np.ndarray,
    lower: np.ndarray,
    y1: np.ndarray,
    yb: np.ndarray,
    scratch: np.ndarray,
) -> int:
    """Simplex start from the full support: one Cholesky of ``M = G + 11ᵀ``.

    When the minimiser on the whole affine hull is positive (every objective active, the usual
    case when the gradients are many-dimensional and roughly independent) it is the answer and
    x is set to it. If a few weights (at most n/8) come out non-positive, x is the uniform point
    and the active set drops them. Returns m, or 0 when the full support is a bad start (a
    dependent point, or many negative weights): the caller then starts from a vertex.
    """
    n = g.shape[0]
    # Column-oriented (left-looking) Cholesky: the n − j dot products of column j are
    # independent of each other, unlike the row-by-row forward substitutions of an insertion.
    for j in range(n):
        lj = lower[j]
        d2 = g[j, j] + 1.0 - _dot(lj, lj, j)
        if d2 <= SEED_TOL * (g[j, j] + 1.0):
            return 0
        piv = math.sqrt(d2)
        lj[j] = piv
        inv = 1.0 / piv
        gj = g[j]
        for i in range(j + 1, n):
            lower[i, j] = (gj[i] + 1.0 - _dot(lower[i], lj, j)) * inv
        y1[j] = (1.0 - _dot(lj, y1, j)) * inv
        yb[j] = (b[j] - _dot(lj, yb, j)) * inv
        support[j] = j
    z = scratch[0]
    free_minimiser(lower, n, y1, yb, s, bool(True), z, scratch[1])
    negative = 0
    for i in range(n):
        if z[i] <= 0.0:
            negative += 1
    if negative == 0:
        x[:] = z
    elif 8 * negative <= n:
        x[:] = 1.0 / n
    else:
        return 0
    return n


@njit(cache=True)
def factor_order(
    g: np.ndarray,
    b: np.ndarray,
    sigma: float,
    order: np.ndarray,
    count: int,
    support: np.ndarray,
    lower: np.ndarray,
    y1: np.ndarray,
    yb: np.ndarray,
    rows: np.ndarray,
) -> int:
    """Factor ``M_S`` for the candidates ``order[:count]`` in that order, leaving out those
    whose relative pivot is below ``SEED_TOL`` (dependent on the ones before). Returns m.

    Left-looking by columns: accepting candidate c fills its column for every later candidate
    at once (independent dot products, unlike the row-by-row forward substitutions of single
    insertions); ``rows`` (at least ``count × count``) holds the candidates' rows meanwhile.
    """
    m = int(0)
    for c in range(count):
        j = order[c]
        rc = rows[c]
        d2 = g[j, j] + sigma - _dot(rc, rc, m)
        if d2 <= SEED_TOL * (g[j, j] + sigma):
            continue
        piv = math.sqrt(d2)
        inv = 1.0 / piv
        gj = g[j]
        for c2 in range(c + 1, count):
            r2 = rows[c2]
            r2[m] = (gj[order[c2]] + sigma - _dot(r2, rc, m)) * inv
        row = lower[m]
        for k in range(m):
            row[k] = rc[k]
        row[m] = piv
        y1[m] = (1.0 - _dot(row, y1, m)) * inv
        yb[m] = (b[j] - _dot(row, yb, m)) * inv
        support[m] = j
        m += 1
    return m


@njit(cache=True)
def seed_support(
    g: np.ndarray,
    b: np.ndarray,
    sigma: float,
    x: np.ndarray,
    support: np.ndarray,
    lower: np.ndarray,
    y1: np.ndarray,
    yb: np.ndarray,
) -> int:
    """Factor the support of a feasible ``x`` (largest entries first), dropping dependent
    points. Returns m. A seed only speeds the solve up, so nearly dependent points are dropped
    generously (the solve brings them back if they matter); on the simplex x is renormalised.
    """
    order = np.argsort(-x)
    count = 0
    while count < order.shape[0] and x[order[count]] > 0.0:
        count += 1
    rows = np.empty((count, count))
    m = factor_order(g, b, sigma, order, count, support, lower, y1, yb, rows)
    kept = np.zeros(x.shape[0], dtype=np.bool_)
    for k in range(m):
        kept[support[k]] = True
    total = 0.0
    for i in range(x.shape[0]):
        if not kept[i]:
            x[i] = 0.0
        total += x[i]
    if sigma > 0.0:
        for k in range(m):
            x[support[k]] /= total
    return m


@njit(cache=True)
def seed_violators(
    g: np.ndarray,
    b: np.ndarray,
    support: np.ndarray,
    lower: np.ndarray,
    y1: np.ndarray,
    yb: np.ndarray,
    rows: np.ndarray,
    bnorm: float,
) -> int:
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
    return factor_order(g, b, 0.0, order, count, support, lower, y1, yb, rows)


@njit(cache=True)
def active_set(
    g: np.ndarray,
    b: np.ndarray,
    s: float,
    simplex: bool,
    x: np.ndarray,
    support: np.ndarray,
    m: int,
    lower: np.ndarray,
    y1: np.ndarray,
    yb: np.ndarray,
    scratch: np.ndarray,
    bnorm: float,
    tol: float,
    check_range: bool,
) -> tuple[int, int, int]:
    """Minimise ``½xᵀGx + s·bᵀx`` over x ≥ 0 (and Σx = 1 if ``simplex``), in place.

    ``g`` is normalised (largest diagonal 1) and symmetric; ``x`` is feasible, its free set is
    ``support[:m]`` (every entry of x outside it is 0) with factor ``lower`` and forward
    solutions ``y1``, ``yb``. On return x is optimal and the state describes its free set.
    ``bnorm`` bounds the size of the terms of b: ``b = Gβ`` with ``Σ|βₖ|‖gₖ‖ ≤ bnorm`` (for
    the KKT tolerance). Returns ``(m, status, index)``: ``NOT_PSD`` when ``xᵀGx`` turns negative
    beyond ``n·tol``; with ``check_range`` (orthant), ``NOT_IN_RANGE`` when a dependent point
    still lowers the objective, i.e. b has a component outside range(G): unbounded.
    """
    n = g.shape[0]
    sigma = 1.0 if simplex else 0.0
    z = scratch[0]
    work = scratch[1]
    grad = scratch[2]
    bnorm = bnorm * abs(s)
    entered = -1
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
            m = _delete(lower, support, m, drop, y1, yb)
            if stalled:  # the entering point cannot move: optimal to working precision
                return m, OK, 0
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
            return m, NOT_PSD, 0
        j = int(-1)
        for i in range(n):
            if x[i] == 0.0 and (j < 0 or grad[i] < grad[j]):
                j = i
        if j < 0:
            return m, OK, 0
        # Tolerance relative to the terms that make up grad[j] and the level, not to the
        # largest gradient: a tiny gradient next to a huge one still gets its exact share.
        nj = math.sqrt(g[j, j])
        scale_j = nj * (rho + bnorm)
        if simplex:
            scale_j += rho * (rho + bnorm) + lin
        if grad[j] >= level - KKT_TOL * scale_j:
            return m, OK, 0
        d2 = _new_row(g, sigma, support, m, lower, j)
        diag = g[j, j] + sigma
        # The complement's rounding grows with ‖row‖² = diag − d2: a nearly singular factor
        # (points almost dependent already) makes it unreliable, not negative.
        noise = ROUNDING * (m + 1) * EPS * (2.0 * diag - d2)
        if not simplex:  # without the +11ᵀ shift a near-singular G_SS amplifies the rounding
            noise *= RELIABLE
        if d2 <= DEPENDENT_TOL * diag + noise:  # j depends on S to working precision
            if check_range and not simplex and grad[j] < level - RANGE_TOL * scale_j:
                return m, NOT_IN_RANGE, j
            return m, OK, 0
        m = _accept(lower, support, m, j, d2, b[j], y1, yb)
        x[j] = 0.0
        entered = j
    return m, OK, 0


@njit(cache=True)
def refine(
    g: np.ndarray,
    b: np.ndarray,
    s: float,
    simplex: bool,
    x: np.ndarray,
    support: np.ndarray,
    m: int,
    lower: np.ndarray,
    y1: np.ndarray,
) -> None:
    """One step of iterative refinement of the minimiser on the final free set.

    The residual ``G_SS x_S + s·b_S − ν1`` is computed on G itself (not on ``M = G_SS + 11ᵀ``,
    whose unit shift hides entries far below the largest one), so a near-zero optimum comes
    out accurate relative to the gradients involved, not only to the largest one. Skipped if
    it would make a weight non-positive. ``y1 = L⁻¹1`` is the carried forward solution.
    """
    if m == 0:
        return
    n = g.shape[0]
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
            acc = s * b[i] + _dot(row, x, n)
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
        res[k] = (res[k] - _dot(lower[k], res, k)) / lower[k, k]
    _backward(lower, m, res, corr)
    if simplex:  # keep Σx = 1: remove the M⁻¹1 = L⁻ᵀ(L⁻¹1) component that changes the sum
        for k in range(m):
            res[k] = y1[k]
        _backward(lower, m, res, work)
        ratio = corr.sum() / work.sum()
        for k in range(m):
            corr[k] -= ratio * work[k]
    for k in range(m):
        if x[support[k]] + corr[k] <= 0.0:
            return
    for k in range(m):
        x[support[k]] += corr[k]


# -- a general entry point -------------------------------------------------------------------


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
    support, lower, y1, yb, scratch = new_state(n)
    if simplex:
        m = start_full(g, c, 1.0, y, support, lower, y1, yb, scratch)
        if m == 0:
            m = start_vertex(g, c, 1.0, y, support, lower, y1, yb)
    else:
        m = int(0)
    bnorm = 0.0  # a bound on the terms of c: |cᵢ| ≤ ‖gᵢ‖·bnorm when c = G·β, Σ|βₖ|‖gₖ‖ ≤ bnorm
    for i in range(n):
        if c[i] != 0.0:
            bnorm = max(bnorm, abs(c[i]) / max(math.sqrt(g[i, i]), 1e-150))
    bnorm = min(bnorm, 1e150)
    m, status, i = active_set(
        g, c, 1.0, simplex, y, support, m, lower, y1, yb, scratch, bnorm, tol, bool(True)
    )
    if status != OK:
        return np.empty(0), status, i, i
    refine(g, c, 1.0, simplex, y, support, m, lower, y1)
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
