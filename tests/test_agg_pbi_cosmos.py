"""PBI and COSMOS against TorchJD's scalarizers (their gradient in the losses, by autograd).

Tolerances (Higham §3.1): each weight is a few dot products and norms of length n, off by at
most γ_{2n+8} times the magnitude of its terms on each side:

* PBI: (1 + θ)·(1 + ‖f‖/d₂), since the unit vector (f − d₁ŵ)/d₂ loses ‖f‖/d₂ to cancellation,
  plus TorchJD's smoothing √(d₂² + 10⁻¹²), which moves it by θ·10⁻¹²/(2d₂²);
* COSMOS: ‖r‖ + 2λ/‖L‖ (the cosine's gradient has norm ≤ 2/‖L‖ before the factor λ);
  TorchJD's cosine clamps norms at 10⁻⁸, far below the norms drawn here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchjd.scalarization import COSMOS as TorchJDCOSMOS
from torchjd.scalarization import PBI as TorchJDPBI

from mogradient.aggregators.cosmos import COSMOS
from mogradient.aggregators.pbi import PBI
from tests.bounds import U64, gamma


def _autograd(scalarizer: torch.nn.Module, losses: np.ndarray) -> np.ndarray:
    x = torch.tensor(losses, dtype=torch.float64, requires_grad=True)
    scalarizer(x).backward()
    assert x.grad is not None
    return x.grad.numpy()


def _draw(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    losses = 10.0 ** rng.uniform(-3, 3, n)
    p = rng.uniform(0.05, 1.0, n)
    return losses, p / p.sum()


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("theta", [0.0, 0.5, 5.0])
def test_pbi_agrees_with_torchjd(seed: int, theta: float) -> None:
    n = 2 + seed % 4
    losses, p = _draw(seed, n)
    ideal = np.random.default_rng(seed + 100).uniform(-1.0, 0.0, n) if seed % 2 else None
    reference = None if ideal is None else torch.tensor(ideal)
    expected = _autograd(TorchJDPBI(theta, torch.tensor(p), reference), losses)
    got = PBI(theta, p.tolist(), None if ideal is None else ideal.tolist()).weights(losses)
    f = losses - (0.0 if ideal is None else ideal)
    w_hat = p / np.linalg.norm(p)
    d2 = float(np.linalg.norm(f - (f @ w_hat) * w_hat))
    tol = 2 * gamma(2 * n + 8, U64) * (1 + theta) * (1 + np.linalg.norm(f) / d2)
    tol += theta * 1e-12 / (2 * d2**2)
    np.testing.assert_allclose(got, expected, rtol=0, atol=float(tol))


def test_pbi_on_the_ray_and_without_penalty() -> None:
    """Losses along the preference: the penalty's subgradient of least norm, 0, so w = ŵ
    (TorchJD's smoothing also gives ŵ there); θ = 0: w = ŵ everywhere."""
    p = [0.25, 0.75]
    w_hat = np.array(p) / math.hypot(*p)
    np.testing.assert_allclose(PBI(5.0, p).weights(np.array([1.0, 3.0])), w_hat, rtol=4 * U64)
    expected = _autograd(
        TorchJDPBI(5.0, torch.tensor(p, dtype=torch.float64)), np.array([1.0, 3.0])
    )
    # TorchJD divides the rounding of f − d₁ŵ (≤ γ₁₂‖f‖) by √(10⁻¹²) = 10⁻⁶, times θ = 5
    tol = 5 * 2 * gamma(12, U64) * math.hypot(1.0, 3.0) * 1e6
    np.testing.assert_allclose(expected, w_hat, rtol=0, atol=tol)
    np.testing.assert_array_equal(PBI(0.0, p).weights(np.array([7.0, 0.1])), w_hat)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("lam", [0.0, 0.3, 8.0])
def test_cosmos_agrees_with_torchjd(seed: int, lam: float) -> None:
    n = 2 + seed % 4
    losses, p = _draw(seed, n)
    expected = _autograd(TorchJDCOSMOS(lam, torch.tensor(p)), losses)
    got = COSMOS(lam, p.tolist()).weights(losses)
    tol = 2 * gamma(2 * n + 8, U64) * (np.linalg.norm(p) + 2 * lam / np.linalg.norm(losses))
    np.testing.assert_allclose(got, expected, rtol=0, atol=float(tol))


def test_cosmos_limits() -> None:
    p = [0.2, 0.8]
    np.testing.assert_array_equal(COSMOS(0.0, p).weights(np.array([3.0, 1.0])), [0.2, 0.8])
    np.testing.assert_array_equal(COSMOS(2.0, p).weights(np.zeros(2)), [0.2, 0.8])
    # losses along r: cos = 1 and its gradient vanishes
    w = COSMOS(2.0, p).weights(np.array([0.5, 2.0]))
    np.testing.assert_allclose(w, p, rtol=0, atol=4 * gamma(12, U64) * (1 + 2 * 2.0 / 2.06))


@pytest.mark.parametrize("make", [PBI, COSMOS])
@pytest.mark.parametrize(
    ("bad", "error"), [(-1.0, ValueError), (math.inf, ValueError), (True, TypeError)]
)
def test_bad_penalties(make: type, bad: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=">= 0"):
        make(bad)


def test_bad_preference_and_ideal() -> None:
    with pytest.raises(ValueError, match="one entry per objective"):
        PBI(preference=[1.0, 2.0]).weights(np.ones(3))
    with pytest.raises(ValueError, match="ideal point has 2 entries"):
        PBI(ideal=[0.0, 0.0]).weights(np.ones(3))
    with pytest.raises(ValueError, match="one entry per objective"):
        COSMOS(preference=[1.0, 2.0]).weights(np.ones(3))
