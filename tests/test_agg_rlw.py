"""RLW: softmax of standard normal draws at every call (Lin et al., TMLR 2022)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mogradient.aggregators import LossWeighting, get_aggregator
from mogradient.aggregators.rlw import RLW

loss_vectors = st.integers(1, 6).flatmap(
    lambda n: st.lists(st.floats(-10, 15).map(lambda e: 10.0**e), min_size=n, max_size=n)
)


def test_registered_under_its_names() -> None:
    assert isinstance(get_aggregator("rlw"), RLW)
    assert isinstance(get_aggregator("random", seed=3), RLW)
    assert isinstance(RLW(), LossWeighting) and RLW.uses_loss_values is False


def test_repr_reads_like_the_constructor() -> None:
    assert repr(RLW()) == "RLW(seed=0)"
    assert repr(RLW(seed=7)) == "RLW(seed=7)"
    assert repr(RLW(seed=None)) == "RLW(seed=None)"
    assert repr(eval(repr(RLW(seed=5)))) == "RLW(seed=5)"


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True, [1]])
def test_invalid_seed(seed: object) -> None:
    with pytest.raises(ValueError, match="seed must be a non-negative int or None"):
        RLW(seed=seed)  # type: ignore[arg-type]


def test_weights_are_the_softmax_of_the_seeded_normal_stream() -> None:
    # The paper: λ = softmax(λ̃), λ̃ ~ N(0, I), a fresh draw per step.
    draws = np.random.default_rng(42).standard_normal(3 + 3 + 5)
    agg = RLW(seed=42)
    for start, n in ((0, 3), (3, 3), (6, 5)):
        z = draws[start : start + n]
        expected = torch.softmax(torch.tensor(z), dim=0).numpy()
        np.testing.assert_allclose(agg.weights(np.ones(n)), expected, rtol=1e-14)


def test_distribution_of_the_weights() -> None:
    # log(w_i / w_j) = z_i − z_j ~ N(0, 2); each weight has mean 1/n by symmetry.
    agg = RLW(seed=1)
    w = np.array([agg.weights(np.ones(4)) for _ in range(20_000)])
    log_ratio = np.log(w[:, 0] / w[:, 1])
    assert abs(log_ratio.mean()) < 0.05
    assert abs(log_ratio.std() - math.sqrt(2.0)) < 0.03
    np.testing.assert_allclose(w.mean(0), 0.25, atol=0.01)
    assert len({tuple(row) for row in w[:100]}) == 100  # a new draw at every call


def test_loss_values_are_not_used() -> None:
    a, b = RLW(seed=3), RLW(seed=3)
    np.testing.assert_array_equal(
        a.weights(np.array([1.0, 2.0, 3.0])), b.weights(np.array([-5.0, 0.0, 1e15]))
    )


def test_reset_restores_the_stream_even_with_fresh_entropy() -> None:
    for seed in (0, None):
        agg = RLW(seed=seed)
        first = [agg.weights(np.ones(3)) for _ in range(4)]
        agg.reset()
        again = [agg.weights(np.ones(3)) for _ in range(4)]
        np.testing.assert_array_equal(np.array(first), np.array(again))


def test_determinism_claim_follows_the_seed() -> None:
    assert "deterministic" in RLW(seed=0).claims()
    assert "deterministic" not in RLW(seed=None).claims() and "deterministic" not in RLW.properties
    assert "reset_restores" in RLW(seed=None).claims()
    a, b = RLW(seed=None), RLW(seed=None)
    assert not np.array_equal(a.weights(np.ones(5)), b.weights(np.ones(5)))


def test_one_objective_gets_weight_one() -> None:
    agg = RLW()
    for _ in range(5):
        assert agg.weights(np.array([3.0])).tolist() == [1.0]


def test_agg_without_losses_and_dtypes() -> None:
    jac = torch.randn(3, 7, dtype=torch.float64)
    for dtype in (torch.float32, torch.float64):
        a, b = RLW(seed=9), RLW(seed=9)
        d = a(jac.to(dtype))
        w = b.weights(torch.zeros(3, dtype=dtype))
        assert d.dtype == dtype and w.dtype == torch.float64
        torch.testing.assert_close(d, w.to(dtype) @ jac.to(dtype))


def test_scalarize_gradient_equals_the_direction() -> None:
    torch.manual_seed(0)
    theta = torch.randn(5, dtype=torch.float64, requires_grad=True)
    targets = torch.randn(3, 5, dtype=torch.float64)
    losses = ((theta - targets) ** 2).sum(1) * torch.tensor([1e-10, 1.0, 1e15], dtype=torch.float64)
    (grad,) = torch.autograd.grad(RLW(seed=4).scalarize(losses), theta, retain_graph=True)
    jac = torch.stack([torch.autograd.grad(li, theta, retain_graph=True)[0] for li in losses])
    torch.testing.assert_close(grad, RLW(seed=4)(jac, losses=losses.detach()), rtol=1e-12, atol=0)


def test_state_dict_round_trip_mid_sequence() -> None:
    # a checkpoint taken after a few calls, loaded into a fresh instance, continues identically
    rng = np.random.default_rng(11)
    seq = [10.0 ** rng.uniform(-3, 3, 3) for _ in range(8)]
    agg = RLW(seed=None)
    for losses in seq[:4]:
        agg.weights(losses)
    state = agg.state_dict()
    tail = [agg.weights(losses) for losses in seq[4:]]
    restored = RLW(seed=3)
    restored.load_state_dict(state)
    np.testing.assert_array_equal(np.array([restored.weights(x) for x in seq[4:]]), np.array(tail))


@settings(max_examples=200, deadline=None)
@given(loss_vectors, st.integers(0, 2**32 - 1))
def test_claims_on_random_inputs(values: list[float], seed: int) -> None:
    losses = np.array(values)
    n = losses.shape[0]
    jac = torch.tensor(np.random.default_rng(seed).standard_normal((n, 4)))
    agg = RLW(seed=seed)
    seq = [agg.weights(losses * k) for k in (1.0, 0.5, 3.0)]
    for w in seq:  # simplex_weights, non_negative_weights
        assert np.all(w >= 0) and math.isclose(w.sum(), 1.0, rel_tol=1e-12)
    agg.reset()  # reset_restores
    np.testing.assert_array_equal(agg.weights(losses), seq[0])
    other = RLW(seed=seed)  # deterministic
    np.testing.assert_array_equal(
        np.array([other.weights(losses * k) for k in (1.0, 0.5, 3.0)]), seq
    )
    # scale_equivariant (from the same state): the weights ignore the Jacobian's scale
    d = RLW(seed=seed)(jac, losses=torch.tensor(losses))
    torch.testing.assert_close(RLW(seed=seed)(2.5 * jac, losses=torch.tensor(losses)), 2.5 * d)
    # non_differentiable
    assert not RLW(seed=seed)(jac.requires_grad_(), losses=torch.tensor(losses)).requires_grad
