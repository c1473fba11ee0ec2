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
secondary that still lowers the objective" (it does no degenerate exchange), and it accepts a
dependent secondary's violation below its range tolerance. Where it reports the former, or its
answer violates a constraint by more than TorchJD's ``1e-9`` (of the largest squared norm), the
problem is solved in a lifted form whose linear term always lies in range. With
``q̂ = q / max q`` (so that the lifted coordinate is not lost to rounding when τ is small),
``ĝⱼ = (gⱼ, −q̂ⱼ)`` and ``ŷ(t) = (g₁, t)``, project ŷ(t) onto the cone
``C = {x̂ : ĝⱼ·x̂ ≥ 0}``: ``min_{μ ≥ 0} ½μᵀ(G_s + q̂q̂ᵀ)μ + (G_{s1} − t·q̂)ᵀμ`` (linear term
``Ĵ_s ŷ`` ∈ range), giving ``x̂ = (g₁ + Σμⱼgⱼ, s(t))`` with ``s(t) = t − q̂ᵀμ``. Where
``s(t) = max q`` the constraints of C are PCD's and the KKT conditions of the lifted problem
are those of the dual above (the term ``q̂·q̂ᵀμ − t·q̂ = −q̂·s = −q``), so μ is PCD's. ``s`` is
continuous, non-decreasing (a projection is monotone) and piecewise linear in t, with
``s(t) ≤ t``; and ``|s(t) − t·sₑ| ≤ ‖g₁‖`` for ``sₑ``, the last coordinate of the projection
of ``(0, 1)`` (projections onto a cone are homogeneous and 1-Lipschitz). So ``sₑ = 0`` (below
``1e-9``) means infeasible, and otherwise the root lies in ``[max q, (max q + ‖g₁‖)/sₑ]``:
found by Newton steps on the current linear piece (exact once on the right piece), safeguarded
by bisection. With ``q = 0`` (τ = 0) the linear term is in range and d = 0 is feasible.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from mogradient.solvers.qp import _qp_kernel
from mogradient.solvers.validation import NOT_IN_RANGE, OK, status_message

#: A constraint counts as satisfied when violated by at most this (relative to the largest
#: squared norm): TorchJD's tolerance.
FEASIBLE_TOL = 1e-9
#: The lifted cone counts as lying in ``{s ≤ 0}`` (infeasible constraints) below this ``sₑ``:
#: TorchJD's threshold for a gradient dependent on the active ones (relative to its own norm).
INFEASIBLE_TOL = 1e-9


@njit(cache=True)
def _dual_kernel(gramian: np.ndarray, taus: np.ndarray, tol: float) -> tuple[np.ndarray, int]:
    """``([1, μ], status)`` from the orthant dual: OK, NOT_IN_RANGE (decide in the lifted
    form), or ``100·status + i`` for another kernel status at secondary i."""
    m = gramian.shape[0]
    w = np.zeros(m)
    w[0] = 1.0
    top = 0.0
    for i in range(m):
        top = max(top, gramian[i, i])
    if m == 1 or top <= 0.0:
        return w, OK
    gs = np.empty((m - 1, m - 1))
    c = np.empty(m - 1)
    for i in range(m - 1):
        for k in range(m - 1):
            gs[i, k] = gramian[i + 1, k + 1] / top  # μ is invariant under G → κG
        c[i] = (gramian[i + 1, 0] - taus[i] * gramian[i + 1, i + 1]) / top
    mu, status, i, _ = _qp_kernel(gs, c, np.zeros(m - 1), bool(False), tol, bool(False))
    if status != OK:
        return w, status if status == NOT_IN_RANGE else status * 100 + i
    # the kernel accepts a dependent secondary's violation below its range tolerance (1e-7): a
    # constraint violated beyond TorchJD's 1e-9 is decided in the lifted form too
    for i in range(m - 1):
        slack = c[i]
        for k in range(m - 1):
            slack += gs[i, k] * mu[k]
        if slack < -FEASIBLE_TOL:
            return w, NOT_IN_RANGE
    w[1:] = mu
    return w, OK


def pcd_dual(gramian: np.ndarray, taus: np.ndarray, tol: float) -> np.ndarray:
    """The weights ``[1, μ₂, …, μₘ]`` of PCD's minimiser ``d = Σ wᵢgᵢ`` for a validated PSD
    Gramian (row 0: the primary objective) and ``taus`` (m − 1 entries in [0, 1]); ``e₁`` when
    the constraints are infeasible."""
    w, status = _dual_kernel(gramian, taus, tol)
    if status == OK:
        return w
    if status != NOT_IN_RANGE:
        i = status % 100
        raise ValueError(status_message(status // 100, i + 1, i + 1, gramian))
    g = gramian / float(np.max(np.diagonal(gramian)))
    q = taus * np.diagonal(g)[1:]
    mu = _lifted(g, np.ascontiguousarray(g[1:, 0]), q, tol)
    if mu is not None:  # None: the constraints are infeasible, the weights stay e₁
        w[1:] = mu
    return w


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


#: The direction counts as zero when its squared norm is below this many float64 ulps of the
#: squared sum of its terms' norms (TorchJD's ``10·eps`` of the Gramian's precision).
ZERO_DIRECTION_ULPS = 10.0


@njit(cache=True)
def _normalise(
    gramian: np.ndarray, ema: np.ndarray, n_steps: int, beta: float, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Advance the EMA of the squared norms (in place, ``n_steps`` counting this call); the
    normalised Gramian ``sᵢsⱼGᵢⱼ`` and the scales ``s = 1/√(v̂ + eps)`` (0 for a zero v̂)."""
    m = gramian.shape[0]
    scales = np.zeros(m)
    debias = 1.0 - beta**n_steps
    for i in range(m):
        ema[i] = beta * ema[i] + (1.0 - beta) * gramian[i, i]
        den = np.sqrt(ema[i] / debias + eps)
        if den > 0.0:
            scales[i] = 1.0 / den
    out = np.empty((m, m))
    for i in range(m):
        for k in range(m):
            out[i, k] = gramian[i, k] * scales[i] * scales[k]
    return out, scales


@njit(cache=True)
def _rescale(w: np.ndarray, g: np.ndarray, scales: np.ndarray, g00: float) -> np.ndarray:
    """``w·s·√(G₁₁/‖d̃‖²)``, or 0 where ‖d̃‖² is rounding noise of its terms."""
    m = w.shape[0]
    sq = 0.0
    magnitude = 0.0
    for i in range(m):
        acc = 0.0
        for k in range(m):
            acc += g[i, k] * w[k]
        sq += w[i] * acc
        magnitude += abs(w[i]) * np.sqrt(max(g[i, i], 0.0))
    out = np.zeros(m)
    if sq > ZERO_DIRECTION_ULPS * np.finfo(np.float64).eps * magnitude * magnitude:
        factor = np.sqrt(g00 / sq)
        for i in range(m):
            out[i] = w[i] * scales[i] * factor
    return out


def pcd_weights(
    gramian: np.ndarray,
    ema: np.ndarray,
    n_steps: int,
    beta: float,
    eps: float,
    taus: np.ndarray,
    tol: float,
) -> np.ndarray:
    """PCD's loss weights for a validated Gramian (row 0: the primary), advancing the EMA
    ``ema`` of the squared norms in place (``n_steps`` counts this call): as TorchJD's
    ``PCDWeighting``, ``[1, μ]·s·‖g₁‖/‖d̃‖``, 0 for a zero g₁ or a d̃ that is zero to rounding."""
    g, scales = _normalise(gramian, ema, n_steps, beta, eps)
    if not gramian[0, 0] > 0.0:
        return np.zeros(gramian.shape[0])
    return _rescale(pcd_dual(g, taus, tol), g, scales, float(gramian[0, 0]))
