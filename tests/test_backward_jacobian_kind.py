"""Jacobian weightings (excess-mtl, db-mtl, moco) through ``mogradient.backward``: parameter
mode writes the method's direction (decided from the Jacobian, with its state) into ``.grad``,
``through_backward=True`` gets the same through one backward, training decreases two toy
losses, and ``features=`` / ``recorder=`` are refused by name."""

from __future__ import annotations

import pytest
import torch

import mogradient
from mogradient.gramian_engine import GramianRecorder

JACOBIAN_METHODS = ["excess-mtl", "db-mtl", "moco"]
CENTRES = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, -0.5]], dtype=torch.float64)


def _losses(x: torch.Tensor) -> list[torch.Tensor]:
    """Two positive quadratics with different minima: they conflict between them."""
    return [((x - c) ** 2).sum() + 0.1 for c in CENTRES]


@pytest.mark.parametrize("through_backward", [False, True])
@pytest.mark.parametrize("name", JACOBIAN_METHODS)
def test_grad_is_the_direction_the_method_decides(name: str, through_backward: bool) -> None:
    """Each call's ``.grad`` is the direction a twin instance gives on the Jacobian taken by
    autograd, call after call (so the state advances the same way)."""
    agg, twin = mogradient.get_aggregator(name), mogradient.get_aggregator(name)
    x = torch.tensor([2.0, -1.5, 1.0], dtype=torch.float64, requires_grad=True)
    for step in range(4):
        losses = _losses(x)
        jac = torch.stack([torch.autograd.grad(v, x, retain_graph=True)[0] for v in losses])
        expected = twin(jac, torch.stack([v.detach() for v in losses]))
        x.grad = None
        out = mogradient.backward(losses, [x], aggregator=agg, through_backward=through_backward)
        assert out is None
        assert x.grad is not None
        torch.testing.assert_close(x.grad, expected, rtol=1e-12, atol=0.0, msg=f"step {step}")
        with torch.no_grad():
            x -= 0.1 * x.grad


@pytest.mark.parametrize("through_backward", [False, True])
@pytest.mark.parametrize("name", JACOBIAN_METHODS)
def test_training_decreases_both_losses(name: str, through_backward: bool) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1, dtype=torch.float64)
    with torch.no_grad():  # far from both targets, whatever ran before: both losses can halve
        model.weight.fill_(3.0)
        model.bias.fill_(2.0)
    inputs = torch.randn(16, 3, dtype=torch.float64)
    targets = torch.stack([inputs @ torch.tensor([1.0, -1.0, 0.5]).double(), inputs[:, 0]])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    agg = mogradient.get_aggregator(name)

    def losses() -> list[torch.Tensor]:
        out = model(inputs)[:, 0]
        return [((out - t) ** 2).mean() + 0.1 for t in targets]

    before = [float(v.detach()) for v in losses()]
    for _ in range(100):
        optimizer.zero_grad()
        mogradient.backward(losses(), aggregator=agg, through_backward=through_backward)
        optimizer.step()
    after = [float(v.detach()) for v in losses()]
    assert all(a < 0.5 * b for a, b in zip(after, before)), (name, before, after)


@pytest.mark.parametrize("name", JACOBIAN_METHODS)
def test_features_and_recorder_are_refused(name: str) -> None:
    model = torch.nn.Linear(3, 2)
    x = torch.randn(4, 3)
    hidden = model(x)
    losses = [hidden[:, 0].pow(2).mean() + 0.1, hidden[:, 1].pow(2).mean() + 0.1]
    with pytest.raises(ValueError, match="features= and recorder= give no such Jacobian"):
        mogradient.backward(losses, aggregator=name, features=hidden, retain_graph=True)
    with GramianRecorder(model) as recorder:
        out = model(x)
    with pytest.raises(ValueError, match="call backward without them"):
        mogradient.backward(
            [out[:, 0].pow(2).mean() + 0.1, out[:, 1].pow(2).mean() + 0.1],
            aggregator=name,
            recorder=recorder,
        )


def test_along_has_the_direction_as_its_gradient() -> None:
    params = [torch.randn(2, 3, requires_grad=True), torch.randn(4, requires_grad=True)]
    direction = torch.arange(10.0)
    grads = torch.autograd.grad(mogradient.along(direction, params), params)
    torch.testing.assert_close(torch.cat([g.flatten() for g in grads]), direction)
