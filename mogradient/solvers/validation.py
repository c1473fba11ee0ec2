"""Gramian validation and the status codes of the compiled solvers (numba, float64).

Validation runs in compiled code (:func:`gramian_status`, :func:`validated_normalised`): the
Python wrappers only check the shape (:func:`prepare`) and turn a status code into a
``ValueError`` that names the objective (:func:`status_message`). Its tolerance depends on the
precision the Gramian arrived in (:func:`precision_tolerance`): a float32 Gramian of a
rank-deficient Jacobian is PSD only to float32 rounding. A Gramian that already passed
:func:`mogradient.aggregation.inputs.check_gramian` arrives as a :class:`CheckedGramian` and is
not validated twice.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from mogradient.solvers.factor import dot

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

#: The compiled kernels' status codes (:func:`status_message` explains each).
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

    Returned by :func:`mogradient.aggregation.inputs.check_gramian`, so that a solver called on
    it from an aggregator's ``_solve`` skips a second validation and uses the tolerance of the
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
                    if abs(ai[perm[j]] - dot(low[i], low[j], k)) > bound:
                        return NOT_PSD_PIVOT, perm[i], perm[j]
            return OK, 0, 0
        r = math.sqrt(pivot)
        low[k, k] = r
        inv = 1.0 / r
        lk = low[k]
        ak = a[perm[k]]
        for i in range(k + 1, n):
            v = (ak[perm[i]] - dot(low[i], lk, k)) * inv
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
