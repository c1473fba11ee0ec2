"""GradVac's gradient vaccine carried out on the Gramian (numba, float64).

As for PCGrad (:mod:`mogradient.solvers.pcgrad`), each corrected gradient stays a combination
``gᵢᴾᶜ = Σₖ Cᵢₖ gₖ`` of the originals, so ``gᵢᴾᶜ·gⱼ = (C G)ᵢⱼ`` and ``‖gᵢᴾᶜ‖² = CᵢGCᵢᵀ``; adding
``w gⱼ`` to ``gᵢᴾᶜ`` is ``Cᵢⱼ += w``, and the update ``Σᵢ gᵢᴾᶜ`` has loss weights ``1ᵀC``.

For each pair (i, j), with ``φ = cos(gᵢᴾᶜ, gⱼ)`` and the target ``φ̂ᵢⱼ``: if ``φ < φ̂ᵢⱼ``,

    w = ‖gᵢᴾᶜ‖ (φ̂ᵢⱼ √(1 − φ²) − φ √(1 − φ̂ᵢⱼ²)) / (‖gⱼ‖ √(1 − φ̂ᵢⱼ²))

(Wang et al. 2021, Algorithm 1), which makes ``cos(gᵢᴾᶜ + w gⱼ, gⱼ) = φ̂ᵢⱼ``; then
``φ̂ᵢⱼ ← (1 − β) φ̂ᵢⱼ + β φ``. The numerator is ``sin(arccos φ − arccos φ̂ᵢⱼ) ≥ 0``, so every
``w ≥ 0`` (clipped at 0 against rounding) and every weight is at least 1.

No ``eps`` is added to denominators, so the weights do not depend on the gradients' common
scale. Where a cosine is undefined (``gᵢᴾᶜ = 0`` or ``gⱼ = 0``) the pair is skipped and its
target left as it is; where the target is ``±1`` exactly it cannot be reached by adding a finite
multiple of ``gⱼ``, and the pair is left uncorrected (its target still moves).

Two roundings are resolved on purpose, so that collinear gradients give reproducible weights:
a corrected gradient whose squared norm is rounding noise of an exact cancellation
(``‖gᵢᴾᶜ‖² ≤ CANCEL_RTOL·n·(Σₘ|Cᵢₘ|‖gₘ‖)²``) counts as zero, and a cosine within
``COS_SNAP`` of ±1 counts as ±1 (``√(1 − φ²)`` would turn its last-bit error into ~1e-8).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from mogradient.solvers.imtl_g import CANCEL_RTOL

#: A cosine within this of ±1 is taken as ±1.
COS_SNAP = 8.0 * np.finfo(np.float64).eps


@njit(cache=True)
def _gradvac_kernel(
    g: np.ndarray, orders: np.ndarray, phi_hat: np.ndarray, beta: float
) -> np.ndarray:
    n = g.shape[0]
    norms = np.empty(n)
    for m in range(n):
        norms[m] = math.sqrt(max(g[m, m], 0.0))
    coef = np.zeros(n)
    cg = np.zeros(n)  # (C G)ᵢ: inner products of gᵢᴾᶜ with every original gradient
    weights = np.zeros(n)
    for i in range(n):
        coef[:] = 0.0
        coef[i] = 1.0
        for m in range(n):
            cg[m] = g[i, m]
        for t in range(n):
            j = orders[i, t]
            if j == i:
                continue
            norm_j = norms[j]
            norm_i2 = 0.0
            size = 0.0
            for m in range(n):
                norm_i2 += coef[m] * cg[m]
                size += abs(coef[m]) * norms[m]
            if norm_j == 0.0 or not norm_i2 > CANCEL_RTOL * n * size * size:
                continue
            norm_i = math.sqrt(norm_i2)
            phi = cg[j] / norm_i / norm_j
            if phi >= 1.0 - COS_SNAP:
                phi = 1.0
            elif phi <= -1.0 + COS_SNAP:
                phi = -1.0
            target = phi_hat[i, j]
            if phi < target:
                sin_target = math.sqrt(max(1.0 - target * target, 0.0))
                if sin_target > 0.0:
                    sin_phi = math.sqrt(max(1.0 - phi * phi, 0.0))
                    w = norm_i * (target * sin_phi - phi * sin_target) / (norm_j * sin_target)
                    if w > 0.0:
                        coef[j] += w
                        for m in range(n):
                            cg[m] += w * g[j, m]
            phi_hat[i, j] = (1.0 - beta) * target + beta * phi
        for m in range(n):
            weights[m] += coef[m]
    return weights


def gradvac_weights(
    gramian: np.ndarray, orders: np.ndarray, phi_hat: np.ndarray, beta: float
) -> np.ndarray:
    """Loss weights whose combination equals GradVac's summed corrected gradients.

    Args:
        gramian: validated float64 Gramian ``[n, n]``.
        orders: ``[n, n]`` integer array; row i is the order in which gradient i visits the
            others (entries equal to i are skipped).
        phi_hat: ``[n, n]`` float64 similarity targets, updated in place (the EMA state).
        beta: EMA rate in [0, 1].
    """
    if phi_hat.dtype != np.float64 or not phi_hat.flags.c_contiguous:
        raise TypeError("phi_hat must be a C-contiguous float64 array (it is updated in place)")
    return _gradvac_kernel(
        np.ascontiguousarray(gramian, np.float64),
        np.ascontiguousarray(orders, np.int64),
        phi_hat,
        float(beta),
    )
