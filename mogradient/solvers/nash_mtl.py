"""Nash-MTL's bargaining weights ``G α = 1/α``, α > 0, solved exactly (numba, float64).

Navon et al. (ICML 2022) choose the update ``d = Σ αᵢ gᵢ`` as the Nash bargaining solution of
the objectives: ``d`` maximises ``Σ log(gᵢ·d) − ½‖d‖²``, whose stationarity condition
``d = Σ gᵢ/(gᵢ·d)`` is ``αᵢ (G α)ᵢ = 1``. This is the α = 1 case of the α-fair system that
:mod:`mogradient.solvers.fairgrad` solves; the system is invariant under ``gᵢ → aᵢ gᵢ``,
``αᵢ → αᵢ/aᵢ`` (aᵢ > 0), so we solve it on the cosine matrix ``Cᵢⱼ = Gᵢⱼ/√(GᵢᵢGⱼⱼ)`` (Newton on
``½βᵀCβ − Σ log βᵢ``, see :func:`~mogradient.solvers.fairgrad.alpha_fair_solve`) and return
``αᵢ = βᵢ/‖gᵢ‖``. Consequences, exact to rounding:

* ``αᵀGα = n`` (sum the equations): the direction has norm √n whatever the gradients' scales;
  it is invariant — not equivariant — under ``J → aJ`` and under rescaling single objectives;
* ``gᵢ·d = 1/αᵢ > 0``: no objective gets worse to first order;
* one objective: ``α = 1/‖g‖``; two: ``α = (1/‖g₁‖, 1/‖g₂‖)/√(1 + cos θ)``.

Zero gradients get weight 0; Pareto-stationary gradients (0 in their convex hull, to working
precision: see :mod:`mogradient.solvers.fairgrad`) have no solution and give all-zero weights.

The reference implementation reaches the same point by up to 20 sequential convex (cvxpy/ECOS)
problems with a 1e-3 residual stop; this solve is a few Newton steps to machine precision.
"""

from __future__ import annotations

import numpy as np

from mogradient.solvers.fairgrad import NOT_CONVERGED, alpha_fair_solve


def nash_mtl_weights(gramian: np.ndarray) -> np.ndarray:
    """Nash-MTL's weights: ``α > 0`` with ``αᵢ (G α)ᵢ = 1`` for every non-zero gradient.

    ``gramian``: a symmetric PSD float64 ``[n, n]`` (``J Jᵀ``). Zero gradients get weight 0;
    Pareto-stationary gradients give all-zero weights (no bargaining solution exists).
    """
    g = np.ascontiguousarray(gramian, dtype=np.float64)
    w, status, _ = alpha_fair_solve(g, 1.0, True)
    if status == NOT_CONVERGED:
        raise RuntimeError(
            f"the Nash-MTL Newton solve did not converge; please report this Gramian: {g.tolist()}"
        )
    return w
