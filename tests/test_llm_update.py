"""The PPO update goes through one ``accelerator.backward`` for every aggregator: gradient
accumulation, loss scaling, weight normalisation, MORLHF's order, untied heads and LoRA."""

from __future__ import annotations

import pytest
import torch

from mogradient import get_aggregator, gramian_of
from mogradient_llm.estimators.advantages import gae, masked_whiten
from mogradient_llm.inputs.builtin_rewards import LengthReward, VaderReward
from mogradient_llm.loop.trainer import MOTrainer
from mogradient_llm.objectives.advantages import noon_clip
from tests.llm_fixtures import make_trainer, untied_lm_dir

SETTINGS = {
    "pama": {"aggregator": "pama"},
    "linear": {"aggregator": "linear", "aggregator_kwargs": {"preference": [0.7, 0.3]}},
    "mgda-parameters": {  # the full batch by the layer path, the halves by the Jacobian
        "aggregator": "mgda",
        "gramian_level": "parameters",
        "parameter_gramian": "layers",
    },
    "mgda-features": {"aggregator": "mgda", "gramian_level": "features"},
}


def _rewards() -> list:
    return [LengthReward(scale=20.0, low=0.0, high=2.0), VaderReward()]


def _batch(trainer: MOTrainer) -> dict:
    from mogradient_llm.inputs.rewards import score_all

    prompts = trainer.sample_prompts()
    rollout = trainer.generate(prompts)
    return trainer.prepare_batch(rollout, score_all(trainer.rewards, prompts, rollout.completions))


def _gradients_at_step(trainer: MOTrainer, batch: dict) -> tuple[list[torch.Tensor], dict]:
    """The (unscaled) gradients the optimiser steps on for one update on the whole batch."""
    inner = trainer.optimizer.optimizer
    captured: list[list[torch.Tensor]] = []

    def record(optimizer, args, kwargs) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        captured.append([p.grad.detach().clone() for p in params])

    handle = inner.register_step_pre_hook(record)
    stats = trainer.updater.update(batch, torch.arange(batch.input_ids.shape[0]), 1)
    handle.remove()
    assert len(captured) == 1, "one optimiser step per minibatch"
    return captured[0], stats


def _assert_same_gradients(got: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", list(SETTINGS))
def test_two_accumulated_half_batches_give_the_update_of_the_full_batch(name) -> None:
    # accelerate keeps one gradient-accumulation state per process: each trainer runs before
    # the next one is made.
    common = {"batch_size": 8, "mini_batch_size": 8, "max_grad_norm": None, **SETTINGS[name]}
    full = make_trainer(_rewards(), **common)
    batch = _batch(full)
    expected, full_stats = _gradients_at_step(full, batch)
    halves = make_trainer(_rewards(), gradient_accumulation_steps=2, **common)
    assert halves.accelerator.gradient_accumulation_steps == 2
    got, half_stats = _gradients_at_step(halves, batch)
    _assert_same_gradients(got, expected)
    for key in ("agg/weight/length", "agg/weight/vader"):  # decided here by Gramian methods
        assert (key in half_stats) == (key in full_stats)
        if key in full_stats:
            assert half_stats[key] == pytest.approx(full_stats[key], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("name", ["pama", "mgda-parameters", "mgda-features"])
def test_a_loss_scaler_scales_the_policy_update_too(name) -> None:
    """fp16's loss scaler multiplies the loss before the backward and divides the gradients
    after it; a policy direction written into ``.grad`` behind it came out 65536x too small.
    accelerate has no CPU fp16, so its scaler is set by hand: the same object an fp16 run uses.
    """
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    common = {"max_grad_norm": None, "mini_batch_size": 8, **SETTINGS[name]}
    plain = make_trainer(_rewards(), **common)
    batch = _batch(plain)
    expected, _ = _gradients_at_step(plain, batch)
    scaled = make_trainer(_rewards(), accelerator=accelerator, **common)
    got, _ = _gradients_at_step(scaled, batch)
    # Exact: 2¹⁶ times every loss, cotangent and gradient (and 4¹⁶ every Gramian entry) is a
    # power of two, so no rounding changes; a Gramian method's weights and PAMA's min/max are
    # invariant under it exactly, and the unscale by 2⁻¹⁶ is exact too.
    assert len(got) == len(expected)
    assert all(torch.equal(g, e) for g, e in zip(got, expected))


def test_an_accelerator_with_another_accumulation_is_refused() -> None:
    from accelerate import Accelerator

    with pytest.raises(ValueError, match="gradient_accumulation_steps=2"):
        make_trainer(
            _rewards(),
            accelerator=Accelerator(cpu=True, gradient_accumulation_steps=4),
            gradient_accumulation_steps=2,
        )


@pytest.mark.parametrize(("aggregator", "kwargs"), [("pcgrad", {"seed": 0}), ("cagrad", {})])
def test_weights_are_normalised_to_sum_one_unless_asked_not_to(aggregator, kwargs) -> None:
    trainer = make_trainer(_rewards(), aggregator=aggregator, aggregator_kwargs=kwargs)
    batch = _batch(trainer)
    index = torch.arange(4)
    losses, _, _, _ = trainer.updater.minibatch_losses(batch, index)
    params = list(trainer.policy.parameters())
    jac = torch.stack(
        [
            torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params, retain_graph=True)])
            for loss in losses
        ]
    )
    raw = get_aggregator(aggregator, **kwargs).weights(gramian_of(jac))
    assert float(raw.sum()) > 1.01  # these methods have a scale of their own
    stats = trainer.updater.update(batch, index, 1)
    logged = torch.tensor([stats["agg/weight/length"], stats["agg/weight/vader"]])
    torch.testing.assert_close(logged, (raw / raw.sum()).float(), rtol=1e-4, atol=1e-6)
    assert stats["agg/weight_sum"] == pytest.approx(float(raw.sum()), rel=1e-4)

    own_scale = make_trainer(
        _rewards(), aggregator=aggregator, aggregator_kwargs=kwargs, normalize_weights=False
    )
    own = own_scale.updater.update(batch, index, 1)
    logged = torch.tensor([own["agg/weight/length"], own["agg/weight/vader"]])
    torch.testing.assert_close(logged, raw.float(), rtol=1e-4, atol=1e-6)
    # Both trainers decide the same raw weights (same batch, same computation): the normalised
    # ones are those divided by their logged sum, exactly (one float64 division each).
    assert own["agg/weight_sum"] == stats["agg/weight_sum"]
    for key in ("agg/weight/length", "agg/weight/vader"):
        assert stats[key] == own[key] / own["agg/weight_sum"]


def test_a_linear_preference_is_a_point_of_the_simplex() -> None:
    trainer = make_trainer(
        _rewards(), aggregator="linear", aggregator_kwargs={"preference": [3, 1]}
    )
    stats = trainer.step()
    assert stats["agg/weight/length"] == pytest.approx(0.75)
    assert stats["agg/weight/vader"] == pytest.approx(0.25)
    assert stats["agg/weight_sum"] == pytest.approx(1.0)  # the preference is normalised


def test_morlhf_scalarises_the_advantages_before_whitening_and_noon() -> None:
    """PPO on Σ wᵢ rᵢ: GAE per objective is linear, so Σ wᵢ Aᵢ first, then whitening, then
    Noon — not Σ wᵢ max(whiten(Aᵢ), 0)."""
    trainer = make_trainer(
        _rewards(), aggregator="morlhf", aggregator_kwargs={"preference": [1, 1]}
    )
    batch = _batch(trainer)
    mask = batch.mask
    # Rebuild the per-objective GAE from the batch's returns and values: A = R - V.
    per_objective = (batch.estimate.returns - batch.estimate.old_values * mask) * mask
    scalarised = 0.5 * per_objective[0] + 0.5 * per_objective[1]
    expected = noon_clip(masked_whiten(scalarised.unsqueeze(0), mask))
    torch.testing.assert_close(batch.advantages, expected, rtol=1e-5, atol=1e-6)
    assert batch.advantages.shape[0] == 1


def test_opposite_advantages_cancel_under_morlhf() -> None:
    """A = (+1, −1), w = (½, ½): MORLHF's advantage is 0; the per-objective variant gave 0.5."""
    from mogradient_llm.loop.setup import objective_loss
    from tests.llm_fixtures import tiny_config

    combiner = objective_loss(tiny_config(aggregator="morlhf"), ["a", "b"])
    advantages = torch.stack([torch.ones(1, 3), -torch.ones(1, 3)])
    scalarised, stats = combiner.scalarize(advantages, torch.zeros(2))
    torch.testing.assert_close(scalarised, torch.zeros(1, 1, 3))
    assert stats["agg/weight/a"] == stats["agg/weight/b"] == 0.5
    rewards = torch.stack([torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.0, 0.0, -1.0]])])
    mask = torch.ones(1, 3)
    values = torch.zeros(2, 1, 3)
    per_objective, _ = gae(rewards, values, mask, 1.0, 0.95)
    summed, _ = gae(0.5 * rewards.sum(0, keepdim=True), values[:1], mask, 1.0, 0.95)
    torch.testing.assert_close(combiner.scalarize(per_objective, torch.zeros(2))[0], summed)


@pytest.mark.parametrize("level", ["features", "parameters"])
def test_untied_lm_head_trains_at_both_gramian_levels(level) -> None:
    trainer = make_trainer(
        _rewards(), lm_dir=untied_lm_dir(), aggregator="mgda", gramian_level=level
    )
    policy = trainer.policy
    assert policy.get_output_embeddings().weight is not policy.get_input_embeddings().weight
    head = policy.get_output_embeddings().weight.detach().clone()
    trainer.step()
    assert not torch.equal(head, policy.get_output_embeddings().weight)


def test_untied_lm_head_with_lora_at_the_features_level() -> None:
    trainer = make_trainer(
        _rewards(),
        lm_dir=untied_lm_dir(),
        aggregator="mgda",
        gramian_level="features",
        lora_r=4,
        lora_target_modules=["q_proj", "v_proj"],
    )
    trainable = {
        n: p.detach().clone() for n, p in trainer.policy.named_parameters() if p.requires_grad
    }
    assert trainable and all("lora_" in n for n in trainable)
    stats = trainer.step()
    assert stats["agg/weight_sum"] == pytest.approx(1.0)
    changed = [
        n
        for n, p in trainer.policy.named_parameters()
        if n in trainable and not torch.equal(p, trainable[n])
    ]
    assert changed
