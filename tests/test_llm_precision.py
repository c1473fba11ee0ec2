"""Mixed precision, dropout and the KL estimate: two forwards of the same tokens agree exactly."""

from __future__ import annotations

import pytest
import torch

from mogradient import PAMA
from mogradient_llm.estimators.advantages import RunningMeanStd, normalize_scores
from mogradient_llm.estimators.kl import kl_estimate
from mogradient_llm.inputs.builtin_rewards import LengthReward, VaderReward
from tests.llm_fixtures import make_trainer, untied_lm_dir


def _rewards() -> list:
    return [LengthReward(scale=20.0, low=0.0, high=2.0), VaderReward()]


def _batch(trainer):
    prompts = trainer.sample_prompts()
    rollout = trainer.generate(prompts)
    return trainer.prepare_batch(rollout, trainer.score(prompts, rollout))


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one state per process, fixed by the first Accelerator (its mixed
    precision included): start from a clean one and leave a clean one."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.parametrize("algorithm", ["ppo", "grpo"])
@pytest.mark.parametrize("lora", [False, True])
def test_step0_kl_is_exactly_zero_under_bf16_autocast(
    lora, algorithm, fresh_accelerate_state
) -> None:
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True, mixed_precision="bf16")
    assert accelerator.native_amp
    extra = {"lora_r": 4, "lora_target_modules": ["c_attn"]} if lora else {}
    if algorithm == "grpo":  # a reference (beta > 0) and two passes: old log-probs are kept
        extra.update(algorithm="grpo", beta=0.1, num_iterations=2)
    trainer = make_trainer(_rewards(), accelerator=accelerator, **extra)
    batch = _batch(trainer)
    assert batch.mask.sum() > 0
    assert batch.kl is not None and torch.equal(batch.kl, torch.zeros_like(batch.kl))
    if algorithm == "grpo":  # the first update's ratio is exactly 1 and its KL term 0
        index = torch.arange(4)
        _, extra_loss, _, stats = trainer.updater.minibatch_losses(batch, index)
        assert float(stats["policy/ratio_avg"]) == 1.0 and float(extra_loss) == 0.0


def test_value_heads_and_their_optimiser_state_stay_float32_with_a_bf16_policy() -> None:
    from mogradient_llm.loop.trainer import MOTrainer
    from tests.llm_fixtures import load_tiny_lm, tiny_config, tiny_prompts

    model, tokenizer = load_tiny_lm()
    model = model.to(torch.bfloat16)
    trainer = MOTrainer(tiny_config(), model, tokenizer, _rewards(), tiny_prompts(tokenizer))
    head = trainer.accelerator.unwrap_model(trainer.model).value_head
    assert head.weight.dtype == torch.float32
    trainer.step()
    state = trainer.optimizer.optimizer.state[head.weight]
    assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.float32
    assert next(trainer.policy.parameters()).dtype == torch.bfloat16


def test_attention_dropout_of_the_config_is_switched_off() -> None:
    """Llama's attention reads ``attention_dropout`` (a float it copied from the config) and
    applies it in train mode, where ``nn.Dropout`` modules do not reach: the first ratio of
    PPO must still be exactly 1."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mogradient_llm.loop.trainer import MOTrainer
    from tests.llm_fixtures import tiny_config, tiny_prompts

    model = AutoModelForCausalLM.from_pretrained(untied_lm_dir(), attention_dropout=0.5)
    tokenizer = AutoTokenizer.from_pretrained(untied_lm_dir())
    config = tiny_config(mini_batch_size=8, num_ppo_epochs=1)
    trainer = MOTrainer(config, model, tokenizer, _rewards(), tiny_prompts(tokenizer))
    assert trainer.policy.config.attention_dropout == 0.0
    stats = trainer.step()
    assert stats["policy/approxkl_avg"] == 0.0 and stats["policy/ratio_avg"] == 1.0


def test_kl_estimators() -> None:
    logprobs = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-1.5, -1.0, -0.5])
    torch.testing.assert_close(kl_estimate(logprobs, ref, "k1"), logprobs - ref)
    ratio = torch.exp(ref - logprobs)
    torch.testing.assert_close(kl_estimate(logprobs, ref, "k3"), ratio - 1 - torch.log(ratio))
    assert bool((kl_estimate(logprobs, ref, "k3") >= 0).all())
    assert float(kl_estimate(logprobs, ref, "k1").min()) < 0  # k1 can be a bonus
    with pytest.raises(ValueError, match="k1"):
        kl_estimate(logprobs, ref, "k2")


def test_trainer_uses_the_configured_kl_estimator() -> None:
    trainer = make_trainer(_rewards(), kl_estimator="k3")
    batch = _batch(trainer)
    assert bool((batch.kl >= 0).all())


def test_the_std_floor_keeps_a_small_change_after_constant_rewards_small() -> None:
    stats = RunningMeanStd(1)
    for _ in range(3):
        stats.update(torch.full((1, 16), 0.5))
    changed = torch.tensor([[0.51]])
    floored = normalize_scores(changed, stats, use_score_norm=True, std_floor=0.01)
    assert abs(float(floored)) <= 1.0 + 1e-6
    unfloored = normalize_scores(changed, stats, use_score_norm=True)
    assert abs(float(unfloored)) > 50


def test_normaliser_moments_over_processes_equal_the_global_batch() -> None:
    """Two ranks' halves, all-reduced, give the statistics of the whole batch on both."""
    scores = torch.randn(2, 16, generator=torch.Generator().manual_seed(0)) * 3 + 100
    halves = scores.chunk(2, dim=1)

    whole = RunningMeanStd(2)
    whole.update(scores[:, :4])
    whole.update(scores)
    for rank in range(2):
        stats = RunningMeanStd(2)
        stats.update(scores[:, :4])
        other = halves[1 - rank]

        def all_reduce_sum(moments: torch.Tensor, other=other, stats=stats) -> torch.Tensor:
            shifted = other.double() - stats.mean[:, None]
            count = torch.full_like(shifted[:, 0], shifted.shape[1])
            return moments + torch.stack([count, shifted.sum(1), (shifted**2).sum(1)])

        stats.update(halves[rank], all_reduce_sum)
        assert torch.equal(stats.count, whole.count)
        torch.testing.assert_close(stats.mean, whole.mean)
        torch.testing.assert_close(stats.var, whole.var)


def test_pama_batch_means_are_taken_over_every_process() -> None:
    advantages = torch.tensor([[[1.0, 2.0]], [[3.0, 0.5]]])  # [k=2, B=1, T=2]
    mask = torch.ones(1, 2)
    other = torch.tensor([[[5.0, 5.0]], [[0.0, 1.0]]])  # the other rank's batch

    pama = PAMA("batch")
    sent: list[torch.Tensor] = []  # what the other rank contributes to the all-reduce
    pama.combine(other, torch.ones(1, 2), lambda totals: sent.append(totals) or totals)

    def all_reduce_sum(totals: torch.Tensor) -> torch.Tensor:
        return totals + sent[0]

    _, weights, _ = pama.combine(advantages, mask, all_reduce_sum)
    _, expected, _ = pama.combine(torch.cat([advantages, other], 1), torch.ones(2, 2))
    torch.testing.assert_close(weights, expected)
    local = pama.combine(advantages, mask)[1]
    assert not torch.equal(local, expected)  # the local means would pick another objective


def test_a_checkpoint_shipping_its_own_sampling_settings_is_sampled_as_scored(tmp_path) -> None:
    """``generation_config.json`` with temperature 0.6 and repetition penalty 1.3: the trainer
    samples with its own settings (temperature 1.0, nothing else), so the PPO ratio is exactly
    1 and the KL to an identical reference exactly 0 before the first update, and the sampled
    log-probabilities are the scored ones."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mogradient_llm.loop.trainer import MOTrainer
    from tests.llm_fixtures import load_tiny_lm, tiny_config, tiny_prompts

    model, tokenizer = load_tiny_lm()
    model.generation_config.do_sample = True
    model.generation_config.temperature = 0.6
    model.generation_config.repetition_penalty = 1.3
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert model.generation_config.repetition_penalty == 1.3
    config = tiny_config(mini_batch_size=8, num_ppo_epochs=1)
    trainer = MOTrainer(config, model, tokenizer, _rewards(), tiny_prompts(tokenizer))
    assert trainer.sampling.temperature == 1.0 and trainer.sampling.repetition_penalty == 1.0

    batch = _batch(trainer)
    assert torch.equal(batch.kl, torch.zeros_like(batch.kl))
    rollout = trainer.generate(trainer.sample_prompts())
    from mogradient_llm.policy.sampling import neutral_generation_config

    with torch.no_grad(), neutral_generation_config(trainer.policy):
        torch.manual_seed(0)
        out = trainer.policy.generate(
            input_ids=rollout.query_ids,
            attention_mask=rollout.query_mask,
            generation_config=trainer.sampling,
            output_scores=True,
            return_dict_in_generate=True,
        )
    response = out.sequences[:, rollout.query_ids.shape[1] :]
    sampled = torch.stack(
        [
            torch.log_softmax(s, -1).gather(-1, t[:, None])[:, 0]
            for s, t in zip(out.scores, response.T)
        ],
        1,
    )
    scored, _, _ = trainer.forwards(
        type(rollout)(
            rollout.prompts,
            rollout.completions,
            rollout.query_ids,
            rollout.query_mask,
            response,
            (response >= 0).long(),
            rollout.eos_token_ids,
        )
    )
    from mogradient_llm.policy.rollout import response_mask

    mask = response_mask(response, rollout.eos_token_ids).bool()
    torch.testing.assert_close(sampled[mask], scored[mask], rtol=0, atol=1e-5)
    assert trainer.step()["policy/approxkl_avg"] == 0.0
