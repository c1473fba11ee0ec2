"""CAGrad (Liu et al., NeurIPS 2021): defects found by TorchJD's property suite, pinned first."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from mogradient import get_aggregator
from mogradient.aggregation.gramian import gramian_of
from mogradient.aggregators.cagrad import CAGrad
from tests.bounds import U64, gamma
from tests.references import reference_call, slsqp_settled

#: The smallest case of the issue: g_w = 0 is optimal, and the answer is not the mean.
THREE = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.3, 1.0]], dtype=torch.float64)


def test_c_one_smallest_case_is_non_conflicting() -> None:
    """max_d min_i g_i·d over ‖d − g₀‖ ≤ ‖g₀‖: the optimum is 0, reached by every d = (0, y),
    0 ≤ y ≤ 2/3; the one nearest to g₀ = (0.1, 1/3) is (0, 1/3)."""
    d = CAGrad(c=1.0)(THREE)
    torch.testing.assert_close(d, torch.tensor([0.0, 1.0 / 3.0], dtype=torch.float64))
    assert float((THREE @ d).min()) >= -1e-15


def _perturbed(eps: float, sign: float, row: int, dtype: torch.dtype) -> torch.Tensor:
    jac = THREE.clone()
    jac[row] += sign * eps * torch.tensor([1.0, 0.7], dtype=torch.float64)
    return jac.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("c", [0.5, 1.0, 2.0])
def test_near_degenerate_stays_in_the_ball(dtype: torch.dtype, c: float) -> None:
    """Just off the degenerate case (‖g_w‖ between 1e-14 and 1e-4 of the gradients) the
    direction stays in the ball ‖d − g₀‖ ≤ c‖g₀‖, and with c ≥ 1 it conflicts with nothing, to
    the Gramian's resolution: perturbations of 1e-6 make the dual cone a sliver whose weights
    reach 1e5, known to eps·1e11 from the Gramian. (With c = 1 and the sign that closes the
    cone to {0}, the optimum d = 0 lies on the sphere itself: there the ball holds to 1e-5.)"""
    rtol = 1e-9 if dtype == torch.float64 else 1e-6
    if c == 1.0:
        rtol = 1e-5
    for eps in np.logspace(-14, -3, 45):
        for sign in (1.0, -1.0):
            for row in range(3):
                jac = _perturbed(float(eps), sign, row, dtype)
                d = CAGrad(c=c)(jac).double()
                j64 = jac.double()
                g0 = j64.mean(0)
                radius = c * float(torch.linalg.norm(g0))
                assert float(torch.linalg.norm(d - g0)) <= radius * (1 + rtol), (eps, sign, row)
                if c >= 1.0:
                    assert float((j64 @ d).min()) >= -1e-5 * float(j64.abs().max()) ** 2


@pytest.mark.parametrize(
    ("c", "claimed"),
    [(0.0, False), (0.5, False), (1.0, True), (3.0, True)],
)
def test_claims_non_conflicting_from_c_one(c: float, claimed: bool) -> None:
    assert ("non_conflicting" in CAGrad(c=c).claims()) is claimed


# -- the method against independent references ------------------------------------------

SEEDS = st.integers(0, 2**32 - 1)
RADII = st.sampled_from([0.1, 0.4, 0.5, 1.0, 2.0, 10.0])


def jacobian(seed: int, n: int, d: int, rank: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = np.exp(0.5 * rng.normal(size=(n, 1)))
    if rank is None:
        return rng.normal(size=(n, d)) * scales
    return (rng.normal(size=(n, rank)) @ rng.normal(size=(rank, d))) * scales


def worst_improvement(j: np.ndarray, d: np.ndarray) -> float:
    return float((j @ d).min())


def primal_slsqp(j: np.ndarray, c: float) -> np.ndarray:
    """CAGrad's primal solved directly: max t s.t. Jd ≥ t, ‖d − g₀‖² ≤ c²‖g₀‖² (SLSQP)."""
    g0 = j.mean(0)
    radius2 = c * c * (g0 @ g0)
    x0 = np.concatenate([g0, [float((j @ g0).min())]])
    res = minimize(
        lambda x: -x[-1],
        x0,
        jac=lambda x: np.concatenate([np.zeros(len(g0)), [-1.0]]),
        method="SLSQP",
        constraints=[
            {"type": "ineq", "fun": lambda x: j @ x[:-1] - x[-1]},
            {"type": "ineq", "fun": lambda x: radius2 - (x[:-1] - g0) @ (x[:-1] - g0)},
        ],
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    return slsqp_settled(res).x[:-1]


def test_pinned_two_objectives():
    """J = [[−4, 1, 1], [6, 1, 1]], c = ½: g₀ = (1, 1, 1), ‖g₀‖² = 3. The ball's best point
    moves g₀ by √3/2 towards the worse objective's side while keeping it in the ball.

    By hand: the dual F(t) = g_wᵀg₀ + R‖g_w‖ over w = (1 − t, t) has g_w = (10t − 4, 1, 1) and
    F'(t) = 10 + R·10(10t − 4)/‖g_w‖ > 0 (R = √3/2 < 1 ≤ ‖g_w‖/|10t − 4|), so t = 0 and
    d = g₀ + R·g₁/‖g₁‖ = (1 − √6/3, 1 + √6/12, 1 + √6/12) (g₂·d > g₁·d there: optimal). The
    solve is some hundred roundings of quantities ≤ ‖g₂‖² = 38: |error| ≤ γ₆₄·38."""
    jac = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], dtype=torch.float64)
    d = CAGrad(c=0.5)(jac)
    g0 = jac.mean(0)
    tol = gamma(64, U64) * 38.0
    assert abs(float(torch.linalg.norm(d - g0)) - 0.5 * 3**0.5) <= tol
    r6 = math.sqrt(6.0)
    np.testing.assert_allclose(d.numpy(), [1 - r6 / 3, 1 + r6 / 12, 1 + r6 / 12], rtol=0, atol=tol)


def test_c_zero_one_objective_zero_gradients():
    jac = torch.tensor(jacobian(1, 4, 5), dtype=torch.float64)
    torch.testing.assert_close(CAGrad(c=0.0)(jac), jac.mean(0))
    one = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    torch.testing.assert_close(CAGrad(c=0.5)(one), 1.5 * one[0])  # g + c‖g‖·g/‖g‖
    zeros = torch.zeros(3, 2, dtype=torch.float64)
    torch.testing.assert_close(CAGrad()(zeros), torch.zeros(2, dtype=torch.float64))
    # a zero mean gradient: the ball is {g₀} = {0}
    opposite = torch.tensor([[1.0, 2.0], [-1.0, -2.0]], dtype=torch.float64)
    torch.testing.assert_close(CAGrad(c=2.0)(opposite), torch.zeros(2, dtype=torch.float64))


@settings(deadline=None, max_examples=60)
@given(SEEDS, st.integers(2, 4), st.integers(2, 5), RADII)
def test_optimal_against_the_primal_and_a_dense_grid(seed, n, d, c):
    """The worst improvement equals the primal optimum (SLSQP on d directly) and is at least
    that of every point of a dense grid of the ball's boundary directions d = g₀ + R·(Jᵀw)/‖Jᵀw‖
    over simplex weights w (step 1/40)."""
    j = jacobian(seed, n, d)
    g0 = j.mean(0)
    radius = c * np.linalg.norm(g0)
    ours = CAGrad(c=c)(torch.tensor(j)).numpy()
    value = worst_improvement(j, ours)
    scale = np.abs(j).max() ** 2
    assert np.linalg.norm(ours - g0) <= radius * (1 + 1e-9) + 1e-15
    assert value >= worst_improvement(j, primal_slsqp(j, c)) - 1e-7 * scale
    steps = 40 if n <= 3 else 12
    grid = np.array(
        [w for w in np.ndindex(*(steps + 1,) * (n - 1)) if sum(w) <= steps], dtype=float
    )
    weights = np.hstack([grid, steps - grid.sum(1, keepdims=True)]) / steps
    gw = weights @ j
    norms = np.linalg.norm(gw, axis=1, keepdims=True)
    candidates = g0 + radius * gw / np.where(norms > 0, norms, 1.0)
    assert value >= (candidates @ j.T).min(axis=1).max() - 1e-9 * scale


@settings(deadline=None, max_examples=60)
@given(SEEDS, st.integers(2, 10), RADII)
def test_matches_torchjd(seed, n, c):
    """TorchJD's CAGradWeighting (cvxpy, Clarabel) solves the dual to Clarabel's default
    tolerance ε = 1e-8 (relative, on the objective); ours is exact to rounding and never worse
    in the primal objective. The primal maximises a concave function over a ball of radius R,
    so a point whose value is within ε·s of the optimum lies within √(2Rε·s/‖g_w*‖) of it:
    with s ~ ‖d‖² that is ~√(2ε)·‖d‖ = 1.4e-4·‖d‖; the test allows 1e-3·‖d‖ (a margin of 7
    for the constants of the Clarabel tolerance)."""
    from torchjd.aggregation import CAGradWeighting

    j = jacobian(seed, n, n + 2)
    g = j @ j.T
    ours = CAGrad(c=c).weights(g)
    ref = reference_call(CAGradWeighting(c=c), torch.tensor(g)).numpy()
    d_ours, d_ref = ours @ j, ref @ j
    scale = np.abs(j).max() ** 2
    assert worst_improvement(j, d_ours) >= worst_improvement(j, d_ref) - 1e-7 * scale
    np.testing.assert_allclose(d_ours, d_ref, atol=1e-3 * np.linalg.norm(d_ref))


@settings(deadline=None, max_examples=100)
@given(SEEDS, st.integers(2, 8), st.integers(1, 6), st.sampled_from([1.0, 1.5, 4.0]), st.booleans())
def test_c_at_least_one_never_conflicts(seed, n, d, c, stationary):
    """Random gradients and Pareto-stationary ones (0 in their hull by construction)."""
    j = jacobian(seed, n, d, rank=min(n - 1, d) if stationary else None)
    if stationary:  # make 0 a convex combination: shift the last gradient
        w = np.random.default_rng(seed).dirichlet(np.ones(n))
        j[-1] = -(w[:-1] @ j[:-1]) / w[-1]
    out = CAGrad(c=c)(torch.tensor(j)).numpy()
    g0 = j.mean(0)
    scale = np.abs(j).max() ** 2
    assert worst_improvement(j, out) >= -1e-9 * scale
    assert np.linalg.norm(out - g0) <= c * np.linalg.norm(g0) * (1 + 1e-9) + 1e-12 * scale**0.5


@settings(deadline=None, max_examples=100)
@given(SEEDS, st.integers(2, 8), st.integers(1, 8), RADII)
def test_ball_and_worst_case_guarantee(seed, n, d, c):
    """In the ball, and never worse than the mean for the worst objective."""
    j = jacobian(seed, n, d)
    out = CAGrad(c=c)(torch.tensor(j)).numpy()
    g0 = j.mean(0)
    assert np.linalg.norm(out - g0) <= c * np.linalg.norm(g0) * (1 + 1e-9) + 1e-15
    assert worst_improvement(j, out) >= worst_improvement(j, g0) - 1e-9 * np.abs(j).max() ** 2
    w = CAGrad(c=c).weights(j @ j.T)
    assert np.all(w >= 0.0)


@pytest.mark.parametrize("scale", [1e-10, 1e-5, 1.0, 1e5, 1e15])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scales_and_dtypes(scale, dtype):
    j = torch.tensor(jacobian(7, 5, 6), dtype=torch.float64)
    w = CAGrad(c=0.5).weights(gramian_of(j))
    jac = (j * scale).to(dtype)
    d = CAGrad(c=0.5)(jac)
    assert d.dtype == dtype
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(
        CAGrad(c=0.5).weights(gramian_of(jac)).numpy(), w.numpy(), rtol=tol, atol=0
    )
    j64 = jac.double()
    g0 = j64.mean(0)
    assert float(torch.linalg.norm(d.double() - g0)) <= 0.5 * float(torch.linalg.norm(g0)) * (
        1 + tol
    )


def test_repr_and_registry():
    assert repr(get_aggregator("cagrad", c=0.5)) == "CAGrad(c=0.5)"
    assert repr(CAGrad()) == "CAGrad(c=0.4)"


@pytest.mark.parametrize("c", [-0.1, float("nan"), float("inf"), True, "0.4", None])
def test_bad_c(c):
    with pytest.raises(ValueError, match="c must be a finite number >= 0"):
        CAGrad(c=c)
