"""PCGrad's projections carried out on the Gramian (numba, float64).

Each projected gradient stays a linear combination of the original ones, gᵢᴾᶜ = Σⱼ Cᵢⱼ gⱼ, so
every inner product it needs is read from G: gᵢᴾᶜ·gⱼ = (C G)ᵢⱼ. The sum of the projected
gradients is then (1ᵀC) J, i.e. loss weights 1ᵀC, without ever touching a d-sized vector.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _pcgrad_kernel(gramian: np.ndarray, orders: np.ndarray) -> np.ndarray:
    n = gramian.shape[0]
    weights = np.zeros(n)
    coef = np.zeros(n)
    for i in range(n):
        coef[:] = 0.0
        coef[i] = 1.0
        for k in range(n):
            j = orders[i, k]
            if j == i or gramian[j, j] <= 0.0:
                continue
            dot = 0.0
            for m in range(n):
                dot += coef[m] * gramian[m, j]
            if dot < 0.0:
                coef[j] -= dot / gramian[j, j]
        for m in range(n):
            weights[m] += coef[m]
    return weights


def pcgrad_weights(gramian: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """Loss weights whose combination equals PCGrad's summed projected gradients.

    Args:
        gramian: validated float64 Gramian ``[n, n]``.
        orders: ``[n, n]`` integer array; row i is the order in which gradient i is projected
            against the others (entries equal to i are skipped).
    """
    g = np.ascontiguousarray(gramian, np.float64)
    return _pcgrad_kernel(g, np.ascontiguousarray(orders, np.int64))
