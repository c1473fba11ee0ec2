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
from tests.bounds import U64, gamma, matvec_bound, min_norm_tolerance

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
    assert w.shape == (n,) and w.dtype == np.float64
    assert np.all(w >= 0.0)
    assert abs(w.sum() - 1.0) < 1e-12


@settings(deadline=None, max_examples=120)
@given(SEEDS, st.integers(2, 12), st.integers(1, 14), st.sampled_from([0.0, 1.0, 3.0]), RADII)
def test_optimal_against_slsqp_and_candidates(seed, n, d, shared, c):
    j = jacobian(seed, n, d, shared)
    g = j @ j.T
    w = cagrad_weights(g, c)
    assert_simplex(w, n)
    f = objective(g, c, w)
    # 1e-6 relative; the floor is √(rounding of wᵀGw) in the norm term, met where g_w = 0.
    tol = 1e-6 * abs(f) + 1e-8 * (1.0 + c) * np.max(np.diag(g))
    candidates = [slsqp(g, c), np.full(n, 1.0 / n), *np.eye(n)]
    assert all(f <= objective(g, c, x) + tol for x in candidates)


@settings(deadline=None, max_examples=60)
@given(SEEDS, st.integers(2, 20), st.integers(1, 25), st.sampled_from([0.0, 2.0]), RADII)
def test_cagrad_direction_guarantees(seed, n, d, shared, c):
    """d = g₀ + (√φ/‖g_w‖) g_w stays in the ball around g₀ and lifts the worst objective."""
    j = jacobian(seed, n, d, shared)
    g = j @ j.T
    w = cagrad_weights(g, c)
    g0 = j.mean(axis=0)
    gw = w @ j
    radius = c * np.linalg.norm(g0)
    norm_gw = np.linalg.norm(gw)
    direction = g0 + radius / norm_gw * gw if norm_gw > 1e-9 * np.linalg.norm(j) else g0
    tol = 1e-9 * np.max(np.diag(g))
    assert np.linalg.norm(direction - g0) <= radius + 1e-9 * np.linalg.norm(g0)
    assert np.min(j @ direction) >= np.min(j @ g0) - tol


@settings(deadline=None, max_examples=40)
@given(SEEDS, st.integers(2, 10), RADII)
def test_permutation_equivariant(seed, n, c):
    j = jacobian(seed, n, n + 3, 1.0)  # independent gradients: the weights are unique
    g = j @ j.T
    perm = np.random.default_rng(seed).permutation(n)
    w = cagrad_weights(g, c)
    wp = cagrad_weights(g[np.ix_(perm, perm)], c)
    np.testing.assert_allclose(wp, w[perm], atol=1e-7)


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
    np.testing.assert_allclose(cagrad_weights(torch.as_tensor(g), 0.5), cagrad_weights(g, 0.5))


def test_single_objective():
    np.testing.assert_array_equal(cagrad_weights([[4.0]], 0.5), [1.0])


def test_large_c_tends_to_the_min_norm_point():
    """As c → ∞ the ball term dominates and w minimises ‖g_w‖ (MGDA)."""
    j = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    np.testing.assert_allclose(cagrad_weights(j @ j.T, 1e6), [0.6, 0.4], atol=1e-6)


def test_scale_invariant():
    j = jacobian(9, 6, 4, 1.0)
    g = j @ j.T
    w = cagrad_weights(g, 0.5)
    for scale in (1e-16, 1e-8, 1e8, 1e20):
        np.testing.assert_allclose(cagrad_weights(scale * g, 0.5), w, atol=1e-10)


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
    j = jacobian(2, 5, 8, 1.0)
    g = j @ j.T
    w = cagrad_weights(g, 0.5)
    g0 = j.mean(axis=0)
    gw = w @ j
    expected = np.full(5, 0.2) + 0.5 * np.linalg.norm(g0) / np.linalg.norm(gw) * w
    np.testing.assert_allclose(cagrad_update(g, 0.5), expected, rtol=1e-12)
    np.testing.assert_array_equal(cagrad_update(g, 0.0), np.full(5, 0.2))
    np.testing.assert_array_equal(cagrad_update([[4.0]], 0.5), [1.5])
    np.testing.assert_array_equal(cagrad_update(np.zeros((3, 3)), 0.5), np.full(3, 1 / 3))


def test_update_when_g_w_is_zero_projects_the_mean():
    """J = [[1, 0], [−1, 0], [0.3, 1]], c = 1: g_w = 0 is optimal; the update is the mean's
    projection onto the dual cone, d = (0, 1/3) = Jᵀ(1/3, 13/30, 1/3)."""
    j = np.array([[1.0, 0.0], [-1.0, 0.0], [0.3, 1.0]])
    omega = cagrad_update(j @ j.T, 1.0)
    np.testing.assert_allclose(omega, [1 / 3, 13 / 30, 1 / 3], atol=1e-15)
    np.testing.assert_allclose(omega @ j, [0.0, 1 / 3], atol=1e-15)


@settings(deadline=None, max_examples=60)
@given(SEEDS, st.integers(2, 20), st.integers(1, 25), st.sampled_from([0.0, 2.0]), RADII)
def test_update_stays_in_the_ball_and_lifts_the_worst_objective(seed, n, d, shared, c):
    j = jacobian(seed, n, d, shared)
    omega = cagrad_update(j @ j.T, c)
    assert np.all(omega >= 0.0)
    direction = omega @ j
    g0 = j.mean(axis=0)
    scale = np.max(np.linalg.norm(j, axis=1)) ** 2
    assert np.linalg.norm(direction - g0) <= c * np.linalg.norm(g0) * (1 + 1e-9) + 1e-15
    assert np.min(j @ direction) >= np.min(j @ g0) - 1e-9 * scale
    if c >= 1.0:
        assert np.min(j @ direction) >= -1e-9 * scale
