"""The CAGrad inner solve: optimality against SLSQP and simple candidates, and its guarantees."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from mogradient.solvers import cagrad_update, cagrad_weights
from mogradient.solvers.cagrad import RESOLVE_TOL
from tests.bounds import (
    U64,
    assert_cagrad_ball_and_lift,
    assert_cagrad_permuted,
    cagrad_certificate,
    cagrad_checked,
    gamma,
    matvec_bound,
    min_norm_tolerance,
)

SEEDS = st.integers(0, 2**32 - 1)
RADII = st.sampled_from([0.01, 0.1, 0.4, 0.5, 1.0, 2.0, 10.0])


def jacobian(seed: int, n: int, d: int, shared: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    j = rng.normal(size=(n, d)) * np.exp(rng.normal(size=(n, 1)))
    return j + shared * rng.normal(size=d)


def objective(g: np.ndarray, c: float, w: np.ndarray) -> float:
    """F(w) = g_w·g₀ + c‖g₀‖‖g_w‖ from the Gramian."""
    n = g.shape[0]
    b = g.sum(axis=1) / n
    sqrt_phi = c * np.sqrt(b.sum() / n)
    return w @ b + sqrt_phi * np.sqrt(max(w @ g @ w, 0.0))


def slsqp(g: np.ndarray, c: float) -> np.ndarray:
    """The reference: SLSQP on the same objective, tightly converged."""
    n = g.shape[0]
    res = minimize(
        lambda w: objective(g, c, w),
        np.full(n, 1.0 / n),
        method="SLSQP",
        bounds=[(0.0, 1.0)] * n,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}],
        options={"ftol": 1e-14, "maxiter": 1000},
    )
    w = np.clip(res.x, 0.0, None)
    return w / w.sum()


def assert_simplex(w: np.ndarray, n: int) -> None:
    """Non-negative weights that sum to 1 up to their normalisation's rounding (w / Σw rounds
    each entry once and the sum n − 1 more times: γₙ)."""
    assert w.shape == (n,) and w.dtype == np.float64
    assert np.all(w >= 0.0)
    assert abs(w.sum() - 1.0) <= gamma(n, U64)


def _gram_evaluation(j: np.ndarray, c: float) -> float:
    """How far F(w) from the Gramian (``objective``) can be from F(w) on the vectors: G's
    entries and wᵀGw, bᵀw are off by γ_{d+n}·M² (M = max‖gᵢ‖), and a square root moves by at
    most the root of that, α√(γ_{d+n})·M with α ≤ c·M."""
    n, dim = j.shape
    top = float(np.linalg.norm(j, axis=1).max())
    g_err = gamma(dim + n + 2, U64)
    return g_err * top**2 * 2 + c * top * math.sqrt(2 * g_err) * top


@settings(deadline=None, max_examples=120)
@given(SEEDS, st.integers(2, 12), st.integers(1, 14), st.sampled_from([0.0, 1.0, 3.0]), RADII)
def test_optimal_against_slsqp_and_candidates(seed, n, d, shared, c):
    """The solve's suboptimality, certified by weak duality (``cagrad_checked``: F(w) minus the
    worst gᵢ·d of its own update), is within a backward-stable solve's accuracy; so F(w)
    exceeds F at SLSQP's point, the mean and every vertex by at most that, plus the Gramian
    evaluation's rounding (``_gram_evaluation``) on both sides."""
    j = jacobian(seed, n, d, shared)
    g = j @ j.T
    w = cagrad_weights(g, c)
    assert_simplex(w, n)
    eps, accuracy, _, _ = cagrad_checked(j, c, w, cagrad_update(g, c), [])
    assert eps <= accuracy, (eps, accuracy)
    f = objective(g, c, w)
    tol = accuracy + 2 * _gram_evaluation(j, c)
    candidates = [slsqp(g, c), np.full(n, 1.0 / n), *np.eye(n)]
    assert all(f <= objective(g, c, x) + tol for x in candidates)


@settings(deadline=None, max_examples=60)
@given(SEEDS, st.integers(2, 20), st.integers(1, 25), st.sampled_from([0.0, 2.0]), RADII)
def test_cagrad_direction_guarantees(seed, n, d, shared, c):
    """d = g₀ + (α/‖g_w‖) g_w stays in the ball around g₀ (up to its own rounding, γ_{d+4} of
    the terms) and lifts the worst objective: g₀ is in the ball, so minᵢ gᵢ·d ≥ minᵢ gᵢ·g₀ − ε
    for d ε-optimal, ε within ``cagrad_checked``'s accuracy (and ε = 0 by construction where
    ‖g_w‖ is below the solver's resolution, RESOLVE_TOL·M, and d falls back to g₀)."""
    j = jacobian(seed, n, d, shared)
    g = j @ j.T
    w = cagrad_weights(g, c)
    g0 = j.mean(axis=0)
    gw = w @ j
    radius = c * np.linalg.norm(g0)
    norm_gw = np.linalg.norm(gw)
    top = float(np.linalg.norm(j, axis=1).max())
    resolved = norm_gw >= RESOLVE_TOL * top  # below, the formula divides by rounding
    direction = g0 + radius / norm_gw * gw if resolved else g0
    rounding = gamma(d + n + 4, U64) * 2 * (np.linalg.norm(g0) + radius)
    assert np.linalg.norm(direction - g0) <= radius + rounding
    if resolved:
        eps, _, _, eta = cagrad_certificate(j, c, direction, [w])
        _, accuracy, _, _ = cagrad_checked(j, c, w, cagrad_update(g, c), [])
        assert eps <= accuracy + 3 * eta
        assert np.min(j @ direction) >= np.min(j @ g0) - accuracy - 3 * eta - top * rounding


@settings(deadline=None, max_examples=40)
@given(SEEDS, st.integers(2, 10), RADII)
def test_permutation_equivariant(seed, n, c):
    """Independent gradients: the update is unique, so the permuted problem's update ω' @ J is
    the same direction (within ``cagrad_radius`` of d* each, ``assert_cagrad_permuted``) and
    its weights are ω permuted, to that distance over σ_min(J) (less J's SVD rounding)."""
    j = jacobian(seed, n, n + 3, 1.0)
    g = j @ j.T
    perm = list(np.random.default_rng(seed).permutation(n))
    omega = cagrad_update(g, c)
    omega_perm = cagrad_update(g[np.ix_(perm, perm)], c)[np.argsort(perm)]
    distance = assert_cagrad_permuted(j, c, perm)
    sigma = np.linalg.svd(j, compute_uv=False)
    floor = sigma.min() - gamma(n * (n + 3), U64) * sigma.max()
    assert floor > 0  # independent gradients
    assert np.linalg.norm(omega_perm - omega) <= distance / floor


@pytest.mark.parametrize("c", [1.0, 1.5, 10.0])
def test_origin_in_hull_gives_exactly_zero_g_w(c):
    """With c ≥ 1, F ≥ (c − 1)‖g₀‖‖g_w‖ ≥ 0 = F(g_w = 0): the optimum is g_w = 0, to rounding.

    To rounding: the solve sees Ĝ = G + E with |Eᵢⱼ| ≤ γ_d‖gᵢ‖‖gⱼ‖ (the product's rounding,
    which depends on the BLAS kernel), and drives wᵀĜw to its floor within the QP's KKT
    tolerance τ (``min_norm_tolerance``), so ‖Σwᵢgᵢ‖² = wᵀGw ≤ wᵀĜw + |wᵀEw| ≤ τ + γ_d·max‖gᵢ‖²
    (w on the simplex): the direction is zero to √(γ_d + τ/max‖gᵢ‖²)·max‖gᵢ‖, a square root of
    the rounding, plus the rounding of w @ J itself."""
    rng = np.random.default_rng(0)
    j = np.outer([0.125, -0.0455, 0.3, -0.2], rng.normal(size=5))  # parallel, both directions
    g = j @ j.T
    w = cagrad_weights(g, c)
    assert_simplex(w, 4)
    top = float(np.max(np.diag(g)))
    bound = math.sqrt(gamma(5, U64) * top + min_norm_tolerance(g))
    rounding = float(matvec_bound(torch.as_tensor(w), torch.as_tensor(j)).max())
    assert np.linalg.norm(w @ j) <= bound + rounding


def test_c_zero_gives_the_mean():
    j = jacobian(1, 5, 7, 1.0)
    np.testing.assert_array_equal(cagrad_weights(j @ j.T, 0.0), np.full(5, 0.2))


def test_zero_mean_gradient_gives_uniform_weights():
    j = np.array([[1.0, 2.0], [-1.0, -2.0]])
    np.testing.assert_array_equal(cagrad_weights(j @ j.T, 0.5), [0.5, 0.5])


def test_accepts_torch():
    j = jacobian(4, 5, 6, 1.0)
    g = j @ j.T
    # the same float64 values either way: the same weights, bit for bit
    np.testing.assert_array_equal(cagrad_weights(torch.as_tensor(g), 0.5), cagrad_weights(g, 0.5))


def test_single_objective():
    np.testing.assert_array_equal(cagrad_weights([[4.0]], 0.5), [1.0])


def test_large_c_tends_to_the_min_norm_point():
    """As c → ∞ the ball term dominates and w minimises ‖g_w‖ (MGDA: t* = 0.6 for w = (t, 1 − t)).

    On the segment F(t) = Δb·t + α√q(t) + const, q(t) = 100t² − 120t + 38 (G = [[18, −22],
    [−22, 38]]), Δb = b₁ − b₂ = −10, α = c√3. (√q)'' = (4·100·38 − 120²)/(4q^{3/2}) ≥ μ =
    200/q_max^{3/2} on an interval, and (√q)'(0.6) = 0, F'(t_c) = 0: by the mean value theorem
    |t_c − 0.6| ≤ |Δb|/(αμ), first with q_max = 38 on [0, 1], then on the interval that gives.
    The solve's t is ε-optimal (ε within ``cagrad_checked``'s accuracy) and F'' ≥ αμ, so
    |t − t_c| ≤ √(2ε/(αμ))."""
    j = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    c = 1e6
    w = cagrad_weights(j @ j.T, c)
    alpha = c * math.sqrt(3.0)

    def q(t: float) -> float:
        return 100 * t * t - 120 * t + 38

    mu = 200 / 38**1.5
    drift = 10 / (alpha * mu)
    mu = 200 / max(q(0.6 - drift), q(0.6 + drift)) ** 1.5  # q is convex: its max at an end
    drift = 10 / (alpha * mu)
    eps, accuracy, _, _ = cagrad_checked(j, c, w, cagrad_update(j @ j.T, c), [])
    assert eps <= accuracy
    assert abs(w[0] - 0.6) <= drift + math.sqrt(2 * accuracy / (alpha * mu))
    assert w[1] == pytest.approx(1 - w[0], abs=2 * U64)


def test_scale_invariant():
    """Exact: a power of two (1e-16 to 1e20 here) scales every entry of G and every rounding of
    the solve with it, so the weights are the same bits."""
    j = jacobian(9, 6, 4, 1.0)
    g = j @ j.T
    w = cagrad_weights(g, 0.5)
    for scale in (2.0**-53, 2.0**-27, 2.0**27, 2.0**66):
        np.testing.assert_array_equal(cagrad_weights(scale * g, 0.5), w)


@pytest.mark.parametrize("c", [-0.1, float("nan"), float("inf")])
def test_bad_c_raises(c):
    with pytest.raises(ValueError, match="c must be a finite number >= 0"):
        cagrad_weights(np.eye(3), c)


@pytest.mark.parametrize(
    ("gramian", "match"),
    [
        (np.ones((2, 3)), "square"),
        (np.array([[1.0, np.nan], [np.nan, 1.0]]), "row 0 \\(objective 0"),
        (np.array([[1.0, 2.0], [2.0, 1.0]]), "not positive semi-definite"),
        (np.array([[1.0, 0.1], [0.3, 1.0]]), "not symmetric"),
    ],
)
def test_bad_gramian_raises(gramian, match):
    with pytest.raises(ValueError, match=match):
        cagrad_weights(gramian, 0.5)


# -- the update's loss weights ----------------------------------------------------------


def test_update_weights_formula_and_special_cases():
    """ω = 1/n + (c‖g₀‖/‖g_w‖)·w. The solver takes ‖g₀‖ and ‖g_w‖ from G (each off by
    γ_{d+n+4}·M² in its square, so relatively by that over ‖·‖²) and steps by an upper bound of
    ‖g_w‖ (16n·2u·ρ² more under the root, ρ = Σwᵢ‖gᵢ‖ ≤ M: 16n·u·M²/‖g_w‖² relatively); the
    test's norms from J round likewise, and each entry rounds twice more."""
    j = jacobian(2, 5, 8, 1.0)
    g = j @ j.T
    w = cagrad_weights(g, 0.5)
    g0 = j.mean(axis=0)
    gw = w @ j
    step = 0.5 * np.linalg.norm(g0) / np.linalg.norm(gw)
    expected = np.full(5, 0.2) + step * w
    top2 = float(np.max(np.diag(g)))
    norms = 2 * gamma(8 + 5 + 4, U64) * (top2 / (g0 @ g0) + top2 / (gw @ gw))
    relative = norms + 16 * 5 * U64 * top2 / (gw @ gw) + 4 * U64
    bound = step * w * relative + 2 * U64 * expected
    assert np.all(np.abs(cagrad_update(g, 0.5) - expected) <= bound)
    np.testing.assert_array_equal(cagrad_update(g, 0.0), np.full(5, 0.2))
    np.testing.assert_array_equal(cagrad_update([[4.0]], 0.5), [1.5])
    np.testing.assert_array_equal(cagrad_update(np.zeros((3, 3)), 0.5), np.full(3, 1 / 3))


def test_update_when_g_w_is_zero_projects_the_mean():
    """J = [[1, 0], [−1, 0], [0.3, 1]], c = 1: g_w = 0 is optimal; the update is the mean's
    projection onto the dual cone, d = (0, 1/3) = Jᵀ(1/3, 13/30, 1/3)."""
    j = np.array([[1.0, 0.0], [-1.0, 0.0], [0.3, 1.0]])
    omega = cagrad_update(j @ j.T, 1.0)
    # The solve ends with v₁, v₃ at their bound 1/3 and v₂ from (Gv)₂ = 0, v₂ = v₁ + 0.3v₃:
    # a few roundings of 13/30 (γ₁₆ with the Gramian's normalisation, generously), and ω @ J
    # rounds by matvec_bound on top of |J|ᵀ|Δω|.
    expected = np.array([1 / 3, 13 / 30, 1 / 3])
    weight_bound = gamma(16, U64) * 13 / 30
    assert np.all(np.abs(omega - expected) <= weight_bound)
    product = matvec_bound(torch.as_tensor(omega), torch.as_tensor(j)).numpy()
    direction_bound = product + weight_bound * np.abs(j).sum(axis=0)
    assert np.all(np.abs(omega @ j - [0.0, 1 / 3]) <= direction_bound)


@settings(deadline=None, max_examples=60)
@given(SEEDS, st.integers(2, 20), st.integers(1, 25), st.sampled_from([0.0, 2.0]), RADII)
def test_update_stays_in_the_ball_and_lifts_the_worst_objective(seed, n, d, shared, c):
    j = jacobian(seed, n, d, shared)
    omega = cagrad_update(j @ j.T, c)
    assert np.all(omega >= 0.0)
    assert_cagrad_ball_and_lift(j, c, omega @ j)
