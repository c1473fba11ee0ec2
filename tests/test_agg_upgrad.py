"""UPGrad (Quinton & Rey 2024): pinned values, TorchJD 0.18, NNLS on the Jacobian, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mogradient import get_aggregator
from mogradient.aggregation.gramian import gramian_of
from mogradient.aggregators.upgrad import UPGrad
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
    """Σᵢ pᵢ π(gᵢ), each projection onto {d : Jd ≥ 0} from NNLS on the Jacobian itself:
    π(gᵢ) = Jᵀ(eᵢ + x), x = argmin_{x ≥ 0} ‖gᵢ + Jᵀx‖ (the paper's Proposition 1)."""
    total = np.zeros(j.shape[1])
    for i, pi in enumerate(p):
        x = nnls_settled(j.T, -j[i], maxiter=50 * len(p))
        total += pi * (j[i] + x @ j)
    return total


def torchjd_exact(gramian: np.ndarray, p: np.ndarray | None) -> np.ndarray:
    """TorchJD's UPGradWeighting with its projector's normalisation and ridge switched off."""
    from torchjd._linalg._dual_cone import QuadprogProjector
    from torchjd.aggregation import UPGradWeighting

    weighting = UPGradWeighting(
        pref_vector=None if p is None else torch.tensor(p),
        projector=QuadprogProjector(norm_eps=0.0, reg_eps=0.0),
    )
    return weighting(torch.tensor(gramian)).numpy()


def test_pinned_two_objectives():
    """g₁ = (1, 0), g₂ = (−1, 1), g₁·g₂ = −1: each projects onto the other's normal plane,
    π(g₁) = g₁ + ½g₂ = (½, ½), π(g₂) = g₂ + g₁ = (0, 1); the mean is (¼, ¾), w = (1, ¾)."""
    j = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    agg = UPGrad()
    np.testing.assert_allclose(agg.weights(gramian_of(j)).numpy(), [1.0, 0.75], atol=1e-15)
    torch.testing.assert_close(agg(j), torch.tensor([0.25, 0.75], dtype=torch.float64))
    # a preference weighs the projections: ¾π(g₁) + ¼π(g₂) = (3/8, 5/8)
    torch.testing.assert_close(
        UPGrad(preference=[3.0, 1.0])(j), torch.tensor([0.375, 0.625], dtype=torch.float64)
    )


def test_nothing_conflicts_gives_the_preference_weights():
    j = torch.tensor([[1.0, 0.2, 0.0], [0.5, 1.0, 0.1], [0.1, 0.0, 2.0]], dtype=torch.float64)
    np.testing.assert_array_equal(UPGrad().weights(gramian_of(j)).numpy(), np.full(3, 1 / 3))
    np.testing.assert_allclose(
        UPGrad(preference=[1, 2, 1]).weights(gramian_of(j)).numpy(), [0.25, 0.5, 0.25]
    )


@settings(deadline=None, max_examples=80)
@given(SEEDS, st.integers(1, 10), st.booleans())
def test_matches_torchjd_exact(seed, n, with_preference):
    """Positive definite Gramians (d ≥ n): TorchJD's quadprog projector without its ridge."""
    j = jacobian(seed, n, n + 2)
    g = j @ j.T
    p = np.random.default_rng(seed).dirichlet(np.ones(n)) if with_preference else None
    ours = UPGrad(preference=p).weights(g)
    ref = reference_call(torchjd_exact, g, p)
    np.testing.assert_allclose(
        ours, ref, atol=qp_weight_tolerance(g) * max(1.0, np.abs(ref).max()), rtol=0
    )


@settings(deadline=None, max_examples=60)
@given(SEEDS, st.integers(1, 10))
def test_matches_torchjd_default_on_its_own_problem(seed, n):
    """TorchJD's default divides G by its trace and adds 1e-4·I: on that Gramian we agree."""
    from torchjd.aggregation import UPGradWeighting

    j = jacobian(seed, n, max(1, n - 2))  # rank-deficient: the ridge matters
    g = j @ j.T
    ref = reference_call(UPGradWeighting(), torch.tensor(g)).numpy()
    ridged = g / np.trace(g) + 1e-4 * np.eye(n)
    ours = UPGrad().weights(ridged)
    np.testing.assert_allclose(
        ours, ref, atol=qp_weight_tolerance(ridged) * max(1.0, np.abs(ref).max()), rtol=0
    )


@settings(deadline=None, max_examples=80)
@given(SEEDS, st.integers(1, 12), st.integers(1, 8), st.booleans())
def test_direction_matches_nnls_and_conflicts_with_nothing(seed, n, d, low_rank):
    j = jacobian(seed, n, d, rank=max(1, min(n, d) - 1) if low_rank else None)
    p = np.random.default_rng(seed + 1).dirichlet(np.ones(n))
    w = UPGrad(preference=p).weights(j @ j.T)
    assert np.all(w >= p - 1e-15)  # p is renormalised by Preference: equal up to rounding
    direction = w @ j
    scale = np.linalg.norm(j, axis=1).max()
    size = 1 + np.abs(w).max()
    assert np.all(j @ direction >= -1e-9 * scale**2 * size)
    np.testing.assert_allclose(direction, reference_direction(j, p), atol=1e-7 * scale * size)


@pytest.mark.parametrize("scale", [1e-10, 1e-5, 1.0, 1e5, 1e15])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scales_and_dtypes(scale, dtype):
    """Weights are scale-invariant: (sJ)'s weights are J's up to κ(G)·(the rounding of sJ and of
    the solves), ``qp_weight_tolerance``; a float32 J is compared with its own float64 copy
    (the Gramian is formed in float64 either way). The direction conflicts with no gradient up
    to the solve's backward error (4n·u·‖G‖·max|w|) and the product's rounding
    (``matvec_bound``)."""
    j = torch.tensor(jacobian(3, 5, 7), dtype=torch.float64)
    jac = (j * scale).to(dtype)
    j64 = jac.double()
    g = gramian_of(j)
    w = UPGrad().weights(g if dtype == torch.float64 else gramian_of(j64))
    d = UPGrad()(jac)
    assert d.dtype == dtype
    got = UPGrad().weights(gramian_of(jac))
    n = j.shape[0]
    tol = qp_weight_tolerance(g.numpy(), 2 * n * U64 if dtype == torch.float64 else 0.0)
    np.testing.assert_allclose(got.numpy(), w.numpy(), atol=tol * max(1.0, w.abs().max().item()))
    g64 = gramian_of(j64)
    backward = 4 * n * U64 * float(torch.linalg.matrix_norm(g64, 2)) * float(got.abs().max())
    slack = j64.abs() @ matvec_bound(got, jac) + backward
    assert bool((j64 @ d.double() >= -slack).all())


def test_edge_cases():
    agg = UPGrad()
    one = torch.tensor([[3.0, -4.0]], dtype=torch.float64)
    torch.testing.assert_close(agg(one), one[0])
    zeros = torch.zeros(3, 4, dtype=torch.float64)
    np.testing.assert_array_equal(agg.weights(gramian_of(zeros)).numpy(), np.full(3, 1 / 3))
    same = torch.tensor([[1.0, 2.0]] * 3, dtype=torch.float64)
    torch.testing.assert_close(agg(same), same[0])
    # opposite gradients: the dual cone is {d : g·d = 0}, every projection is 0
    opposite = torch.tensor([[1.0, 2.0], [-2.0, -4.0]], dtype=torch.float64)
    torch.testing.assert_close(agg(opposite), torch.zeros(2, dtype=torch.float64))
    # one zero gradient among others changes nothing for them
    mixed = torch.tensor([[1.0, 0.0], [0.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    d = agg(mixed)
    assert float((mixed @ d).min()) >= -1e-15


def test_claims_and_repr():
    agg = get_aggregator("upgrad")
    assert repr(agg) == "UPGrad(preference=None)"
    assert "non_conflicting" in agg.claims() and "permutation_invariant" in agg.claims()
    weighted = UPGrad(preference=[1.0, 3.0])
    assert repr(weighted) == "UPGrad(preference=[0.25, 0.75])"
    assert "permutation_invariant" not in weighted.claims()


@pytest.mark.parametrize(
    ("preference", "error", "match"),
    [
        ([1.0, -1.0], ValueError, "finite and non-negative"),
        ([0.0, 0.0], ValueError, "not be all zero"),
        ([1.0, float("nan")], ValueError, "finite and non-negative"),
        ("ab", TypeError, "sequence of numbers"),
        ([[1.0, 2.0]], ValueError, "1-D"),
    ],
)
def test_bad_preference(preference, error, match):
    with pytest.raises(error, match=match):
        UPGrad(preference=preference)


def test_preference_length_is_checked_against_the_objectives():
    with pytest.raises(ValueError, match="2 entries but got 3 objectives"):
        UPGrad(preference=[1.0, 1.0]).weights(np.eye(3))
