"""EPO: the dense simplex method against HiGHS, EPO's LPs against the reference formulation
in cvxpy, pinned steps computed by hand, the paper's toy problem, edge cases and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from mogradient.aggregation.gramian import gramian_of
from mogradient.aggregation.registry import get_aggregator
from mogradient.aggregators.epo import EPO
from mogradient.solvers.epo import (
    BALANCE,
    DESCENT,
    FALLBACK,
    LP_INFEASIBLE,
    LP_OPTIMAL,
    epo_weights,
    simplex_lp,
)
from tests.bounds import assert_float32_direction
from tests.strategies import random_jacobian

SEEDS = st.integers(0, 2**32 - 1)


# -- the LP solver against HiGHS ----------------------------------------------------------


#: HiGHS's documented primal and dual feasibility tolerances (absolute, on its scaled model).
HIGHS_TOL = 1e-7
#: The dense simplex method's feasibility tolerance (``FEASIBILITY_TOL``, relative to max |a|).
OURS_TOL = 1e-9


def highs(c: np.ndarray, a: np.ndarray, b: np.ndarray):
    """max cᵀx, Σx = 1, x ≥ 0, a x ≥ b by scipy's HiGHS: its default choice, then dual simplex,
    then interior point where one reports neither optimal (0) nor infeasible (2). A result that
    is still neither (4: "model status unknown" on some degenerate LPs) is the reference
    failing: the caller discards the example."""
    n = c.shape[0]
    k = a.shape[0]
    for method in ("highs", "highs-ds", "highs-ipm"):
        res = linprog(
            -c,
            A_ub=-a if k else None,
            b_ub=-b if k else None,
            A_eq=np.ones((1, n)),
            b_eq=[1.0],
            bounds=[(0, None)] * n,
            method=method,
        )
        if res.status in (0, 2):
            break
    return res


def dual_bound(c: np.ndarray, a: np.ndarray, b: np.ndarray, y: np.ndarray) -> float:
    """Weak duality: for any y ≥ 0 and x feasible, cᵀx ≤ cᵀx + yᵀ(ax − b) ≤ maxᵢ(c + aᵀy)ᵢ − yᵀb
    (x on the simplex), so this bounds the optimum from above whatever the accuracy of y."""
    return float(np.max(c + a.T @ y) - y @ b) if a.shape[0] else float(np.max(c))


def check_against_highs(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """Our x is feasible to our stated tolerance and its value reaches HiGHS's dual bound.

    The optimum is bracketed without trusting HiGHS's accuracy: UB = ``dual_bound(y_HiGHS)``
    is ≥ the optimum for any y ≥ 0. HiGHS's own gap UB − cᵀx_HiGHS (its primal value, taken
    where x_HiGHS is feasible to HIGHS_TOL) says how tight its certificate is; where it exceeds
    what HiGHS's tolerances allow, the reference failed and the example is discarded. So the
    optimum is ≥ UB − gap − (what x_HiGHS's own HIGHS_TOL infeasibility can buy, by the same
    weak duality: HIGHS_TOL · (Σy + n·max|c|)), and ours must reach that less the value of our
    feasibility tolerance (OURS_TOL · max|a| · Σy) and the rounding of the sums
    (4(n + k)·u·(max|c| + max|a|ᵀy + |b|ᵀy))."""
    x, status = simplex_lp(c, a, b)
    res = highs(c, a, b)
    assume(res.status in (0, 2))  # HiGHS failed (status 1, 3, 4): not our failure
    if res.status == 2:
        assert status == LP_INFEASIBLE
        return
    assert status == LP_OPTIMAL
    scale_a = max(float(np.abs(a).max(initial=0.0)), 1.0)
    assert np.all(x >= 0) and abs(x.sum() - 1.0) <= 4 * c.shape[0] * np.finfo(float).eps
    if a.shape[0]:
        assert np.all(a @ x >= b - OURS_TOL * scale_a)
    y = np.clip(-res.ineqlin.marginals, 0.0, None) if a.shape[0] else np.zeros(0)
    upper = dual_bound(c, a, b, y)
    x_h = res.x
    assume(np.all(x_h >= -HIGHS_TOL) and abs(x_h.sum() - 1.0) <= HIGHS_TOL * c.shape[0])
    magnitude = np.abs(c).max() + (np.abs(a).T @ y).max(initial=0.0) + np.abs(b) @ y
    highs_gap = upper - float(c @ x_h)
    assume(highs_gap <= HIGHS_TOL * 10 * (1.0 + magnitude))  # the reference's certificate
    rounding = 4 * (c.shape[0] + a.shape[0]) * np.finfo(float).eps * magnitude
    bought = HIGHS_TOL * (y.sum() + c.shape[0] * np.abs(c).max())
    slack = max(highs_gap, 0.0) + bought + OURS_TOL * scale_a * y.sum() + rounding
    assert c @ x >= upper - slack


@settings(deadline=None, max_examples=300)
@given(SEEDS, st.integers(1, 12), st.integers(0, 14), st.booleans())
def test_simplex_matches_highs(seed: int, n: int, k: int, rounded: bool) -> None:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(k, n)) * 10.0 ** rng.integers(-3, 4)
    b = rng.normal(size=k) * np.abs(a).max(initial=1.0) * rng.uniform(0, 0.5)
    c = rng.normal(size=n)
    if rounded:  # integer data: ties and degenerate vertices
        a, b, c = np.round(a), np.round(b), np.round(c)
    check_against_highs(c, np.ascontiguousarray(a), b)


def test_simplex_pinned() -> None:
    # max x₁ + 2x₂ s.t. x₁ − x₂ ≥ 0 on the simplex: x = (½, ½)
    x, status = simplex_lp(np.array([1.0, 2.0]), np.array([[1.0, -1.0]]), np.array([0.0]))
    assert status == LP_OPTIMAL
    np.testing.assert_allclose(x, [0.5, 0.5], rtol=1e-15)
    # x₁ ≥ 2 is infeasible on the simplex
    _, status = simplex_lp(np.array([1.0, 0.0]), np.array([[1.0, 0.0]]), np.array([2.0]))
    assert status == LP_INFEASIBLE


# -- EPO's LPs against the reference formulation (cvxpy) ------------------------------------


def reference_step(g: np.ndarray, losses: np.ndarray, r: np.ndarray, eps: float, relax: bool):
    """EPO's step as in the paper's code, in cvxpy: (mode, optimal value or None)."""
    cp = pytest.importorskip("cvxpy")
    m = g.shape[0]
    rl = r * losses
    lhat = rl / rl.sum()
    mu = float(
        np.sum(lhat[lhat > np.finfo(float).eps] * np.log(m * lhat[lhat > np.finfo(float).eps]))
    )
    adj = r * (np.log(m * lhat) - mu)
    ca = g @ adj
    alpha = cp.Variable(m)
    simplex = [alpha >= 0, cp.sum(alpha) == 1]
    if mu > eps:
        rhs = ca.copy() if np.any(ca > 0) else np.zeros(m)
        if np.any(ca > 0):
            rhs[ca > 0] = -np.inf
            rhs[rl == rl.max()] = 0.0
        rows = np.isfinite(rhs)
        problem = cp.Problem(cp.Maximize(alpha @ ca), [*simplex, g[rows] @ alpha >= rhs[rows]])
        mode = BALANCE
    else:
        constraints = [*simplex, g @ alpha >= 0]
        if not relax:
            constraints.append(alpha @ ca >= min(ca.max(), 0.0))
        problem = cp.Problem(cp.Maximize(cp.sum(g @ alpha)), constraints)
        mode = DESCENT
    try:
        problem.solve(solver=cp.HIGHS if "HIGHS" in cp.installed_solvers() else cp.CLARABEL)
    except cp.error.SolverError:
        assume(False)  # the reference failed: not our failure
    if problem.status == "infeasible":
        return mode, None, ca
    assume(problem.status == "optimal")  # inaccurate, unbounded or unknown: discard
    return mode, float(problem.value), ca


@settings(deadline=None, max_examples=60)
@given(
    SEEDS,
    st.integers(1, 7),
    st.sampled_from([2, 5, 40]),
    st.booleans(),
    st.booleans(),
)
def test_same_optimum_as_the_reference_lp(
    seed: int, m: int, d: int, near_ray: bool, relax: bool
) -> None:
    rng = np.random.default_rng(seed)
    jac = rng.normal(size=(m, d)) * np.exp(rng.normal(size=(m, 1)))
    g = jac @ jac.T
    r = rng.dirichlet(np.ones(m))
    losses = (1.0 / r) * (1.0 + 1e-4 * rng.normal(size=m)) if near_ray else rng.uniform(0.1, 3, m)
    losses = np.abs(losses) + 1e-3
    alpha, mode, _ = epo_weights(g, losses, r, 1e-4, relax)
    ref_mode, value, ca = reference_step(g, losses, r, 1e-4, relax)
    assert np.all(alpha >= 0) and abs(alpha.sum() - 1.0) <= 1e-12
    if value is None:
        assert mode == FALLBACK
        np.testing.assert_allclose(alpha, r / r.sum(), rtol=1e-15)
        return
    assert mode == ref_mode
    ours = alpha @ ca if mode == BALANCE else float(np.sum(g @ alpha))
    # HiGHS (or Clarabel) solves to feasibility/optimality tolerances 1e-7 (1e-8), relative to
    # the data's scale; its value can exceed the optimum by that much, ours is exact to rounding.
    scale = np.abs(g).max() * max(1.0, np.abs(ca).max() / np.abs(g).max())
    assert ours >= value - HIGHS_TOL * scale


# -- pinned steps (by hand) ---------------------------------------------------------------


def test_balance_step_pinned() -> None:
    # G = I, r uniform, l = (2, 1): l̂ = (⅔, ⅓), a ∝ (log(4/3) − μ, log(2/3) − μ), Ga = a.
    # Objective 1 has Ga > 0 and the largest r·l: constraint α₁ ≥ 0; α₂ ≥ a₂ holds always;
    # max α·a puts all weight on objective 1 (the worse one relative to the ray).
    alpha, mode, mu = epo_weights(np.eye(2), np.array([2.0, 1.0]), np.array([0.5, 0.5]))
    assert mode == BALANCE
    assert math.isclose(mu, 2 / 3 * math.log(4 / 3) + 1 / 3 * math.log(2 / 3), rel_tol=1e-14)
    np.testing.assert_array_equal(alpha, [1.0, 0.0])


def test_descent_step_pinned() -> None:
    # On the ray (r·l equal): a = 0, descent mode: max 0.5α₁ + 1.5α₂ s.t. α₁ − 0.5α₂ ≥ 0,
    # −0.5α₁ + 2α₂ ≥ 0 on the simplex → α = (⅓, ⅔)
    g = np.array([[1.0, -0.5], [-0.5, 2.0]])
    r = np.array([0.25, 0.75])
    alpha, mode, mu = epo_weights(g, 2.0 / r, r)
    assert mode == DESCENT and abs(mu) < 1e-15
    np.testing.assert_allclose(alpha, [1 / 3, 2 / 3], rtol=1e-14)
    # without conflict the whole weight goes to the larger column sum of G
    alpha, mode, _ = epo_weights(np.array([[1.0, 0.5], [0.5, 2.0]]), 2.0 / r, r)
    np.testing.assert_allclose(alpha, [0.0, 1.0], atol=1e-15)


def test_infeasible_lp_falls_back_to_the_preference() -> None:
    # Pinned by a search and confirmed infeasible by the reference formulation below.
    g, losses, r = infeasible_case()
    alpha, mode, _ = epo_weights(g, losses, r)
    assert reference_step(g, losses, r, 1e-4, False)[1] is None
    assert mode == FALLBACK
    np.testing.assert_allclose(alpha, r, rtol=1e-15)
    agg = EPO(preference=r.tolist())
    agg.weights(g, losses=losses)
    assert agg.last_mode == "fallback"


def infeasible_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A seeded search: six gradients in 3-d near the ray, where the descent LP's constraints
    Gα ≥ 0 and αᵀGa ≥ 0 cannot both hold."""
    rng = np.random.default_rng(0)
    for _ in range(10_000):
        m, d = int(rng.integers(2, 8)), int(rng.choice([3, 50]))
        jac = rng.normal(size=(m, d))
        g = jac @ jac.T
        losses = rng.uniform(0.1, 2, m)
        r = rng.dirichlet(np.ones(m))
        if rng.uniform() < 0.3:
            losses = (1 / r) * (1 + 1e-4 * rng.normal(size=m))
        if epo_weights(g, losses, r)[1] == FALLBACK:
            return g, losses, r
    raise AssertionError("no infeasible case found")


def test_epo_reaches_the_preference_ray_on_the_papers_toy_problem() -> None:
    # Mahapatra & Rajan's toy: l₁ = 1 − exp(−‖x − 1/√n‖²), l₂ = 1 − exp(−‖x + 1/√n‖²), n = 20,
    # steps x ← x − 10·max(μ, 0.1)·0.1·d as in their script; r·l must end equal (μ ≤ eps).
    def losses_and_jacobian(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, b = x - 1 / math.sqrt(x.size), x + 1 / math.sqrt(x.size)
        ea, eb = math.exp(-a @ a), math.exp(-b @ b)
        return np.array([1 - ea, 1 - eb]), np.stack([2 * a * ea, 2 * b * eb])

    rng = np.random.default_rng(0)
    for angle in np.linspace(math.pi / 20, 9 * math.pi / 20, 4):
        r = np.array([math.cos(angle), math.sin(angle)])
        agg = EPO(preference=r.tolist())
        x = np.where(np.arange(20) % 2 == 0, 0.3, -0.3) + 0.1 * rng.normal(size=20)
        for _ in range(100):
            values, jac = losses_and_jacobian(x)
            w = agg.weights(jac @ jac.T, losses=values)
            x = x - 10 * max(agg.last_mu or 0.0, 0.1) * 0.1 * (w @ jac)
        values, jac = losses_and_jacobian(x)
        agg.weights(jac @ jac.T, losses=values)  # μ of the final losses
        share = r * values / (r @ values)
        assert agg.last_mu is not None and agg.last_mu <= 1e-4  # EPO's own eps: on the ray
        # μ = KL(share ‖ uniform); Pinsker: |shareᵢ − ½| ≤ √(μ/2) ≤ √(1e-4/2) ≈ 7.1e-3
        bound = math.sqrt(max(agg.last_mu, 0.0) / 2) + 4 * np.finfo(float).eps
        np.testing.assert_allclose(share, [0.5, 0.5], rtol=0, atol=bound)


# -- the aggregator -----------------------------------------------------------------------


def test_call_with_losses_and_simplex_weights() -> None:
    jac = random_jacobian(3, 10, seed=1)
    losses = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    agg = EPO(preference=[1.0, 2.0, 1.0])
    d = agg(jac, losses=losses)
    w = agg.weights(gramian_of(jac), losses=losses)
    assert w.dtype == torch.float64 and torch.all(w >= 0)
    assert math.isclose(float(w.sum()), 1.0, rel_tol=1e-12)
    torch.testing.assert_close(d, w @ jac)
    assert agg.last_mode in {"balance", "descent", "fallback"}


def test_losses_are_required_and_checked() -> None:
    jac = random_jacobian(2, 4, seed=2)
    agg = EPO()
    with pytest.raises(ValueError, match="losses="):
        agg(jac)
    with pytest.raises(ValueError, match="losses="):
        agg.weights(gramian_of(jac))
    with pytest.raises(ValueError, match="> 0"):
        agg(jac, losses=torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="> 0"):
        agg(jac, losses=torch.tensor([1.0, -2.0]))
    with pytest.raises(ValueError, match="one loss value per objective"):
        agg(jac, losses=torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="not finite"):
        agg(jac, losses=torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="entries"):
        EPO(preference=[1.0, 2.0, 3.0])(jac, losses=torch.tensor([1.0, 2.0]))


def test_one_objective() -> None:
    jac = torch.tensor([[1.0, -2.0, 3.0]], dtype=torch.float64)
    torch.testing.assert_close(EPO()(jac, losses=torch.tensor([0.7])), jac[0])


@pytest.mark.parametrize(
    "rows",
    [
        [[0.0, 0.0], [0.0, 0.0]],  # zero gradients
        [[1.0, 2.0], [1.0, 2.0]],  # identical
        [[1.0, 2.0], [-2.0, -4.0]],  # opposite collinear
        [[1.0, 0.0], [0.0, 1.0]],  # orthogonal
    ],
)
@pytest.mark.parametrize("losses", [[1.0, 1.0], [3.0, 1.0], [1.0, 3.0]])
def test_degenerate_inputs_give_simplex_weights(rows: list, losses: list) -> None:
    jac = torch.tensor(rows, dtype=torch.float64)
    w = EPO().weights(gramian_of(jac), losses=torch.tensor(losses, dtype=torch.float64))
    assert torch.all(w >= 0) and math.isclose(float(w.sum()), 1.0, rel_tol=1e-12)


def test_identical_gradients_give_that_gradient() -> None:
    g = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    d = EPO()(g.repeat(3, 1), losses=torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(d, g)


@pytest.mark.parametrize("scale", [1e-10, 1e-5, 1e6, 1e12, 1e15])
def test_weights_do_not_depend_on_the_gradient_scale(scale: float) -> None:
    # Not a claimed property (ties may be broken differently), but it holds on generic input.
    jac = random_jacobian(4, 6, seed=3)
    losses = torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=torch.float64)
    w = EPO().weights(gramian_of(jac), losses=losses)
    torch.testing.assert_close(EPO().weights(gramian_of(jac * scale), losses=losses), w)


def test_float32_jacobian() -> None:
    jac = random_jacobian(3, 20, seed=6)
    losses = torch.tensor([1.0, 2.0, 0.5])
    assert_float32_direction(EPO, jac.float(), losses)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"preference": [1.0, 0.0]}, ValueError, "strictly positive"),
        ({"preference": [1.0, -1.0]}, ValueError, "non-negative"),
        ({"preference": "ab"}, TypeError, "sequence"),
        ({"eps": -1.0}, ValueError, ">= 0"),
        ({"eps": float("nan")}, ValueError, ">= 0"),
        ({"eps": "1"}, TypeError, "number"),
        ({"relax": 1}, TypeError, "True or False"),
    ],
)
def test_invalid_hyperparameters(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        EPO(**kwargs)


def test_registry_repr_and_reset() -> None:
    agg = get_aggregator("epo", preference=[1, 3])
    assert isinstance(agg, EPO) and isinstance(get_aggregator("EPO_search"), EPO)
    assert repr(agg) == "EPO(preference=[0.25, 0.75], eps=0.0001, relax=False)"
    assert repr(EPO()) == "EPO(preference=None, eps=0.0001, relax=False)"
    jac = random_jacobian(2, 5, seed=4).requires_grad_(True)
    losses = torch.tensor([1.0, 2.0])
    first = agg(jac, losses=losses)
    assert not first.requires_grad and agg.last_mode is not None
    agg.reset()
    assert agg.last_mode is None and agg.last_mu is None
    torch.testing.assert_close(agg(jac, losses=losses), first, rtol=0, atol=0)
