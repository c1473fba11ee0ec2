"""``mogradient.backward(..., second_losses=)`` for the methods that decide from two batches
(``needs_two_batches``: MoDo, SDMGrad): weights from J₁J₂ᵀ, the update of the mean of both
batches' losses (MoDo's eq. 2.9b); refused without the second batch, in the RL loss, and for
methods that decide from one batch.

Reference: TorchJD's weightings on J₁J₂ᵀ formed here with ``torch.autograd.grad``. Bound: the
weights agree within 1e-13 on these small problems (the Lipschitz bounds of
``tests/test_agg_modo.py`` and ``tests/test_agg_sdmgrad.py`` give ≤ 1e-14 for one call at
‖A‖ ≤ 10), and the update is their sum with gradients of norm ≤ 10: 1e-12.
"""

from __future__ import annotations

import pytest
import torch
from torchjd.aggregation import MoDoWeighting, SDMGradWeighting

import mogradient
from mogradient_llm.objectives.loss import MultiObjectiveLoss

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


def _flat_jacobian(losses: list[torch.Tensor], params: list[torch.Tensor]) -> torch.Tensor:
    rows = [torch.autograd.grad(loss, params, retain_graph=True) for loss in losses]
    return torch.stack([torch.cat([g.flatten() for g in row]) for row in rows])


@pytest.mark.parametrize("through_backward", [False, True])
@pytest.mark.parametrize(
    ("name", "reference"), [("modo", MoDoWeighting), ("sdmgrad", SDMGradWeighting)]
)
def test_update_is_the_weighted_mean_of_both_batches(
    name: str, reference: type[torch.nn.Module], through_backward: bool
) -> None:
    model = _model()
    params = list(model.parameters())
    first, second = _losses(model, *_batch(1)), _losses(model, *_batch(2))
    j1, j2 = _flat_jacobian(first, params), _flat_jacobian(second, params)
    w_ref = reference()(j1 @ j2.T)
    expected = w_ref @ (j1 + j2) / 2
    w = mogradient.backward(
        first, params, aggregator=name, second_losses=second, through_backward=through_backward
    )
    assert w is not None
    torch.testing.assert_close(w, w_ref, rtol=0, atol=1e-13)
    got = torch.cat([p.grad.flatten() for p in params])  # type: ignore[union-attr]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


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
