"""The multi-objective PPO trainer: updates, Noon, aggregation levels, errors, checkpoints."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from mogradient import get_aggregator, gramian_of
from mogradient_llm.estimators import MOPPOConfig
from mogradient_llm.estimators.value_heads import PolicyWithValueHeads
from mogradient_llm.inputs.builtin_rewards import LengthReward, VaderReward
from mogradient_llm.inputs.rewards import Reward, RewardError
from mogradient_llm.loop.checkpoint import STATE_FILE
from mogradient_llm.loop.trainer import MOTrainer
from tests.llm_fixtures import load_tiny_lm, make_trainer, tiny_config, tiny_prompts


def _rewards() -> list:
    return [LengthReward(scale=20.0, low=0.0, high=2.0), VaderReward()]


def _snapshot(trainer: MOTrainer) -> dict[str, torch.Tensor]:
    module = trainer.accelerator.unwrap_model(trainer.model)
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _batch(trainer: MOTrainer) -> dict:
    prompts = trainer.sample_prompts()
    rollout = trainer.generate(prompts)
    from mogradient_llm.inputs.rewards import score_all

    return trainer.prepare_batch(rollout, score_all(trainer.rewards, prompts, rollout.completions))


def test_one_ppo_step_changes_the_policy_and_the_heads() -> None:
    trainer = make_trainer(_rewards())
    before = _snapshot(trainer)
    stats = trainer.step()
    after = _snapshot(trainer)
    assert trainer.step_count == 1
    assert not torch.equal(before["value_head.weight"], after["value_head.weight"])
    policy_keys = [k for k in before if k.startswith("policy.")]
    assert any(not torch.equal(before[k], after[k]) for k in policy_keys)
    for key in (
        "objective/kl",
        "policy/clipfrac_avg",
        "objective/scores/length",
        "objective/scores/vader",
        "agg/weight/length",
        "agg/weight/vader",
        "agg/s_star",
        "time/step_s",
        "loss/value_avg",
    ):
        assert key in stats, key
    assert len(trainer.last_samples) == 8 and "vader" in trainer.last_samples[0]


@pytest.mark.parametrize("aggregator", ["pama", "linear", "mgda"])
def test_noon_makes_every_advantage_used_non_negative(aggregator) -> None:
    trainer = make_trainer(_rewards(), aggregator=aggregator)
    batch = _batch(trainer)
    assert torch.all(batch.advantages >= 0)
    assert torch.all(batch.objective_advantages >= 0)
    assert float(batch.advantages.max()) > 0


def test_without_noon_negative_advantages_are_kept() -> None:
    trainer = make_trainer(_rewards(), aggregator="linear", noon=False)
    assert float(_batch(trainer).advantages.min()) < 0


@pytest.mark.parametrize("granularity", ["token", "batch"])
def test_pama_advantage_in_the_trainer(granularity) -> None:
    trainer = make_trainer(_rewards(), aggregator_kwargs={"granularity": granularity})
    batch = _batch(trainer)
    clipped, mask = batch.objective_advantages, batch.mask
    if granularity == "token":
        expected = clipped.min(0).values * mask
    else:
        means = torch.stack([a[mask.bool()].mean() for a in clipped])
        expected = clipped[int(means.argmin())] * mask
    torch.testing.assert_close(batch.advantages[0], expected)


def test_linear_weights_come_from_the_registry() -> None:
    trainer = make_trainer(
        _rewards(), aggregator="morlhf", aggregator_kwargs={"preference": [0.8, 0.2]}
    )
    stats = trainer.step()
    assert stats["agg/weight/length"] == pytest.approx(0.8)
    assert stats["agg/weight/vader"] == pytest.approx(0.2)


@pytest.mark.parametrize("level", ["parameters", "features"])
@pytest.mark.parametrize(
    ("aggregator", "kwargs"), [("mgda", {}), ("pcgrad", {"seed": 3}), ("cagrad", {"c": 0.4})]
)
def test_gramian_modes_use_the_registry_weights_of_the_measured_gramian(
    aggregator, kwargs, level
) -> None:
    trainer = make_trainer(
        _rewards(), aggregator=aggregator, aggregator_kwargs=kwargs, gramian_level=level
    )
    batch = _batch(trainer)
    index = torch.arange(4)
    losses, _, hidden, _ = trainer.updater.minibatch_losses(batch, index)
    inputs = [hidden] if level == "features" else list(trainer.policy.parameters())
    rows = [
        torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, inputs, retain_graph=True)])
        for loss in losses
    ]
    expected = copy.deepcopy(trainer.aggregator).weights(gramian_of(torch.stack(rows)))
    assert torch.is_tensor(expected) and expected.dtype == torch.float64
    reference = get_aggregator(aggregator, **kwargs).weights(gramian_of(torch.stack(rows)))
    torch.testing.assert_close(expected, reference)

    before = _snapshot(trainer)
    stats = trainer.updater.update(batch, index, 1)
    got = torch.tensor([stats["agg/weight/length"], stats["agg/weight/vader"]], dtype=torch.float64)
    torch.testing.assert_close(got, expected / expected.sum(), rtol=1e-5, atol=1e-7)
    assert stats["agg/weight_sum"] == pytest.approx(float(expected.sum()), rel=1e-5)
    after = _snapshot(trainer)
    for prefix in ("policy.", "value_head."):
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))


def test_a_failing_reward_stops_the_step_before_any_update() -> None:
    calls = {"n": 0}

    def flaky(prompts, completions):
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("scorer offline")
        return [0.0] * len(completions)

    trainer = make_trainer([VaderReward(), Reward(flaky, name="flaky")])
    trainer.step()
    before = _snapshot(trainer)
    count, kl_coef = trainer.estimator.score_stats.count, trainer.estimator.kl_ctl.value
    with pytest.raises(RewardError, match="reward 'flaky' raised RuntimeError: scorer offline"):
        trainer.step()
    after = _snapshot(trainer)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert trainer.step_count == 1 and torch.equal(trainer.estimator.score_stats.count, count)
    assert trainer.estimator.kl_ctl.value == kl_coef


def test_reward_returning_wrong_length_is_named() -> None:
    trainer = make_trainer([VaderReward(), Reward(lambda p, c: [1.0], name="short")])
    with pytest.raises(RewardError, match="reward 'short' returned 1 scores for 8"):
        trainer.step()
    assert trainer.step_count == 0


def test_checkpoint_round_trip(tmp_path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trainer = make_trainer(_rewards())
    history = trainer.train(2, tmp_path, save_steps=1, progress=False)
    assert len(history) == 2
    for name in ("checkpoint-1", "checkpoint-2", "final"):
        assert (tmp_path / name / "value_heads.safetensors").is_file()
    state = json.loads((tmp_path / "final" / STATE_FILE).read_text())
    assert state["step"] == 2 and state["objectives"] == ["length", "vader"]
    assert MOPPOConfig.from_dict(state["config"]) == trainer.config
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "final" / "policy")
    AutoTokenizer.from_pretrained(tmp_path / "final" / "policy")
    for a, b in zip(model.parameters(), trainer.policy.parameters()):
        torch.testing.assert_close(a, b)
    heads = PolicyWithValueHeads(model, 2)
    heads.load_heads(tmp_path / "final")
    torch.testing.assert_close(
        heads.value_head.weight,
        trainer.accelerator.unwrap_model(trainer.model).value_head.weight,
    )
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and "objective/scores/vader" in json.loads(lines[0])
    assert (tmp_path / "metrics.csv").read_text().startswith("step,")


def test_configuration_errors() -> None:
    with pytest.raises(ValueError, match="multiple of mini_batch_size"):
        MOPPOConfig(batch_size=10, mini_batch_size=4)
    with pytest.raises(ValueError, match="gramian_level"):
        MOPPOConfig(gramian_level="logits")
    with pytest.raises(ValueError, match="unknown config key"):
        MOPPOConfig.from_dict({"learning_rate": 1.0, "lr": 1.0})
    model, tokenizer = load_tiny_lm()
    with pytest.raises(ValueError, match="Valid names"):
        MOTrainer(
            tiny_config(aggregator="nash"), model, tokenizer, _rewards(), tiny_prompts(tokenizer)
        )
    with pytest.raises(ValueError, match="unique"):
        MOTrainer(
            tiny_config(), model, tokenizer, [VaderReward(), VaderReward()], tiny_prompts(tokenizer)
        )


def test_prepare_batch_follows_the_documented_pipeline_order() -> None:
    """scores → running normalisation → KL penalty on every objective → GAE per objective →
    whitening → Noon clip → PAMA."""
    from mogradient_llm.estimators.advantages import (
        gae,
        masked_whiten,
        normalize_scores,
        token_rewards,
    )
    from mogradient_llm.inputs.rewards import score_all
    from mogradient_llm.objectives.advantages import noon_clip
    from mogradient_llm.policy.rollout import lm_response_logprobs

    trainer = make_trainer(_rewards())
    prompts = trainer.sample_prompts()
    rollout = trainer.generate(prompts)
    scores = score_all(trainer.rewards, prompts, rollout.completions)
    stats = copy.deepcopy(trainer.estimator.score_stats)
    batch = trainer.prepare_batch(rollout, scores)
    mask = batch.mask
    with torch.no_grad():
        ref = lm_response_logprobs(trainer.ref_model, rollout)
        torch.testing.assert_close(batch.kl, (batch.old_logprobs - ref) * mask)
    stats.update(scores)
    normalised = normalize_scores(scores, stats, use_score_norm=True)
    rewards = token_rewards(normalised, batch.kl, mask, trainer.config.kl_coef)
    advantages, returns = gae(rewards, batch.estimate.old_values, mask, gamma=1.0, lam=0.95)
    torch.testing.assert_close(batch.estimate.returns, returns)
    clipped = noon_clip(masked_whiten(advantages, mask))
    torch.testing.assert_close(batch.objective_advantages, clipped)
    torch.testing.assert_close(batch.advantages[0], clipped.min(0).values * mask)


def test_a_none_score_gives_its_objective_no_advantage_and_no_value_target() -> None:
    def sometimes(prompts, completions, **kwargs):  # scores every other completion
        return [None if i % 2 else float(len(c)) for i, c in enumerate(completions)]

    trainer = make_trainer([sometimes, VaderReward()], aggregator="mgda", noon=False)
    rows = trainer.sample_prompts()
    rollout = trainer.generate(rows)
    scores = trainer.score(rows, rollout)
    assert torch.isnan(scores[0, 1::2]).all() and not torch.isnan(scores[0, ::2]).any()
    batch = trainer.prepare_batch(rollout, scores)
    assert batch.estimate.value_mask is not None
    assert float(batch.estimate.value_mask[0, 1::2].sum()) == 0.0
    assert torch.equal(batch.estimate.value_mask[1], batch.mask)
    # whitened over the scored completions only: the others stay at exactly 0
    assert float(batch.objective_advantages[0, 1::2].abs().sum()) == 0.0
    assert float(batch.objective_advantages[0, ::2].abs().sum()) > 0
    assert torch.isfinite(batch.objective_advantages).all()
    stats = trainer.step()
    assert math.isfinite(stats["objective/scores/sometimes"])
