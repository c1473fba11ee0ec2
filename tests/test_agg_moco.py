"""MoCo against Algorithm 1 of the paper written out by hand (no TorchJD version exists):
yᵢ ← yᵢ − β_t(yᵢ − gᵢ) from 0, λ ← Π_Δ(λ − γ_t(YYᵀ + ρI)λ) from uniform, d = Yᵀλ, with the
projection onto the simplex found by bisection on its threshold θ (Σ max(vᵢ − θ, 0) = 1), an
algorithm independent of the method's sort-based one.

Tolerance: 200 halvings pin θ to the spacing of float64 numbers near it, so the reference λ is
within a few u·max|v| of the exact projection; the method's λ within γ_{n+4}·max|v| (one sort,
a cumulative sum of n terms, a division). The λ step is a contraction's worth of operations on
numbers ≤ V = 1 + γ_t·‖YYᵀ + ρI‖, so after T calls the weights are ≤ T·(n + 8)·u·V apart, and
d = Yᵀλ within that times Σ‖yᵢ‖ plus γ_{n} of it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mogradient import get_aggregator
from mogradient.aggregators.moco import MoCo, project_to_simplex
from tests.bounds import U64, gamma


def _bisection_projection(v: np.ndarray) -> np.ndarray:
    """Π_Δ(v) = max(v − θ, 0) with θ the root of Σ max(vᵢ − θ, 0) = 1 (monotone in θ)."""
    low, high = float(v.min()) - 1.0, float(v.max())
    for _ in range(200):
        mid = 0.5 * (low + high)
        if np.maximum(v - mid, 0.0).sum() > 1.0:
            low = mid
        else:
            high = mid
    return np.maximum(v - 0.5 * (low + high), 0.0)


def _paper(
    jacs: list[np.ndarray], beta: float, sb: float, gamma_: float, sg: float, rho: float
) -> tuple[list[np.ndarray], list[np.ndarray], float]:
    n = jacs[0].shape[0]
    y = np.zeros_like(jacs[0])
    lam = np.full(n, 1.0 / n)
    directions, weights, largest = [], [], 1.0
    for t, jac in enumerate(jacs, start=1):
        y = y - beta / t**sb * (y - jac)
        step = gamma_ / t**sg
        matrix = y @ y.T + rho * np.eye(n)
        largest = max(largest, 1.0 + step * float(np.linalg.norm(matrix, 2)))
        lam = _bisection_projection(lam - step * matrix @ lam)
        directions.append(y.T @ lam)
        weights.append(lam)
    return directions, weights, largest


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    "settings",
    [
        (0.5, 0.5, 0.1, 0.5, 0.0),
        (1.0, 0.0, 0.05, 0.0, 0.1),
        (0.2, 0.0, 2.0, 0.0, 0.0),  # large steps: λ reaches the simplex's faces
    ],
)
def test_follows_algorithm_one_over_several_steps(seed: int, settings: tuple) -> None:
    beta, sb, gamma_, sg, rho = settings
    g = torch.Generator().manual_seed(seed)
    n, d, steps = 4, 5, 8
    jacs = [torch.randn(n, d, generator=g, dtype=torch.float64) for _ in range(steps)]
    agg = MoCo(beta=beta, beta_decay=sb, gamma=gamma_, gamma_decay=sg, rho=rho)
    ours = [agg(j) for j in jacs]
    directions, weights, big_v = _paper([j.numpy() for j in jacs], *settings)
    assert agg.task_weights is not None
    w_atol = (steps * (n + 8) + 4) * U64 * big_v  # + 4u·V: the bisection's θ
    np.testing.assert_allclose(agg.task_weights, weights[-1], rtol=0.0, atol=w_atol)
    y_norm = sum(float(np.linalg.norm(j)) for j in jacs)  # ≥ Σ‖yᵢ‖ (a convex combination)
    for mine, ref in zip(ours, directions):
        atol = (w_atol + gamma(n, U64)) * y_norm
        np.testing.assert_allclose(mine.numpy(), ref, rtol=0.0, atol=atol)


@pytest.mark.parametrize("seed", range(20))
def test_projection_agrees_with_bisection(seed: int) -> None:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(int(rng.integers(1, 8))) * 10.0 ** rng.uniform(-3, 3)
    expected = _bisection_projection(v)
    np.testing.assert_allclose(
        project_to_simplex(v), expected, rtol=0.0, atol=64 * U64 * max(1.0, np.abs(v).max())
    )


def test_projection_of_huge_entries_is_a_vertex() -> None:
    np.testing.assert_array_equal(project_to_simplex(np.array([-1e29, -2e29])), [1.0, 0.0])


def test_gamma_zero_keeps_the_mean_of_the_tracked_gradients() -> None:
    agg = MoCo(beta=1.0, beta_decay=0.0, gamma=0.0)
    jac = torch.tensor([[1.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    torch.testing.assert_close(agg(jac), jac.mean(0))


def test_the_weights_move_towards_the_smaller_gradient() -> None:
    """A step of MGDA's min-norm problem: λ grows on the objective with the smaller gradient."""
    agg = MoCo(beta=1.0, beta_decay=0.0, gamma=0.1, gamma_decay=0.0)
    jac = torch.tensor([[1.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    for _ in range(5):
        agg(jac)
    assert agg.task_weights is not None
    assert agg.task_weights[0] > 0.5 > agg.task_weights[1]
    np.testing.assert_allclose(agg.task_weights.sum(), 1.0)


def test_state_follows_the_shape_until_reset() -> None:
    agg = MoCo()
    agg(torch.ones(2, 3))
    with pytest.raises(ValueError, match="call reset"):
        agg(torch.ones(2, 5))
    agg.reset()
    assert agg(torch.ones(2, 5)).shape == (5,)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"beta": -0.1}, "beta must be a number in \\[0, 1\\]"),
        ({"gamma": -1.0}, "gamma must be a finite number >= 0"),
        ({"rho": float("inf")}, "rho"),
        ({"gamma_decay": -1.0}, "gamma_decay"),
    ],
)
def test_bad_hyperparameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MoCo(**kwargs)


def test_repr() -> None:
    assert repr(get_aggregator("moco")) == (
        "MoCo(beta=0.5, beta_decay=0.5, gamma=0.1, gamma_decay=0.5, rho=0.0)"
    )
