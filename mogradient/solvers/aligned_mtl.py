"""Aligned-MTL's balance transformation from the Gramian (numba, float64).

With ``G = JJᵀ = VΛVᵀ`` (rank r), the aligned Jacobian ``Jᵀ B`` with
``B = √s · V_r Λ_r^{-1/2} V_rᵀ = √s · (G⁺)^{1/2}`` has all r non-zero singular values equal to
``√s`` (condition number 1); the update is ``(Jᵀ B) p``, i.e. loss weights ``α = B p``.
``s`` is the smallest kept eigenvalue (``min``), the median one (``median``: the lower of the
two middle ones when r is even, as TorchJD's ``torch.median``) or their mean (``rmse``).

Since ``s = λ_min`` scales the whole update, the small eigenvalues must be accurate when the
gradient norms differ by orders of magnitude: those Gramians are decomposed by Jacobi rotations
(:func:`mogradient.solvers.imtl_g.jacobi_eigh`), which are accurate relative to each eigenvalue.
The others (squared norms within a factor ``GRADED_RATIO``) take Householder and QL
(:func:`mogradient.solvers.tridiagonal.tridiagonal_eigh`) up to ``JACOBI_MAX_N`` objectives,
LAPACK above: accurate to ``n·ε·λ_max``, as much as their ``λ_min`` needs.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from mogradient.solvers.imtl_g import (
    JACOBI_MAX_N,
    eigh_psd,
    first_kept,
    graded,
    spectral_dots,
)
from mogradient.solvers.tridiagonal import tridiagonal_eigh

MIN = 0
MEDIAN = 1
RMSE = 2
SCALE_MODES = {"min": MIN, "median": MEDIAN, "rmse": RMSE}


@njit(cache=True)
def gramian_eigh(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of a PSD Gramian: Householder and QL up to
    ``JACOBI_MAX_N`` objectives when the diagonal is not graded, else :func:`eigh_psd`."""
    if g.shape[0] <= JACOBI_MAX_N and not graded(g):
        lam, vec, converged = tridiagonal_eigh(g)
        if converged:
            return lam, vec
    return eigh_psd(g)


@njit(cache=True)
def _aligned_mtl_kernel(g: np.ndarray, p: np.ndarray, mode: int) -> np.ndarray:
    n = g.shape[0]
    lam, vec = gramian_eigh(g)
    f = first_kept(lam)
    if f == n:  # every gradient is zero: B = I, as TorchJD
        return p.copy()
    r = n - f
    if mode == MIN:
        scale = lam[f]
    elif mode == MEDIAN:
        scale = lam[f + (r - 1) // 2]
    else:
        scale = 0.0
        for c in range(f, n):
            scale += lam[c]
        scale /= r
    root = math.sqrt(scale)
    dots = spectral_dots(vec, f, p)
    alpha = np.zeros(n)
    for c in range(f, n):
        coef = root * dots[c] / math.sqrt(lam[c])
        if coef != 0.0:
            for a in range(n):
                alpha[a] += coef * vec[a, c]
    return alpha


def aligned_mtl_weights(gramian: np.ndarray, preference: np.ndarray, scale_mode: str) -> np.ndarray:
    """Aligned-MTL's loss weights ``B p`` for a validated float64 Gramian and a preference
    ``p`` (``scale_mode`` one of ``"min"``, ``"median"``, ``"rmse"``)."""
    return _aligned_mtl_kernel(
        np.ascontiguousarray(gramian, np.float64),
        np.ascontiguousarray(preference, np.float64),
        SCALE_MODES[scale_mode],
    )
