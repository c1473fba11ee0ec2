"""The parameters-level Jacobian factorised through the LM head
(:mod:`mogradient_llm.objectives.logprob_jacobian`): each objective's gradient is the backward
of the cotangents ``aᵢₜ vₜ`` from the backbone's output plus the head's own gradient
``Σₜ aᵢₜ (e_{yₜ} − pₜ) hₜᵀ / T`` — on the tied row, its own row, or none when the head is frozen.

References: plain ``autograd`` Jacobians of the losses through an explicit log-softmax (float64,
no factorisation) and, in the adapter, of TRL's own float32 losses.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from mogradient import GramianAccumulator
from mogradient_llm.objectives.logprob_gramian import logprob_slopes
from mogradient_llm.objectives.logprob_jacobian import factorised_jacobian, plain_head

U64 = 2.0**-53
EPS = torch.finfo(torch.float32).eps
V, D, B, C = 11, 5, 3, 4


class _Policy(nn.Module):
    """An embedding, one tanh layer and a linear head (tied, untied or frozen)."""

    def __init__(self, head: str, bias: bool) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.embed = nn.Embedding(V, D).double()
        self.body = nn.Linear(D, D).double()
        self.head = nn.Linear(D, V, bias=bias).double()
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float64))
        if head == "tied":
            self.head.weight = self.embed.weight
        if head == "frozen":
            self.head.requires_grad_(False)

    def get_output_embeddings(self) -> nn.Module:
        return self.head

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.body(self.embed(ids)))


def _losses(logprobs: torch.Tensor, advantages: torch.Tensor) -> list[torch.Tensor]:
    """A clipped-ratio loss per advantage row (non-linear in the log-probs)."""
    ratio = torch.exp(logprobs - logprobs.detach() + 0.1)
    return [-(torch.minimum(ratio * a, ratio.clamp(0.8, 1.2) * a)).mean() for a in advantages]


@pytest.mark.parametrize("head", ["tied", "untied", "frozen"])
@pytest.mark.parametrize("bias", [False, True])
def test_factorised_jacobian_equals_autograd(head: str, bias: bool) -> None:
    """In float64 the factorisation is exact algebra, so it equals the autograd Jacobian of the
    losses through an explicit log-softmax within float64 rounding: each entry sums at most
    ``n = B·C·(V + D)`` products on either side, within ``γ_n`` of the sum of their absolute
    values; those terms are O(1) here (unit-normal weights, |tanh| ≤ 1, ``|aᵢₜ| ≤ 1.2/(B·C)``),
    so ``4 γ_n · n`` bounds every entry's difference."""
    torch.manual_seed(1)
    policy = _Policy(head, bias)
    params = [p for p in policy.parameters() if p.requires_grad]
    ids = torch.randint(0, V, (B, C + 1))
    targets = ids[:, 1:]
    temperature = 0.7
    hidden = policy(ids[:, :-1])
    advantages = torch.randn(2, B, C, dtype=torch.float64)

    logits = policy.head(hidden) / temperature
    logprobs = logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    losses = _losses(logprobs, advantages)
    rows = []
    for loss in losses:
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([torch.zeros_like(p).flatten() if g is None else g.flatten()
                               for p, g in zip(params, grads)]))  # fmt: skip
    expected = torch.stack(rows)

    leaf = logprobs.detach().requires_grad_()
    slopes = logprob_slopes(_losses(leaf, advantages), leaf)
    assert slopes is not None
    bias_ = policy.head.bias
    got, scale = factorised_jacobian(
        slopes, hidden, targets, policy.head.weight, params, temperature, bias_
    )
    assert scale == float(slopes.abs().max())
    n = B * C * (V + D)
    bound = 4 * n * (n * U64 / (1 - n * U64))
    torch.testing.assert_close(got * scale, expected, rtol=0, atol=bound)
    if head == "frozen":  # no head part: the head's columns are absent, the rest is the backbone
        assert all(p is not policy.head.weight for p in params)
    assert plain_head(policy)


def test_a_common_factor_of_the_slopes_leaves_the_jacobian_alone() -> None:
    """Slopes that differ by one factor (two token normalisers rounded differently) give the
    same float32 Jacobian bit for bit, the factor returned as the scale, which the accumulator
    keeps outside: the two Gramians differ by its square exactly as float64 products do."""
    policy = _Policy("tied", True).float()
    params = list(policy.parameters())
    ids = torch.randint(0, V, (B, C + 1), generator=torch.Generator().manual_seed(2))
    hidden = policy(ids[:, :-1])
    slopes = torch.randn(2, B, C, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    factor = 1 + 2.0**-28
    first, s1 = factorised_jacobian(slopes, hidden, ids[:, 1:], policy.head.weight, params)
    second, s2 = factorised_jacobian(
        slopes * factor, hidden, ids[:, 1:], policy.head.weight, params
    )
    assert torch.equal(first, second)
    assert s2 == pytest.approx(s1 * factor, rel=4 * U64)
    gramians = []
    for jacobian, scale in ((first, s1), (second, s2)):
        accumulator = GramianAccumulator("parameters", precision="float64")
        accumulator.add_jacobian(jacobian, scale)
        gramians.append(accumulator.gramian())
    torch.testing.assert_close(gramians[1], gramians[0] * factor**2, rtol=8 * U64, atol=0)


def test_a_head_with_lora_or_no_linear_is_not_plain() -> None:
    """A head with another trainable parameter (LoRA's adapters) or no ``nn.Linear`` is refused
    (the caller differentiates the parameters instead)."""
    policy = _Policy("untied", False)
    policy.head.register_parameter("lora_A", nn.Parameter(torch.zeros(2, D)))
    assert not plain_head(policy)
    policy.head = nn.Identity()  # type: ignore[assignment]
    assert not plain_head(policy)


# ---------------------------------------------------------------- in the TRL adapter

PROMPTS = 2


def _adapter_jacobian(algorithm: str, head: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The adapter's factorised parameters Jacobian (times its scale) on the fixed batch, TRL's
    own autograd Jacobian of its per-objective losses, and the completion tokens."""
    from mogradient_llm.integrations.trl import factorised
    from tests.test_trl_adapter_parity import _classes, _trl_losses
    from tests.trl_reference import NEW_SEED, G, perturb, trl_trainer

    t = trl_trainer(
        algorithm,
        PROMPTS,
        _classes(algorithm, True),
        num_iterations=2,
        aggregator="mgda",
        gramian_level="parameters",
    )
    model = t.model
    if head == "untied":
        model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())
    if head == "frozen":  # GPT-2 ties it to the input embedding: both are frozen
        model.lm_head.weight.requires_grad_(False)
    assert (model.get_output_embeddings().weight is model.get_input_embeddings().weight) == (
        head != "untied"
    )
    batch = t._generate_and_score_completions([{"prompt": "x"}] * (PROMPTS * G))
    perturb(model, NEW_SEED)
    seen: list[torch.Tensor] = []
    real = factorised.factorised_jacobian

    def spy(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, float]:
        jacobian, scale = real(*args, **kwargs)
        seen.append(jacobian.double() * scale)
        return jacobian, scale

    factorised.factorised_jacobian = spy  # type: ignore[assignment]
    try:
        t._compute_loss(model, batch)
    finally:
        factorised.factorised_jacobian = real  # type: ignore[assignment]
    assert len(seen) == 1  # the factorised path was taken
    losses, (params, _) = _trl_losses(t, batch, "parameters")
    rows = []
    for loss in losses:
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([torch.zeros_like(p).flatten() if g is None else g.flatten()
                               for p, g in zip(params, grads)]))  # fmt: skip
    tokens = int(batch["completion_mask"].sum())
    return seen[0], torch.stack(rows).double(), tokens


@pytest.mark.parametrize(
    "algorithm,head", [("grpo", "tied"), ("rloo", "tied"), ("grpo", "untied"), ("rloo", "frozen")]
)
def test_the_adapter_factorises_trls_parameter_jacobian(algorithm: str, head: str) -> None:
    """The adapter's factorised Jacobian equals the plain autograd Jacobian of TRL's own losses
    (a float32 backward through TRL's fused head each) within two float32 backwards of the same
    backbone from cotangents that differ by their float32 rounding: each row within
    ``ρ = tokens × 16 ε₃₂`` of TRL's in norm (``assert_grads_close``'s count)."""
    got, expected, tokens = _adapter_jacobian(algorithm, head)
    rho = tokens * 16 * EPS
    for g, e in zip(got, expected):
        assert float((g - e).norm()) <= rho * float(e.norm())


def test_scaled_jacobians_accumulate_as_their_products() -> None:
    """``add_jacobian(J, s)`` over micro-batches folds in ``s·J`` (the first scale kept
    outside, later ones as ratios): the Gramian and Jacobian equal those of ``add`` on the
    products, within float64 rounding of the rescaling (a few ulps of each entry); the features
    level refuses it."""
    generator = torch.Generator().manual_seed(4)
    parts = [(torch.randn(2, 7, generator=generator, dtype=torch.float64), s) for s in (0.3, 2.5)]
    scaled = GramianAccumulator("parameters", 2, precision="float64")
    plain = GramianAccumulator("parameters", 2, precision="float64")
    for jacobian, scale in parts:
        scaled.add_jacobian(jacobian, scale)
        plain.add_jacobian(jacobian * scale)
    torch.testing.assert_close(scaled.jacobian(), plain.jacobian(), rtol=8 * U64, atol=0)
    torch.testing.assert_close(scaled.gramian(), plain.gramian(), rtol=64 * U64, atol=0)
    with pytest.raises(ValueError, match="parameters level"):
        GramianAccumulator("features").add_jacobian(torch.eye(2))


def test_rloos_old_sums_keep_their_dtype() -> None:
    """RLOO's loss on a float64 copy of the log-probs (the factorised slopes) meets π_old's
    sequence sums rounded in float32, as TRL stores them (``(old * mask).sum(1)`` in float32):
    by hand, ``Σ_b w_b · (−A_b u_b)`` with ``u_b = exp(Σ ℓ − old₃₂ sum)`` (no clipping here),
    within a few float64 ulps; float64 sums of the same terms would be off by their float32
    rounding, which the example checks it has."""
    from mogradient_llm.estimators.rloo import MORLOOConfig, RLOOEstimator

    estimator = RLOOEstimator(
        MORLOOConfig(num_generations=2, batch_size=2, mini_batch_size=2), ["r"]
    )
    old = torch.tensor([[-7.1, -3.3, -9.7, -0.9], [-2.7, -0.1, -5.3, -8.9]])
    logprobs = old.double() + 0.01
    weights = torch.full((2, 4), 0.125)
    advantages = torch.tensor([[[1.0] * 4, [-1.0] * 4]])
    got, _ = estimator.policy_losses(logprobs, old, advantages, weights)
    sums32 = old.sum(1).double()
    assert bool((sums32 != old.double().sum(1)).any())  # the float32 sums are rounded
    ratio = torch.exp(logprobs.sum(1) - sums32)
    expected = (0.5 * -advantages[0, :, 0].double() * ratio).sum()
    torch.testing.assert_close(got[0], expected, rtol=16 * U64, atol=0)
