"""GLS: weights GLS/(n·Lᵢ), the gradient of the geometric mean (Π Lᵢ)^(1/n)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mogradient.aggregators import get_aggregator
from mogradient.aggregators.gls import GLS
from tests.bounds import assert_weighted_gradient

loss_vectors = st.integers(1, 6).flatmap(
    lambda n: st.lists(st.floats(-10, 15).map(lambda e: 10.0**e), min_size=n, max_size=n)
)


def test_registered_and_repr() -> None:
    assert isinstance(get_aggregator("gls"), GLS)
    assert isinstance(get_aggregator("geometric_mean"), GLS)
    assert repr(GLS()) == "GLS()"
    with pytest.raises(TypeError, match="unexpected hyper-parameter"):
        get_aggregator("gls", eps=1e-8)


def test_pinned_values() -> None:
    # L = (1, 4): GLS = 2, w = (2/(2·1), 2/(2·4)); L = (2, 4, 8): GLS = 4, w = 4/(3L).
    np.testing.assert_allclose(GLS().weights(np.array([1.0, 4.0])), [1.0, 0.25], rtol=1e-15)
    np.testing.assert_allclose(
        GLS().weights(np.array([2.0, 4.0, 8.0])), [2 / 3, 1 / 3, 1 / 6], rtol=1e-15
    )
    assert GLS().weights(np.array([5.0])).tolist() == [1.0]
    # equal losses: GLS = L, w = 1/n whatever the scale
    for v in (1e-10, 1.0, 1e15):
        np.testing.assert_allclose(GLS().weights(np.full(4, v)), np.full(4, 0.25), rtol=1e-15)


def test_weights_are_the_gradient_of_the_geometric_mean() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 7):
        losses = 10.0 ** rng.uniform(-3, 3, n)
        lt = torch.tensor(losses, requires_grad=True)
        (expected,) = torch.autograd.grad(torch.prod(lt) ** (1.0 / n), lt)  # the formula itself
        np.testing.assert_allclose(GLS().weights(losses), expected.numpy(), rtol=1e-12)


def test_matches_torchjd_geometric_mean() -> None:
    torchjd_scalarization = pytest.importorskip("torchjd.scalarization")
    rng = np.random.default_rng(1)
    for _ in range(20):
        losses = 10.0 ** rng.uniform(-10, 15, rng.integers(1, 8))
        values = torch.tensor(losses, requires_grad=True)
        (expected,) = torch.autograd.grad(torchjd_scalarization.GeometricMean()(values), values)
        np.testing.assert_allclose(GLS().weights(losses), expected.numpy(), rtol=1e-12)


def test_weighted_loss_is_the_geometric_mean() -> None:
    losses = torch.tensor([1e-10, 3.0, 1e15], dtype=torch.float64)
    expected = math.exp(sum(math.log(v) for v in losses.tolist()) / 3)
    assert math.isclose(float(GLS().scalarize(losses)), expected, rel_tol=1e-13)


def test_update_is_invariant_to_rescaling_one_loss() -> None:
    # Lᵢ → cᵢLᵢ multiplies ∇Lᵢ by cᵢ; Σ wᵢ(cL)·cᵢ∇Lᵢ = (Πc)^(1/n) Σ wᵢ(L)∇Lᵢ.
    rng = np.random.default_rng(2)
    losses, c, jac = rng.uniform(0.1, 2, 3), 10.0 ** rng.uniform(-6, 6, 3), rng.normal(size=(3, 5))
    d = GLS().weights(losses) @ jac
    d_scaled = GLS().weights(c * losses) @ (c[:, None] * jac)
    np.testing.assert_allclose(d_scaled, np.prod(c) ** (1 / 3) * d, rtol=1e-12)


def test_extreme_scales() -> None:
    losses = np.array([1e-300, 1e-10, 1.0, 1e15, 1e300])
    w = GLS().weights(losses)
    assert np.all(np.isfinite(w)) and np.all(w > 0)
    np.testing.assert_allclose(w * losses, np.full(5, 10.0 / 5), rtol=1e-13)  # GLS = 10


@pytest.mark.parametrize("bad", [0.0, -2.0])
def test_non_positive_loss_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match=r"objective 2 has loss .*shift that objective"):
        GLS().weights(np.array([1.0, 2.0, bad]))


def test_dtypes_and_scalarize_gradient() -> None:
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        theta = torch.randn(4, dtype=dtype, requires_grad=True)
        targets = torch.randn(3, 4, dtype=dtype)
        losses = ((theta - targets) ** 2).sum(1) * torch.tensor([1e-3, 1.0, 1e3], dtype=dtype)
        (grad,) = torch.autograd.grad(GLS().scalarize(losses), theta, retain_graph=True)
        (formula,) = torch.autograd.grad(
            torch.exp(torch.log(losses).mean()), theta, retain_graph=True
        )
        jac = torch.stack([torch.autograd.grad(li, theta, retain_graph=True)[0] for li in losses])
        d = GLS()(jac, losses=losses.detach())
        assert d.dtype == dtype
        w = GLS().weights(losses.detach())
        assert_weighted_gradient(grad, d, w, jac)
        assert_weighted_gradient(grad, formula, w, jac)


@settings(max_examples=200, deadline=None)
@given(loss_vectors, st.integers(0, 2**32 - 1))
def test_claims_on_random_inputs(values: list[float], seed: int) -> None:
    losses = np.array(values)
    n = losses.shape[0]
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    jac = torch.tensor(rng.standard_normal((n, 4)))
    agg = GLS()
    w = agg.weights(losses)
    assert np.all(w > 0) and np.all(np.isfinite(w))  # non_negative_weights
    np.testing.assert_allclose(GLS().weights(losses[perm]), w[perm], rtol=1e-12)  # permutation
    agg.reset()
    np.testing.assert_array_equal(agg.weights(losses), w)  # deterministic, reset_restores
    lt = torch.tensor(losses)
    d = agg(jac, losses=lt)  # scale_equivariant, non_differentiable
    torch.testing.assert_close(agg(3.0 * jac, losses=lt), 3.0 * d)
    assert not agg(jac.requires_grad_(), losses=lt).requires_grad
