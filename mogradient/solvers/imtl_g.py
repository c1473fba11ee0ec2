"""IMTL-G's weights from the Gramian (numba, float64), and the spectral helpers that
Aligned-MTL and ConFIG share with it.

IMTL-G asks for the combination ``d = Σ wᵢgᵢ`` with ``Σ wᵢ = 1`` whose projection onto every
unit gradient ``uᵢ = gᵢ/‖gᵢ‖`` is the same. With ``N = diag(‖gᵢ‖)`` and the cosine matrix
``Ĝ = N⁻¹GN⁻¹`` (Gramian of the unit gradients), write ``w = N⁻¹β``: then ``d = Uᵀβ`` and the
projections are ``Ĝβ``, so the conditions read ``Ĝβ = c·1``, i.e. ``β ∝ Ĝ⁻¹1`` and
``w = N⁻¹Ĝ⁻¹1 / 1ᵀN⁻¹Ĝ⁻¹1`` (equal to ``G⁻¹N1 / 1ᵀG⁻¹N1``). Where the gradients are
linearly dependent we take ``β = Ĝ⁺1``, the least-squares solution of the same equations in the
same frame (the projections closest to equal); TorchJD uses ``G⁺N1`` there instead, a
least-squares fit weighted by the gradients' norms (see ``docs/aggregators/imtl-g.md``). Working
in the cosine frame, whose entries lie in [-1, 1] whatever the norms, keeps the weights exactly
independent of the gradients' common scale and accurate when their norms differ by many orders
of magnitude.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from mogradient.solvers.factor import cholesky_in_place

#: An eigenvalue at or below ``RANK_RTOL · n · λ_max`` counts as zero (a singular value below
#: about ``1.5e-7 · √n`` of the largest: float64 rounding of a Gramian, and float32 rounding of
#: a Jacobian, stay below it).
RANK_RTOL = 100.0 * np.finfo(np.float64).eps
#: A sum whose magnitude is at most ``CANCEL_RTOL · k`` times the sum of its terms' magnitudes
#: is rounding noise of an exact zero, and is taken as zero.
CANCEL_RTOL = 64.0 * np.finfo(np.float64).eps
#: ``|Σ vᵢ| ≤ SUM_RTOL · Σ |vᵢ|``: the weights cannot be normalised to sum to 1 (IMTL-G).
SUM_RTOL = 1e-12


@njit(cache=True)
def unit_gramian(g: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(idx, norms, cos)``: the objectives with a non-zero gradient, their norms and the
    cosine matrix among them (symmetrised, clipped to [-1, 1], unit diagonal)."""
    n = g.shape[0]
    idx = np.empty(n, np.int64)
    k = 0
    for i in range(n):
        if g[i, i] > 0.0:
            idx[k] = i
            k += 1
    idx = idx[:k]
    norms = np.empty(k)
    for a in range(k):
        norms[a] = math.sqrt(g[idx[a], idx[a]])
    cos = np.empty((k, k))
    for a in range(k):
        cos[a, a] = 1.0
        for b in range(a + 1, k):
            i, j = idx[a], idx[b]
            c = 0.5 * (g[i, j] + g[j, i]) / norms[a] / norms[b]
            c = min(1.0, max(-1.0, c))
            cos[a, b] = c
            cos[b, a] = c
    return idx, norms, cos


@njit(cache=True)
def jacobi_eigh(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of a symmetric PSD matrix by cyclic Jacobi
    rotations, stopping when every ``|a_pq| ≤ ε·√(a_pp·a_qq)``.

    For ``G = NĜN`` with a well-conditioned ``Ĝ`` this computes every eigenvalue to a relative
    accuracy of about ``ε·κ(Ĝ)`` (Demmel & Veselić, *Jacobi's method is more accurate than QR*,
    SIAM J. Matrix Anal. Appl. 1992), where LAPACK's ``eigh`` is accurate only to ``ε·λ_max``:
    with gradient norms spanning 1e-6 to 1e6 its small eigenvalues can be wrong in every digit.
    """
    n = g.shape[0]
    a = 0.5 * (g + g.T)
    v = np.eye(n)
    eps = np.finfo(np.float64).eps
    for _sweep in range(64):
        rotated = False
        for p in range(n - 1):
            for q in range(p + 1, n):
                apq = a[p, q]
                if apq == 0.0:
                    continue
                app = a[p, p]
                aqq = a[q, q]
                if abs(apq) <= eps * math.sqrt(max(app, 0.0)) * math.sqrt(max(aqq, 0.0)):
                    a[p, q] = 0.0
                    a[q, p] = 0.0
                    continue
                rotated = True
                theta = (aqq - app) / (2.0 * apq)
                if abs(theta) > 1e150:
                    t = 0.5 / theta
                else:
                    t = 1.0 / (abs(theta) + math.sqrt(theta * theta + 1.0))
                    if theta < 0.0:
                        t = -t
                c = 1.0 / math.sqrt(t * t + 1.0)
                s = t * c
                tau = s / (1.0 + c)
                a[p, p] = app - t * apq
                a[q, q] = aqq + t * apq
                a[p, q] = 0.0
                a[q, p] = 0.0
                for r in range(n):
                    if r != p and r != q:
                        arp = a[r, p]
                        arq = a[r, q]
                        a[r, p] = arp - s * (arq + tau * arp)
                        a[r, q] = arq + s * (arp - tau * arq)
                        a[p, r] = a[r, p]
                        a[q, r] = a[r, q]
                for r in range(n):
                    vrp = v[r, p]
                    vrq = v[r, q]
                    v[r, p] = vrp - s * (vrq + tau * vrp)
                    v[r, q] = vrq + s * (vrp - tau * vrq)
        if not rotated:
            break
    lam = np.empty(n)
    for i in range(n):
        lam[i] = a[i, i]
    order = np.argsort(lam)
    return lam[order], v[:, order]


#: Jacobi rotations are used up to this many objectives (faster than LAPACK there) and
#: whenever the gradient norms are graded (their squares spanning more than GRADED_RATIO).
JACOBI_MAX_N = 12
GRADED_RATIO = 1e4


@njit(cache=True)
def graded(g: np.ndarray) -> bool:
    """Whether the positive diagonal entries of ``g`` (the squared gradient norms) span more
    than ``GRADED_RATIO``: then only Jacobi rotations keep the small eigenvalues' relative
    accuracy."""
    top = 0.0
    low = np.inf
    for i in range(g.shape[0]):
        if g[i, i] > 0.0:
            top = max(top, g[i, i])
            low = min(low, g[i, i])
    return top > GRADED_RATIO * low


@njit(cache=True)
def eigh_psd(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of a symmetric PSD matrix: Jacobi rotations up
    to ``JACOBI_MAX_N`` objectives or when the diagonal is graded, LAPACK otherwise."""
    if g.shape[0] <= JACOBI_MAX_N or graded(g):
        return jacobi_eigh(g)
    return np.linalg.eigh(0.5 * (g + g.T))


@njit(cache=True)
def first_kept(lam: np.ndarray) -> int:
    """Index of the first eigenvalue (ascending ``lam``) above the rank cut-off; ``len(lam)``
    when every eigenvalue is zero."""
    k = lam.shape[0]
    if k == 0 or not lam[k - 1] > 0.0:
        return k
    cut = RANK_RTOL * k * lam[k - 1]
    f = 0
    while f < k and lam[f] <= cut:
        f += 1
    return f


@njit(cache=True)
def spectral_dots(vec: np.ndarray, f: int, rhs: np.ndarray) -> np.ndarray:
    """``v_c·rhs`` for the kept eigenvectors ``c ≥ f`` (zero below ``f``), with sums that cancel
    to rounding noise set to exactly zero (so an exactly stationary input gives exactly 0)."""
    k = vec.shape[0]
    dots = np.zeros(k)
    for c in range(f, k):
        dot = 0.0
        size = 0.0
        for a in range(k):
            term = vec[a, c] * rhs[a]
            dot += term
            size += abs(term)
        if abs(dot) > CANCEL_RTOL * k * size:
            dots[c] = dot
    return dots


@njit(cache=True)
def pinv_apply(lam: np.ndarray, vec: np.ndarray, f: int, rhs: np.ndarray) -> np.ndarray:
    """``Σ_{c ≥ f} v_c (v_c·rhs) / λ_c``: the pseudo-inverse applied to ``rhs``."""
    k = lam.shape[0]
    dots = spectral_dots(vec, f, rhs)
    out = np.zeros(k)
    for c in range(f, k):
        coef = dots[c] / lam[c]
        if coef != 0.0:
            for a in range(k):
                out[a] += coef * vec[a, c]
    return out


#: The cosine matrix is solved by Cholesky when ``DEFINITE_MARGIN · trace(Ĝ⁻¹) · RANK_RTOL·k²
#: ≤ 1``: every eigenvalue is then at least ``1 / trace(Ĝ⁻¹)``, this margin above the rank
#: cut-off of :func:`first_kept` (``RANK_RTOL·k·λ_max ≤ RANK_RTOL·k²``, as ``λ_max ≤ trace Ĝ
#: = k``), so ``Ĝ⁺1 = Ĝ⁻¹1`` (``trace(Ĝ⁻¹) ≤ 1.1e8`` at k = 10); both solves are accurate to
#: about ``k·ε·κ(Ĝ)`` relative.
DEFINITE_MARGIN = 4096.0


@njit(cache=True)
def definite_solve_ones(cos: np.ndarray) -> np.ndarray:
    """``Ĝ⁻¹1`` for a cosine matrix ``Ĝ = LLᵀ`` (Cholesky; in closed form at k = 2) whose
    ``trace(Ĝ⁻¹) = ‖L⁻¹‖²_F`` certifies every eigenvalue :data:`DEFINITE_MARGIN` times above
    the rank cut-off; an empty array otherwise (a non-positive pivot, or an eigenvalue that
    may lie near the cut-off: the caller takes the eigendecomposition)."""
    k = cos.shape[0]
    if k == 2:  # Ĝ⁻¹1 = 1/(1 + c)·1 and trace(Ĝ⁻¹) = 2/(1 − c²), for c = Ĝ₀₁ ∈ [-1, 1]
        c = cos[0, 1]
        if not DEFINITE_MARGIN * 2.0 * RANK_RTOL * 4.0 <= (1.0 - c) * (1.0 + c):
            return np.empty(0)
        b = 1.0 / (1.0 + c)
        return np.array([b, b])
    low = cos.copy()  # its lower triangle becomes L
    if not cholesky_in_place(low):
        return np.empty(0)
    inv = np.zeros((k, k))  # L⁻¹, lower triangular, column by column
    trace = 0.0
    for c in range(k):
        for i in range(c, k):
            t = 1.0 if i == c else 0.0
            for m in range(c, i):
                t -= low[i, m] * inv[m, c]
            t /= low[i, i]
            inv[i, c] = t
            trace += t * t
    if not DEFINITE_MARGIN * trace * RANK_RTOL * k * k <= 1.0:
        return np.empty(0)
    y = np.zeros(k)  # L⁻¹1
    for i in range(k):
        for c in range(i + 1):
            y[i] += inv[i, c]
    beta = np.zeros(k)  # L⁻ᵀL⁻¹1
    for c in range(k):
        for i in range(c, k):
            beta[c] += inv[i, c] * y[i]
    return beta


@njit(cache=True)
def _imtl_g_kernel(g: np.ndarray) -> np.ndarray:
    n = g.shape[0]
    w = np.zeros(n)
    idx, norms, cos = unit_gramian(g)
    k = idx.shape[0]
    if k == 0:
        return w
    beta = definite_solve_ones(cos)
    if beta.shape[0] == 0:  # possibly singular: the pseudo-inverse, from the eigenvectors
        lam, vec = eigh_psd(cos)
        beta = pinv_apply(lam, vec, first_kept(lam), np.ones(k))
    v = beta / norms  # N⁻¹Ĝ⁺1
    total = 0.0
    size = 0.0
    for a in range(k):
        total += v[a]
        size += abs(v[a])
    if not abs(total) > SUM_RTOL * size:
        return w
    for a in range(k):
        w[idx[a]] = v[a] / total
    return w


def imtl_g_weights(gramian: np.ndarray) -> np.ndarray:
    """IMTL-G's weights ``w = N⁻¹Ĝ⁺1 / 1ᵀN⁻¹Ĝ⁺1`` (``N`` the gradient norms, ``Ĝ`` the
    cosine matrix; ``= G⁻¹N1 / 1ᵀG⁻¹N1`` for independent gradients) for a validated float64
    Gramian; zeros where the sum vanishes (no combination summing to 1 has equal projections)
    or every gradient is zero."""
    return _imtl_g_kernel(np.ascontiguousarray(gramian, np.float64))
