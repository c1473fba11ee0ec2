"""DualProj: the mean projected onto the dual cone. Pinned values, TorchJD 0.18, NNLS, edges."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mogradient import get_aggregator
from mogradient.aggregation.gramian import gramian_of
from mogradient.aggregators.dualproj import DualProj
from tests.bounds import U64, matvec_bound, qp_weight_tolerance
from tests.references import nnls_settled, reference_call

SEEDS = st.integers(0, 2**32 - 1)


def jacobian(seed: int, n: int, d: int, rank: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = np.exp(rng.normal(size=(n, 1)))
    if rank is None:
        return rng.normal(size=(n, d)) * scales
    return (rng.normal(size=(n, rank)) @ rng.normal(size=(rank, d))) * scales


def reference_direction(j: np.ndarray, p: np.ndarray) -> np.ndarray:
    """π(Jᵀp) from NNLS on the Jacobian: Jᵀ(p + x), x = argmin_{x ≥ 0} ‖Jᵀ(p + x)‖."""
    x = nnls_settled(j.T, -(j.T @ p), maxiter=50 * len(p))
    return j.T @ (p + x)


def brute_force_projection(j: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Nearest point to y of {d : Jd ≥ 0} by enumerating the active sets (small n only)."""
    n = j.shape[0]
    best, best_dist = np.zeros_like(y), np.linalg.norm(y)
    for mask in range(1 << n):
        active = [i for i in range(n) if mask >> i & 1]
        d = y.copy()
        if active:
            a = j[active]
            d = y - a.T @ np.linalg.lstsq(a @ a.T, a @ y, rcond=None)[0]
        if np.all(j @ d >= -1e-12) and np.linalg.norm(d - y) < best_dist:
            best, best_dist = d, np.linalg.norm(d - y)
    return best


def test_pinned_values():
    """g₁ = (1, 0), g₂ = (−2, ½): the mean (−½, ¼) conflicts with g₁ and projects onto g₁·d = 0,
    d = (0, ¼) with g₂·d = ⅛ ≥ 0: weights v = (1, ½)."""
    j = torch.tensor([[1.0, 0.0], [-2.0, 0.5]], dtype=torch.float64)
    agg = DualProj()
    np.testing.assert_allclose(agg.weights(gramian_of(j)).numpy(), [1.0, 0.5], atol=1e-15)
    torch.testing.assert_close(agg(j), torch.tensor([0.0, 0.25], dtype=torch.float64))
    # the mean of g₁ = (1, 0) and g₂ = (−1, 1) is (0, ½): already in the cone
    j2 = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    np.testing.assert_array_equal(agg.weights(gramian_of(j2)).numpy(), [0.5, 0.5])
    # preference (1, 3) → (¼, ¾): Σpᵢgᵢ = (−1.25, 0.375) projects to (0, 0.375): v = (1.5, ¾)
    w = DualProj(preference=[1.0, 3.0]).weights(gramian_of(j)).numpy()
    np.testing.assert_allclose(w @ j.numpy(), [0.0, 0.375], atol=1e-15)
    np.testing.assert_allclose(w, [1.5, 0.75], atol=1e-15)


@settings(deadline=None, max_examples=80)
@given(SEEDS, st.integers(1, 10), st.booleans())
def test_matches_torchjd_exact(seed, n, with_preference):
    from torchjd._linalg._dual_cone import QuadprogProjector
    from torchjd.aggregation import DualProjWeighting

    j = jacobian(seed, n, n + 2)
    g = j @ j.T
    p = np.random.default_rng(seed).dirichlet(np.ones(n)) if with_preference else None
    reference = DualProjWeighting(
        pref_vector=None if p is None else torch.tensor(p),
        projector=QuadprogProjector(norm_eps=0.0, reg_eps=0.0),
    )
    ref = reference_call(reference, torch.tensor(g)).numpy()
    ours = DualProj(preference=p).weights(g)
    np.testing.assert_allclose(
        ours, ref, atol=qp_weight_tolerance(g) * max(1.0, np.abs(ref).max()), rtol=0
    )


@settings(deadline=None, max_examples=60)
@given(SEEDS, st.integers(1, 10))
def test_matches_torchjd_default_on_its_own_problem(seed, n):
    from torchjd.aggregation import DualProjWeighting

    j = jacobian(seed, n, max(1, n - 2))
    g = j @ j.T
    ref = reference_call(DualProjWeighting(), torch.tensor(g)).numpy()
    ridged = g / np.trace(g) + 1e-4 * np.eye(n)
    ours = DualProj().weights(ridged)
    np.testing.assert_allclose(
        ours, ref, atol=qp_weight_tolerance(ridged) * max(1.0, np.abs(ref).max()), rtol=0
    )


@settings(deadline=None, max_examples=80)
@given(SEEDS, st.integers(1, 12), st.integers(1, 8), st.booleans())
def test_direction_matches_nnls_and_conflicts_with_nothing(seed, n, d, low_rank):
    j = jacobian(seed, n, d, rank=max(1, min(n, d) - 1) if low_rank else None)
    p = np.random.default_rng(seed + 1).dirichlet(np.ones(n))
    w = DualProj(preference=p).weights(j @ j.T)
    assert np.all(w >= p - 1e-15)
    direction = w @ j
    scale = np.linalg.norm(j, axis=1).max()
    size = 1 + np.abs(w).max()
    assert np.all(j @ direction >= -1e-9 * scale**2 * size)
    np.testing.assert_allclose(direction, reference_direction(j, p), atol=1e-7 * scale * size)


@settings(deadline=None, max_examples=60)
@given(SEEDS, st.integers(1, 5), st.integers(2, 4))
def test_matches_brute_force_over_active_sets(seed, n, d):
    j = jacobian(seed, n, d)
    d_ours = DualProj()(torch.tensor(j)).numpy()
    np.testing.assert_allclose(
        d_ours, brute_force_projection(j, j.mean(0)), atol=1e-9 * np.abs(j).max()
    )


@pytest.mark.parametrize("scale", [1e-10, 1e-5, 1.0, 1e5, 1e15])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scales_and_dtypes(scale, dtype):
    """Weights are scale-invariant: (sJ)'s weights are J's up to κ(G)·(the rounding of sJ and of
    the solves), ``qp_weight_tolerance``; a float32 J is compared with its own float64 copy
    (the Gramian is formed in float64 either way). The direction conflicts with no gradient up
    to the solve's backward error (4n·u·‖G‖·max|w|) and the product's rounding
    (``matvec_bound``)."""
    j = torch.tensor(jacobian(4, 5, 7), dtype=torch.float64)
    jac = (j * scale).to(dtype)
    j64 = jac.double()
    g = gramian_of(j)
    w = DualProj().weights(g if dtype == torch.float64 else gramian_of(j64))
    d = DualProj()(jac)
    assert d.dtype == dtype
    got = DualProj().weights(gramian_of(jac))
    n = j.shape[0]
    tol = qp_weight_tolerance(g.numpy(), 2 * n * U64 if dtype == torch.float64 else 0.0)
    np.testing.assert_allclose(got.numpy(), w.numpy(), atol=tol * max(1.0, w.abs().max().item()))
    g64 = gramian_of(j64)
    backward = 4 * n * U64 * float(torch.linalg.matrix_norm(g64, 2)) * float(got.abs().max())
    slack = j64.abs() @ matvec_bound(got, jac) + backward
    assert bool((j64 @ d.double() >= -slack).all())


def test_edge_cases():
    agg = DualProj()
    one = torch.tensor([[3.0, -4.0]], dtype=torch.float64)
    torch.testing.assert_close(agg(one), one[0])
    zeros = torch.zeros(3, 4, dtype=torch.float64)
    np.testing.assert_array_equal(agg.weights(gramian_of(zeros)).numpy(), np.full(3, 1 / 3))
    same = torch.tensor([[1.0, 2.0]] * 3, dtype=torch.float64)
    torch.testing.assert_close(agg(same), same[0])
    opposite = torch.tensor([[1.0, 2.0], [-2.0, -4.0]], dtype=torch.float64)
    torch.testing.assert_close(agg(opposite), torch.zeros(2, dtype=torch.float64))


def test_claims_and_repr():
    agg = get_aggregator("dualproj")
    assert repr(agg) == "DualProj(preference=None)"
    assert "non_conflicting" in agg.claims() and "permutation_invariant" in agg.claims()
    weighted = DualProj(preference=[2.0, 2.0])
    assert repr(weighted) == "DualProj(preference=[0.5, 0.5])"
    assert "permutation_invariant" not in weighted.claims()


@pytest.mark.parametrize(
    ("preference", "error", "match"),
    [
        ([1.0, -1.0], ValueError, "finite and non-negative"),
        ([0.0, 0.0], ValueError, "not be all zero"),
        ([1.0, float("inf")], ValueError, "finite and non-negative"),
        (3.0, TypeError, "sequence of numbers"),
    ],
)
def test_bad_preference(preference, error, match):
    with pytest.raises(error, match=match):
        DualProj(preference=preference)


def test_preference_length_is_checked_against_the_objectives():
    with pytest.raises(ValueError, match="3 entries but got 2 objectives"):
        DualProj(preference=[1.0, 1.0, 1.0]).weights(np.eye(2))
