"""Euclidean projection onto the probability simplex and an order-free matrix-vector product:
the steps of MoDo's and SDMGrad's projected gradient updates of the weights."""

from __future__ import annotations

import math

import numpy as np


def matvec(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``a @ x`` with each row's products summed exactly and rounded once (``math.fsum``), so
    the result does not depend on the order of the objectives. The weights' updates amplify
    the rounding of ``a @ x`` by their step size times the scale of ``a``; summed in a fixed
    order, two orders of the same objectives could then step to different vertices."""
    return np.array([math.fsum(row) for row in a * x])


def project_onto_simplex(y: np.ndarray) -> np.ndarray:
    """``argmin_{w ≥ 0, Σw = 1} ‖w − y‖``: ``w = max(y − θ, 0)`` with θ the unique threshold
    where the sum is 1 (the sort-and-scan rule of Held, Wolfe & Crowder 1974; Duchi et al.
    2008).

    ``y`` is first shifted by its largest entry (the projection is unchanged by adding a
    constant to every entry), so the kept entries are O(1) and their sum is accurate to a few
    ulps even where ``y`` is huge: the result is on the simplex to rounding whatever the
    scale of ``y``. O(n log n).
    """
    y = np.asarray(y, dtype=np.float64)
    z = y - y.max()
    u = np.sort(z)[::-1]
    css = np.cumsum(u) - 1.0
    ranks = np.arange(1, u.shape[0] + 1)
    rho = int(np.flatnonzero(u - css / ranks > 0)[-1])
    theta = css[rho] / (rho + 1)
    return np.maximum(z - theta, 0.0)
