"""The shared active-set kernel (solvers/qp.py), the dual-cone projections and Gramian checks.

References are independent: quadprog (positive definite problems), scipy's NNLS and SLSQP
(singular ones), hand-computed projections, and the KKT conditions themselves.
"""

from __future__ import annotations

import numpy as np
import pytest
import quadprog
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from mogradient.aggregation.inputs import check_gramian
from mogradient.aggregators.cagrad import CAGrad
from mogradient.aggregators.dualproj import DualProj
from mogradient.aggregators.mgda import MGDA
from mogradient.aggregators.upgrad import UPGrad
from mogradient.solvers import (
    cagrad_update,
    dualproj_weights,
    min_norm,
    project_dual_cone,
    solve_qp,
    upgrad_weights,
)
from mogradient.solvers.validation import CheckedGramian, precision_tolerance
from tests.bounds import U64, gamma
from tests.references import discard, nnls_settled, reference_call

SEEDS = st.integers(0, 2**32 - 1)


def jacobian(seed: int, n: int, d: int, rank: int | None = None) -> np.ndarray:
    """Gradients with row scales over two decades; rank-deficient when ``rank < min(n, d)``."""
    rng = np.random.default_rng(seed)
    scales = np.exp(rng.normal(size=(n, 1)))
    if rank is None:
        return rng.normal(size=(n, d)) * scales
    return (rng.normal(size=(n, rank)) @ rng.normal(size=(rank, d))) * scales


def quadprog_reference(g, linear, lower, simplex):
    n = g.shape[0]
    ridge = 1e-13 * np.max(np.diag(g))
    if simplex:
        constraints = np.hstack([np.ones((n, 1)), np.eye(n)])
        bounds = np.concatenate([[1.0], lower])
        meq = 1
    else:
        constraints = np.eye(n)
        bounds = lower
        meq = 0
    solved = reference_call(
        quadprog.solve_qp, g + ridge * np.eye(n), -linear, constraints, bounds, meq
    )
    return solved[0]


def objective(g, linear, x):
    return 0.5 * x @ g @ x + linear @ x


def assert_kkt(g, linear, lower, x, simplex):
    """Stationarity with non-negative multipliers on the active bounds, complementarity: to a
    backward-stable solve's residual, 4·γ_{16n}·(max Gᵢᵢ·(1 + max|x|) + max|linear|) (an exact
    solve for data perturbed by γ_{16n} relatively, and the float64 evaluation of Gx + b)."""
    n = g.shape[0]
    tol = 4 * gamma(16 * n, U64)
    grad = g @ x + linear
    scale = np.max(np.diag(g)) * (1 + np.abs(x).max()) + np.abs(linear).max()
    free = x > lower  # the solve puts an active point exactly on its bound
    level = (grad[free].mean() if free.any() else grad.min()) if simplex else 0.0
    assert np.all(np.abs(grad[free] - level) <= tol * scale)
    assert np.all(grad[~free] >= level - tol * scale)


def objective_slack(g, linear, lower, x, ref, simplex):
    """How far f(x) may exceed f(ref) for x that meets ``assert_kkt`` and a reference that is
    feasible up to its own rounding.

    f is convex: f(x) − f(ref) ≤ ∇f(x)ᵀ(x − ref) = Σ(∇fᵢ − ℓ)(xᵢ − refᵢ) + ℓ·Σ(xᵢ − refᵢ) (ℓ:
    the simplex's level, else 0). On the free set |∇fᵢ − ℓ| ≤ r (the KKT residual that
    ``assert_kkt`` allows); on the active set xᵢ = lowerᵢ and ∇fᵢ − ℓ ≥ −r, so the term is at
    most r·|xᵢ − refᵢ| or (∇fᵢ − ℓ)·(lowerᵢ − refᵢ)⁺. Plus the float64 evaluation of both
    objectives, γ_{n+2}(½|x|ᵀ|G||x| + |b|ᵀ|x|) each."""
    n = g.shape[0]
    r = 4 * gamma(16 * n, U64)
    r *= np.max(np.diag(g)) * (1 + np.abs(x).max()) + np.abs(linear).max()
    grad = g @ x + linear
    free = x > lower
    level = (grad[free].mean() if free.any() else grad.min()) if simplex else 0.0
    bound = r * np.abs(x - ref).sum()
    below = np.maximum(lower - ref, 0.0)  # the reference's violation of its bounds
    bound += np.sum(np.maximum(grad - level, 0.0)[~free] * below[~free])
    bound += abs(level) * abs(x.sum() - ref.sum())

    def evaluation(v):
        return gamma(n + 2, U64) * (
            0.5 * np.abs(v) @ np.abs(g) @ np.abs(v) + np.abs(linear) @ np.abs(v)
        )

    return bound + evaluation(x) + evaluation(ref)


# -- the general QP ---------------------------------------------------------------------


@settings(deadline=None, max_examples=150)
@given(SEEDS, st.integers(1, 12), st.booleans(), st.booleans())
def test_matches_quadprog_on_positive_definite_problems(seed, n, simplex, bounded):
    rng = np.random.default_rng(seed)
    j = jacobian(seed, n, n + 3)
    g = j @ j.T
    linear = rng.normal(size=n) * np.sqrt(np.max(np.diag(g)))
    lower = np.zeros(n)
    if bounded:
        lower = rng.uniform(-1.0, 1.0, size=n) * (0.5 / n if simplex else 1.0)
    x = solve_qp(g, linear, lower=lower, simplex=simplex)
    ref = quadprog_reference(g, linear, lower, simplex)
    assert np.all(x >= lower)
    if simplex:
        assert abs(x.sum() - 1.0) < 1e-12
    assert_kkt(g, linear, lower, x, simplex)
    slack = objective_slack(g, linear, lower, x, ref, simplex)
    assert objective(g, linear, x) <= objective(g, linear, ref) + slack


@settings(deadline=None, max_examples=100)
@given(SEEDS, st.integers(2, 15), st.integers(1, 4), st.booleans())
def test_singular_gramians_with_linear_term_in_range(seed, n, rank, simplex):
    """Rank-deficient G, linear term G·z: matches SLSQP's objective, KKT holds."""
    rng = np.random.default_rng(seed)
    j = jacobian(seed, n, 6, rank=min(rank, n))
    g = j @ j.T
    linear = g @ rng.normal(size=n)
    x = solve_qp(g, linear, simplex=simplex)
    assert np.all(x >= 0.0)
    assert_kkt(g, linear, np.zeros(n), x, simplex)
    constraints = [{"type": "eq", "fun": lambda v: v.sum() - 1.0}] if simplex else []
    res = minimize(
        lambda v: objective(g, linear, v),
        np.full(n, 1.0 / n),
        jac=lambda v: g @ v + linear,
        method="SLSQP",
        bounds=[(0.0, None)] * n,
        constraints=constraints,
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    scale = np.max(np.diag(g)) * (1 + np.abs(x).max()) ** 2
    # SLSQP can stop on an infeasible point (seed 3, n = 11: Σx = 1 + 1.5e-6, "positive
    # directional derivative"), whose objective is then below the constrained optimum: a
    # reference failure, discarded unless the point it stopped on is feasible anyway (off the
    # simplex by δ ≤ 1e-12 it can beat the optimum by δ·max|∇f| ≤ 1e-12·scale, in the slack)
    feasible = np.all(res.x >= 0) and (not simplex or abs(res.x.sum() - 1) <= 1e-12)
    if not (res.success or feasible):
        discard(f"SLSQP: {res.message}")
    assert objective(g, linear, x) <= objective(g, linear, res.x) + 1e-9 * scale


def test_pinned_small_problems():
    g = np.array([[2.0, 0.0], [0.0, 1.0]])
    # orthant: min x1² + ½x2² − x1 + x2 → x = (0.5, 0)
    np.testing.assert_allclose(solve_qp(g, [-1.0, 1.0]), [0.5, 0.0], atol=1e-15)
    # simplex: min x1² + ½x2² on x1 + x2 = 1 → x = (1/3, 2/3)
    np.testing.assert_allclose(solve_qp(g, simplex=True), [1 / 3, 2 / 3], atol=1e-15)
    # simplex with x ≥ (0.5, 0): the bound on x1 binds
    np.testing.assert_allclose(solve_qp(g, lower=[0.5, 0.0], simplex=True), [0.5, 0.5], atol=1e-15)
    # lower bounds summing to 1 leave one point
    np.testing.assert_allclose(solve_qp(g, lower=[0.25, 0.75], simplex=True), [0.25, 0.75])


def test_zero_gramian():
    z = np.zeros((3, 3))
    np.testing.assert_array_equal(solve_qp(z, [1.0, 2.0, 0.5]), [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(solve_qp(z, [1.0, 0.5, 0.5], simplex=True), [0.0, 0.5, 0.5])


def test_linear_term_outside_the_range_is_unbounded():
    g = np.array([[1.0, -1.0], [-1.0, 1.0]])  # g₂ = −g₁: x = (t, t) costs nothing
    with pytest.raises(ValueError, match="not in the range of the Gramian"):
        solve_qp(g, [-1.0, -1.0])
    with pytest.raises(ValueError, match="not in the range of the Gramian"):
        solve_qp(np.zeros((2, 2)), [1.0, -1.0])
    # a null direction the orthant does not contain leaves the problem bounded
    ones = np.ones((2, 2))
    np.testing.assert_allclose(solve_qp(ones, [1.0, -1.0]), [0.0, 1.0], atol=1e-15)
    # and on the simplex it always is
    np.testing.assert_allclose(solve_qp(g, [-1.0, -1.0], simplex=True), [0.5, 0.5], atol=1e-15)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"linear": [1.0, 2.0]}, "linear must be a finite vector of 3 entries"),
        ({"linear": [1.0, np.nan, 0.0]}, "linear must be a finite vector"),
        ({"lower": np.ones((3, 1))}, "lower must be a finite vector of 3 entries"),
        ({"lower": [0.5, 0.5, 0.5], "simplex": True}, "sum to more than 1"),
    ],
)
def test_bad_vectors_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        solve_qp(np.eye(3), **kwargs)


def test_long_support_changes_keep_the_factor_exact():
    """Many entries and exits (Givens deletions, carried forward solutions): KKT at the end."""
    for seed in range(20):
        j = jacobian(seed, 60, 80)
        g = j @ j.T
        linear = g @ np.random.default_rng(seed).normal(size=60) * 3
        for simplex in (False, True):
            x = solve_qp(g, linear, simplex=simplex)
            assert_kkt(g, linear, np.zeros(60), x, simplex)


# -- projections onto the dual cone -----------------------------------------------------


def nnls_projection(j: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Jᵀ(u + x) with x = argmin_{x ≥ 0} ‖Jᵀ(u + x)‖, by scipy's NNLS on the Jacobian."""
    x = nnls_settled(j.T, -(j.T @ u), maxiter=50 * len(u))
    return j.T @ (u + x)


def test_pinned_projection():
    """g₁ = (1, 0), g₂ = (−1, 1): g₁ projects to (½, ½) (onto g₂·d = 0), g₂ to (0, 1)."""
    j = np.array([[1.0, 0.0], [-1.0, 1.0]])
    v = project_dual_cone(j @ j.T, np.eye(2))
    np.testing.assert_allclose(v, [[1.0, 0.5], [1.0, 1.0]], atol=1e-15)
    np.testing.assert_allclose(v @ j, [[0.5, 0.5], [0.0, 1.0]], atol=1e-15)
    # a vector already in the cone is its own projection
    np.testing.assert_array_equal(project_dual_cone(j @ j.T, [2.0, 1.0]), [2.0, 1.0])


@settings(deadline=None, max_examples=100)
@given(SEEDS, st.integers(1, 12), st.integers(1, 8), st.booleans())
def test_projection_matches_nnls(seed, n, d, low_rank):
    rng = np.random.default_rng(seed)
    j = jacobian(seed, n, d, rank=max(1, min(n, d) - 1) if low_rank else None)
    u = rng.uniform(0.0, 1.0, size=n)
    v = project_dual_cone(j @ j.T, u)
    assert np.all(v >= u)
    direction = v @ j
    scale = np.linalg.norm(j, axis=1).max()
    assert np.all(j @ direction >= -1e-9 * scale**2 * (1 + np.abs(v).max()))
    np.testing.assert_allclose(
        direction, nnls_projection(j, u), atol=1e-7 * scale * (1 + np.abs(v).max())
    )


def test_projection_batch_and_shapes():
    j = jacobian(3, 4, 6)
    g = j @ j.T
    us = np.random.default_rng(0).uniform(size=(5, 4))
    batch = project_dual_cone(g, us)
    assert batch.shape == (5, 4)
    for u, v in zip(us, batch):
        np.testing.assert_array_equal(project_dual_cone(g, u), v)
    with pytest.raises(ValueError, match="u must be a vector of 4 weights"):
        project_dual_cone(g, np.ones(3))
    with pytest.raises(ValueError, match="entry 1 .* NaN or Inf"):
        project_dual_cone(g, [0.0, np.nan, 0.0, 0.0])


def test_upgrad_and_dualproj_solver_functions_take_the_preference_as_given():
    j = jacobian(5, 3, 5)
    g = j @ j.T
    p = np.array([2.0, 0.0, 1.0])  # not normalised: used as it is
    v = project_dual_cone(g, np.diag(p))
    np.testing.assert_allclose(upgrad_weights(g, p), v.sum(axis=0), atol=1e-14)
    np.testing.assert_allclose(dualproj_weights(g, p), project_dual_cone(g, p), atol=0)
    np.testing.assert_allclose(upgrad_weights(g), upgrad_weights(g, np.full(3, 1 / 3)))
    with pytest.raises(ValueError, match="preference must be a vector of 3 entries"):
        upgrad_weights(g, [1.0, 1.0])


# -- Gramian validation -----------------------------------------------------------------


GOOD = np.array([[2.0, 0.5, 0.1], [0.5, 1.0, 0.2], [0.1, 0.2, 1.5]])


def _with(i, j, value, symmetric=True):
    g = GOOD.copy()
    g[i, j] = value
    if symmetric:
        g[j, i] = value
    return g


BAD_GRAMIANS = [
    (np.ones((2, 3)), ValueError, "square"),
    (np.ones(3), ValueError, "2-D"),
    (np.empty((0, 0)), ValueError, "zero objectives"),
    ([[1.0, 0.0], [0.0, 1.0]], TypeError, "numpy array or torch tensor"),
    (np.eye(2, dtype=complex), TypeError, "real-valued"),
    (_with(2, 1, np.nan, symmetric=False), ValueError, "row 2 \\(objective 2"),
    (_with(0, 0, np.inf), ValueError, "row 0 \\(objective 0"),
    (_with(1, 1, -1.0), ValueError, "negative diagonal entry G\\[1, 1\\]"),
    (_with(0, 1, 0.6, symmetric=False), ValueError, "not symmetric: G\\[0, 1\\]"),
    (_with(0, 2, 1.9), ValueError, "not positive semi-definite.*G\\[0, 2\\]"),
    (
        np.array([[1.0, -0.9, -0.9], [-0.9, 1.0, -0.9], [-0.9, -0.9, 1.0]]),
        ValueError,
        "not positive semi-definite.*negative curvature",
    ),
]


@pytest.mark.parametrize(("gramian", "error", "match"), BAD_GRAMIANS)
def test_check_gramian_errors(gramian, error, match):
    with pytest.raises(error, match=match):
        check_gramian(gramian)


@pytest.mark.parametrize(("gramian", "error", "match"), BAD_GRAMIANS[5:])
@pytest.mark.parametrize(
    "solve",
    [min_norm, upgrad_weights, dualproj_weights, lambda g: cagrad_update(g, 0.5), solve_qp],
)
def test_every_solver_validates_alike(gramian, error, match, solve):
    with pytest.raises(error, match=match):
        solve(gramian)


def test_indefinite_beyond_the_full_check_is_caught_by_the_solve():
    """Above 16 objectives only 2×2 minors are checked up front; the solve meets the rest."""
    n = 40
    g = np.eye(n) - 0.05 * (np.ones((n, n)) - np.eye(n))  # eigenvalue 1 − 0.05·39 along 1
    assert np.linalg.eigvalsh(g)[0] < -0.9
    with pytest.raises(ValueError, match="not positive semi-definite"):
        min_norm(g)


def test_checked_gramian_is_not_validated_twice():
    checked = check_gramian(GOOD)
    assert isinstance(checked, CheckedGramian) and checked.tol == 1e-8
    np.testing.assert_array_equal(checked, GOOD)
    # anything derived from it is checked again
    assert checked[0:2].tol is None and checked.copy().tol is None
    assert type(checked * 2.0) is np.ndarray and type(checked @ np.ones(3)) is np.ndarray
    # a solver trusts the mark: an invalid matrix behind it is not re-checked
    fake = np.array([[1.0, 0.0], [0.0, 1.0]]).view(CheckedGramian)
    fake.tol = 1e-8
    np.testing.assert_allclose(min_norm(fake), [0.5, 0.5])


def test_tolerance_follows_the_input_precision():
    assert precision_tolerance(None, 10) == 1e-8
    assert precision_tolerance(np.finfo(np.float64).eps, 10) == 1e-8
    assert precision_tolerance(float(np.finfo(np.float32).eps), 10) == pytest.approx(
        80 * np.finfo(np.float32).eps
    )
    assert check_gramian(np.eye(3, dtype=np.float32)).tol == pytest.approx(
        24 * np.finfo(np.float32).eps
    )
    assert check_gramian(torch.eye(3, dtype=torch.bfloat16)).tol == pytest.approx(
        24 * torch.finfo(torch.bfloat16).eps
    )
    assert check_gramian(np.eye(3, dtype=np.int64)).tol == 1e-8


def rank_deficient_float32(seed: int) -> tuple[np.ndarray, torch.Tensor]:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 30))
    rank = int(rng.integers(1, n))
    d = int(rng.choice([16, 256, 4096]))
    j = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, d)) * np.exp(rng.normal(size=(n, 1)))
    jt = torch.tensor(j, dtype=torch.float32)
    return j, jt @ jt.T


def test_float32_gramians_of_rank_deficient_jacobians_are_accepted():
    """Computed in float32, J Jᵀ of a rank-deficient J is PSD only to float32 rounding."""
    rejected_by_float64_rules = 0
    # Whether a product's rounding lands below float64's tolerance depends on the BLAS kernel;
    # the last Gramian does on every machine: two parallel gradients whose float32 rounding
    # breaks Cauchy–Schwarz by one float32 ulp (λ_min = −2⁻²³).
    parallel = torch.tensor([[1.0, 1.0 + 2.0**-23], [1.0 + 2.0**-23, 1.0]], dtype=torch.float32)
    gramians = [rank_deficient_float32(seed)[1] for seed in range(60)] + [parallel]
    for g32 in gramians:
        g = g32.numpy()
        if np.linalg.eigvalsh(g.astype(np.float64))[0] < -1e-8 * len(g) * np.max(np.diag(g)):
            rejected_by_float64_rules += 1
        for agg in (MGDA(), UPGrad(), DualProj(), CAGrad(0.5), CAGrad(2.0)):
            for gramian in (g, g32):
                w = agg.weights(gramian)
                assert np.all(np.isfinite(np.asarray(w)))
        min_norm(g)
        upgrad_weights(g32)
    assert rejected_by_float64_rules > 0  # the test does exercise the float32 tolerance


def test_float64_copies_of_float32_gramians_keep_the_strict_tolerance():
    """Only the dtype the Gramian arrives in tells its precision: a float64 array is held to
    1e-8. A clearly indefinite float32 Gramian is still refused."""
    g = np.array([[1.0, -0.9, -0.9], [-0.9, 1.0, -0.9], [-0.9, -0.9, 1.0]], dtype=np.float32)
    with pytest.raises(ValueError, match="not positive semi-definite"):
        check_gramian(g)
    with pytest.raises(ValueError, match="not positive semi-definite"):
        MGDA().weights(torch.as_tensor(g))
