"""DWA: n·softmax of the previous two calls' loss ratios over T (Liu et al., CVPR 2019)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mogradient.aggregators import get_aggregator
from mogradient.aggregators.dwa import DWA
from tests.bounds import assert_weighted_gradient

loss_vectors = st.integers(1, 6).flatmap(
    lambda n: st.lists(st.floats(-10, 15).map(lambda e: 10.0**e), min_size=n, max_size=n)
)


def test_registered_and_repr() -> None:
    assert isinstance(get_aggregator("dwa", temperature=1.0), DWA)
    assert repr(DWA()) == "DWA(temperature=2.0)"
    assert repr(eval(repr(DWA(temperature=3)))) == "DWA(temperature=3.0)"


@pytest.mark.parametrize("temperature", [0.0, -1.0, math.inf, math.nan, "2", True, None])
def test_invalid_temperature(temperature: object) -> None:
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        DWA(temperature=temperature)  # type: ignore[arg-type]


def test_pinned_history_by_hand() -> None:
    # calls 1, 2: λ = 1; call 3: r = L(2)/L(1) = (0.5, 0.9); λ = 2·e^(r/2)/Σe^(r/2);
    # call 4: r = L(3)/L(2) = (0.2/0.5, 0.9/1.8) = (0.4, 0.5).
    agg = DWA()
    assert agg.weights(np.array([1.0, 2.0])).tolist() == [1.0, 1.0]
    assert agg.weights(np.array([0.5, 1.8])).tolist() == [1.0, 1.0]
    w3 = agg.weights(np.array([0.2, 0.9]))
    e = [math.exp(0.25), math.exp(0.45)]
    np.testing.assert_allclose(w3, [2 * e[0] / sum(e), 2 * e[1] / sum(e)], rtol=1e-15)
    w4 = agg.weights(np.array([5.0, 5.0]))
    e = [math.exp(0.2), math.exp(0.25)]
    np.testing.assert_allclose(w4, [2 * e[0] / sum(e), 2 * e[1] / sum(e)], rtol=1e-15)


def test_matches_torchjd_dwa_with_one_batch_per_epoch() -> None:
    torchjd_scalarization = pytest.importorskip("torchjd.scalarization")
    rng = np.random.default_rng(0)
    for temperature in (0.5, 2.0, 10.0):
        ref, ours = torchjd_scalarization.DWA(temperature), DWA(temperature)
        for _ in range(12):
            losses = 10.0 ** rng.uniform(-2, 2, 4)
            values = torch.tensor(losses, requires_grad=True)
            (w_ref,) = torch.autograd.grad(ref(values), values)
            ref.step()  # one call = one "epoch"
            np.testing.assert_allclose(ours.weights(losses), w_ref.numpy(), rtol=1e-13)


def test_slower_objective_gets_more_weight_and_temperature_flattens() -> None:
    agg, flat = DWA(temperature=0.1), DWA(temperature=1e6)
    for losses in ([1.0, 1.0], [0.5, 0.99], [0.4, 0.98]):
        w, w_flat = agg.weights(np.array(losses)), flat.weights(np.array(losses))
    assert w[1] > w[0] and math.isclose(w.sum(), 2.0, rel_tol=1e-15)
    np.testing.assert_allclose(w_flat, [1.0, 1.0], rtol=1e-6)


def test_extreme_ratios_stay_finite() -> None:
    agg = DWA(temperature=1e-3)
    agg.weights(np.array([1e15, 1e-10, 1.0]))
    agg.weights(np.array([1e-10, 1e15, 1.0]))  # ratios 1e-25, 1e25, 1
    w = agg.weights(np.ones(3))
    np.testing.assert_array_equal(w, [0.0, 3.0, 0.0])
    agg.weights(np.ones(3))
    w = agg.weights(np.ones(3))  # equal ratios: equal weights
    np.testing.assert_allclose(w, [1.0, 1.0, 1.0], rtol=1e-15)


def test_one_objective() -> None:
    agg = DWA()
    for v in (1.0, 0.1, 30.0, 2.0):
        assert agg.weights(np.array([v])).tolist() == pytest.approx([1.0], rel=1e-15)


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_non_positive_loss_is_refused(bad: float) -> None:
    agg = DWA()
    agg.weights(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"objective 1 has loss .*shift that objective"):
        agg.weights(np.array([1.0, bad]))
    # the refused call did not enter the history: this is still the second call
    assert agg.weights(np.array([2.0, 2.0])).tolist() == [1.0, 1.0]
    e = [math.exp(2.0 / 2), math.exp(1.0 / 2)]  # ratios (2/1, 2/2)
    np.testing.assert_allclose(agg.weights(np.ones(2)), [2 * e[0] / sum(e), 2 * e[1] / sum(e)])


def test_reset_clears_history_and_changing_n() -> None:
    agg = DWA()
    seq = [agg.weights(np.array([3.0, 1.0, 2.0]) / k) for k in (1, 2, 5, 6)]
    with pytest.raises(ValueError, match="call reset"):
        agg.weights(np.ones(2))
    agg.reset()
    again = [agg.weights(np.array([3.0, 1.0, 2.0]) / k) for k in (1, 2, 5, 6)]
    np.testing.assert_array_equal(np.array(again), np.array(seq))
    agg.reset()
    assert agg.weights(np.ones(2)).tolist() == [1.0, 1.0]


def test_dtypes_and_scalarize_gradient() -> None:
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        theta = torch.randn(4, dtype=dtype, requires_grad=True)
        targets = torch.randn(3, 4, dtype=dtype)
        losses = ((theta - targets) ** 2).sum(1) * torch.tensor([1e-3, 1.0, 1e3], dtype=dtype)
        a, b, c = DWA(), DWA(), DWA()
        for agg in (a, b, c):  # two calls of history, so the weights are not all 1
            agg.weights(np.array([1.0, 2.0, 3.0]))
            agg.weights(np.array([0.9, 1.0, 2.9]))
        (grad,) = torch.autograd.grad(a.scalarize(losses), theta, retain_graph=True)
        jac = torch.stack([torch.autograd.grad(li, theta, retain_graph=True)[0] for li in losses])
        d = b(jac, losses=losses.detach())
        assert d.dtype == dtype
        assert_weighted_gradient(grad, d, c.weights(losses.detach()), jac)


def test_state_dict_round_trip_mid_sequence() -> None:
    # a checkpoint taken after a few calls, loaded into a fresh instance, continues identically
    rng = np.random.default_rng(11)
    seq = [10.0 ** rng.uniform(-3, 3, 3) for _ in range(8)]
    agg = DWA(temperature=0.7)
    for losses in seq[:4]:
        agg.weights(losses)
    state = agg.state_dict()
    tail = [agg.weights(losses) for losses in seq[4:]]
    restored = DWA()
    restored.load_state_dict(state)
    np.testing.assert_array_equal(np.array([restored.weights(x) for x in seq[4:]]), np.array(tail))


@settings(max_examples=200, deadline=None)
@given(loss_vectors, st.integers(0, 2**32 - 1), st.floats(0.01, 100.0))
def test_claims_on_random_inputs(values: list[float], seed: int, temperature: float) -> None:
    losses = np.array(values)
    n = losses.shape[0]
    rng = np.random.default_rng(seed)
    factors = [np.ones(n), *(10.0 ** rng.uniform(-1, 1, (3, n)))]
    perm = rng.permutation(n)
    jac = torch.tensor(rng.standard_normal((n, 4)))
    agg, other, permuted = DWA(temperature), DWA(temperature), DWA(temperature)
    seq = [agg.weights(losses * f) for f in factors]
    for w in seq:  # non_negative_weights (and Σ = n)
        assert np.all(w >= 0) and math.isclose(w.sum(), n, rel_tol=1e-12)
    np.testing.assert_array_equal(np.array([other.weights(losses * f) for f in factors]), seq)
    for f, w in zip(factors, seq):  # permutation_invariant (over a history)
        np.testing.assert_allclose(permuted.weights((losses * f)[perm]), w[perm], rtol=1e-12)
    agg.reset()  # reset_restores
    np.testing.assert_array_equal(agg.weights(losses), seq[0])
    lt = torch.tensor(losses)
    d = DWA(temperature)(jac, losses=lt)  # scale_equivariant, non_differentiable
    torch.testing.assert_close(DWA(temperature)(3.0 * jac, losses=lt), 3.0 * d)
    assert not DWA(temperature)(jac.requires_grad_(), losses=lt).requires_grad
