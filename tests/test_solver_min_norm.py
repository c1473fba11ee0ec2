"""Exactness, invariances, edge cases and input errors of the min-norm solver (MGDA weights)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from mogradient.solvers import min_norm
from tests.bounds import U32, U64, gamma, min_norm_tolerance, qp_weight_tolerance

SEEDS = st.integers(0, 2**32 - 1)


def jacobian(seed: int, n: int, d: int, shared: float = 0.0) -> np.ndarray:
    """Random gradients with row scales over two decades, optionally sharing a component."""
    rng = np.random.default_rng(seed)
    j = rng.normal(size=(n, d)) * np.exp(rng.normal(size=(n, 1)))
    return j + shared * rng.normal(size=d)


def conflicting(seed: int, n: int, rank: int, spread: float = 2.0) -> np.ndarray:
    """gᵢ = u + spread·vᵢ with vᵢ in a rank-``rank`` subspace orthogonal to u."""
    rng = np.random.default_rng(seed)
    d = 3 * n + rank + 1
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    basis = rng.normal(size=(d, rank))
    basis -= np.outer(u, u @ basis)
    q, _ = np.linalg.qr(basis)
    return u + spread * rng.normal(size=(n, rank)) @ q.T


def brute_force(g: np.ndarray) -> float:
    """Smallest cᵀGc over every support whose affine minimiser has positive weights."""
    n = g.shape[0]
    best = np.inf
    for r in range(1, n + 1):
        for s in itertools.combinations(range(n), r):
            m = g[np.ix_(s, s)] + 1.0
            x = np.linalg.lstsq(m, np.ones(r), rcond=None)[0]
            if np.all(x > 0):
                c = np.zeros(n)
                c[list(s)] = x / x.sum()
                best = min(best, c @ g @ c)
    return best


def slsqp(g: np.ndarray) -> float:
    n = g.shape[0]
    res = minimize(
        lambda c: c @ g @ c,
        np.full(n, 1.0 / n),
        jac=lambda c: 2 * g @ c,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * n,
        constraints=[{"type": "eq", "fun": lambda c: c.sum() - 1.0}],
        options={"ftol": 1e-15, "maxiter": 500},
    )
    c = np.clip(res.x, 0.0, None)
    c /= c.sum()
    return c @ g @ c


def assert_simplex(c: np.ndarray, n: int) -> None:
    assert c.shape == (n,) and c.dtype == np.float64
    assert np.all(c >= 0.0)
    # normalised by their sum (n roundings), summed again here (n − 1 more)
    assert abs(c.sum() - 1.0) <= gamma(2 * n, U64)


def assert_kkt(g: np.ndarray, c: np.ndarray) -> None:
    """(Gc)ᵢ = cᵀGc where cᵢ > 0 and ≥ elsewhere, to a backward-stable solve's residual τ
    (``min_norm_tolerance``)."""
    tol = min_norm_tolerance(g)
    gc = g @ c
    f = c @ gc
    assert np.all(gc >= f - tol)
    assert np.all(np.abs(gc[c > 0] - f) <= tol)


def assert_non_conflicting(j: np.ndarray, c: np.ndarray) -> None:
    """gᵢ·d ≥ ‖d‖² for d = Jᵀc (the KKT conditions through the Jacobian): to τ plus the
    rounding of d and of J·d (γ_{n+m}·‖gᵢ‖‖d‖ each, ≤ γ_{n+m}·max Gᵢᵢ on the simplex)."""
    g = j @ j.T
    direction = c @ j
    rounding = 2 * gamma(j.shape[0] + j.shape[1], U64) * float(np.max(np.diag(g)))
    assert np.all(j @ direction >= direction @ direction - min_norm_tolerance(g) - rounding)


@settings(deadline=None, max_examples=150)
@given(SEEDS, st.integers(1, 7), st.integers(1, 10), st.sampled_from([0.0, 1.0, 3.0]))
def test_matches_brute_force_and_kkt(seed, n, d, shared):
    j = jacobian(seed, n, d, shared)
    g = j @ j.T
    c = min_norm(g)
    assert_simplex(c, n)
    assert_kkt(g, c)
    scale = np.max(np.diag(g))
    best = brute_force(g / scale) * scale
    assert c @ g @ c <= best + 2 * min_norm_tolerance(g)  # two solves' rounding
    assert_non_conflicting(j, c)  # every objective improves along d


@settings(deadline=None, max_examples=30)
@given(SEEDS, st.integers(8, 30), st.sampled_from([0.0, 2.0]))
def test_not_worse_than_slsqp(seed, n, shared):
    j = jacobian(seed, n, 2 * n, shared)
    g = j @ j.T
    c = min_norm(g)
    assert_simplex(c, n)
    assert_kkt(g, c)
    assert c @ g @ c <= slsqp(g) + min_norm_tolerance(g)  # SLSQP's point is feasible: ≥ f*


@settings(deadline=None, max_examples=40)
@given(SEEDS, st.integers(3, 40), st.integers(1, 4))
def test_conflicting_low_rank(seed, n, rank):
    j = conflicting(seed, n, rank)
    g = j @ j.T
    c = min_norm(g)
    assert_simplex(c, n)
    assert_kkt(g, c)
    assert_non_conflicting(j, c)


@settings(deadline=None, max_examples=40)
@given(SEEDS, st.integers(2, 12))
def test_permutation_equivariant(seed, n):
    j = jacobian(seed, n, n + 3)  # linearly independent gradients: the weights are unique
    g = j @ j.T
    perm = np.random.default_rng(seed).permutation(n)
    c = min_norm(g)
    cp = min_norm(g[np.ix_(perm, perm)])
    np.testing.assert_allclose(cp, c[perm], atol=qp_weight_tolerance(g))  # unique: κ-bound


@settings(deadline=None, max_examples=20)
@given(SEEDS, st.integers(3, 20), st.integers(1, 3))
def test_permutation_keeps_optimum_with_ties(seed, n, rank):
    j = conflicting(seed, n, rank)
    j[1] = j[0]  # a duplicate makes the weights non-unique, the optimum stays the same
    g = j @ j.T
    perm = np.random.default_rng(seed).permutation(n)
    c = min_norm(g)
    cp = min_norm(g[np.ix_(perm, perm)])
    gp = g[np.ix_(perm, perm)]
    assert abs(cp @ gp @ cp - c @ g @ c) <= 2 * min_norm_tolerance(g)


@settings(deadline=None, max_examples=60)
@given(SEEDS, st.integers(3, 7))
def test_exact_with_gradient_norms_over_6_decades(seed, n):
    """Row norms from 1e-3 to 1e3 in one Gramian: still exact relative to the optimum itself."""
    rng = np.random.default_rng(seed)
    j = rng.normal(size=(n, n + 2)) * 10.0 ** rng.uniform(-3, 3, size=(n, 1))
    g = j @ j.T
    c = min_norm(g)
    scale = np.max(np.diag(g))
    best = brute_force(g / scale) * scale
    assert c @ g @ c <= best * (1 + 1e-9) + 1e-20 * scale


@settings(deadline=None, max_examples=40)
@given(SEEDS, st.integers(3, 25))
def test_gradient_norms_over_22_decades(seed, n):
    """Row norms from 1e-10 to 1e12 (entries 1e-20 to 1e24): exact relative to the scale."""
    rng = np.random.default_rng(seed)
    j = rng.normal(size=(n, n + 2)) * 10.0 ** rng.uniform(-10, 12, size=(n, 1))
    g = j @ j.T
    c = min_norm(g)
    assert_simplex(c, n)
    assert_kkt(g, c)
    scale = np.max(np.diag(g))
    reference = min(slsqp(g / scale) * scale, np.min(np.diag(g)))
    # Evaluating cᵀGc alone carries a rounding error of about n·eps·scale.
    assert c @ g @ c <= reference + 4 * n * np.finfo(np.float64).eps * scale


@pytest.mark.parametrize(("norm", "atol"), [(1e-150, 1e-12), (1e150, 1e-12), (1e-160, 1e-2)])
def test_extreme_magnitudes(norm, atol):
    """Entries near the float64 limits work; subnormal ones (1e-160² ≈ 1e-320) keep ~4 digits."""
    j = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0], [6.0, 1.0, 1.0]]) * norm
    c = min_norm(j @ j.T)
    assert_simplex(c, 3)
    np.testing.assert_allclose(c @ j / norm, [0.0, 1.0, 1.0], atol=atol)


@pytest.mark.parametrize("scale", [2.0**-33, 2.0**-17, 1.0, 2.0**20, 2.0**40])
def test_scale_invariant(scale):
    """Exact: a power of two (about 1e-10 to 1e12) scales J, its Gramian (by its square) and
    every rounding of the product and the solve with them: the same weights, bit for bit."""
    j = jacobian(7, 6, 4, 1.0)
    g = j @ j.T
    np.testing.assert_array_equal(min_norm((scale * j) @ (scale * j).T), min_norm(g))


def test_pinned_two_objectives():
    j = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    g = j @ j.T  # [[18, -22], [-22, 38]]: γ = (38 + 22) / (18 + 44 + 38) = 0.6
    np.testing.assert_array_equal(g, [[18.0, -22.0], [-22.0, 38.0]])
    c = min_norm(g)
    # a strictly convex QP (G positive definite): within qp_weight_tolerance, and c @ J within
    # |Δc|ᵀ|J| plus its own rounding
    tol = qp_weight_tolerance(g)
    np.testing.assert_allclose(c, [0.6, 0.4], rtol=0, atol=tol)
    bound = tol * np.abs(j).sum(axis=0) + gamma(4, U64) * (np.abs(c) @ np.abs(j))
    assert np.all(np.abs(c @ j - [0.0, 1.0, 1.0]) <= bound)


def test_single_objective_and_zero_gradients():
    np.testing.assert_array_equal(min_norm([[3.0]]), [1.0])
    np.testing.assert_array_equal(min_norm([[0.0]]), [1.0])
    np.testing.assert_array_equal(min_norm(np.zeros((4, 4))), np.full(4, 0.25))


def test_one_zero_gradient_wins():
    j = jacobian(3, 5, 4)
    j[2] = 0.0
    # the zero gradient's vertex has cᵀGc = 0 exactly and passes the optimality check exactly
    np.testing.assert_array_equal(min_norm(j @ j.T), np.eye(5)[2])


@pytest.mark.parametrize("n", [2, 3, 6])
def test_identical_gradients(n):
    g = np.full((n, n), 2.5)
    c = min_norm(g)
    assert_simplex(c, n)
    assert abs(c @ g @ c - 2.5) <= min_norm_tolerance(g)
    if n == 2:
        np.testing.assert_array_equal(c, [0.5, 0.5])


def test_duplicated_rows():
    j = jacobian(11, 6, 8, 2.0)
    g = j @ j.T
    jd = np.vstack([j, j[[0, 3, 3]]])
    gd = jd @ jd.T
    c, cd = min_norm(g), min_norm(gd)
    assert_kkt(gd, cd)
    assert abs(cd @ gd @ cd - c @ g @ c) <= 2 * min_norm_tolerance(gd)


def test_rank_one_conflict_reaches_zero():
    v = np.array([1.0, -2.0, 0.5])
    j = np.outer([2.0, -1.0, 3.0, -0.5], v)  # parallel gradients pointing both ways
    g = j @ j.T
    c = min_norm(g)
    assert_simplex(c, 4)
    assert c @ g @ c <= min_norm_tolerance(g)


def test_large_n():
    j = jacobian(5, 100, 150, 1.0)
    g = j @ j.T
    c = min_norm(g)
    assert_simplex(c, 100)
    assert_kkt(g, c)
    assert c @ g @ c <= slsqp(g) + min_norm_tolerance(g)


def test_accepts_torch_integers_and_any_layout():
    j = jacobian(2, 4, 6)
    g = j @ j.T
    np.testing.assert_allclose(min_norm(torch.as_tensor(g)), min_norm(g))
    # G rounded to float32: ‖ΔG‖₂ ≤ u₃₂‖G‖_F ≤ n·u₃₂‖G‖₂, and the weights are unique (d > n)
    tol = qp_weight_tolerance(g, g.shape[0] * U32)
    np.testing.assert_allclose(
        min_norm(torch.as_tensor(g, dtype=torch.float32)), min_norm(g), atol=tol
    )
    np.testing.assert_allclose(min_norm(np.asfortranarray(g)), min_norm(g))
    np.testing.assert_allclose(min_norm(np.kron(g, np.ones((2, 2)))[::2, ::2]), min_norm(g))
    np.testing.assert_allclose(min_norm(np.array([[2, 1], [1, 2]])), [0.5, 0.5])


def test_warm_start_gives_the_same_answer():
    rng = np.random.default_rng(0)
    j = jacobian(0, 12, 20, 1.0)
    previous = None
    for _ in range(30):
        j = j + 0.02 * rng.normal(size=j.shape)
        g = j @ j.T
        cold = min_norm(g)
        if previous is not None:
            warm = min_norm(g, warm_start=previous)
            assert_kkt(g, warm)
            assert abs(warm @ g @ warm - cold @ g @ cold) <= 2 * min_norm_tolerance(g)
            np.testing.assert_allclose(warm, cold, atol=qp_weight_tolerance(g))
        previous = cold


def test_warm_start_from_any_feasible_point():
    j = conflicting(4, 15, 3)
    g = j @ j.T
    cold = min_norm(g)
    for warm_start in (np.ones(15), np.eye(15)[4], np.arange(15.0)):
        warm = min_norm(g, warm_start=warm_start)
        assert_kkt(g, warm)
        assert abs(warm @ g @ warm - cold @ g @ cold) <= 2 * min_norm_tolerance(g)


GOOD = np.array([[2.0, 0.5, 0.1], [0.5, 1.0, 0.2], [0.1, 0.2, 1.5]])


def _with(i, j, value, symmetric=True):
    g = GOOD.copy()
    g[i, j] = value
    if symmetric:
        g[j, i] = value
    return g


@pytest.mark.parametrize(
    ("gramian", "match"),
    [
        (np.ones((2, 3)), "square"),
        (np.ones(3), "square"),
        (np.empty((0, 0)), "zero objectives"),
        (_with(2, 1, np.nan, symmetric=False), "row 2 \\(objective 2"),
        (_with(0, 0, np.inf), "row 0 \\(objective 0"),
        (_with(1, 1, -1.0), "negative diagonal"),
        (_with(0, 1, 0.6, symmetric=False), "not symmetric"),
        (_with(0, 2, 1.9), "not positive semi-definite.*G\\[0, 2\\]"),
        (
            np.array([[1.0, -0.9, -0.9], [-0.9, 1.0, -0.9], [-0.9, -0.9, 1.0]]),
            "not positive semi-definite.*negative curvature",
        ),
    ],
)
def test_bad_gramian_raises(gramian, match):
    with pytest.raises(ValueError, match=match):
        min_norm(gramian)


@pytest.mark.parametrize(
    ("warm_start", "match"),
    [
        (np.ones(2), "2 weights but the Gramian has 3"),
        (np.ones((3, 1)), "1-D vector"),
        (np.array([0.5, -0.1, 0.6]), "warm_start\\[1\\] is negative"),
        (np.array([0.5, 0.5, np.nan]), "warm_start\\[2\\] is negative or not finite"),
        (np.zeros(3), "no positive weight"),
    ],
)
def test_bad_warm_start_raises(warm_start, match):
    with pytest.raises(ValueError, match=match):
        min_norm(GOOD, warm_start=warm_start)


@pytest.mark.parametrize("n", [30, 64, 100])
def test_full_support_optimum_at_large_n(n):
    """J = randn(n, 2000): every weight positive; one Cholesky of G + 11ᵀ finds it."""
    j = np.random.default_rng(n).normal(size=(n, 2000))
    g = j @ j.T
    c = min_norm(g)
    assert_simplex(c, n)
    assert np.all(c > 0)
    assert_kkt(g, c)
    assert c @ g @ c <= slsqp(g) + min_norm_tolerance(g)


def test_float32_gramians_of_rank_deficient_jacobians():
    """Float32 J Jᵀ of a rank-2 Jacobian has eigenvalues down to −1e-7 of its scale: accepted
    (the tolerance follows the input's precision), and the answer matches float64's."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        j = rng.normal(size=(12, 2)) @ rng.normal(size=(2, 300))
        g32 = torch.tensor(j, dtype=torch.float32) @ torch.tensor(j, dtype=torch.float32).T
        c = min_norm(g32.numpy())
        c_torch = min_norm(g32)
        np.testing.assert_array_equal(c, c_torch)
        g = j @ j.T
        # G₃₂ = G + E, |E| ≤ γ₃₀₀(u₃₂)·max Gᵢᵢ (float32 dot products of length 300, any order,
        # plus J's rounding to float32): f(c₃₂) − f* ≤ 2 max|E| + 2τ (the argument of
        # test_backward_batched's MGDA test)
        e = (gamma(300, U32) + 2 * U32) * np.max(np.diag(g))
        best = min_norm(g) @ g @ min_norm(g)
        assert c @ g @ c <= best + 2 * e + 2 * min_norm_tolerance(g)
