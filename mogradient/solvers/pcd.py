"""PCD's quadratic program on the Gramian, as its dual on the orthant (numba kernel).

Priority-Constrained Descent (TorchJD 0.18's ``PCDWeighting``) solves, for the normalised
gradients ``g₁`` (primary) and ``g₂ … gₘ`` (secondaries),

    min_d ½‖d − g₁‖²   subject to   gⱼ·d ≥ qⱼ := τⱼ‖gⱼ‖²   (j = 2 … m).

Its Lagrangian dual: stationarity gives ``d = g₁ + Σⱼ μⱼ gⱼ`` with ``μ ≥ 0``, and substituting,

    max_{μ ≥ 0}  −½ μᵀG_sμ − (G_{s1} − q)ᵀμ   ⇔   min_{μ ≥ 0} ½ μᵀG_sμ + cᵀμ,  c = G_{s1} − q,

where ``G_s`` is the secondaries' block of G and ``G_{s1}`` their column against the primary:
the orthant instance of the active-set kernel (:func:`mogradient.solvers.qp.solve_qp`,
Lawson–Hanson with an updated Cholesky factor, no ridge). Strong duality holds (linear
constraints), so the weights ``[1, μ]`` give the exact minimiser ``d``. The part ``G_{s1}`` of c
lies in range(G_s); ``q`` need not when the secondaries are linearly dependent. The dual is
unbounded exactly when the constraints are infeasible (Farkas: some ``μ ≥ 0`` with
``Σ μⱼgⱼ = 0`` and ``qᵀμ > 0``), and then, as in TorchJD, the constraints are dropped: the
weights are ``e₁``.

The kernel needs the linear term in range(G_s) to tell "unbounded" from "a dependent
secondary that still lowers the objective" (it does no degenerate exchange). Where it reports
the latter, the problem is solved in a lifted form whose linear term always lies in range:
with ``ĝⱼ = (gⱼ, −qⱼ)`` and ``ŷ(t) = (g₁, t)``, project ŷ(t) onto the cone
``C = {x̂ : ĝⱼ·x̂ ≥ 0}``, i.e. ``min_{μ ≥ 0} ½μᵀ(G_s + qqᵀ)μ + (G_{s1} − t·q)ᵀμ`` (linear term
``Ĵ_s ŷ`` ∈ range), giving ``x̂ = (g₁ + Σμⱼgⱼ, s(t))`` with ``s(t) = t − qᵀμ``. Where
``s(t) = 1`` the KKT conditions of the lifted problem are those of the dual above (the term
``q·qᵀμ − t·q = −q·s``), so μ is PCD's. ``s`` is continuous, non-decreasing (a projection
is monotone) and piecewise linear in t, with ``s(1) ≤ 1``; and ``|s(t) − t·sₑ| ≤ ‖g₁‖`` for
``sₑ``, the last coordinate of the projection of ``(0, 1)`` (projections onto a cone are
homogeneous and 1-Lipschitz). So ``sₑ = 0`` means infeasible, and otherwise the root lies in
``[1, (1 + ‖g₁‖)/sₑ]``: found by Newton steps on the current linear piece (exact once on the
right piece), safeguarded by bisection.
"""

from __future__ import annotations

import numpy as np

from mogradient.solvers.qp import _qp_kernel
from mogradient.solvers.validation import NOT_IN_RANGE, OK, status_message


def pcd_dual(gramian: np.ndarray, taus: np.ndarray, tol: float) -> np.ndarray:
    """The weights ``[1, μ₂, …, μₘ]`` of PCD's minimiser ``d = Σ wᵢgᵢ`` for a validated,
    normalised-or-not PSD Gramian (row 0: the primary objective) and ``taus`` (m − 1 entries
    in [0, 1]); ``e₁`` when the constraints are infeasible."""
    m = gramian.shape[0]
    w = np.zeros(m)
    w[0] = 1.0
    if m == 1:
        return w
    top = float(np.max(np.diagonal(gramian)))
    if top <= 0.0:
        return w
    gramian = gramian / top  # μ is invariant under G → κG (d and q scale as √κ and κ)
    gs = np.ascontiguousarray(gramian[1:, 1:])
    c = gramian[1:, 0] - taus * np.diagonal(gs)
    mu, status, i, j = _qp_kernel(gs, c, np.zeros(m - 1), bool(False), tol, bool(False))
    # the kernel accepts a dependent secondary's violation below its range tolerance (1e-7): a
    # constraint violated beyond TorchJD's 1e-9 is decided in the lifted form too
    if status == OK and float((gs @ mu + c).min()) < -FEASIBLE_TOL:
        status = NOT_IN_RANGE
    if status == NOT_IN_RANGE:  # unbounded, or a degenerate exchange: decide in the lifted form
        lifted = _lifted(gramian, c + taus * np.diagonal(gs), taus * np.diagonal(gs), tol)
        if lifted is None:  # the constraints are infeasible
            return w
        mu = lifted
    elif status != OK:
        raise ValueError(status_message(status, i + 1, j + 1, gramian))
    w[1:] = mu
    return w


#: A constraint counts as satisfied when violated by at most this (relative to the largest
#: squared norm): TorchJD's tolerance.
FEASIBLE_TOL = 1e-9
#: The lifted cone counts as lying in ``{s ≤ 0}`` (infeasible constraints) below this ``sₑ``:
#: TorchJD's threshold for a gradient dependent on the active ones (relative to its own norm).
INFEASIBLE_TOL = 1e-9


def _lifted_solve(
    gl: np.ndarray, cross: np.ndarray, q: np.ndarray, t: float, tol: float
) -> tuple[np.ndarray, float]:
    """μ(t) of the lifted projection and its last coordinate ``s(t) = t − qᵀμ``."""
    n = q.shape[0]
    mu, status, i, j = _qp_kernel(gl, cross - t * q, np.zeros(n), bool(False), tol, bool(False))
    if status != OK:
        raise ValueError(status_message(status, i + 1, j + 1, gl))
    return mu, t - float(q @ mu)


def _lifted(gramian: np.ndarray, cross: np.ndarray, q: np.ndarray, tol: float) -> np.ndarray | None:
    """PCD's dual solution μ from the lifted projection (module docstring); None if infeasible.

    The lifted coordinate is ``−qⱼ/q_max`` (so that it is not lost to rounding next to the
    gradients when τ is small) and the root sought is ``s(t) = q_max``: the constraints
    ``gⱼ·x ≥ (qⱼ/q_max)·s`` are PCD's there."""
    top = float(q.max())
    if top <= 0.0:  # τ = 0: d = 0 is feasible, and the linear term is in range
        mu, _ = _lifted_solve(np.ascontiguousarray(gramian[1:, 1:]), cross, q, 0.0, tol)
        return mu
    qh = q / top
    gl = np.ascontiguousarray(gramian[1:, 1:] + np.outer(qh, qh))
    _, s_e = _lifted_solve(gl, np.zeros_like(qh), qh, 1.0, tol)
    if s_e <= INFEASIBLE_TOL:
        return None
    lo, hi = top, (top + float(np.sqrt(max(gramian[0, 0], 0.0)))) / s_e
    t = lo
    mu, s = _lifted_solve(gl, cross, qh, t, tol)
    for _ in range(200):
        if abs(s - top) <= 64 * np.finfo(float).eps * (t + abs(t - s)):
            return mu
        if s < top:
            lo = t
        else:
            hi = t
        free = mu > 0.0
        slope = 1.0
        if free.any():  # on this piece μ_S = −Ĝ_SS⁻¹(cross_S − t·q̂_S): s' = 1 − q̂_Sᵀ Ĝ_SS⁻¹ q̂_S
            qs = qh[free]
            slope -= float(qs @ np.linalg.lstsq(gl[np.ix_(free, free)], qs, rcond=None)[0])
        step = t + (top - s) / slope if slope > 0.0 else np.inf
        t = step if lo < step < hi else 0.5 * (lo + hi)
        mu, s = _lifted_solve(gl, cross, qh, t, tol)
    return mu
