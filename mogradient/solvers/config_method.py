"""ConFIG's direction as loss weights from the Gramian (numba, float64).

ConFIG takes ``ŭ = U⁺p`` with ``U = N⁻¹J`` the unit gradients (zero gradients left out) and
returns ``(Σᵢ gᵢ·ŭ/‖ŭ‖) · ŭ/‖ŭ‖``. Since ``U⁺ = Uᵀ(UUᵀ)⁺`` and ``UUᵀ = Ĝ`` is the cosine
matrix, ``ŭ = Jᵀβ`` with ``β = N⁻¹Ĝ⁺p``; then ``‖ŭ‖² = pᵀĜ⁺p`` and
``Σᵢ gᵢ·ŭ = Σᵢ ‖gᵢ‖ (ĜĜ⁺p)ᵢ``, so the loss weights are ``β · (Σᵢ ‖gᵢ‖(ĜĜ⁺p)ᵢ) / pᵀĜ⁺p``.
Everything is computed in the cosine frame, so the weights do not depend on the gradients'
common scale.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from mogradient.solvers.imtl_g import (
    CANCEL_RTOL,
    eigh_psd,
    first_kept,
    spectral_dots,
    unit_gramian,
)

#: ``‖ĜĜ⁺p‖ ≤ PROJ_RTOL · ‖p‖``: the preference is orthogonal to the span of the unit
#: gradients (e.g. two opposite gradients and p = 1), so ``ŭ = 0`` and the update is zero.
PROJ_RTOL = 1e-10


@njit(cache=True)
def _config_kernel(g: np.ndarray, p: np.ndarray) -> np.ndarray:
    n = g.shape[0]
    w = np.zeros(n)
    idx, norms, cos = unit_gramian(g)
    k = idx.shape[0]
    if k == 0:
        return w
    lam, vec = eigh_psd(cos)
    f = first_kept(lam)
    ps = np.empty(k)
    for a in range(k):
        ps[a] = p[idx[a]]
    dots = spectral_dots(vec, f, ps)
    y = np.zeros(k)  # Ĝ⁺p
    q = np.zeros(k)  # ĜĜ⁺p
    for c in range(f, k):
        if dots[c] != 0.0:
            for a in range(k):
                q[a] += dots[c] * vec[a, c]
                y[a] += dots[c] / lam[c] * vec[a, c]
    q_norm = 0.0
    p_norm = 0.0
    u2 = 0.0
    length = 0.0
    length_size = 0.0
    for a in range(k):
        q_norm += q[a] * q[a]
        p_norm += ps[a] * ps[a]
        u2 += ps[a] * y[a]
        length += norms[a] * q[a]
        length_size += abs(norms[a] * q[a])
    if not (math.sqrt(q_norm) > PROJ_RTOL * math.sqrt(p_norm) and u2 > 0.0):
        return w
    if not abs(length) > CANCEL_RTOL * k * length_size:
        return w  # Σᵢ gᵢ·û cancels: the rescaled update is zero
    factor = length / u2
    for a in range(k):
        w[idx[a]] = y[a] / norms[a] * factor
    return w


def config_weights(gramian: np.ndarray, preference: np.ndarray) -> np.ndarray:
    """ConFIG's loss weights for a validated float64 Gramian and a preference ``p ≥ 0``;
    zeros when every gradient is zero or ``p`` is orthogonal to the unit gradients' span."""
    return _config_kernel(
        np.ascontiguousarray(gramian, np.float64), np.ascontiguousarray(preference, np.float64)
    )
