"""CAGrad, solved exactly from the Gramian (numba, float64).

CAGrad's update maximises the worst objective's first-order improvement inside a ball around
the mean gradient g₀: ``max_d minᵢ gᵢ·d`` subject to ``‖d − g₀‖ ≤ α``, ``α = c‖g₀‖``. Its dual
is ``min F(w) = bᵀw + α‖g_w‖`` over the simplex, with ``b = G1/n`` (so ``bᵀw = g_w·g₀``) and
``‖g_w‖ = √(wᵀGw)``; the update is ``d = g₀ + (α/‖g_w‖) g_w``.

**Inner problem.** Linearising the norm at the optimum shows that the solution also minimises
the quadratic ``½wᵀGw + s·bᵀw`` with ``s = ‖g_w‖/α`` — the point of the hull nearest to ``−s·g₀``.
On a fixed support that quadratic's minimiser is ``p + s·q`` (p: the min-norm point of the
support's affine hull, ``1ᵀq = 0``) and, since ``Gp ∝ 1`` on S, ``‖g_w‖² = pᵀGp + s²·qᵀGq``: the
fixed point ``α²s² = ‖g_w‖²`` has the closed form ``s = √(pᵀGp / (α² − qᵀGq))``. We alternate
exact solves of the quadratic (the simplex instance of :mod:`mogradient.solvers.qp`) with this
closed form, inside a bracket on ``s`` with bisection as the safeguard; it stops when the support
reproduces its own ``s``.

**When g_w = 0.** If the hull of the gradients contains the origin and ``F ≥ 0`` on it (always so
when ``c ≥ 1``, since ``F ≥ (c − 1)‖g₀‖‖g_w‖``), the inner optimum is ``g_w = 0`` and every
``d`` of the ball with ``minᵢ gᵢ·d ≥ 0`` is optimal: the ball constraint does not pin d down, and
falling back to g₀ (as codes dividing by ``‖g_w‖`` do) conflicts. Among the optimal d we return
the one nearest to g₀, which is the projection of g₀ onto the dual cone ``{d : Jd ≥ 0}``
(``v = argmin_{v ≥ 1/n} vᵀGv``, :mod:`mogradient.solvers.dual_cone`; by Moreau's decomposition
it is also ``g₀ + lim (g_w(s) − g_w(0))/s``, the limit of the support's own direction). If the
ball misses that cone (``F`` slightly negative, only possible with ``c < 1``) the projection is
pulled back along the segment to g₀ onto the sphere, which keeps ``minᵢ gᵢ·d ≥ minᵢ gᵢ·g₀``.

**Resolution.** The kernel resolves ``g_w`` to about 1e-8 of the largest gradient norm (the
``+11ᵀ`` of ``M_S`` hides smaller differences) and the update divides by ``‖g_w‖``: below
``RESOLVE_TOL = 1e-3`` of that norm its direction would be off by more than 1e-5 and could
conflict or leave the ball, so there the ``g_w = 0`` answer above is used. Both are optimal to
``(1 + c)·RESOLVE_TOL·max‖gᵢ‖·‖g₀‖``. Above it, the step's length uses an upper bound of
``‖g_w‖`` (``wᵀGw`` plus its rounding, ``16·n·eps·(Σ wᵢ‖gᵢ‖)²``), so d never leaves the ball.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from mogradient.solvers.active_set import EPS, KKT_TOL, ROUNDING, active_set, set_vertex
from mogradient.solvers.dual_cone import dual_cone_normalised
from mogradient.solvers.factor import FreeSet, back_substitute, dot, new_state
from mogradient.solvers.min_norm import min_norm_normalised
from mogradient.solvers.validation import OK, prepare, status_message, validated_normalised

#: ``‖g₀‖²`` below this (normalised Gramian) means the mean gradient is zero: F is flat.
ZERO_MEAN_TOL = 1e-15
#: Relative change of ``s`` at which the support reproduces its own fixed point.
S_RTOL = 1e-12
#: ``‖g_w‖`` below this times the largest gradient norm is treated as ``g_w = 0``: the kernel
#: resolves g_w to about 1e-8 of that norm, so its direction would be off by 1e-5 (module
#: docstring).
RESOLVE_TOL = 1e-3
#: ``pᵀGp`` below this (normalised) means 0 ∈ aff(S) to rounding: the fixed point is s = 0.
ZERO_NORM_TOL = 1e-7
MAX_OUTER = 100


@njit(cache=True)
def _objective(g: np.ndarray, b: np.ndarray, alpha: float, w: np.ndarray) -> tuple[float, float]:
    """``(F(w), ‖g_w‖)``."""
    n = g.shape[0]
    lin = 0.0
    quad = 0.0
    for i in range(n):
        if w[i] != 0.0:
            lin += b[i] * w[i]
            quad += w[i] * dot(g[i], w, n)
    r = math.sqrt(max(quad, 0.0))
    return lin + alpha * r, r


@njit(cache=True)
def _support_fixed_point(
    g: np.ndarray,
    alpha: float,
    st: FreeSet,
    p: np.ndarray,
    q: np.ndarray,
    work: np.ndarray,
) -> float:
    """The ``s`` solving ``α²s² = pᵀGp + s²·qᵀGq`` on this support (inf if none); fills p, q
    (``p = M⁻¹1/1ᵀM⁻¹1``, ``q = (1ᵀM⁻¹b/1ᵀM⁻¹1)M⁻¹1 − M⁻¹b``, from the carried ``L⁻¹1, L⁻¹b``)."""
    m = st.size[0]
    support = st.support
    y1 = st.y1
    yb = st.yb
    a = dot(y1, y1, m)
    beta = dot(y1, yb, m) / a
    for k in range(m):
        work[k] = y1[k] / a
    back_substitute(st.lower, m, work, p)
    for k in range(m):
        work[k] = beta * y1[k] - yb[k]
    back_substitute(st.lower, m, work, q)
    fp = 0.0
    fq = 0.0
    for k in range(m):
        rp = 0.0
        rq = 0.0
        row = g[support[k]]
        for t in range(m):
            rp += row[support[t]] * p[t]
            rq += row[support[t]] * q[t]
        fp += p[k] * rp
        fq += q[k] * rq
    room = alpha * alpha - fq
    if room <= 0.0:
        return np.inf
    if fp <= ZERO_NORM_TOL * ZERO_NORM_TOL:  # 0 ∈ aff(S) up to rounding: the root is s = 0
        return 0.0
    return math.sqrt(fp / room)


@njit(cache=True)
def _certified(
    g: np.ndarray,
    b: np.ndarray,
    s: float,
    p: np.ndarray,
    q: np.ndarray,
    st: FreeSet,
    out: np.ndarray,
    grad: np.ndarray,
) -> bool:
    """Write ``p + s·q`` on the support into ``out``; is it optimal for the quadratic at s?

    Saves one more active-set pass when the support found at the previous s is already right.
    """
    m = st.size[0]
    support = st.support
    out[:] = 0.0
    for k in range(m):
        value = p[k] + s * q[k]
        if value <= 0.0:
            return False
        out[support[k]] = value
    n = g.shape[0]
    for i in range(n):
        grad[i] = s * b[i]
    for k in range(m):
        wk = out[support[k]]
        row = g[support[k]]
        for i in range(n):
            grad[i] += wk * row[i]
    mean = 0.0
    for k in range(m):
        mean += out[support[k]] * grad[support[k]]
    return grad.min() >= mean - KKT_TOL * (1.0 + s)


@njit(cache=True)
def _inner(
    g: np.ndarray, b: np.ndarray, alpha: float, c: float, tol: float
) -> tuple[np.ndarray, int]:
    """Simplex weights minimising ``bᵀw + α‖g_w‖`` for a normalised Gramian (n ≥ 2, α > 0)."""
    n = g.shape[0]
    st = new_state(n)
    p = np.empty(n)
    q = np.empty(n)
    work = np.empty(n)
    candidate = np.empty(n)
    bnorm = 0.0
    for i in range(n):
        bnorm += math.sqrt(g[i, i]) / n
    w = np.empty(n)
    uniform = np.full(n, 1.0 / n)
    # start from the best vertex of F (faster than from the full support)
    best_i = int(0)
    for i in range(1, n):
        if b[i] + alpha * math.sqrt(g[i, i]) < b[best_i] + alpha * math.sqrt(g[best_i, best_i]):
            best_i = i
    set_vertex(g, b, best_i, w, st)
    best = uniform.copy()
    best_f = _objective(g, b, alpha, uniform)[0]
    s = 1.0 / c  # exact when g_w = g₀, i.e. at the uniform weights
    lo = 0.0
    hi = np.inf
    for _ in range(MAX_OUTER):
        status, _ = active_set(g, b, s, bool(True), w, st, bnorm, tol, bool(False))
        if status != OK:
            return np.empty(0), status
        f, r = _objective(g, b, alpha, w)
        if f < best_f:
            best_f = f
            best[:] = w
        if s == 0.0 and r <= ZERO_NORM_TOL:
            if best_f >= -ZERO_NORM_TOL * alpha:  # nothing beats F = 0: g_w = 0 is optimal
                status = min_norm_normalised(g, w, bool(True), tol)  # g_w = 0 to rounding
                if status != OK:
                    return np.empty(0), status
                return w, OK
            break
        if alpha * s < r:
            lo = s
        else:
            hi = s
        s_new = _support_fixed_point(g, alpha, st, p, q, work)
        if abs(s_new - s) <= S_RTOL * s:
            break
        if lo < s_new < hi and _certified(g, b, s_new, p, q, st, candidate, work):
            if _objective(g, b, alpha, candidate)[0] <= best_f:
                best[:] = candidate
            break
        if not (lo < s_new < hi or s_new == lo == 0.0):  # outside the bracket: bisect
            s_new = 4.0 * max(lo, s) if hi == np.inf else 0.5 * (lo + hi)
        if s_new == s:
            break
        s = s_new
    return best / best.sum(), OK


@njit(cache=True)
def _setup(g: np.ndarray, scale: float, c: float) -> tuple[np.ndarray, float, bool]:
    """``(b = G1/n, α, trivial)`` for a normalised G; trivial: c = 0, zero gradients or mean."""
    n = g.shape[0]
    b = np.zeros(n)
    if c == 0.0 or scale == 0.0 or n == 1:
        return b, 0.0, True
    for i in range(n):
        b[i] = g[i].sum() / n
    g0sq = b.sum() / n
    if g0sq <= ZERO_MEAN_TOL:
        return b, 0.0, True
    return b, c * math.sqrt(g0sq), False


@njit(cache=True)
def _cagrad_kernel(
    gramian: np.ndarray, c: float, tol: float, validate: bool
) -> tuple[np.ndarray, int, int, int]:
    n = gramian.shape[0]
    g, scale, status, i, j = validated_normalised(gramian, tol, validate)
    if status != OK:
        return np.empty(0), status, i, j
    b, alpha, trivial = _setup(g, scale, c)
    if trivial:
        return np.full(n, 1.0 / n), OK, 0, 0
    w, status = _inner(g, b, alpha, c, tol)
    return w, status, 0, 0


@njit(cache=True)
def _update_kernel(
    gramian: np.ndarray, c: float, tol: float, validate: bool
) -> tuple[np.ndarray, int, int, int]:
    n = gramian.shape[0]
    g, scale, status, i, j = validated_normalised(gramian, tol, validate)
    if status != OK:
        return np.empty(0), status, i, j
    b, alpha, trivial = _setup(g, scale, c)
    uniform = np.full(n, 1.0 / n)
    if trivial:
        if n == 1:  # d = g + c‖g‖·g/‖g‖
            uniform[0] = 1.0 + c
        return uniform, OK, 0, 0
    w, status = _inner(g, b, alpha, c, tol)
    if status != OK:
        return np.empty(0), status, 0, 0
    rho = 0.0
    quad = 0.0
    for i in range(n):
        if w[i] != 0.0:
            rho += w[i] * math.sqrt(g[i, i])
            quad += w[i] * dot(g[i], w, n)
    r2 = max(quad, 0.0)
    if r2 >= RESOLVE_TOL * RESOLVE_TOL:
        # wᵀGw carries a rounding of about n·eps·ρ²: the step's length uses an upper bound of
        # ‖g_w‖, so that d stays in the ball.
        out = uniform
        step = alpha / math.sqrt(r2 + ROUNDING * n * EPS * rho * rho)
        for i in range(n):
            out[i] += step * w[i]
        return out, OK, 0, 0
    # g_w = 0 to the Gramian's resolution: the optimal d nearest to g₀ is its projection onto
    # the dual cone, in the ball when F ≥ 0 — always so for c ≥ 1, where it is returned as it
    # is. With c < 1 the ball may miss the cone (F slightly negative) and the projection is then
    # pulled back towards g₀ onto the ball.
    v = np.empty(n)
    status = dual_cone_normalised(g, uniform, v, tol)
    if status != OK:
        return np.empty(0), status, 0, 0
    if c >= 1.0:
        return v, OK, 0, 0
    diff = v - uniform
    size = 0.0
    for i in range(n):
        size += abs(diff[i]) * math.sqrt(g[i, i])
    dist2 = max(dot(diff, g @ diff, n), 0.0) + ROUNDING * n * EPS * size * size
    if dist2 > alpha * alpha:
        return uniform + (alpha / math.sqrt(dist2)) * diff, OK, 0, 0
    return v, OK, 0, 0


def _check_c(c: float) -> float:
    c = float(c)
    if not (c >= 0.0 and math.isfinite(c)):
        raise ValueError(
            f"c must be a finite number >= 0 (the radius of CAGrad's ball relative to ‖g₀‖; "
            f"the paper uses 0.4-0.5), got {c!r}"
        )
    return c


def cagrad_weights(gramian: object, c: float) -> np.ndarray:
    """Simplex weights ``w`` minimising CAGrad's ``g_wᵀg₀ + c‖g₀‖‖g_w‖`` for a Gramian ``G = J Jᵀ``.

    The inner (dual) problem only; :func:`cagrad_update` gives the update's loss weights.
    Exact (active set with a closed-form fixed point, not SLSQP). ``c = 0`` (or a zero mean
    gradient) returns the uniform weights. Raises ``ValueError`` for ``c < 0`` and for the same
    Gramian problems as :func:`~mogradient.solvers.min_norm.min_norm`.
    """
    c = _check_c(c)
    g, tol, validate = prepare(gramian)
    w, status, i, j = _cagrad_kernel(g, c, tol, validate)
    if status != OK:
        raise ValueError(status_message(status, i, j, g))
    return w


def cagrad_update(gramian: object, c: float) -> np.ndarray:
    """Loss weights ``ω`` of CAGrad's update ``d = Σ ωᵢ gᵢ`` for a Gramian ``G = J Jᵀ``.

    ``d`` maximises ``minᵢ gᵢ·d`` over the ball ``‖d − g₀‖ ≤ c‖g₀‖``: ``ω = 1/n + (c‖g₀‖/‖g_w‖) w``
    with w from :func:`cagrad_weights`; when ``g_w = 0`` (to the Gramian's resolution) the
    optimal d nearest to g₀, its projection onto the dual cone of the gradients. So ``c ≥ 1``
    never conflicts, ``c = 0`` is the mean, and ω ≥ 0. One objective: ``ω = [1 + c]``.
    """
    c = _check_c(c)
    g, tol, validate = prepare(gramian)
    w, status, i, j = _update_kernel(g, c, tol, validate)
    if status != OK:
        raise ValueError(status_message(status, i, j, g))
    return w
