"""Tchebycheff: weights pⱼ on the arg-max of pᵢ(Lᵢ − zᵢ), shared on exact ties."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mogradient.aggregators import get_aggregator
from mogradient.aggregators.tchebycheff import Tchebycheff
from tests.bounds import assert_weighted_gradient

loss_vectors = st.integers(1, 6).flatmap(
    lambda n: st.lists(st.floats(-10, 15).map(lambda e: 10.0**e), min_size=n, max_size=n)
)


def amax_gradient(losses: np.ndarray, p: np.ndarray, z: np.ndarray) -> np.ndarray:
    """∇_L max pᵢ(Lᵢ − zᵢ) by autograd; torch.amax spreads the gradient evenly over ties."""
    lt = torch.tensor(losses, requires_grad=True)
    (g,) = torch.autograd.grad(torch.amax(torch.tensor(p) * (lt - torch.tensor(z))), lt)
    return g.numpy()


def test_registered_and_repr() -> None:
    assert isinstance(get_aggregator("tchebycheff"), Tchebycheff)
    assert isinstance(get_aggregator("chebyshev", preference=[1, 3]), Tchebycheff)
    assert repr(Tchebycheff()) == "Tchebycheff(preference=None, ideal=None)"
    agg = Tchebycheff(preference=[1, 3], ideal=[0.5, -1])
    assert repr(agg) == "Tchebycheff(preference=[0.25, 0.75], ideal=[0.5, -1.0])"
    assert repr(eval(repr(agg))) == repr(agg)
    assert repr(Tchebycheff(ideal=2)) == "Tchebycheff(preference=None, ideal=2.0)"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"preference": [1, -1]}, ValueError, "non-negative"),
        ({"preference": [0, 0]}, ValueError, "all zero"),
        ({"preference": "ab"}, TypeError, "sequence of numbers"),
        ({"ideal": math.nan}, ValueError, "ideal must be finite"),
        ({"ideal": [0.0, math.inf]}, ValueError, "ideal must be finite"),
        ({"ideal": []}, ValueError, "non-empty"),
        ({"ideal": [[1.0]]}, ValueError, "1-D"),
        ({"ideal": "0"}, TypeError, "ideal must be a number"),
        ({"ideal": True}, TypeError, "ideal must be a number"),
    ],
)
def test_invalid_hyperparameters(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        Tchebycheff(**kwargs)


def test_lengths_are_checked_against_the_objectives() -> None:
    with pytest.raises(ValueError, match="preference has 2 entries but got 3 objectives"):
        Tchebycheff(preference=[1, 1]).weights(np.ones(3))
    with pytest.raises(ValueError, match="ideal point has 2 entries but got 3 objectives"):
        Tchebycheff(ideal=[0, 0]).weights(np.ones(3))


def test_pinned_values() -> None:
    # p = (1/4, 3/4), L = (4, 1): values (1, 0.75) → w = (1/4, 0)
    agg = Tchebycheff(preference=[1, 3])
    assert agg.weights(np.array([4.0, 1.0])).tolist() == [0.25, 0.0]
    # with z = (3, 0): values (0.25, 0.75) → w = (0, 3/4)
    agg = Tchebycheff(preference=[1, 3], ideal=[3, 0])
    assert agg.weights(np.array([4.0, 1.0])).tolist() == [0.0, 0.75]
    # ties share: uniform p, equal losses → (1/2)/2 each
    assert Tchebycheff().weights(np.array([2.0, 2.0])).tolist() == [0.25, 0.25]
    assert Tchebycheff().weights(np.array([1.0, 3.0, 3.0])).tolist() == [0.0, 1 / 6, 1 / 6]
    assert Tchebycheff().weights(np.array([7.0])).tolist() == [1.0]
    # a scalar ideal is subtracted from every loss
    assert Tchebycheff(ideal=5.0).weights(np.array([4.0, 1.0])).tolist() == [0.5, 0.0]


def test_weights_are_the_gradient_of_the_max() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 6))
        losses = np.round(rng.uniform(0, 3, n), 1)  # rounded: ties are frequent
        p = rng.integers(0, 3, n).astype(float)
        if p.sum() == 0:
            p[0] = 1.0
        z = np.round(rng.uniform(-1, 1, n), 1)
        w = Tchebycheff(preference=p.tolist(), ideal=z.tolist()).weights(losses)
        np.testing.assert_allclose(w, amax_gradient(losses, p / p.sum(), z), rtol=1e-15)
        # Σ wᵢ(Lᵢ − zᵢ) is the Tchebycheff value itself
        values = (p / p.sum()) * (losses - z)
        assert math.isclose(w @ (losses - z), values.max(), rel_tol=1e-12, abs_tol=1e-15)


def test_any_real_losses_are_accepted() -> None:
    w = Tchebycheff().weights(np.array([-3.0, -1.0, -2.0]))
    assert w.tolist() == [0.0, 1 / 3, 0.0]


def test_extreme_scales() -> None:
    losses = np.array([1e-10, 1.0, 1e15])
    assert Tchebycheff().weights(losses).tolist() == [0.0, 0.0, 1 / 3]
    p = [1e20, 1e-5, 1]  # preference normalised: the 1e-10 loss can still win
    np.testing.assert_allclose(
        Tchebycheff(preference=p).weights(losses),
        amax_gradient(losses, np.array(p) / sum(p), 0 * losses),
    )


def test_permutation_claim_follows_preference_and_ideal() -> None:
    assert "permutation_invariant" in Tchebycheff().claims()
    assert "permutation_invariant" in Tchebycheff(preference=[2, 2, 2], ideal=1.0).claims()
    assert "permutation_invariant" not in Tchebycheff(preference=[1, 2]).claims()
    assert "permutation_invariant" not in Tchebycheff(ideal=[0.0, 1.0]).claims()
    # and the claim is right to be dropped:
    agg = Tchebycheff(preference=[1, 3])
    losses = np.array([4.0, 1.0])
    assert not np.array_equal(agg.weights(losses[::-1]), agg.weights(losses)[::-1])


def test_dtypes_and_scalarize_gradient() -> None:
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        theta = torch.randn(4, dtype=dtype, requires_grad=True)
        targets = torch.randn(3, 4, dtype=dtype)
        losses = ((theta - targets) ** 2).sum(1) * torch.tensor([1e-3, 1.0, 1e3], dtype=dtype)
        p = torch.tensor([0.5, 0.3, 0.2], dtype=dtype)
        agg = Tchebycheff(preference=p.tolist())
        (grad,) = torch.autograd.grad(agg.scalarize(losses), theta, retain_graph=True)
        (formula,) = torch.autograd.grad(torch.amax(p * losses), theta, retain_graph=True)
        jac = torch.stack([torch.autograd.grad(li, theta, retain_graph=True)[0] for li in losses])
        d = agg(jac, losses=losses.detach())
        assert d.dtype == dtype
        w = agg.weights(losses.detach())
        assert_weighted_gradient(grad, d, w, jac)
        assert_weighted_gradient(grad, formula, w, jac)


@settings(max_examples=200, deadline=None)
@given(loss_vectors, st.integers(0, 2**32 - 1), st.booleans())
def test_claims_on_random_inputs(values: list[float], seed: int, ties: bool) -> None:
    losses = np.array(values)
    n = losses.shape[0]
    rng = np.random.default_rng(seed)
    if ties:
        losses[rng.integers(0, n)] = losses.max()
    perm = rng.permutation(n)
    jac = torch.tensor(rng.standard_normal((n, 4)))
    agg = Tchebycheff()
    w = agg.weights(losses)
    assert np.all(w >= 0)  # non_negative_weights
    np.testing.assert_array_equal(agg.weights(losses[perm]), w[perm])  # permutation_invariant
    agg.reset()
    np.testing.assert_array_equal(agg.weights(losses), w)  # deterministic, reset_restores
    lt = torch.tensor(losses)
    d = agg(jac, losses=lt)  # scale_equivariant, non_differentiable
    torch.testing.assert_close(agg(3.0 * jac, losses=lt), 3.0 * d)
    assert not agg(jac.requires_grad_(), losses=lt).requires_grad
    p = rng.uniform(0, 1, n)  # with any preference: non-negative, pⱼ on the arg-max
    wp = Tchebycheff(preference=(p + 1e-3).tolist()).weights(losses)
    assert np.all(wp >= 0) and np.count_nonzero(wp) >= 1


# -- losses below the ideal point invert a non-uniform preference: warned once ----------------


@pytest.mark.parametrize("name", ["tchebycheff", "stch"])
def test_losses_below_the_ideal_point_warn_once(name: str) -> None:
    """With p = (0.8, 0.2) and losses (−1, −2) below z = 0, pᵢ(Lᵢ − zᵢ) = (−0.8, −0.4): the
    larger preference makes objective 0 *less* likely to be the worst. The first such call
    warns (method, objectives, values, fix); later calls of the same instance do not."""
    agg = get_aggregator(name, preference=[0.8, 0.2])
    below = np.array([-1.0, -2.0])
    with pytest.warns(
        UserWarning, match=r"objectives \[0, 1\] \(\[-1\.0, -2\.0\]\).*ideal="
    ) as rec:
        agg.weights(below)
    assert type(agg).__name__ in str(rec[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        agg.weights(below)  # once per instance
        agg.reset()
        agg.weights(below)
        # nothing to invert with a uniform preference, or with losses above the ideal point
        get_aggregator(name).weights(below)
        get_aggregator(name, preference=[0.8, 0.2]).weights(np.array([1.0, 2.0]))
        get_aggregator(name, preference=[0.8, 0.2], ideal=-3.0).weights(below)
    with pytest.warns(UserWarning, match=r"objectives \[1\]"):
        get_aggregator(name, preference=[0.8, 0.2], ideal=[-3.0, -1.5]).weights(below)
