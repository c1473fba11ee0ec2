"""Small weight solvers on the Gramian, compiled with numba (``cache=True``) in float64.

All quadratic problems run on one exact active-set kernel (:mod:`mogradient.solvers.qp`):

* :func:`min_norm` — exact min-norm point of the convex hull of the gradients (MGDA).
* :func:`cagrad_weights`, :func:`cagrad_update` — CAGrad's inner problem and its update.
* :func:`project_dual_cone`, :func:`upgrad_weights`, :func:`dualproj_weights` — projections onto
  the dual cone of the gradients (UPGrad, DualProj).
* :func:`solve_qp` — the kernel itself: ``min ½xᵀGx + bᵀx`` over ``x ≥ l`` (and ``Σx = 1``).
* :func:`pcgrad_weights` — PCGrad's projections expressed as loss weights.
* :func:`mogradient.solvers.pcd.pcd_weights` — PCD's QP, as its dual on the orthant.
"""

from mogradient.solvers.cagrad import cagrad_update, cagrad_weights
from mogradient.solvers.dual_cone import dualproj_weights, project_dual_cone, upgrad_weights
from mogradient.solvers.min_norm import min_norm
from mogradient.solvers.pcgrad import pcgrad_weights
from mogradient.solvers.qp import solve_qp

__all__ = [
    "cagrad_update",
    "cagrad_weights",
    "dualproj_weights",
    "min_norm",
    "pcgrad_weights",
    "project_dual_cone",
    "solve_qp",
    "upgrad_weights",
]
