"""The engine-agnostic multi-objective loss, called directly on hand-made advantages and
log-probabilities, against the formulas written out here for each kind: an advantage combiner
(PAMA with Noon), a loss weighting (linear), and a Gramian weighting (MGDA, k = 2) at the
features and the parameters level.

Tolerances: every expected value is computed here with the same float64 operations in another
order, so they agree to a few units of float64 rounding on sums of ≤ 24 terms of size ≤ 10
(γ₂₄·10 ≈ 3e-14); 1e-12 leaves a margin of 30.
"""

from __future__ import annotations

import pytest
import torch

from mogradient import get_aggregator
from mogradient_llm.objectives.advantages import Advantages
from mogradient_llm.objectives.loss import MultiObjectiveLoss, objective_losses
from mogradient_llm.objectives.surrogate import clipped_surrogate

TOL = {"rtol": 0.0, "atol": 1e-12}
EPS = 0.2
NAMES = ("helpful", "short")


def _mask() -> torch.Tensor:
    return torch.tensor(
        [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.float64
    )  # three completions of 3, 2 and 4 tokens


def _advantages() -> torch.Tensor:
    """[2, 3, 4] per-token advantages of two objectives, with signs that disagree."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 4, generator=g, dtype=torch.float64)


def _by_hand(
    logprobs: torch.Tensor, old: torch.Tensor, advantage: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """PPO's clipped surrogate, token mean: −Σ min(u A, clip(u, 1 ± ε) A) m / Σ m."""
    ratio = torch.exp(logprobs - old)
    per_token = -torch.minimum(ratio * advantage, ratio.clamp(1 - EPS, 1 + EPS) * advantage)
    return (per_token * mask).sum() / mask.sum()


def _policy(mask: torch.Tensor, logprobs: torch.Tensor, old: torch.Tensor):
    """The engine's loss of advantage rows [m, B, T]: our surrogate with token-mean weights."""
    weights = mask / mask.sum()
    return lambda rows: clipped_surrogate(logprobs, old, rows, weights, EPS)[0]


def _features(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A hidden state h [3, 4, 5] (leaf, with grad), the log-probs it gives and old ones."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(3, 4, 5, generator=g, dtype=torch.float64).requires_grad_()
    head = torch.randn(5, generator=g, dtype=torch.float64)
    logprobs = -torch.nn.functional.softplus(hidden @ head)
    old = logprobs.detach() + 0.5 * torch.randn(3, 4, generator=g, dtype=torch.float64)
    return hidden, logprobs, old


def _mgda_two(g1: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
    """MGDA's min-norm weights for two gradients (Sener & Koltun 2018, Algorithm 1)."""
    diff = g1 - g2
    a = float(torch.dot(g2 - g1, g2) / torch.dot(diff, diff))
    a = min(max(a, 0.0), 1.0)
    return torch.tensor([a, 1 - a], dtype=torch.float64)


def test_an_advantage_combiner_combines_after_noon_then_one_loss() -> None:
    """PAMA per token with Noon: the combined advantage of a token is the smallest clipped one
    (the closed form of min‖Σ wᵢ Aᵢ‖ on the simplex for non-negative scalars)."""
    mask, adv = _mask(), _advantages()
    _, logprobs, old = _features()
    loss = MultiObjectiveLoss(get_aggregator("pama"), NAMES, noon=True)
    out = loss(Advantages.of(adv, NAMES), _policy(mask, logprobs, old), mask)
    combined = torch.minimum(adv[0].clamp(min=0), adv[1].clamp(min=0)) * mask
    torch.testing.assert_close(out.loss, _by_hand(logprobs, old, combined, mask), **TOL)
    assert out.weights is None and out.losses.shape == (1,)


def test_a_loss_weighting_scalarizes_the_advantages_then_one_loss() -> None:
    """linear with preference p: the loss of Σ pᵢ Aᵢ (MORLHF), not Σ pᵢ L(Aᵢ)."""
    mask, adv = _mask(), _advantages()
    _, logprobs, old = _features()
    p = [0.7, 0.3]
    loss = MultiObjectiveLoss(get_aggregator("linear", preference=p), NAMES)
    scores = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.0, 4.0]], dtype=torch.float64)
    out = loss(
        Advantages.of(adv, NAMES),
        _policy(mask, logprobs, old),
        mask,
        losses=objective_losses(scores),
    )
    expected = _by_hand(logprobs, old, (p[0] * adv[0] + p[1] * adv[1]) * mask, mask)
    torch.testing.assert_close(out.loss, expected, **TOL)
    assert out.stats["agg/weight/helpful"] == pytest.approx(0.7, abs=1e-15)
    # Σ pᵢ L(Aᵢ) differs here: the clip makes the surrogate piecewise linear in A
    split = sum(pi * _by_hand(logprobs, old, a * mask, mask) for pi, a in zip(p, adv))
    assert abs(float(split.detach() - expected.detach())) > 1e-3


def test_a_gramian_weighting_at_the_features_level() -> None:
    """MGDA: the weights from the Gramian of ∂Lᵢ/∂h (h the hidden state), then Σ wᵢ Lᵢ; its
    gradient is the min-norm combination of the two gradients."""
    mask, adv = _mask(), _advantages()
    hidden, logprobs, old = _features()
    loss = MultiObjectiveLoss(get_aggregator("mgda"), NAMES, level="features")
    out = loss(Advantages.of(adv, NAMES), _policy(mask, logprobs, old), mask, gradient_of=hidden)
    each = [_by_hand(logprobs, old, a * mask, mask) for a in adv]
    grads = [torch.autograd.grad(li, hidden, retain_graph=True)[0].flatten() for li in each]
    w = _mgda_two(*grads)
    torch.testing.assert_close(out.weights, w, **TOL)
    torch.testing.assert_close(out.loss, w[0] * each[0] + w[1] * each[1], **TOL)
    (got,) = torch.autograd.grad(out.loss, hidden)
    torch.testing.assert_close(got.flatten(), w[0] * grads[0] + w[1] * grads[1], **TOL)
    cos = float(torch.dot(*grads) / (grads[0].norm() * grads[1].norm()))
    assert out.stats["diag/grad_cos/helpful/short"] == pytest.approx(cos, abs=1e-12)


def test_a_gramian_weighting_at_the_parameters_level() -> None:
    """MGDA over the parameters (a linear head W): the Gramian of ∂Lᵢ/∂W."""
    mask, adv = _mask(), _advantages()
    g = torch.Generator().manual_seed(2)
    features = torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
    weight = torch.randn(5, generator=g, dtype=torch.float64).requires_grad_()
    logprobs = -torch.nn.functional.softplus(features @ weight)
    old = logprobs.detach() - 0.05
    loss = MultiObjectiveLoss(get_aggregator("mgda"), NAMES, level="parameters")
    out = loss(Advantages.of(adv, NAMES), _policy(mask, logprobs, old), mask, gradient_of=[weight])
    each = [_by_hand(logprobs, old, a * mask, mask) for a in adv]
    grads = [torch.autograd.grad(li, weight, retain_graph=True)[0] for li in each]
    w = _mgda_two(*grads)
    torch.testing.assert_close(out.weights, w, **TOL)
    torch.testing.assert_close(out.loss, w[0] * each[0] + w[1] * each[1], **TOL)


def test_per_sample_advantages_are_spread_over_their_tokens() -> None:
    """[k, B] advantages (one per completion, GRPO's) give the same loss as [k, B, T] ones."""
    mask = _mask()
    _, logprobs, old = _features()
    per_sample = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.2, -1.0]], dtype=torch.float64)
    loss = MultiObjectiveLoss(get_aggregator("pama"), NAMES, noon=False)
    a = loss(Advantages.of(per_sample, NAMES), _policy(mask, logprobs, old), mask)
    b = loss(
        Advantages.of(per_sample[:, :, None].expand(2, 3, 4).clone(), NAMES),
        _policy(mask, logprobs, old),
        mask,
    )
    torch.testing.assert_close(a.loss, b.loss, **TOL)


def test_bad_inputs_name_the_problem() -> None:
    mask, adv = _mask(), _advantages()
    hidden, logprobs, old = _features()
    policy = _policy(mask, logprobs, old)
    with pytest.raises(ValueError, match="one name per row"):
        Advantages.of(adv, ["only-one"])
    with pytest.raises(ValueError, match="this loss combines"):
        MultiObjectiveLoss(get_aggregator("pama"), NAMES)(
            Advantages.of(adv, ("a", "b")), policy, mask
        )
    with pytest.raises(ValueError, match="pass gradient_of"):
        MultiObjectiveLoss(get_aggregator("upgrad"), NAMES)(Advantages.of(adv, NAMES), policy, mask)
    with pytest.raises(ValueError, match="pass losses"):
        MultiObjectiveLoss(get_aggregator("mean"), NAMES)(Advantages.of(adv, NAMES), policy, mask)
    with pytest.raises(TypeError, match="Aggregator instance"):
        MultiObjectiveLoss("mgda", NAMES)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'features' or 'parameters'"):
        MultiObjectiveLoss(get_aggregator("mgda"), NAMES, level="layers")  # type: ignore[arg-type]
