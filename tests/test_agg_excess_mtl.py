"""ExcessMTL against TorchJD 0.18's ``ExcessMTL`` / ``ExcessMTLWeighting`` over several calls,
its state (the weights) included, with and without warm-up, in float64 and float32.

Tolerance: both compute, in the Jacobian's dtype, the same accumulated squares, the excess-risk
estimates rᵢ = Σⱼ gᵢⱼ²/√(Sᵢⱼ + ε) (sums of d terms, perhaps in another order: γ_{d+4} relative
each, with the division and the square root) and the step softmax(log w + η r). An error δ in the
logits moves the weights by at most 2δ relative, and the logits' errors add up over the T calls:
the weights agree within 2·T·η·R·γ_{d+8} + T·γ₈ (relative), R the largest |rᵢ| met (computed here
by hand in float64), and the directions within that times Σᵢ|wᵢ|‖gᵢ‖ plus γ_{n+2} of the same.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchjd.aggregation import ExcessMTL as TorchJDExcessMTL
from torchjd.aggregation import ExcessMTLWeighting

from mogradient import get_aggregator
from mogradient.aggregators.excess_mtl import ExcessMTL
from tests.bounds import U32, U64, gamma

_EPS = 1e-7


def _largest_risk(jacs: list[np.ndarray], warmup: int) -> float:
    """The largest |rᵢ| the method meets, by the paper's formulas (equations 6–7, the baseline
    of section 3.2) in float64."""
    squares = np.zeros_like(jacs[0])
    largest, warm, baseline = 0.0, [], None
    for t, jac in enumerate(jacs):
        squares += jac**2
        risk = (jac**2 / np.sqrt(squares + _EPS)).sum(1)
        if t < warmup:
            warm.append(risk)
            continue
        if baseline is None:
            baseline = np.mean(warm, axis=0) if warmup else risk
            scaled = risk / (baseline + _EPS) if warmup else risk
        else:
            scaled = risk / (baseline + _EPS)
        largest = max(largest, float(np.abs(scaled).max()))
    return largest


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("step", "warmup"), [(1.0, 0), (0.3, 3), (2.0, 1)])
@pytest.mark.parametrize("seed", range(3))
def test_agrees_with_torchjd_over_several_calls(
    dtype: torch.dtype, step: float, warmup: int, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    n, d, calls = 3, 6, 8
    jacs = [torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype) for _ in range(calls)]
    ours = ExcessMTL(robust_step_size=step, n_warmup_steps=warmup)
    theirs = TorchJDExcessMTL(robust_step_size=step, n_warmup_steps=warmup)
    their_weights = ExcessMTLWeighting(robust_step_size=step, n_warmup_steps=warmup)
    u = U64 if dtype == torch.float64 else U32
    big_r = _largest_risk([j.double().numpy() for j in jacs], warmup)
    w_rtol = 2 * calls * step * big_r * gamma(d + 8, u) + calls * gamma(8, u)
    for t, jac in enumerate(jacs):
        direction = ours(jac)
        expected = theirs(jac)
        weights = their_weights(jac)
        assert ours.task_weights is not None and ours.task_weights.dtype == dtype
        torch.testing.assert_close(ours.task_weights, weights, rtol=w_rtol, atol=0.0)
        spread = float(weights.double().abs() @ jac.double().norm(dim=1))
        atol = (w_rtol + gamma(n + 2, u)) * spread
        torch.testing.assert_close(direction, expected, rtol=0.0, atol=atol, msg=f"call {t}")


def test_warmup_calls_return_the_mean_gradient() -> None:
    agg = ExcessMTL(n_warmup_steps=2)
    jac = torch.tensor([[1.0, 2.0], [3.0, -4.0]], dtype=torch.float64)
    for _ in range(2):
        torch.testing.assert_close(agg(jac), jac.mean(0))
    assert not torch.equal(agg(jac), jac.mean(0))  # the first step after warm-up moves w


def test_the_weights_favour_the_objective_with_the_larger_relative_excess_risk() -> None:
    """A task whose gradients stay large (its loss does not fall) gains weight over one whose
    gradients shrink (converging), relative to their own first estimates."""
    agg = ExcessMTL(robust_step_size=1.0)
    for t in range(6):
        agg(torch.tensor([[1.0, 0.0], [0.0, 0.5**t]], dtype=torch.float64))
    assert agg.task_weights is not None
    weights = agg.task_weights
    assert float(weights[0]) > float(weights[1])
    torch.testing.assert_close(weights.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert bool((weights >= 0).all())


def test_one_objective_returns_its_gradient() -> None:
    agg = ExcessMTL()
    g = torch.tensor([[0.5, -2.0, 3.0]], dtype=torch.float64)
    for _ in range(3):
        torch.testing.assert_close(agg(g), g[0])


def test_state_follows_the_shape_until_reset() -> None:
    agg = get_aggregator("excess-mtl")
    first = agg(torch.ones(2, 3))
    with pytest.raises(ValueError, match="call reset\\(\\) before changing"):
        agg(torch.ones(3, 3))
    agg.reset()
    agg(torch.ones(3, 3))
    agg.reset()
    torch.testing.assert_close(agg(torch.ones(2, 3)), first)


def test_state_dict_resumes_the_run() -> None:
    g = torch.Generator().manual_seed(0)
    jacs = [torch.randn(2, 4, generator=g, dtype=torch.float64) for _ in range(5)]
    straight = ExcessMTL()
    expected = [straight(j) for j in jacs]
    first = ExcessMTL()
    for j in jacs[:3]:
        first(j)
    resumed = ExcessMTL()
    resumed.load_state_dict(first.state_dict())
    for j, e in zip(jacs[3:], expected[3:]):
        assert torch.equal(resumed(j), e)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"robust_step_size": 0.0}, "robust_step_size must be > 0"),
        ({"robust_step_size": -1.0}, "robust_step_size"),
        ({"n_warmup_steps": -1}, "n_warmup_steps must be an int >= 0"),
        ({"n_warmup_steps": 1.5}, "n_warmup_steps"),
    ],
)
def test_bad_hyperparameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ExcessMTL(**kwargs)


def test_repr() -> None:
    assert repr(get_aggregator("excess-mtl", n_warmup_steps=2)) == (
        "ExcessMTL(robust_step_size=1.0, n_warmup_steps=2)"
    )
