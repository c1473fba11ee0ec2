"""IMTL-L against TorchJD's ``IMTLL`` scalarizer and against its defining equations.

* Weights: the gradient of TorchJD's Σ(e^(sᵢ)Lᵢ − sᵢ) in L at our log-scales s, by autograd:
  e^(sᵢ) on both sides, each an exp within 1 ulp: relative gap ≤ 4u (float64).
* The step: our s' solves s' = s − lr(e^(s')L − 1) (checked by its residual, ≤ 64u times the
  terms' magnitude), and differs from TorchJD's explicit SGD step s − lr(e^s L − 1) by
  lr·L·|e^(s') − e^s| ≤ lr·L·e^(max(s, s'))·|s' − s| (mean value theorem), plus rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchjd.scalarization import IMTLL as TorchJDIMTLL

from mogradient.aggregators.imtl_l import IMTLL
from tests.bounds import U64


def _torchjd_step(s: np.ndarray, losses: np.ndarray, lr: float) -> tuple[np.ndarray, np.ndarray]:
    """TorchJD's weights (∂/∂L by autograd) and its SGD step on the log-scales, from s."""
    scalarizer = TorchJDIMTLL(len(s)).double()
    with torch.no_grad():
        scalarizer.log_scale.copy_(torch.from_numpy(s))
    values = torch.tensor(losses, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD(scalarizer.parameters(), lr=lr)
    scalarizer(values).backward()
    assert values.grad is not None
    weights = values.grad.numpy().copy()
    optimizer.step()
    return weights, scalarizer.log_scale.detach().numpy().copy()


@pytest.mark.parametrize("lr", [1e-3, 0.05, 0.5])
def test_against_torchjd_over_steps(lr: float) -> None:
    rng = np.random.default_rng(0)
    agg = IMTLL(lr=lr)
    for _ in range(6):
        losses = rng.uniform(0.05, 20.0, size=4)
        s = np.zeros(4) if agg.log_scales is None else agg.log_scales.copy()
        w = agg.weights(losses)
        expected_w, explicit = _torchjd_step(s, losses, lr)
        np.testing.assert_allclose(w, expected_w, rtol=4 * U64, atol=0)
        s_new = agg.log_scales
        assert s_new is not None
        residual = s_new - s + lr * (np.exp(s_new) * losses - 1.0)
        scale = np.abs(s_new) + np.abs(s) + lr * (np.exp(s_new) * losses + 1.0)
        assert np.all(np.abs(residual) <= 64 * U64 * scale)
        gap = lr * losses * np.exp(np.maximum(s, s_new)) * np.abs(s_new - s)
        assert np.all(np.abs(s_new - explicit) <= gap + 64 * U64 * scale)


def test_a_constant_loss_is_balanced() -> None:
    """The fixed point e^(s)L = 1: each weighted loss tends to 1."""
    losses = np.array([1e-3, 0.5, 40.0])
    agg = IMTLL(lr=0.5)
    for _ in range(200):
        w = agg.weights(losses)
    np.testing.assert_allclose(w * losses, np.ones(3), rtol=1e-12)


def test_init_and_reset() -> None:
    agg = IMTLL(init=-1.0)
    first = agg.weights(np.array([1.0, 2.0]))
    np.testing.assert_array_equal(first, np.exp([-1.0, -1.0]))
    agg.weights(np.array([3.0, 0.0]))  # a zero loss is accepted
    agg.reset()
    np.testing.assert_array_equal(agg.weights(np.array([1.0, 2.0])), first)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="objective 1 has loss -1"):
        IMTLL().weights(np.array([1.0, -1.0]))
    agg = IMTLL()
    agg.weights(np.array([1.0, 1.0]))
    with pytest.raises(ValueError, match="call reset"):
        agg.weights(np.array([1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="lr must be > 0"):
        IMTLL(lr=0.0)
    with pytest.raises(ValueError, match="init must lie in"):
        IMTLL(init=800.0)
