"""The α-fair weights ``G w = w^(−1/α)``, w > 0, solved exactly from the Gramian (numba, float64).

FairGrad (Ban & Ji, ICML 2024) looks for the update ``d = Σ wᵢ gᵢ`` that maximises the α-fair
utility ``Σ uₐ(gᵢ·d) − ½‖d‖²`` with ``uₐ'(x) = x^(−α)``; stationarity gives ``wᵢ = (gᵢ·d)^(−α)``,
i.e. ``(G w)ᵢ = wᵢ^(−1/α)``. Nash-MTL (Navon et al., ICML 2022) is ``α = 1``: ``G w = 1/w``.

The system is the gradient of the strictly convex potential

    F(w) = ½ wᵀG w + Σᵢ h(wᵢ),   h'(w) = −w^(−1/α),   h''(w) = w^(−1/α−1)/α > 0

(h = −log w at α = 1, h = −α/(α−1)·(w^((α−1)/α) − 1) otherwise), so it has at most one solution
with ``w > 0``, and it has one exactly when no non-zero ``v ≥ 0`` has ``Jᵀv = 0`` — when the
gradients are not Pareto-stationary (0 is not in their convex hull). We minimise F by Newton's
method in relative coordinates ``w ← w∘(1 + t·δ)`` with

    (W G W + diag(q)/α) δ = q − w∘(G w),   q = w^(1−1/α),   W = diag(w),

an SPD system (its diagonal part is positive) solved by Cholesky, with a fraction-to-boundary
cap and an Armijo backtracking line search on F while the Newton decrement ``λ² = δᵀ(q − w∘Gw)``
is large, full steps once it is small (quadratic convergence), and stops at rounding level.

Degenerate inputs, documented behaviour (the same for every caller):

* An objective whose gradient is zero (``Gᵢᵢ ≤ ZERO_TOL · max Gⱼⱼ``) cannot satisfy its equation
  (``(Gw)ᵢ = 0``): it is left out and gets weight 0 — its weight would not change the direction.
* If the remaining gradients are Pareto-stationary the system has no solution (the weights
  grow without bound), and near such a configuration its solution is decided by rounding: every
  weight is then 0 and the direction is 0, as MGDA's is at a Pareto-stationary point. A
  solution is returned only if it is resolved: each equation's left side ``(Gw)ᵢ = gᵢ·d``
  must be at least ``1/MAX_CONDITION`` of its terms ``Σⱼ|gᵢ·gⱼ|wⱼ`` (the solution's relative
  accuracy is about 1e-16 times that ratio; for Nash-MTL it is about the square of the
  cancellation ``A = Σ wᵢ‖gᵢ‖ / ‖d‖``, so two unit gradients at cos θ = −1 + 2e-8 are the
  limit), and its relative residual must be below ``RESIDUAL_TOL``. Newton runs that diverge
  are stopped early from the amplification A of the iterates: above ``ABORT_AMPLIFICATION``,
  above ``10·MAX_AMPLIFICATION`` for ``PERSISTENT`` steps or near convergence, or when rounding
  stops the line search there (A² / n bounds the largest ratio from below, so these inputs
  would fail the resolution test anyway).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from mogradient.solvers.factor import cholesky_in_place

#: A diagonal entry at most this fraction of the largest is a zero gradient (‖gᵢ‖ ≤ 2⁻⁵²·max‖gⱼ‖).
ZERO_TOL = 2.0**-104
#: A largest diagonal entry below the smallest normal float64 counts as all-zero gradients.
TINY = 2.2250738585072014e-308
#: Newton iterates whose cancellation A = Σwᵢ‖gᵢ‖/‖d‖ passes 10× this are treated as diverging.
MAX_AMPLIFICATION = 1e4
#: Newton iterates past this amplification are diverging: the input is Pareto-stationary.
ABORT_AMPLIFICATION = 1e8
#: Newton decrement λ² below which the step is taken in full and the solve stops.
DECREMENT_TOL = 1e-22
#: ... and largest relative step ``max |δᵢ|`` below which it does (one more step: rounding level).
STEP_TOL = 1e-9
MAX_ITER = 500
#: A returned solution has every (Gw)ᵢ = gᵢ·d at least 1/MAX_CONDITION of its terms Σⱼ|Gᵢⱼ|wⱼ
#: (its relative accuracy is then about 1e-16·MAX_CONDITION) ...
MAX_CONDITION = 1e8
#: ... and satisfies |qᵢ − wᵢ(Gw)ᵢ| ≤ RESIDUAL_TOL·qᵢ, qᵢ = wᵢ^(1−1/α).
RESIDUAL_TOL = 1e-6
#: Newton iterates whose amplification stays above 10 × MAX_AMPLIFICATION this many steps in a
#: row count as Pareto-stationary (inputs whose G has lost the information that separates them).
PERSISTENT = 20

OK = 0
STATIONARY = 1
NOT_CONVERGED = 2


@njit(cache=True)
def _cholesky_solve(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, bool]:
    """Solve ``a x = b`` for SPD ``a`` (overwritten by its Cholesky factor); False if not SPD."""
    n = a.shape[0]
    if not cholesky_in_place(a):
        return b, False
    x = b.copy()
    for i in range(n):
        s = x[i]
        for k in range(i):
            s -= a[i, k] * x[k]
        x[i] = s / a[i, i]
    for i in range(n - 1, -1, -1):
        s = x[i]
        for k in range(i + 1, n):
            s -= a[k, i] * x[k]
        x[i] = s / a[i, i]
    return x, True


@njit(cache=True)
def _h(w: float, p: float) -> float:
    """The barrier ``h`` with ``h'(w) = −w^(p−1)``, ``p = 1 − 1/α`` (``−log w`` at ``p = 0``)."""
    if p == 0.0:
        return -math.log(w)
    return -math.expm1(p * math.log(w)) / p


@njit(cache=True)
def _potential(g: np.ndarray, w: np.ndarray, p: float) -> float:
    n = g.shape[0]
    quad = 0.0
    bar = 0.0
    for i in range(n):
        acc = 0.0
        for j in range(n):
            acc += g[i, j] * w[j]
        quad += w[i] * acc
        bar += _h(w[i], p)
    return 0.5 * quad + bar


@njit(cache=True)
def _amplification(g: np.ndarray, w: np.ndarray, gw: np.ndarray) -> float:
    """``Σ wᵢ‖gᵢ‖ / ‖Σ wᵢgᵢ‖`` from the Gramian (inf when the direction is zero)."""
    n = g.shape[0]
    total = 0.0
    quad = 0.0
    for i in range(n):
        total += w[i] * math.sqrt(g[i, i])
        quad += w[i] * gw[i]
    if not quad > 0.0:
        return math.inf
    return total / math.sqrt(quad)


@njit(cache=True)
def _newton(g: np.ndarray, alpha: float, w0: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Minimise F from ``w0 > 0`` on a Gramian with positive diagonal; (w, status, iterations)."""
    n = g.shape[0]
    p = 1.0 - 1.0 / alpha
    w = w0.copy()
    gw = np.empty(n)
    q = np.empty(n)
    r = np.empty(n)
    m = np.empty((n, n))
    trial = np.empty(n)
    previous = math.inf
    previous_step = math.inf
    best = math.inf
    stall = 0
    beyond = 0
    for it in range(MAX_ITER):
        for i in range(n):
            acc = 0.0
            for j in range(n):
                acc += g[i, j] * w[j]
            gw[i] = acc
        amplification = _amplification(g, w, gw)
        if amplification > ABORT_AMPLIFICATION:
            return w, STATIONARY, it
        beyond = beyond + 1 if amplification > 10.0 * MAX_AMPLIFICATION else 0
        if beyond >= PERSISTENT:  # iterates that stay far past the limit: see the docstring
            return w, STATIONARY, it
        for i in range(n):
            q[i] = 1.0 if p == 0.0 else math.exp(p * math.log(w[i]))
            r[i] = q[i] - w[i] * gw[i]
            for j in range(n):
                m[i, j] = w[i] * g[i, j] * w[j]
            m[i, i] += q[i] / alpha
        delta, spd = _cholesky_solve(m, r)
        if not spd:  # only when rounding makes W G W indefinite at huge w: stationary
            return w, STATIONARY, it
        decrement = 0.0
        step = 0.0
        for i in range(n):
            decrement += delta[i] * r[i]
            step = max(step, abs(delta[i]))
        # λ² weighs each weight's relative step by its share of F, so weights many decades
        # below the others converge only once the relative step itself is small.
        falling = step < 0.25 * previous_step
        if (decrement < DECREMENT_TOL and step < STEP_TOL) or (
            decrement < 1e-8 and decrement > 0.25 * previous and not falling
        ):
            # Quadratic phase (or the rounding floor): one last full step and stop.
            for i in range(n):
                w[i] *= 1.0 + delta[i]
                if not w[i] > 0.0:
                    return w, NOT_CONVERGED, it
            return w, OK, it + 1
        if decrement < 0.25 and amplification > 10.0 * MAX_AMPLIFICATION:
            # Near the solution (λ < ½) and far past the limit: the solution's amplification
            # exceeds MAX_AMPLIFICATION too, and rounding may keep λ from falling further.
            return w, STATIONARY, it
        if decrement < 1e-2:  # the rounding floor: λ² stopped falling near the solution
            if decrement < 0.5 * best or falling:
                best = min(best, decrement)
                stall = 0
            else:
                stall += 1
                if stall >= 3:
                    return w, OK, it
        previous = decrement
        previous_step = step
        t = 1.0
        for i in range(n):  # fraction to the boundary: no weight shrinks by more than 10×
            if delta[i] < -0.9:
                t = min(t, 0.9 / -delta[i])
        if decrement < 1e-6:  # within the quadratic region: full (capped) step
            for i in range(n):
                w[i] *= 1.0 + t * delta[i]
            continue
        # Shorten the step until it is not past the minimiser of F along the line: F is convex,
        # so a slope φ'(t) = Σ wᵢδᵢ((G w_t)ᵢ − (w_t)ᵢ^(−1/α)) ≤ 0 means F fell. The slope has
        # no large constant terms, unlike F itself, so the test works at any scale of w.
        accepted = False
        for _ in range(60):
            for i in range(n):
                trial[i] = w[i] * (1.0 + t * delta[i])
            slope = 0.0
            for i in range(n):
                acc = 0.0
                for j in range(n):
                    acc += g[i, j] * trial[j]
                pull = 1.0 / trial[i] if p == 0.0 else math.exp(-math.log(trial[i]) / alpha)
                slope += w[i] * delta[i] * (acc - pull)
            if slope <= 0.0:
                accepted = True
                break
            # Past the minimiser: move to the secant root of the slope on [0, t] (the slope
            # at 0 is −λ²), kept inside [0.1t, 0.9t].
            t *= min(0.9, max(0.1, decrement / (slope + decrement)))
        if not accepted:  # rounding hides the decrease: at the floor if λ is small
            if decrement < 1e-2:
                return w, OK, it
            return w, (STATIONARY if amplification > MAX_AMPLIFICATION else NOT_CONVERGED), it
        w[:] = trial
    gw = g @ w
    stuck = _amplification(g, w, gw) > MAX_AMPLIFICATION
    return w, (STATIONARY if stuck else NOT_CONVERGED), MAX_ITER


@njit(cache=True)
def alpha_fair_solve(
    gramian: np.ndarray, alpha: float, per_objective_scale: bool
) -> tuple[np.ndarray, int, int]:
    """Weights ``w ≥ 0`` with ``G w = w^(−1/α)`` on the non-zero gradients; (w, status, iters).

    ``per_objective_scale``: solve on the cosine matrix ``C = D^(−½) G D^(−½)`` and map back by
    ``wᵢ = βᵢ/√Gᵢᵢ`` — exact for α = 1 only (the system is invariant under ``gᵢ → aᵢgᵢ``,
    ``wᵢ → wᵢ/aᵢ`` there), and the best-conditioned form of Nash-MTL's system. Otherwise the
    Gramian is divided by its largest diagonal entry ``s`` and ``w = w̃ · s^(−α/(α+1))``.
    """
    n = gramian.shape[0]
    out = np.zeros(n)
    top = 0.0
    for i in range(n):
        top = max(top, gramian[i, i])
    if not top >= TINY:  # zero, or subnormal: the Gramian has lost its precision
        return out, STATIONARY, 0
    keep = np.empty(n, dtype=np.int64)
    k = 0
    for i in range(n):
        if gramian[i, i] > ZERO_TOL * top:
            keep[k] = i
            k += 1
    g = np.empty((k, k))
    v = np.empty(k)
    if per_objective_scale:
        for a in range(k):
            for b in range(k):
                i, j = keep[a], keep[b]
                cosine = gramian[i, j] / math.sqrt(gramian[i, i]) / math.sqrt(gramian[j, j])
                g[a, b] = min(1.0, max(-1.0, cosine))
            g[a, a] = 1.0
            v[a] = 1.0
    else:
        for a in range(k):
            for b in range(k):
                g[a, b] = gramian[keep[a], keep[b]] / top
        for a in range(k):  # the solution for orthogonal gradients: gᵢᵢ wᵢ = wᵢ^(−1/α)
            v[a] = math.exp(-alpha / (alpha + 1.0) * math.log(g[a, a]))
    for a in range(k):  # symmetrise: the two triangles may differ by rounding
        for b in range(a):
            s = 0.5 * (g[a, b] + g[b, a])
            g[a, b] = s
            g[b, a] = s
    # Start on the ray through v at the minimiser of F(c·v): c^(1+1/α) = Σvᵢ^(1−1/α) / vᵀGv.
    quad = 0.0
    lin = 0.0
    p = 1.0 - 1.0 / alpha
    for a in range(k):
        acc = 0.0
        for b in range(k):
            acc += g[a, b] * v[b]
        quad += v[a] * acc
        lin += math.exp(p * math.log(v[a]))
    if not quad > 0.0:
        return out, STATIONARY, 0
    c = math.exp(alpha / (alpha + 1.0) * math.log(lin / quad))
    w, status, iterations = _newton(g, alpha, c * v)
    if status != OK:
        return out, status, iterations
    # Accept only a resolved solution: every equation's two sides must stand clear of the
    # rounding in (Gw)ᵢ, whose terms are Σⱼ|Gᵢⱼ|wⱼ. A flat potential (α < 1: F stays bounded
    # as w → ∞ along a stationary combination) can also stall Newton far from any root.
    gw = g @ w
    for a in range(k):
        q = 1.0 if p == 0.0 else math.exp(p * math.log(w[a]))
        size = 0.0
        for b in range(k):
            size += abs(g[a, b]) * w[b]
        if not (gw[a] > 0.0 and size <= MAX_CONDITION * gw[a]):
            return out, STATIONARY, iterations
        if not abs(q - w[a] * gw[a]) <= RESIDUAL_TOL * q:
            return out, STATIONARY, iterations
    for a in range(k):
        i = keep[a]
        if per_objective_scale:
            out[i] = w[a] / math.sqrt(gramian[i, i])
        else:
            out[i] = w[a] * math.exp(-alpha / (alpha + 1.0) * math.log(top))
    return out, OK, iterations


def fairgrad_weights(gramian: np.ndarray, alpha: float) -> np.ndarray:
    """FairGrad's weights: ``w > 0`` with ``(G w)ᵢ = wᵢ^(−1/α)``, exact to rounding.

    ``gramian``: a symmetric PSD float64 ``[n, n]`` (``J Jᵀ``); ``alpha > 0``. Zero gradients
    get weight 0; Pareto-stationary gradients (see the module docstring) give all-zero weights.
    """
    g = np.ascontiguousarray(gramian, dtype=np.float64)
    if not (alpha > 0.0 and math.isfinite(alpha)):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    w, status, _ = alpha_fair_solve(g, float(alpha), alpha == 1.0)
    if status == NOT_CONVERGED:
        raise RuntimeError(
            "the α-fair Newton solve did not converge; please report this Gramian "
            f"(alpha={alpha}): {g.tolist()}"
        )
    return w
