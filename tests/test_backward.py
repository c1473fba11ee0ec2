"""``mogradient.backward``: every path writes the aggregated direction into ``.grad``."""

from __future__ import annotations

import pytest
import torch

import mogradient
from mogradient import get_aggregator
from mogradient.aggregators import gramian_of
from tests.bounds import assert_weighted_gradient


class TwoHeads(torch.nn.Module):
    """A shared trunk with one head per objective, the usual multi-task shape."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = torch.nn.Linear(4, 5)
        self.heads = torch.nn.ModuleList([torch.nn.Linear(5, 1) for _ in range(2)])

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        h = torch.tanh(self.trunk(x))
        losses = [self.heads[0](h).pow(2).mean(), (self.heads[1](h) - 1).abs().mean()]
        return losses, h


def _data() -> torch.Tensor:
    return torch.randn(8, 4, generator=torch.Generator().manual_seed(1))


def _jacobian(model: torch.nn.Module, x: torch.Tensor | None = None) -> torch.Tensor:
    losses, _ = model(_data() if x is None else x)
    params = list(model.parameters())
    rows = []
    for loss in losses:
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        rows.append(
            torch.cat(
                [
                    (torch.zeros_like(p) if g is None else g).reshape(-1)
                    for p, g in zip(params, grads)
                ]
            )
        )
    return torch.stack(rows)


def _grad_vector(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize("name", ["mgda", "pcgrad", "cagrad", "mean", "linear", "pama"])
def test_parameter_mode_writes_aggregated_direction(name: str) -> None:
    model = TwoHeads()
    jac = _jacobian(model)
    expected = get_aggregator(name)(jac)
    losses, _ = model(_data())
    weights = mogradient.backward(losses, model.parameters(), aggregator=name)
    if weights is None:
        # PAMA: the same per-objective autograd.grad calls (batched=False) give the same
        # Jacobian, and its coordinate-wise clamp(0, min, max) is exact: equal, not close.
        assert torch.equal(_grad_vector(model), expected)
    else:  # two float32 evaluations of Σ wᵢ∇Lᵢ: 2·γ_{k+32}·|w|ᵀ|J| (assert_weighted_gradient)
        assert_weighted_gradient(_grad_vector(model), expected, weights, jac)


@pytest.mark.parametrize("name", ["mgda", "pcgrad", "cagrad"])
def test_through_backward_gives_the_same_direction_by_one_weighted_backward(name: str) -> None:
    model = TwoHeads()
    expected = get_aggregator(name)(_jacobian(model))
    losses, _ = model(_data())
    weights = mogradient.backward(
        losses, model.parameters(), aggregator=name, through_backward=True
    )
    # One float32 backward of Σ wᵢLᵢ against w @ J: the chain rule's rounding bound
    # (assert_weighted_gradient: 2·γ_{k+32}·|w|ᵀ|J|), not an observed rtol.
    assert_weighted_gradient(_grad_vector(model), expected, weights, _jacobian(model))
    torch.testing.assert_close(weights, get_aggregator(name).weights(gramian_of(_jacobian(model))))


def test_through_backward_is_scaled_like_any_backward() -> None:
    """A loss scaler (fp16) multiplies every loss; the weights ignore the scale and the
    gradient is scaled as a whole, so unscaling gives the unscaled update."""
    plain, scaled = TwoHeads(), TwoHeads()
    losses, _ = plain(_data())
    mogradient.backward(losses, plain.parameters(), aggregator="mgda", through_backward=True)
    scale = 2.0**16
    losses, _ = scaled(_data())
    mogradient.backward(
        [scale * loss for loss in losses],
        scaled.parameters(),
        aggregator="mgda",
        through_backward=True,
    )
    torch.testing.assert_close(_grad_vector(scaled) / scale, _grad_vector(plain))


def test_through_backward_needs_a_gramian_method() -> None:
    model = TwoHeads()
    losses, _ = model(_data())
    with pytest.raises(ValueError, match="through_backward"):
        mogradient.backward(losses, model.parameters(), aggregator="pama", through_backward=True)


def test_returns_the_weights_it_used() -> None:
    model = TwoHeads()
    jac = _jacobian(model)
    losses, _ = model(_data())
    w = mogradient.backward(losses, list(model.parameters()), aggregator="mgda")
    torch.testing.assert_close(w, get_aggregator("mgda").weights(gramian_of(jac)))
    assert mogradient.backward(model(_data())[0], aggregator="pama") is None


@pytest.mark.parametrize("name", ["mgda", "pcgrad", "cagrad"])
def test_feature_mode_weighs_by_feature_gramian(name: str) -> None:
    model = TwoHeads()
    losses, h = model(_data())
    feature_jac = torch.stack(
        [torch.autograd.grad(loss, h, retain_graph=True)[0].reshape(-1) for loss in losses]
    )
    expected_w = get_aggregator(name).weights(gramian_of(feature_jac))
    w = mogradient.backward(losses, model.parameters(), features=h, aggregator=name)
    torch.testing.assert_close(w, expected_w)

    reference = TwoHeads()
    ref_losses, _ = reference(_data())
    sum(float(wi) * li for wi, li in zip(expected_w, ref_losses)).backward()
    # two float32 evaluations of Σ wᵢ∇Lᵢ: 2·γ_{k+32}·|w|ᵀ|J| (assert_weighted_gradient)
    assert_weighted_gradient(_grad_vector(model), _grad_vector(reference), w, _jacobian(reference))


def test_loss_mode_is_one_weighted_backward() -> None:
    model, reference = TwoHeads(), TwoHeads()
    losses, _ = model(_data())
    mogradient.backward(losses, aggregator="linear", preference=[0.2, 0.8])
    ref_losses, _ = reference(_data())
    (0.2 * ref_losses[0] + 0.8 * ref_losses[1]).backward()
    torch.testing.assert_close(_grad_vector(model), _grad_vector(reference))


def test_params_default_to_graph_leaves_and_grads_accumulate() -> None:
    model = TwoHeads()
    for _ in range(2):
        losses, _ = model(_data())
        mogradient.backward(losses, aggregator="mean")
    reference = TwoHeads()
    ref_losses, _ = reference(_data())
    (2 * 0.5 * (ref_losses[0] + ref_losses[1])).backward()
    torch.testing.assert_close(_grad_vector(model), _grad_vector(reference))


def test_accepts_a_loss_vector_and_trains() -> None:
    torch.manual_seed(0)
    x = torch.nn.Parameter(torch.tensor([2.0, -1.0]))
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    opt = torch.optim.SGD([x], lr=0.1)
    first = None
    for _ in range(50):
        opt.zero_grad()
        losses = ((x - targets) ** 2).sum(dim=1)
        first = first if first is not None else losses.detach().clone()
        mogradient.backward(losses, [x], aggregator="mgda")
        opt.step()
    final = ((x.detach() - targets) ** 2).sum(dim=1)
    assert torch.all(final < first)  # MGDA improved both objectives from a dominated start


def test_nonfinite_loss_names_objective() -> None:
    model = TwoHeads()
    losses, _ = model(_data())
    with pytest.raises(ValueError, match="objective 1 is not finite"):
        mogradient.backward([losses[0], losses[1] * float("nan")], aggregator="mgda")


def test_nonfinite_gradient_names_objective() -> None:
    x = torch.nn.Parameter(torch.tensor([0.0, 1.0]))
    losses = [x.sum(), torch.sqrt(x).sum()]  # d sqrt(x)/dx is inf at 0
    with pytest.raises(ValueError, match="gradient of objective 1"):
        mogradient.backward(losses, [x], aggregator="mgda")


def test_bad_arguments() -> None:
    model = TwoHeads()
    losses, h = model(_data())
    with pytest.raises(ValueError, match="representation-level"):
        mogradient.backward(losses, features=h, aggregator="pama")
    with pytest.raises(ValueError, match="zero losses"):
        mogradient.backward([], aggregator="mgda")
    with pytest.raises(ValueError, match="scalar tensor"):
        mogradient.backward([h, losses[0]], aggregator="mgda")
    with pytest.raises(ValueError, match="params is empty"):
        mogradient.backward(losses, [], aggregator="mgda")
    with pytest.raises(ValueError, match="does not require grad"):
        mogradient.backward(losses, [torch.ones(2)], aggregator="mgda")
    with pytest.raises(ValueError, match="do not depend"):
        mogradient.backward([torch.tensor(1.0), torch.tensor(2.0)], aggregator="mgda")
    with pytest.raises(ValueError, match="unknown aggregator"):
        mogradient.backward(losses, aggregator="nash")


class DyadicHeads(TwoHeads):
    """TwoHeads with ReLU for tanh, weights and inputs in {−½, 0, ½}: every value its forward
    and backward form is a multiple of 2⁻⁸ below 2⁸ in size, every product of two of them and
    every sum of 40 such products fits in float32's 24-bit significand, so all of it is
    exact and any order of summation gives the same bits."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(2)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randint(-1, 2, p.shape, generator=g) / 2)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        h = torch.relu(self.trunk(x))
        losses = [self.heads[0](h).pow(2).mean(), (self.heads[1](h) - 1).abs().mean()]
        return losses, h


@pytest.mark.parametrize("level", ["parameters", "features"])
def test_gramian_accumulator_over_micro_batches_is_the_full_batch_gramian(level) -> None:
    """Two half-batches whose losses are each half the full batch's mean loss (so their mean
    is the full loss) give the Gramian of the full batch: exactly, on a model whose arithmetic
    is exact (DyadicHeads), so the only difference left would be the accumulator's algebra
    (the mean Jacobian's Gramian, the block sum of the features' Gramians over (M·R)²)."""
    model = DyadicHeads()
    params = list(model.parameters())
    x = torch.randint(-1, 2, (8, 4), generator=torch.Generator().manual_seed(1)) / 2
    if level == "features":
        losses, h = model(x)
        rows = [torch.autograd.grad(loss, h, retain_graph=True)[0].reshape(-1) for loss in losses]
        expected = gramian_of(torch.stack(rows))
    else:
        expected = gramian_of(_jacobian(model, x))
    exact = gramian_of(torch.stack(rows).double()) if level == "features" else None
    accumulator = mogradient.GramianAccumulator(level, n_micro_batches=2)
    for half in x.chunk(2):
        half_losses, half_h = model(half)  # means over 4 rows: the full mean is their mean
        accumulator.add(half_losses, [half_h] if level == "features" else params)
    assert torch.equal(accumulator.gramian(), expected)
    if exact is not None:  # the premise: float32 blocks gave the float64 Gramian's bits
        assert torch.equal(expected, exact)
