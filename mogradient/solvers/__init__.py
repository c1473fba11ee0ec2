"""Small weight solvers on the Gramian, compiled with numba (``cache=True``) in float64.

* :func:`min_norm` — exact min-norm point of the convex hull of the gradients (MGDA).
* :func:`cagrad_weights` — the CAGrad inner problem, solved exactly.
* :func:`pcgrad_weights` — PCGrad's projections expressed as loss weights.
"""

from mogradient.solvers.cagrad import cagrad_weights
from mogradient.solvers.min_norm import min_norm
from mogradient.solvers.pcgrad import pcgrad_weights

__all__ = ["cagrad_weights", "min_norm", "pcgrad_weights"]
