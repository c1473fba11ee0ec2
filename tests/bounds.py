"""Error bounds the tests derive their tolerances from (Higham, *Accuracy and Stability of
Numerical Algorithms*, 2nd ed., §3.1 and §3.5).

A tolerance in a test is one of these bounds (times a stated margin), never a value observed
on one machine: a dot product of length n in precision u is off by at most γₙ·Σ|xᵢ||yᵢ|.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

#: Unit roundoff of float32 and float64 (round to nearest).
U32 = 2.0**-24
U64 = 2.0**-53


def gamma(n: int, u: float) -> float:
    """γₙ = n·u / (1 − n·u): the relative error bound of n rounded operations."""
    if n * u >= 1:
        raise ValueError(f"gamma({n}, {u}) is undefined: n·u ≥ 1")
    return n * u / (1 - n * u)


def min_norm_gap(g: np.ndarray, w: np.ndarray) -> float:
    """Frank–Wolfe gap of ``w`` for min wᵀGw on the simplex: 2(wᵀGw − minᵢ(Gw)ᵢ).

    For convex f, f(w) − f* ≤ ∇f(w)ᵀ(w − s) for s the best vertex, so this bounds the
    suboptimality of ``w`` from above; it is zero exactly at the KKT point."""
    gw = g @ w
    return float(2.0 * (w @ gw - gw.min()))


def matvec_bound(w: torch.Tensor, jac: torch.Tensor, roundings: int = 2) -> torch.Tensor:
    """Entrywise bound on |fl(wᵀJ) − wᵀJ| for ``wᵀJ`` taken in ``jac``'s dtype with float64
    weights rounded to it: γ_{k+2}·(|w|ᵀ|J|) (k products and sums, the rounding of w and of the
    result). ``roundings`` counts the roundings per term beyond the sum (2 here; more where
    each term wᵢJᵢⱼ is itself the end of a chain rule)."""
    u = U32 if jac.dtype == torch.float32 else U64
    k = jac.shape[0]
    w64, j64 = w.double(), jac.double()
    return gamma(k + roundings, u) * (w64.abs() @ j64.abs())


#: Roundings per term of a loss weighting's gradient by autograd: the loss's own gradient (a
#: subtraction, a product, a scale: 3), the weight (at most 20 operations, exp/log included,
#: whose libm results are within 4 ulps), the weight times the gradient, the cast.
CHAIN_ROUNDINGS = 32


def assert_weighted_gradient(
    got: torch.Tensor, expected: torch.Tensor, w: torch.Tensor | np.ndarray, jac: torch.Tensor
) -> None:
    """Two evaluations of Σᵢ wᵢ∇Lᵢ (backward through ``scalarize`` and ``w @ J``) agree to the
    sum of their rounding bounds, 2·γ_{k+CHAIN_ROUNDINGS}·|w|ᵀ|J|: relative to the terms, not to
    the (possibly cancelling) sum, so the comparison holds on every machine."""
    w_t = torch.as_tensor(w, dtype=torch.float64)
    bound = 2 * matvec_bound(w_t, jac, CHAIN_ROUNDINGS)
    err = (got.double() - expected.double()).abs()
    assert bool((err <= bound).all()), float((err / bound).max())


def assert_float32_direction(
    make: Callable[[], Any], j32: torch.Tensor, losses: torch.Tensor | None = None
) -> None:
    """A Gramian method on a float32 Jacobian returns wᵀJ in float32 with w its float64 weights
    for the same (exactly representable) Jacobian: |d₃₂ − wᵀJ| ≤ ``matvec_bound(w, J)``.

    The Gramian of a float32 J is formed in float64 (exact to float64 rounding), so w is the
    float64 answer for that J; only the product is float32. Comparing with the method on a
    float64 Jacobian that rounds to J instead would measure the method's conditioning, for
    which there is no bound to state."""
    d32 = make()(j32) if losses is None else make()(j32, losses=losses)
    assert d32.dtype == torch.float32 and bool(torch.isfinite(d32).all())
    from mogradient.aggregators import gramian_of  # what the method forms from J

    j64 = j32.double()
    gram = gramian_of(j64)
    w = make().weights(gram) if losses is None else make().weights(gram, losses=losses)
    w = torch.as_tensor(w, dtype=torch.float64)
    err = (d32.double() - w @ j64).abs()
    assert bool((err <= matvec_bound(w, j32)).all()), float((err / matvec_bound(w, j32)).max())


def qp_weight_tolerance(g: np.ndarray, relative_gramian_error: float = 0.0) -> float:
    """Bound on max|w − w'| / max(1, max|w|) for the weights of one strictly convex QP over G
    (UPGrad's and DualProj's dual-cone projections) from two solvers, or from two Gramians
    that differ by ``relative_gramian_error``·‖G‖₂.

    The solution of a strictly convex QP is Lipschitz in its data with constant κ(G) (on the
    active set it is a linear solve), and each backward-stable solve has a backward error of at
    most 4n·u (a Cholesky or QR factorisation of the active block, γ_{3n+1}, with a margin);
    the two solves and the Gramians' difference add, and a factor 2 covers the active set's
    right-hand side."""
    n = g.shape[0]
    return 2 * float(np.linalg.cond(g)) * (2 * 4 * n * U64 + relative_gramian_error)


def spectral_condition(g: np.ndarray | torch.Tensor) -> float:
    """κ₊(G) = λ_max / λ_min over the eigenvalues of G above its numerical rank threshold
    (16n·u·λ_max): the condition number of the pseudo-inverse and eigen-decomposition
    based methods (IMTL-G, Aligned-MTL, ConFIG) on the range of G."""
    a = g.detach().cpu().numpy() if isinstance(g, torch.Tensor) else np.asarray(g, dtype=float)
    lam = np.linalg.eigvalsh(a)
    top = float(lam.max(initial=0.0))
    if top <= 0.0:
        return 1.0
    kept = lam[lam > 16 * a.shape[0] * U64 * top]
    return top / float(kept.min())


def spectral_tolerance(g: np.ndarray | torch.Tensor) -> float:
    """Relative tolerance (to the result's largest entry) between two float64 evaluations of a
    smooth function of G's eigen-decomposition or pseudo-inverse on its range: each is
    backward stable with error γ_{64n + 512}·‖G‖ (LAPACK's symmetric eigensolvers and SVD: a
    modest multiple of n·u; 512 for the method's own scalar work after the factorisation:
    square roots, scale modes, normalisation), so they differ by at most κ₊(G) times the sum
    of the two."""
    n = g.shape[0]
    return 2 * gamma(64 * n + 512, U64) * spectral_condition(g)


def min_norm_tolerance(g: np.ndarray) -> float:
    """τ = 4·γ_{16n}·max Gᵢᵢ: the KKT residual and Frank–Wolfe gap a backward-stable min-norm
    solve may leave (an exact solve for G + ΔG with |ΔG| ≤ γ_{16n}·max Gᵢᵢ: Cholesky's γ_{3n+1}
    with a margin, plus the float64 evaluation of (Gc)ᵢ and cᵀGc, each ≤ γₙ·max Gᵢᵢ on the
    simplex). Two such solves' objectives differ by at most 2τ."""
    n = g.shape[0]
    return 4 * gamma(16 * n, U64) * float(np.max(np.diag(g)))


def cagrad_certificate(
    jac: np.ndarray, c: float, d: np.ndarray, duals: list[np.ndarray]
) -> tuple[float, float, float, float]:
    """``(ε, L, δ, η)`` for a direction ``d`` offered as CAGrad's optimum d* (max minᵢ gᵢ·d on
    the ball ‖d − g₀‖ ≤ α = c‖g₀‖), certified by simplex points ``duals``: d is ε-optimal
    once moved back into the ball by δ, and L ≤ ‖v*‖ for the dual optimum v* (0: none); ε
    and δ include their rounding allowance, 3η and η/M.

    Weak duality: minᵢ gᵢ·x ≤ F(w) = g₀·v + α‖v‖ (v = Jᵀw) for every x in the ball and w on
    the simplex, so ε = min F(duals) − minᵢ gᵢ·d + δ·max‖gᵢ‖. ‖v*‖ is bounded below by
    F* ≥ minᵢ gᵢ·d and F* ≤ (1 + c)‖g₀‖‖v*‖, by F* ≥ (c − 1)‖g₀‖‖v*‖ where some F(w) < 0, and
    by the hull's min-norm, ‖v*‖² ≥ pᵀp − (its Frank–Wolfe gap) − τ. Every quantity is
    evaluated in float64: a few sums of at most d + n products of terms below
    M(‖d‖ + (1 + c)M), M = max‖gᵢ‖, each off by γ_{d+n+4} of that (4 of them in ε)."""
    from mogradient.solvers import min_norm

    j = np.asarray(jac, dtype=np.float64)
    n, dim = j.shape
    top = float(np.linalg.norm(j, axis=1).max())
    g0 = j.mean(axis=0)
    g0_norm = float(np.linalg.norm(g0))
    alpha = c * g0_norm
    eta = 4 * gamma(dim + n + 4, U64) * top * (float(np.linalg.norm(d)) + (1 + c) * top)

    def f(w: np.ndarray) -> float:
        v = w @ j
        return float(g0 @ v + alpha * np.linalg.norm(v))

    worst = float((j @ d).min())
    delta = max(0.0, float(np.linalg.norm(d - g0)) - alpha) + eta / max(top, 1e-300)
    best = min(f(w) for w in duals)
    eps = best - worst + top * delta + 2 * eta
    gram = j @ j.T
    w_min = min_norm(gram)
    hull2 = float(w_min @ gram @ w_min) - min_norm_gap(gram, w_min) - min_norm_tolerance(gram)
    hull2 -= 2 * gamma(dim, U64) * top**2  # the Gramian's own rounding
    by_value = (worst - top * delta - eta) / ((1 + c) * g0_norm + 1e-300)
    by_negative = -(best + eta) / ((1 - c) * g0_norm + 1e-300) if c < 1 else 0.0
    lower = max(max(by_value, by_negative) * (1 - 4 * n * U64), float(np.sqrt(max(hull2, 0.0))))
    return eps, max(lower, 0.0), delta, eta


def cagrad_accuracy(
    jac: np.ndarray, c: float, w: np.ndarray, omega: np.ndarray, lower: float
) -> float:
    """A priori bound on the ε of ``cagrad_certificate`` for CAGrad's update ``ω @ J`` and its
    inner weights ``w`` (v = Jᵀw), for a dual optimum ‖v*‖ ≥ ``lower`` > 0.

    A backward-stable solve is exact for Ĝ = G + ΔG, |ΔG| ≤ γ_K·M², K = 16n + d (the Gramian's
    product and the solve, as in ``min_norm_tolerance``). That moves F by at most
    γ_K·M²·(1 + α/‖v‖) (the linear term, and ‖v‖ = √(wᵀGw) by ΔG/(2‖v‖) twice), at w and at
    the optimum, and the primal point gᵢ·d = bᵢ + α(Gw)ᵢ/‖v‖ by γ_K·M²·(1 + α/‖v‖ + αM/‖v‖²)
    (the last from 1/‖v‖); the update's step uses an upper bound of ‖v‖ (16n·2u·M² more under
    the root: 16n·u·αM³/‖v‖² ≤ γ_K·αM³/‖v‖²), and ω @ J rounds by ``matvec_bound``. Each
    of ε's primal and dual parts is at most the sum, times a margin 2: 4γ_K·M²·(2 + 2α/L +
    2αM/‖v‖²) plus M·‖matvec_bound(ω, J)‖.

    Below ‖v‖ = RESOLVE_TOL·M (with a factor 2 for v's own accuracy) the solver answers as
    if v = 0 and states its accuracy there as (1 + c)·RESOLVE_TOL·M·‖g₀‖
    (mogradient/solvers/cagrad.py), which is then added."""
    from mogradient.solvers.cagrad import RESOLVE_TOL

    j = np.asarray(jac, dtype=np.float64)
    n, dim = j.shape
    top = float(np.linalg.norm(j, axis=1).max())
    g0_norm = float(np.linalg.norm(j.mean(axis=0)))
    alpha = c * g0_norm
    r = float(np.linalg.norm(w @ j))
    if r == 0.0 or lower <= 0.0:
        return math.inf
    solve = 4 * gamma(16 * n + dim, U64) * top**2 * (2 + 2 * alpha / lower + 2 * alpha * top / r**2)
    product = matvec_bound(torch.as_tensor(omega), torch.as_tensor(j))
    resolution = (1 + c) * RESOLVE_TOL * top * g0_norm if r < 2 * RESOLVE_TOL * top else 0.0
    return solve + top * float(torch.linalg.norm(product)) + resolution


def cagrad_radius(jac: np.ndarray, c: float, eps: float, lower: float, delta: float) -> float:
    """‖d − d*‖ ≤ δ + ε/L + √(2αε/L) for an ε-optimal d of CAGrad's primal (once moved back
    into the ball by δ) and L ≤ ‖v*‖: at the optimum minᵢ gᵢ·x ≤ v*·x, so an ε-optimal x has
    v̂*·(x − g₀) ≥ α − ε/‖v*‖, and d* = g₀ + α·v̂*."""
    alpha = c * float(np.linalg.norm(np.asarray(jac, dtype=np.float64).mean(axis=0)))
    if lower <= 0.0:
        return math.inf
    return delta + eps / lower + math.sqrt(2 * alpha * max(eps, 0.0) / lower)


#: Unit roundoff of bfloat16 (8-bit significand).
U_BF16 = 2.0**-8


def log_softmax_bounds(
    scaled: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds on the difference of two float32 evaluations of ``x_t − logsumexp(x)`` over the
    last axis (V entries) and of its gradient ``δᵢₜ − pᵢ``, in any order of summation.

    Each forms S = Σ exp(xᵢ − m) (m = max x, exact; each exp within 4u: S within γ_{V+4}
    relatively) and rounds log S, m + log S or x_t − m, and the result once each: off by at
    most E = γ_{V+4} + u(|m| + |log S| + |x_t − m| + |r|). Each pᵢ = exp(xᵢ − lse) is then
    within pᵢ(E + u|xᵢ − lse| + 4u), and δ − pᵢ rounds once more. Two evaluations differ by
    twice each (the first element of the pair: ``[..., T]``, the second: ``[..., V]``)."""
    x = scaled.double()
    v = x.shape[-1]
    m = x.amax(-1, keepdim=True)
    log_s = torch.log(torch.exp(x - m).sum(-1, keepdim=True))
    lse = m + log_s
    picked = x.gather(-1, targets.unsqueeze(-1))
    r = picked - lse
    base = gamma(v + 4, U32) + U32 * (m.abs() + log_s.abs())
    value = 2 * (base + U32 * ((picked - m).abs() + r.abs())).squeeze(-1)
    p = torch.exp(x - lse)
    delta = torch.zeros_like(x).scatter(-1, targets.unsqueeze(-1), 1.0)
    grad = 2 * (p * (base + U32 * (x - lse).abs() + 4 * U32) + U32 * (delta - p).abs())
    return value, grad


def cagrad_checked(
    jac: np.ndarray, c: float, w: np.ndarray, omega: np.ndarray, duals: list[np.ndarray]
) -> tuple[float, float, float, float]:
    """``(ε, accuracy, L, δ)`` for CAGrad's update ``d = ω @ J`` with inner weights ``w``:
    its certified suboptimality ε (``cagrad_certificate``, against ``duals`` and ``w``), the a
    priori accuracy ε must meet, a lower bound L on ‖v*‖ and d's distance δ outside the ball.

    The accuracy is ``cagrad_accuracy`` where L > 0 (plus the certificate's rounding, 3η);
    where it is not (0 in or at the hull) it
    is the solver's stated resolution (1 + c)·RESOLVE_TOL·M·‖g₀‖ plus the certificate's
    rounding (3η) and the product's (M·‖matvec_bound(ω, J)‖, once in δ and once in the worst
    gᵢ·d)."""
    from mogradient.solvers.cagrad import RESOLVE_TOL

    j = np.asarray(jac, dtype=np.float64)
    d = omega @ j
    eps, lower, delta, eta = cagrad_certificate(j, c, d, [w, *duals])
    if lower > 0.0:  # plus the certificate's own rounding allowance, 3η
        return eps, cagrad_accuracy(j, c, w, omega, lower) + 3 * eta, lower, delta
    top = float(np.linalg.norm(j, axis=1).max())
    product = top * float(
        torch.linalg.norm(matvec_bound(torch.as_tensor(omega), torch.as_tensor(j)))
    )
    resolution = (1 + c) * RESOLVE_TOL * top * float(np.linalg.norm(j.mean(axis=0)))
    return eps, resolution + 3 * eta + 2 * product, 0.0, delta


def assert_cagrad_permuted(
    jac: np.ndarray,
    c: float,
    perm: list[int],
    d: np.ndarray | None = None,
    d_perm: np.ndarray | None = None,
) -> float:
    """CAGrad's update for J (direction ``d``, default ω @ J) and for J's rows in the order
    ``perm`` (``d_perm``, default ω' @ J with ω' put back in J's order) are the same
    direction; returns the distance allowed between them (inf where none is).

    d* is unique where the dual optimum v* ≠ 0: each direction is certified ε-optimal by both
    solves' inner weights (``cagrad_certificate``), ε within a backward-stable solve's accuracy
    (``cagrad_accuracy``), so each lies within ``cagrad_radius`` of d* at that accuracy. Where
    no positive lower bound on ‖v*‖ can be certified (0 in or at the hull, F* = 0 to rounding)
    the optimal set is a face of the ball and no distance follows: there both must be in the
    ball and optimal to the solver's stated resolution (``cagrad_checked`` without L)."""
    from mogradient.solvers import cagrad_update, cagrad_weights

    j = np.asarray(jac, dtype=np.float64)
    back = np.argsort(perm)
    gram, gram_perm = j @ j.T, j[perm] @ j[perm].T
    w, w_perm = cagrad_weights(gram, c), cagrad_weights(gram_perm, c)[back]
    omega, omega_perm = cagrad_update(gram, c), cagrad_update(gram_perm, c)[back]
    runs = [
        (w, omega, omega @ j if d is None else d),
        (w_perm, omega_perm, omega_perm @ j if d_perm is None else d_perm),
    ]
    checked = []
    for inner, weights, x in runs:
        eps, lower, delta, eta = cagrad_certificate(j, c, x, [w, w_perm])
        _, accuracy, lower_own, _ = cagrad_checked(j, c, inner, weights, [w, w_perm])
        checked.append((eps, max(lower, lower_own), delta, accuracy, eta))
    lower = max(item[1] for item in checked)
    distance = float(np.linalg.norm(runs[1][2] - runs[0][2]))
    if lower > 0.0:
        radius = 0.0
        for (eps, _, delta, _, eta), (inner, weights, _) in zip(checked, runs, strict=True):
            accuracy = cagrad_accuracy(j, c, inner, weights, lower) + 3 * eta
            assert eps <= accuracy, (eps, accuracy)
            radius += cagrad_radius(j, c, accuracy, lower, delta)
        assert distance <= radius, (distance, radius)
        return radius
    top = float(np.linalg.norm(j, axis=1).max())
    for eps, _, delta, accuracy, _ in checked:
        assert delta * top <= accuracy, (delta, accuracy)
        assert eps <= accuracy, (eps, accuracy)
    return math.inf


def assert_cagrad_ball_and_lift(jac: np.ndarray, c: float, direction: np.ndarray) -> None:
    """CAGrad's update ``direction`` (ω @ J for ω = ``cagrad_update``) is in the ball
    ‖d − g₀‖ ≤ c‖g₀‖ and lifts the worst objective as far as g₀ does (g₀ is in the ball), and
    above 0 for c ≥ 1 (then F ≥ 0).

    In the ball up to the rounding of ω @ J and of g₀ (``matvec_bound``), of α from the Gramian
    (a square root of γ_{d+n+2}·M² in its square: c√(2γ)·M) and of the norms (γ_{d+4}); the
    lift up to the solve's accuracy (``cagrad_checked``, its certified ε checked against it) and
    M times that slack."""
    from mogradient.solvers import cagrad_update, cagrad_weights

    j = np.asarray(jac, dtype=np.float64)
    n, dim = j.shape
    gram = j @ j.T
    omega = cagrad_update(gram, c)
    g0 = j.mean(axis=0)
    top = float(np.max(np.linalg.norm(j, axis=1)))
    tj = torch.as_tensor(j)
    products = float(torch.linalg.norm(matvec_bound(torch.as_tensor(omega), tj)))
    products += float(torch.linalg.norm(matvec_bound(torch.full((n,), 1.0 / n), tj)))
    alpha_err = c * math.sqrt(2 * gamma(dim + n + 2, U64)) * top
    norms = gamma(dim + 4, U64) * 2 * float(np.linalg.norm(direction) + np.linalg.norm(g0))
    slack = products + alpha_err + norms
    assert np.linalg.norm(direction - g0) <= c * np.linalg.norm(g0) + slack
    eps, accuracy, _, _ = cagrad_checked(j, c, cagrad_weights(gram, c), omega, [])
    assert eps <= accuracy, (eps, accuracy)
    lifted = float(np.min(j @ direction)) + accuracy + top * slack
    assert lifted >= float(np.min(j @ g0))
    if c >= 1.0:
        assert lifted >= 0.0


def pcd_weight_tolerance(g: np.ndarray, w: np.ndarray) -> float:
    """Bound on max|w − w'| / max(1, max|w|) for PCD's weights from two solvers on the same
    normalised Gramian ``g`` (``w``: the multipliers ``[1, μ]`` of one of them): the dual is a
    strictly convex QP on the secondaries' block (independent secondaries), so
    :func:`qp_weight_tolerance` bounds μ; the rescaling by ‖g₁‖/‖d̃‖ (a quotient of two
    quadratic forms in w, each within 2·(1 + Σμ)·max|Δμ| relative) at most triples it."""
    if g.shape[0] == 1:
        return 4 * U64
    return 3 * (1 + float(np.abs(w[1:]).sum())) * qp_weight_tolerance(g[1:, 1:])


def pcd_kkt_tolerance(gt: np.ndarray, mu: np.ndarray) -> float:
    """Residual of PCD's KKT conditions that a backward-stable solve leaves, checked on the
    normalised Jacobian ``gt`` [m, d] with the multipliers ``mu``: an exact solve for a Gramian
    perturbed by γ_{16m}·max Gᵢᵢ (as in :func:`min_norm_tolerance`) moves each constraint value
    g̃ⱼ·d̃ by at most that times (1 + Σμ), and forming d̃ and the products in float64 adds
    γ_{m+d} of the same terms."""
    m, d = gt.shape
    top = float((gt**2).sum(axis=1).max())
    return 4 * (gamma(16 * m, U64) + gamma(m + d, U64)) * (1 + float(np.abs(mu).sum())) * top


def pcd_direction_tolerance(j: np.ndarray, w: np.ndarray, mu: np.ndarray) -> float:
    """Bound on ‖d − d'‖ for two backward-stable PCD solves with final weights ``w`` on the
    Jacobian ``j`` (``mu``: the normalised multipliers). d = ‖g₁‖·d̃/‖d̃‖; each solve's ‖d̃‖²
    is off by the KKT residual's γ·(1 + Σμ)·(Σ|w̃ᵢ|‖g̃ᵢ‖)² (:func:`pcd_kkt_tolerance`), a
    relative error γ·(1 + Σμ)·M²/‖g₁‖² with M = Σ|wᵢ|‖gᵢ‖ (the same ratio in either frame);
    forming Σwᵢgᵢ adds γ·M. Both solves together: twice the sum."""
    m, d = j.shape
    g = gamma(16 * m, U64) + gamma(m + d, U64)
    big_m = float(np.abs(w) @ np.linalg.norm(j, axis=1))
    norm = float(np.linalg.norm(j[0]))
    return 8 * g * (1 + float(np.abs(mu).sum())) * big_m * (1 + big_m / norm)
