"""STCH: weights pᵢ·softmax(p ⊙ (L − z)/μ)ᵢ, the gradient of μ·log Σ exp(pᵢ(Lᵢ − zᵢ)/μ)
(Lin et al., ICML 2024)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mogradient.aggregators import get_aggregator
from mogradient.aggregators.stch import STCH
from mogradient.aggregators.tchebycheff import Tchebycheff
from tests.bounds import assert_weighted_gradient

loss_vectors = st.integers(1, 6).flatmap(
    lambda n: st.lists(st.floats(-10, 15).map(lambda e: 10.0**e), min_size=n, max_size=n)
)


def stch_gradient(losses: np.ndarray, mu: float, p: np.ndarray, z: np.ndarray) -> np.ndarray:
    """∇_L of the paper's μ·log Σ exp(pᵢ(Lᵢ − zᵢ)/μ), by autograd through torch.logsumexp."""
    lt = torch.tensor(losses, requires_grad=True)
    value = mu * torch.logsumexp(torch.tensor(p) * (lt - torch.tensor(z)) / mu, dim=0)
    (g,) = torch.autograd.grad(value, lt)
    return g.numpy()


def test_registered_and_repr() -> None:
    assert isinstance(get_aggregator("stch"), STCH)
    assert isinstance(get_aggregator("smooth_tchebycheff", mu=1.0), STCH)
    assert repr(STCH()) == "STCH(mu=0.1, preference=None, ideal=None)"
    agg = STCH(mu=0.5, preference=[1, 3], ideal=[0.5, -1])
    assert repr(agg) == "STCH(mu=0.5, preference=[0.25, 0.75], ideal=[0.5, -1.0])"
    assert repr(eval(repr(agg))) == repr(agg)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"mu": 0.0}, ValueError, "mu must be > 0"),
        ({"mu": -0.1}, ValueError, "mu must be > 0"),
        ({"mu": math.inf}, ValueError, "mu must be a finite number"),
        ({"mu": math.nan}, ValueError, "mu must be a finite number"),
        ({"mu": "1"}, ValueError, "mu must be a finite number"),
        ({"preference": [1, -1]}, ValueError, "non-negative"),
        ({"ideal": [math.nan]}, ValueError, "ideal must be finite"),
        ({"ideal": "x"}, TypeError, "ideal must be a number"),
    ],
)
def test_invalid_hyperparameters(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        STCH(**kwargs)


def test_lengths_are_checked_against_the_objectives() -> None:
    with pytest.raises(ValueError, match="preference has 2 entries but got 3 objectives"):
        STCH(preference=[1, 1]).weights(np.ones(3))
    with pytest.raises(ValueError, match="ideal point has 2 entries but got 3 objectives"):
        STCH(ideal=[0, 0]).weights(np.ones(3))


def test_pinned_values() -> None:
    # μ = 1, p = (1/2, 1/2), L = (2, 0): exponents (1, 0) → w = ½·(e, 1)/(e + 1)
    w = STCH(mu=1.0).weights(np.array([2.0, 0.0]))
    np.testing.assert_allclose(w, [0.5 * math.e / (math.e + 1), 0.5 / (math.e + 1)], rtol=1e-15)
    # equal values share: p/n
    np.testing.assert_allclose(STCH(mu=0.3).weights(np.full(4, 2.0)), np.full(4, 1 / 16))
    assert STCH().weights(np.array([3.0])).tolist() == [1.0]


def test_weights_are_the_gradient_of_the_papers_formula() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 7))
        losses = 10.0 ** rng.uniform(-3, 3, n)
        p = rng.uniform(0, 1, n)
        z = rng.uniform(-1, 0, n)
        mu = 10.0 ** rng.uniform(-3, 2)
        w = STCH(mu=mu, preference=p.tolist(), ideal=z.tolist()).weights(losses)
        np.testing.assert_allclose(
            w, stch_gradient(losses, mu, p / p.sum(), z), rtol=1e-10, atol=1e-300
        )


def test_matches_torchjd_stch() -> None:
    torchjd_scalarization = pytest.importorskip("torchjd.scalarization")
    rng = np.random.default_rng(1)
    for _ in range(50):
        n = int(rng.integers(1, 7))
        losses = 10.0 ** rng.uniform(-10, 15, n)
        p = rng.dirichlet(np.ones(n))
        z = rng.uniform(-1, 0, n)
        mu = 10.0 ** rng.uniform(-3, 2)
        ref = torchjd_scalarization.STCH(mu, weights=torch.tensor(p), reference=torch.tensor(z))
        values = torch.tensor(losses, requires_grad=True)
        (expected,) = torch.autograd.grad(ref(values), values)
        w = STCH(mu=mu, preference=p.tolist(), ideal=z.tolist()).weights(losses)
        np.testing.assert_allclose(w, expected.numpy(), rtol=1e-10, atol=1e-300)


def test_small_mu_gives_tchebycheff_large_mu_gives_p_over_n() -> None:
    rng = np.random.default_rng(2)
    for _ in range(100):
        n = int(rng.integers(1, 6))
        losses = np.round(rng.uniform(0, 3, n), 1)  # gaps ≥ 0.1·min p, or exact ties
        p = rng.integers(1, 4, n).astype(float)
        for mu in (1e-4, 1e-8):
            w = STCH(mu=mu, preference=p.tolist()).weights(losses)
            np.testing.assert_allclose(
                w, Tchebycheff(preference=p.tolist()).weights(losses), atol=1e-12
            )
        w = STCH(mu=1e12, preference=p.tolist()).weights(losses)
        np.testing.assert_allclose(w, p / p.sum() / n, rtol=1e-9)


@pytest.mark.parametrize("mu", [1e-300, 1e-10, 1e-3, 1.0, 1e10, 1e300])
def test_extreme_losses_and_mu_stay_finite(mu: float) -> None:
    losses = np.array([1e-10, 1e-3, 1.0, 1e6, 1e15])
    w = STCH(mu=mu).weights(losses)
    assert np.all(np.isfinite(w)) and np.all(w >= 0)
    # reference: torch's own (stabilised) softmax of p ⊙ L/μ, which stays finite here
    y = torch.tensor(losses / 5) / mu
    expected = torch.softmax(y, dim=0).numpy() / 5 if np.all(np.isfinite(y.numpy())) else None
    if expected is not None:
        np.testing.assert_allclose(w, expected, rtol=1e-9, atol=1e-300)
    assert math.isclose(w[-1], 0.2, rel_tol=1e-9) or mu > 1e10  # the largest loss dominates


def test_permutation_claim_follows_preference_and_ideal() -> None:
    assert "permutation_invariant" in STCH().claims()
    assert "permutation_invariant" not in STCH(preference=[1, 2]).claims()
    assert "permutation_invariant" not in STCH(ideal=[0.0, 1.0]).claims()
    agg = STCH(preference=[1, 3])
    losses = np.array([4.0, 1.0])
    assert not np.allclose(agg.weights(losses[::-1]), agg.weights(losses)[::-1])


def test_dtypes_and_scalarize_gradient() -> None:
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        theta = torch.randn(4, dtype=dtype, requires_grad=True)
        targets = torch.randn(3, 4, dtype=dtype)
        losses = ((theta - targets) ** 2).sum(1) * torch.tensor([0.3, 1.0, 2.0], dtype=dtype)
        p = torch.tensor([0.5, 0.3, 0.2], dtype=dtype)
        agg = STCH(mu=0.7, preference=p.tolist(), ideal=0.1)
        (grad,) = torch.autograd.grad(agg.scalarize(losses), theta, retain_graph=True)
        formula = 0.7 * torch.logsumexp(p * (losses - 0.1) / 0.7, dim=0)
        (expected,) = torch.autograd.grad(formula, theta, retain_graph=True)
        jac = torch.stack([torch.autograd.grad(li, theta, retain_graph=True)[0] for li in losses])
        d = agg(jac, losses=losses.detach())
        assert d.dtype == dtype
        w = agg.weights(losses.detach())
        assert_weighted_gradient(grad, d, w, jac)
        assert_weighted_gradient(grad, expected, w, jac)


@settings(max_examples=200, deadline=None)
@given(loss_vectors, st.integers(0, 2**32 - 1), st.floats(-8, 8).map(lambda e: 10.0**e))
def test_claims_on_random_inputs(values: list[float], seed: int, mu: float) -> None:
    losses = np.array(values)
    n = losses.shape[0]
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    jac = torch.tensor(rng.standard_normal((n, 4)))
    agg = STCH(mu=mu)
    w = agg.weights(losses)
    assert np.all(w >= 0) and np.all(np.isfinite(w))  # non_negative_weights
    np.testing.assert_allclose(agg.weights(losses[perm]), w[perm], rtol=1e-12)  # permutation
    agg.reset()
    np.testing.assert_array_equal(agg.weights(losses), w)  # deterministic, reset_restores
    lt = torch.tensor(losses)
    d = agg(jac, losses=lt)  # scale_equivariant, non_differentiable
    torch.testing.assert_close(agg(3.0 * jac, losses=lt), 3.0 * d)
    assert not agg(jac.requires_grad_(), losses=lt).requires_grad
