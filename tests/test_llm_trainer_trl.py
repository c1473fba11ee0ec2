"""What the trainer passes to rewards and reports, as TRL's GRPOTrainer does: a TrainerState,
log_extra/log_metric reaching the logs; and TRL's single-pass shortcut (no policy forward
before the update), the process count, the step size, overflowing reward means."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from transformers import TrainerState

from mogradient_llm.estimators.grpo import GRPOEstimator
from mogradient_llm.inputs.builtin_rewards import LengthReward
from mogradient_llm.inputs.rewards import Reward
from mogradient_llm.loop.nonfinite import NonFiniteError
from tests.llm_fixtures import make_trainer


def test_rewards_get_the_trainers_state_as_a_trainer_state() -> None:
    seen: list[TrainerState] = []

    def progress(completions, trainer_state, **kwargs):
        seen.append(trainer_state)
        return [float(trainer_state.global_step)] * len(completions)

    trainer = make_trainer([progress, LengthReward()], algorithm="grpo", max_steps=5)
    trainer.train(steps=2, progress=False)
    assert all(isinstance(s, TrainerState) for s in seen)
    assert [s.global_step for s in seen] == [0, 1]  # the steps done, as TRL's global_step
    assert {s.max_steps for s in seen} == {5} and {s.train_batch_size for s in seen} == {8}
    per_pass = trainer.prompts_per_step / len(trainer.rows)
    assert [s.epoch for s in seen] == pytest.approx([0.0, per_pass])
    assert seen[0].is_world_process_zero and seen[0].is_local_process_zero


def test_log_extra_and_log_metric_reach_the_metrics_and_the_samples(tmp_path) -> None:
    logged: list[float] = []

    def judged(completions, log_extra, log_metric, **kwargs):
        lengths = [len(c) for c in completions]
        log_extra("why", [f"{n} characters" for n in lengths])
        logged.append(sum(lengths) / len(lengths))
        log_metric("judge/mean_length", logged[-1])
        return [float(n) for n in lengths]

    trainer = make_trainer([judged, LengthReward()], algorithm="grpo")
    history = trainer.train(steps=2, output_dir=tmp_path, progress=False, n_samples=8)
    assert [h["judge/mean_length"] for h in history] == pytest.approx(logged)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["judge/mean_length"] for r in rows] == pytest.approx(logged)
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 16
    assert all(s["why"] == f"{len(s['completion'])} characters" for s in samples)


def test_a_reward_that_never_scores_warns_once_in_training() -> None:
    never = Reward(lambda completions, **kwargs: [None] * len(completions), name="never")
    trainer = make_trainer([never, LengthReward()], algorithm="grpo")
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        trainer.train(steps=2, progress=False)
    mine = [w for w in got if "returned None for every sample" in str(w.message)]
    assert len(mine) == 1 and "'never'" in str(mine[0].message)


def _counting_forwards(trainer, monkeypatch) -> list[int]:
    calls = [0]
    forward = trainer.model.forward

    def counted(*args, **kwargs):
        calls[0] += 1
        return forward(*args, **kwargs)

    monkeypatch.setattr(trainer.model, "forward", counted)
    return calls


@pytest.mark.parametrize("aggregator", ["pama", "mgda"])
def test_one_pass_with_beta_runs_no_policy_forward_before_the_update(
    monkeypatch, aggregator: str
) -> None:
    """β > 0, one pass, one minibatch: TRL takes the update's own log-probs, detached, as the
    old ones. The step with that shortcut must equal the step with the extra forward (up to
    float32 rounding of two identical forwards) and log the same KL and entropy."""
    overrides = dict(algorithm="grpo", aggregator=aggregator, beta=0.1, mini_batch_size=8)
    rewards = [LengthReward(scale=20.0, low=0.0, high=2.0), Reward(_vowels, name="vowels")]
    fast = make_trainer(rewards, **overrides)
    calls = _counting_forwards(fast, monkeypatch)
    for _ in range(2):  # the second step has a KL ≠ 0
        fast_stats = fast.step()
    assert calls[0] == 2  # one forward per step: the update's
    monkeypatch.setattr(GRPOEstimator, "kl_in_loss_only", False)
    slow = make_trainer(rewards, **overrides)
    calls = _counting_forwards(slow, monkeypatch)
    for _ in range(2):
        slow_stats = slow.step()
    assert calls[0] == 4
    assert fast.last_samples == slow.last_samples  # the same completions
    for key in ("objective/kl", "objective/entropy", "loss/kl"):
        assert fast_stats[key] == pytest.approx(slow_stats[key], rel=1e-5, abs=1e-7), key
    assert fast_stats["objective/kl"] > 0
    for a, b in zip(fast.policy.parameters(), slow.policy.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _vowels(completions, **kwargs):
    return [float(sum(ch in "aeiou" for ch in c)) for c in completions]


def test_several_minibatches_still_run_the_forward_before_the_updates(monkeypatch) -> None:
    trainer = make_trainer([LengthReward()], algorithm="grpo", beta=0.1, mini_batch_size=4)
    calls = _counting_forwards(trainer, monkeypatch)
    trainer.step()
    assert calls[0] == 2 + 2  # the old log-probs (2 chunks), then 2 minibatches


def test_training_says_how_many_processes_it_runs_on(capsys) -> None:
    trainer = make_trainer([LengthReward()])
    trainer.train(steps=1, progress=False)
    out = capsys.readouterr().out
    assert "training on 1 process(es) (NO, cpu); 8 completions per process and step" in out


def test_step_takes_exactly_one_batch_of_prompts() -> None:
    trainer = make_trainer([LengthReward()], algorithm="grpo")  # 8 = 2 prompts × 4
    with pytest.raises(ValueError, match=r"takes batch_size / num_generations = 2 prompts .* 3"):
        trainer.step(["a", "b", "c"])
    assert trainer.step_count == 0
    assert math.isfinite(trainer.step(["the film", "a movie"])["objective/scores/length"])


@pytest.mark.parametrize("aggregator", ["linear", "stch", "epo"])
def test_finite_rewards_whose_float32_mean_overflows_are_skipped(aggregator: str) -> None:
    """3e38 is finite in float32; the mean of several is not. A method that reads the means
    (a loss weighting, EPO) then has nothing to decide from: skip_nonfinite skips the step,
    without it the error names the objective (not the aggregator's ValueError)."""
    huge = Reward(lambda completions, **kwargs: [3e38] * len(completions), name="huge")
    for algorithm in ("ppo", "grpo"):
        trainer = make_trainer(
            [huge, LengthReward()], algorithm=algorithm, aggregator=aggregator, skip_nonfinite=True
        )
        before = [p.detach().clone() for p in trainer.policy.parameters()]
        with pytest.warns(UserWarning, match="mean score of objective 'huge' is not finite"):
            assert trainer.step()["train/skipped"] == 1.0
        assert all(torch.equal(a, b) for a, b in zip(before, trainer.policy.parameters()))
    trainer = make_trainer([huge, LengthReward()], algorithm="grpo", aggregator=aggregator)
    with pytest.raises(NonFiniteError, match="mean score of objective 'huge'"):
        trainer.step()


def test_methods_that_ignore_the_means_still_train_on_huge_rewards() -> None:
    """PPO normalises the scores in float64: PAMA and UPGrad never read the overflowing mean."""
    huge = Reward(lambda completions, **kwargs: [3e38, 1e38] * 4, name="huge")
    for aggregator in ("pama", "upgrad"):
        trainer = make_trainer([huge, LengthReward()], aggregator=aggregator, skip_nonfinite=True)
        assert trainer.step()["train/skipped"] == 0.0
