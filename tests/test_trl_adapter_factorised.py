"""The features-level Gramian factorised through the LM head
(:mod:`mogradient_llm.objectives.logprob_gramian`): ``G_ij = Σₜ aᵢₜ aⱼₜ ‖vₜ‖²`` equals the
Gramian of the exact hidden-state gradients of TRL's policy losses for every loss type the
adapter supports, and of our loop's losses; where the structure does not hold (a soft-capped
or scaled head, a loss that differentiates the entropies) the hidden state is differentiated.

The reference (:mod:`tests.logprob_reference`) differentiates TRL's own loss code in float64
through an explicit float64 LM head at TRL's forward, with no factorisation; both sides are
float64, so the bound (``factorisation_error``) is float64 rounding.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import GPT2Config

from mogradient import GramianAccumulator
from mogradient_llm.loop.update import LossScale
from mogradient_llm.objectives import logprob_gramian as lg
from tests.logprob_reference import exact_gradients, factorisation_error
from tests.trl_reference import NEW_SEED, G, our_rollout, our_trainer, perturb, rewards, trl_trainer

PROMPTS = 2
U64 = 2.0**-53
LOSSES = [
    ("grpo", {"loss_type": "grpo", "temperature": 0.7}),
    ("grpo", {"loss_type": "dapo"}),
    ("grpo", {"loss_type": "dr_grpo"}),
    ("grpo", {"loss_type": "bnpo"}),
    ("grpo", {"loss_type": "cispo"}),
    ("grpo", {"loss_type": "sapo"}),
    ("grpo", {"loss_type": "luspo"}),
    ("grpo", {"loss_type": "vespo"}),
    ("grpo", {"loss_type": "grpo", "importance_sampling_level": "sequence"}),
    ("rloo", {}),
]


def _gamma(n: int) -> float:
    return n * U64 / (1 - n * U64)


def _adapter(algorithm: str, **args: Any) -> tuple[Any, dict[str, Any]]:
    """The adapter (UPGrad, features level) on the fixed batch, π_old kept, the policy moved."""
    from mogradient_llm.integrations import trl as adapter

    name = algorithm.upper()
    classes = (getattr(adapter, f"MO{name}Config"), getattr(adapter, f"MO{name}Trainer"))
    t = trl_trainer(
        algorithm,
        PROMPTS,
        classes,
        num_iterations=2,
        aggregator="upgrad",
        gramian_level="features",
        **args,
    )
    batch = t._generate_and_score_completions([{"prompt": "x"}] * (PROMPTS * G))
    perturb(t.model, NEW_SEED)
    return t, batch


def _decided_gramian(t: Any, batch: dict[str, Any]) -> torch.Tensor:
    """The Gramian the adapter decides from in one ``_compute_loss``."""
    seen: list[torch.Tensor] = []
    decide = t.mo_objective.decide

    def spy(gramian: torch.Tensor, losses: torch.Tensor | None = None) -> Any:
        seen.append(gramian)
        return decide(gramian, losses)

    t.mo_objective.decide = spy
    t._compute_loss(t.model, batch)
    return seen[0]


@pytest.mark.parametrize("algorithm,args", LOSSES, ids=lambda v: str(v))
def test_the_factorised_gramian_is_that_of_the_hidden_state_gradients(
    algorithm: str, args: dict[str, Any]
) -> None:
    """For each loss type (ratios clipped or gated, token or sequence importance weights, every
    normalisation), the adapter's Gramian equals ``J Jᵀ`` of TRL's exact hidden-state
    gradients within ``factorisation_error`` — float64 rounding, ≈ 1e-11 of its entries here
    (checked: the float32 gradients of the former path sit ≈ 1e-7 away)."""
    t, batch = _adapter(algorithm, **args)
    got = _decided_gramian(t, batch)
    jacobian, slopes = exact_gradients(t, batch)
    expected = jacobian @ jacobian.T
    bound = factorisation_error(
        slopes, jacobian, t.model.get_output_embeddings().weight, t.temperature
    )
    assert float(bound.max()) < 1e-9 * float(expected.abs().max())
    assert bool(((got - expected).abs() <= bound).all()), (got - expected).abs().max()


def test_head_gradient_norms_over_vocabulary_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """``‖∂ℓₜ/∂hₜ‖²`` by the online softmax over vocabulary tiles (7 columns, 3 tokens a tile:
    uneven last tiles, targets in every tile) equals autograd's of a float64 log-softmax with
    bias and temperature. Bound: ``‖vₜ‖ ≤ β = 2 maxⱼ‖wⱼ‖ / T`` (the bias moves ``pₜ`` only), each
    side within
    ``δ = 8γ_{V+d}β`` of the exact ``vₜ``, so ``‖vₜ‖²`` within ``(2β + δ)δ``."""
    monkeypatch.setattr(lg, "VOCAB_CHUNK", 7)
    monkeypatch.setattr(lg, "TILE_ELEMENTS", 21)
    generator = torch.Generator().manual_seed(0)
    n, vocab, dim, temperature = 10, 30, 5, 0.8
    hidden = torch.randn(n, dim, generator=generator)
    weight = torch.randn(vocab, dim, generator=generator)
    bias = torch.randn(vocab, generator=generator)
    targets = torch.randint(0, vocab, (n,), generator=generator)
    got = lg.head_gradient_norms(hidden, weight, targets, temperature, bias)
    h = hidden.double().requires_grad_()
    logits = (h @ weight.double().T + bias.double()) / temperature
    picked = logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).sum()
    (grad,) = torch.autograd.grad(picked, h)
    expected = grad.square().sum(-1)
    beta = 2 * float(weight.double().norm(dim=-1).max()) / temperature
    delta = 8 * _gamma(vocab + dim) * beta
    torch.testing.assert_close(got, expected, rtol=0, atol=(2 * beta + delta) * delta)
    assert float(expected.min()) > 1e3 * (2 * beta + delta) * delta  # the check can fail


def test_tokens_that_do_not_line_up_are_refused() -> None:
    with pytest.raises(ValueError, match="same tokens"):
        lg.token_gramian(
            torch.ones(2, 3, 4),
            torch.ones(3, 5, 8),
            torch.zeros(3, 4, dtype=torch.long),
            torch.ones(9, 8),
        )


def test_head_transform_names_what_changes_the_logits() -> None:
    assert lg.head_transform(GPT2Config()) is None
    assert (
        lg.head_transform(GPT2Config(final_logit_softcapping=30.0))
        == "final_logit_softcapping=30.0"
    )
    assert lg.head_transform(GPT2Config(logits_scaling=4.0)) == "logits_scaling=4.0"
    assert lg.head_transform(GPT2Config(logit_scale=1.0)) is None


def _float32_gramian(t: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The float64 Gramian of TRL's float32 hidden-state gradients, and ``γ_d ‖gᵢ‖‖gⱼ‖``."""
    base = type(t).__mro__[2]
    hidden: list[torch.Tensor] = []
    handle = t.model.transformer.register_forward_hook(
        lambda m, a, out: hidden.append(out.last_hidden_state)
    )
    rows = []
    try:
        for column in batch["objective_advantages"].T:
            loss = base._compute_loss(t, t.model, {**batch, "advantages": column})
            rows.append(torch.autograd.grad(loss, hidden[-1])[0].flatten().double())
    finally:
        handle.remove()
    jacobian = torch.stack(rows)
    norms = jacobian.norm(dim=-1)
    return jacobian @ jacobian.T, 2 * _gamma(jacobian.shape[1]) * torch.outer(norms, norms)


def test_a_soft_capped_head_differentiates_the_hidden_state() -> None:
    """A config that soft-caps the logits (TRL's head would apply it): no factorisation, the
    Gramian of the k backward passes through TRL's head (the float32 gradients' float64
    product, to its rounding), not the factorised one (which sits ≈ 1e-7 of it away)."""
    t, batch = _adapter("grpo")
    t.model.config.final_logit_softcapping = 30.0  # read by our check; TRL patched its head already
    got = _decided_gramian(t, batch)
    expected, bound = _float32_gramian(t, batch)
    assert bool(((got - expected).abs() <= bound).all())
    t.model.config.final_logit_softcapping = None
    factorised = _decided_gramian(t, batch)
    assert float((factorised - expected).abs().max()) > float(bound.max())


def test_a_loss_that_differentiates_the_entropies_is_not_factorised() -> None:
    """A loss reading the entropies with grad (not a function of the log-probs alone) gets
    ``None`` (the caller differentiates the hidden state); the same loss without them a
    Gramian."""
    from mogradient_llm.integrations.trl.factorised import logprob_gramian
    from mogradient_llm.integrations.trl.forward import one_forward
    from mogradient_llm.integrations.trl.hidden import last_hidden_state

    t, batch = _adapter("grpo")
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    rows = batch["objective_advantages"].T

    def loss_of(entropy: float) -> Any:
        def compute_loss(model: Any, inputs: dict[str, Any]) -> torch.Tensor:
            logps, entropies, _ = t._get_per_token_logps_and_entropies(
                model, ids, mask, batch["completion_ids"].shape[1], compute_entropy=True
            )
            policy = (logps * inputs["advantages"].unsqueeze(1) * batch["completion_mask"]).sum()
            return policy + entropy * entropies.sum()

        return compute_loss

    for entropy, factorised in ((0.1, False), (0.0, True)):
        with one_forward(t) as forward, last_hidden_state(t.model) as hidden:
            got = logprob_gramian(
                t, t.model, t.model, batch, rows, loss_of(entropy), forward, hidden
            )
        assert (got is not None) == factorised
        assert forward.outputs is not None  # TRL's forward ran either way


def test_our_loop_factorises_its_features_gramian() -> None:
    """Our loop's features level (one micro-batch) decides from the exact Gramian of its own
    policy losses' hidden-state gradients (float64 through an explicit head at its forward),
    within the same bound as the adapter's."""
    ours = our_trainer(
        "grpo", PROMPTS, num_iterations=2, aggregator="upgrad", gramian_level="features"
    )
    batch = ours.prepare_batch(our_rollout(PROMPTS), rewards(PROMPTS))
    perturb(ours.policy, NEW_SEED)
    updater = ours.updater
    index = torch.arange(PROMPTS * G)
    got, _ = updater._policy_gramian(batch, [index], LossScale.of(batch, index), 1)
    (losses, _, hidden, _), rows = updater._forward(batch, index)
    q = batch.query_length
    weight = ours.policy.get_output_embeddings().weight
    h = hidden.detach().double().requires_grad_()
    logits = h[:, q - 1 : -1] @ weight.detach().double().T / updater.temperature
    exact = logits.log_softmax(-1).gather(-1, batch.input_ids[:, q:].unsqueeze(-1)).squeeze(-1)
    logprobs = rows.logprobs.detach().double() + (exact - exact.detach())
    policy, _ = updater.estimator.policy_losses(
        logprobs, rows.old_logprobs, batch.advantages, rows.weights
    )
    grads = [torch.autograd.grad(loss, [h, logprobs], retain_graph=True) for loss in policy]
    jacobian = torch.stack([g[0].flatten() for g in grads])
    slopes = torch.stack([g[1] for g in grads])
    expected = jacobian @ jacobian.T
    bound = factorisation_error(slopes, jacobian, weight, updater.temperature)
    assert float(bound.max()) < 1e-9 * float(expected.abs().max())
    assert bool(((got - expected).abs() <= bound).all()), (got - expected).abs().max()


def test_micro_batch_gramians_add_up_at_the_features_level_only() -> None:
    """``add_gramian`` folds a formed Gramian in as ``add`` folds the losses' (the same
    ``Σ Gₘ / M²``), and refuses the parameters level, where Jacobians are averaged first."""
    generator = torch.Generator().manual_seed(1)
    features = [
        torch.randn(3, 4, generator=generator, dtype=torch.float64, requires_grad=True)
        for _ in range(2)
    ]
    by_losses = GramianAccumulator("features", 2, precision="float64")
    by_gramians = GramianAccumulator("features", 2, precision="float64")
    for x in features:
        losses = [x.sin().sum(), (x * x).sum()]
        by_losses.add(losses, [x])
        rows = torch.stack([x.cos().flatten(), 2 * x.flatten()]).detach()
        by_gramians.add_gramian(rows @ rows.T)
    torch.testing.assert_close(
        by_gramians.gramian(), by_losses.gramian(), rtol=4 * _gamma(12), atol=0
    )
    with pytest.raises(ValueError, match="features level only"):
        GramianAccumulator("parameters").add_gramian(torch.eye(2))
