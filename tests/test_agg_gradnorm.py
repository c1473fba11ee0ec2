"""GradNorm against Algorithm 1 of the paper written out by hand (no TorchJD version exists).

The reference takes the norms from the Jacobian's rows (``math.hypot``), the initial losses from
the first call, and steps wᵢ ← max(wᵢ − lr·sign(wᵢ‖gᵢ‖ − Ḡrᵢ^α)·‖gᵢ‖/ν, 0), renormalised to Σw = n
(ν: the mean norm). Tolerance: each step is O(n) operations on numbers of magnitude ≤ n(1 + lr),
so the weights drift apart by at most γ_{8n+16}·n(1 + lr) per step; a step whose sign is within
10⁻⁹ of a tie in the reference is not decided by the data and ends the comparison there.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mogradient.aggregators import gramian_of
from mogradient.aggregators.gradnorm import GradNorm
from tests.bounds import U64, gamma


def _paper(
    norms: list[float], losses: list[list[float]], alpha: float, lr: float
) -> list[list[float]]:
    n = len(norms)
    w = [1.0] * n
    out = []
    initial = losses[0]
    nu = sum(norms) / n
    for values in losses:
        out.append(list(w))
        g = [w[i] * norms[i] for i in range(n)]
        g_bar = sum(g) / n
        ratio = [values[i] / initial[i] for i in range(n)]
        r_bar = sum(ratio) / n
        target = [g_bar * (ratio[i] / r_bar) ** alpha for i in range(n)]
        if any(abs(g[i] - target[i]) <= 1e-9 * (g[i] + target[i]) for i in range(n)):
            break  # a near-tie: the sign is rounding's
        step = [max(w[i] - lr * math.copysign(1.0, g[i] - target[i]) * norms[i] / nu, 0.0)
                for i in range(n)]  # fmt: skip
        total = sum(step)
        w = [v * n / total for v in step]
    return out


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("alpha", "lr"), [(1.5, 0.025), (0.0, 0.3), (0.5, 1.0)])
def test_follows_algorithm_one(seed: int, alpha: float, lr: float) -> None:
    rng = np.random.default_rng(seed)
    n = 2 + seed % 3
    jac = torch.tensor(rng.normal(size=(n, 7)) * rng.uniform(0.1, 10.0, (n, 1)))
    losses = [list(rng.uniform(0.5, 5.0, n) * 0.8**t) for t in range(6)]
    norms = [math.hypot(*row) for row in jac.tolist()]
    expected = _paper(norms, losses, alpha, lr)
    agg = GradNorm(alpha=alpha, lr=lr)
    gram = gramian_of(jac)
    for t, w_ref in enumerate(expected):
        w = agg.weights(gram, torch.tensor(losses[t]))
        tol = (t + 1) * gamma(8 * n + 16, U64) * n * (1 + lr)
        np.testing.assert_allclose(w.numpy(), w_ref, rtol=0, atol=tol)


def test_alpha_zero_equalises_the_weighted_norms() -> None:
    """α = 0: the targets are Ḡ, so w·‖g‖ oscillates around equal values within a step."""
    jac = torch.tensor([[4.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    agg = GradNorm(alpha=0.0, lr=0.01)
    losses = torch.tensor([1.0, 1.0], dtype=torch.float64)
    for _ in range(300):
        w = agg.weights(gramian_of(jac), losses)
    weighted = w.numpy() * np.array([4.0, 1.0])
    assert abs(weighted[0] - weighted[1]) <= 0.05 * weighted.sum()  # steps of lr·‖g‖/ν ≤ 0.016


def test_losses_and_hyperparameters_are_checked() -> None:
    gram = gramian_of(torch.eye(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="objective 1 has loss 0"):
        GradNorm().weights(gram, torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="losses="):
        GradNorm().weights(gram)
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
        GradNorm(alpha=-1.0)
    with pytest.raises(ValueError, match="lr must be > 0"):
        GradNorm(lr=0.0)
    agg = GradNorm()
    agg.weights(gram, torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="call reset"):
        agg.weights(gramian_of(torch.eye(3, dtype=torch.float64)), torch.ones(3))
