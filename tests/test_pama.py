"""PAMA's closed form (Theorem 1): weights, s*, brute force, the Jacobian rule, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mogradient import PAMA, get_aggregator, pama_weights
from tests.bounds import U64, gamma
from tests.strategies import finite, jacobians

advantage_batches = st.integers(1, 6).flatmap(
    lambda n: arrays(np.float64, (n, 5), elements=finite | st.sampled_from([0.0, 1.0, -1.0]))
)


@settings(max_examples=200, deadline=None)
@given(advantage_batches)
def test_weights_on_simplex_and_reach_s_star(a: np.ndarray) -> None:
    w, s = pama_weights(torch.tensor(a))
    assert w.shape == a.shape and s.shape == a.shape[1:]
    assert torch.all(w >= 0)
    # hi/span + (−lo)/span or k shares of 1/k: a few roundings, then n − 1 in the sum
    assert bool((w.sum(0) - 1).abs().le(gamma(a.shape[0] + 3, U64)).all())
    # s* is an entry of a (or 0), exactly; each weight is one or two roundings of a quotient
    # (span = max − min rounded once), and Σ wᵢaᵢ rounds n more times: γ_{n+3}·Σ|wᵢ||aᵢ|,
    # plus (n + 3) times the smallest subnormal where products underflow (Higham §2.1)
    at = torch.tensor(a)
    n = a.shape[0]
    bound = gamma(n + 3, U64) * (w.abs() * at.abs()).sum(0) + (n + 3) * 2.0**-1074
    assert bool(((w * at).sum(0) - s).abs().le(bound).all())


@settings(max_examples=200, deadline=None)
@given(advantage_batches)
def test_s_star_is_projection_of_zero_onto_the_range(a: np.ndarray) -> None:
    _, s = pama_weights(torch.tensor(a))
    expected = np.clip(0.0, a.min(0), a.max(0))
    np.testing.assert_array_equal(s.numpy(), expected)


@settings(max_examples=100, deadline=None)
@given(advantage_batches, st.randoms(use_true_random=False))
def test_permutation_equivariance(a: np.ndarray, rnd) -> None:
    perm = list(range(a.shape[0]))
    rnd.shuffle(perm)
    w, s = pama_weights(torch.tensor(a))
    w_p, s_p = pama_weights(torch.tensor(a[perm]))
    torch.testing.assert_close(s_p, s)
    torch.testing.assert_close(w_p, w[perm])


def _grid(n: int, steps: int) -> np.ndarray:
    """Every point of the simplex grid with the given resolution."""
    points = [
        np.array(c) / steps
        for c in itertools.product(range(steps + 1), repeat=n)
        if sum(c) == steps
    ]
    return np.array(points)


@pytest.mark.parametrize("n", [2, 3])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_matches_brute_force_grid(n: int, data) -> None:
    a = data.draw(arrays(np.float64, (n,), elements=finite))
    grid = _grid(n, 60)
    values = (grid @ a) ** 2
    _, s = pama_weights(torch.tensor(a))
    # The grid's best value is an upper bound that the closed form must meet or beat.
    assert float(s) ** 2 <= values.min() + 1e-12
    # ... and the grid gets within one grid step of it.
    step = np.abs(a).max() / 60 * 2
    assert values.min() <= (abs(float(s)) + step) ** 2 + 1e-12


def test_cases_of_theorem_1() -> None:
    w, s = pama_weights(torch.tensor([[2.0], [5.0]]))
    assert float(s) == 2.0 and w[:, 0].tolist() == [1.0, 0.0]
    w, s = pama_weights(torch.tensor([[-2.0], [-5.0]]))
    assert float(s) == -2.0 and w[:, 0].tolist() == [1.0, 0.0]
    # Two objectives straddling zero: c1 = A2 / (A2 - A1).
    w, s = pama_weights(torch.tensor([[-1.0], [3.0]]))
    assert float(s) == 0.0 and w[:, 0].tolist() == [0.75, 0.25]
    # Ties share the weight equally.
    w, s = pama_weights(torch.tensor([[1.0], [1.0], [4.0]]))
    assert float(s) == 1.0 and w[:, 0].tolist() == [0.5, 0.5, 0.0]
    # One objective: weight one, s* clipped towards zero does not apply (min == max).
    w, s = pama_weights(torch.tensor([[-3.0, 0.0, 2.0]]))
    assert w.tolist() == [[1.0, 1.0, 1.0]] and s.tolist() == [-3.0, 0.0, 2.0]


def test_vectorised_over_batch_dims() -> None:
    a = torch.randn(3, 4, 7, generator=torch.Generator().manual_seed(0))
    w, s = pama_weights(a)
    assert w.shape == (3, 4, 7) and s.shape == (4, 7)
    for i in range(4):
        for t in range(7):
            wi, si = pama_weights(a[:, i, t])
            torch.testing.assert_close(w[:, i, t], wi)
            torch.testing.assert_close(s[i, t], si)


def test_pinned_jacobian() -> None:
    jac = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    assert get_aggregator("pama")(jac).tolist() == [0.0, 1.0, 1.0]
    # batch: the objectives' means (-2/3, 8/3) straddle 0 -> c = (0.8, 0.2), s* = 0.
    d = get_aggregator("pama", granularity="batch")(jac)
    torch.testing.assert_close(d, torch.tensor([-2.0, 1.0, 1.0]))


@settings(max_examples=100, deadline=None)
@given(jacobians())
def test_token_rule_on_jacobian_never_conflicts(jac: torch.Tensor) -> None:
    d = PAMA()(jac)
    assert torch.all(jac @ d >= -1e-12 * (1 + jac.abs().max() ** 2))


def test_batch_mode_combines_with_weights_from_means() -> None:
    a = torch.tensor([[1.0, -3.0, 2.0], [0.5, 4.0, 1.0]])
    c, _ = pama_weights(a.mean(dim=1))
    torch.testing.assert_close(PAMA("batch").combine(a).combined, c @ a)


def test_errors() -> None:
    with pytest.raises(ValueError, match="objective 1"):
        pama_weights(torch.tensor([[1.0, 2.0], [float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="zero objectives"):
        pama_weights(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="scalar"):
        pama_weights(torch.tensor(1.0))
    with pytest.raises(ValueError, match="granularity"):
        PAMA("sample")
    assert repr(PAMA("batch")) == "PAMA(granularity='batch')"
