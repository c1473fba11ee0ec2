"""``mogradient.backward(..., second_losses=)`` for the methods that decide from two batches
(``needs_two_batches``: MoDo, SDMGrad): weights from J₁J₂ᵀ, the update of the mean of both
batches' losses (MoDo's eq. 2.9b); refused without the second batch, in the RL loss, and for
methods that decide from one batch.

Reference: TorchJD's weightings on J₁J₂ᵀ formed here with ``torch.autograd.grad``; bounds
from ``tests/test_agg_modo.py`` and ``tests/test_agg_sdmgrad.py`` (SDMGrad with small inner
steps, where its bound is meaningful).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest
import torch
from torchjd.aggregation import MoDoWeighting, SDMGradWeighting

import mogradient
from mogradient_llm.objectives.loss import MultiObjectiveLoss
from tests.test_agg_modo import _bound as modo_bound
from tests.test_agg_sdmgrad import _bound as sdmgrad_bound

EPS = float(np.finfo(np.float64).eps)

TWO_BATCH = sorted(n for n, c in mogradient.registered().items() if c.needs_two_batches)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)
    ).double()


def _losses(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    out = model(x)
    return [(out[:, 0] - y[:, 0]).pow(2).mean(), (out[:, 1] - y[:, 1]).pow(2).mean()]


def _batch(seed: int, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    y = torch.stack([x.sum(1), x[:, 0] - x[:, 2]], dim=1)
    y = y + 0.1 * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    return x, y


def _flat_jacobian(losses: list[torch.Tensor], params: Sequence[torch.Tensor]) -> torch.Tensor:
    rows = [torch.autograd.grad(loss, params, retain_graph=True) for loss in losses]
    return torch.stack([torch.cat([g.flatten() for g in row]) for row in rows])


SMALL_STEPS = {"lr": 0.05, "momentum": 0.5, "n_iter": 3, "lambda_": 0.3}
CASES = [
    ("modo", {}, MoDoWeighting, lambda a: modo_bound([a], 0.1, 0.1)),
    ("sdmgrad", SMALL_STEPS, SDMGradWeighting, lambda a: sdmgrad_bound([a], 0.05, 0.5, 3, 0.3)),
]


@pytest.mark.parametrize("through_backward", [False, True])
@pytest.mark.parametrize(("name", "kwargs", "reference", "bound"), CASES, ids=["modo", "sdmgrad"])
def test_update_is_the_weighted_mean_of_both_batches(
    name: str,
    kwargs: dict,
    reference: type[torch.nn.Module],
    bound: Callable[[np.ndarray], float],
    through_backward: bool,
) -> None:
    """Bound: the weights within the stated bound of each method's test module (one call);
    the update within that times the largest column sum S of |J₁| + |J₂|, plus rounding: the
    weighted sum of n = 2 rows ((n + 2)·eps·S) and autograd's route through the network
    against the rows of J (at most one dot product of the 22 parameters' terms, 22·eps·S):
    30·eps·S in all."""
    model = _model()
    params = list(model.parameters())
    first, second = _losses(model, *_batch(1)), _losses(model, *_batch(2))
    j1, j2 = _flat_jacobian(first, params), _flat_jacobian(second, params)
    a = j1 @ j2.T
    w_ref = reference(**kwargs)(a)
    expected = w_ref @ (j1 + j2) / 2
    w = mogradient.backward(
        first,
        params,
        aggregator=name,
        second_losses=second,
        through_backward=through_backward,
        **kwargs,
    )
    assert w is not None
    w_bound = bound(a.numpy())
    torch.testing.assert_close(w, w_ref, rtol=0, atol=w_bound)
    got = torch.cat([p.grad.flatten() for p in params])  # type: ignore[union-attr]
    size = float((j1.abs() + j2.abs()).sum(0).max())
    torch.testing.assert_close(got, expected, rtol=0, atol=(w_bound + 30 * EPS) * size)


@pytest.mark.parametrize("name", TWO_BATCH)
def test_refused_without_the_second_batch(name: str) -> None:
    model = _model()
    with pytest.raises(ValueError, match="second_losses="):
        mogradient.backward(_losses(model, *_batch(1)), aggregator=name)


def test_second_losses_are_refused_where_they_do_not_belong() -> None:
    model = _model()
    first, second = _losses(model, *_batch(1)), _losses(model, *_batch(2))
    with pytest.raises(ValueError, match="decides from one: drop second_losses"):
        mogradient.backward(first, aggregator="mgda", second_losses=second)
    with pytest.raises(ValueError, match="features= and recorder="):
        h = torch.ones(2, requires_grad=True)
        mogradient.backward(first, aggregator="modo", second_losses=second, features=h)
    with pytest.raises(ValueError, match="2 losses and 1 second_losses"):
        mogradient.backward(first, aggregator="modo", second_losses=second[:1])


@pytest.mark.parametrize("name", TWO_BATCH)
def test_the_rl_loss_refuses_them_by_name_of_the_fix(name: str) -> None:
    with pytest.raises(ValueError, match="two independent batches.*second_losses"):
        MultiObjectiveLoss(mogradient.get_aggregator(name), ["a", "b"])


@pytest.mark.parametrize("name", TWO_BATCH)
def test_a_toy_training_loop_with_two_batches_per_step_decreases_both_losses(name: str) -> None:
    """Plain SGD, two fresh batches per step, 60 steps: both objectives' losses on held-out
    data fall to below half their starting values (the targets are linear in x, which the
    model fits: both optima are shared, so no trade-off stops either)."""
    model = _model()
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.05)
    held = _batch(999, 256)
    with torch.no_grad():
        start = [float(v) for v in _losses(model, *held)]
    for step in range(60):
        first = _losses(model, *_batch(2 * step + 10))
        second = _losses(model, *_batch(2 * step + 11))
        opt.zero_grad()
        mogradient.backward(first, params, aggregator=name, second_losses=second)
        opt.step()
    with torch.no_grad():
        end = [float(v) for v in _losses(model, *held)]
    assert all(e < 0.5 * s for e, s in zip(end, start)), (start, end)
