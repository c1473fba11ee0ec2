"""Bad inputs end in a clear error or a documented fallback, never in a corrupted run."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
import torch

from mogradient_llm.cli import main
from mogradient_llm.inputs.builtin_rewards import LengthReward, VaderReward
from mogradient_llm.inputs.rewards import Reward
from mogradient_llm.loop.checkpoint import LATEST_FILE
from mogradient_llm.loop.trainer import MOTrainer, NonFiniteError
from tests.llm_fixtures import load_tiny_lm, make_trainer, tiny_config, tiny_prompts


def _snapshot(trainer: MOTrainer) -> dict[str, torch.Tensor]:
    module = trainer.accelerator.unwrap_model(trainer.model)
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _unchanged(before: dict[str, torch.Tensor], trainer: MOTrainer) -> bool:
    after = _snapshot(trainer)
    return all(torch.equal(before[k], after[k]) for k in before)


def _nan_after(calls: int) -> Reward:
    """A reward that returns NaN from its ``calls + 1``-th call on."""
    state = {"n": 0}

    def score(prompts, completions):
        state["n"] += 1
        return [math.nan if state["n"] > calls else 0.5] * len(completions)

    return Reward(score, name="flaky")


def _digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_nan_reward_stops_naming_objective_and_step_and_keeps_last_checkpoint(tmp_path) -> None:
    trainer = make_trainer([VaderReward(), _nan_after(1)])
    with pytest.raises(NonFiniteError) as info:
        trainer.train(3, tmp_path, save_steps=1, progress=False)
    assert "step 2" in str(info.value) and "reward 'flaky'" in str(info.value)
    assert "--skip-nonfinite" in str(info.value)
    assert trainer.step_count == 1
    assert (tmp_path / LATEST_FILE).read_text().strip() == "checkpoint-1"
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["checkpoint-1"]


def test_nan_reward_is_skipped_with_a_warning_when_asked(tmp_path) -> None:
    trainer = make_trainer([VaderReward(), _nan_after(1)], skip_nonfinite=True)
    trainer.train(1, tmp_path, save_steps=1, progress=False)
    good = _digest(tmp_path / "checkpoint-1")
    before = _snapshot(trainer)
    with pytest.warns(UserWarning, match="step 2: reward 'flaky' returned non-finite"):
        stats = trainer.step()
    assert stats["train/skipped"] == 1.0 and trainer.step_count == 2
    assert _unchanged(before, trainer)
    assert _digest(tmp_path / "checkpoint-1") == good


def test_overflowing_loss_names_the_objective() -> None:
    huge = Reward(lambda p, c: [3e38] * len(c), name="huge")
    trainer = make_trainer([VaderReward(), huge], use_score_scaling=False)
    before = _snapshot(trainer)
    with pytest.raises(NonFiniteError, match="step 1: .*objective 'huge'"):
        trainer.step()
    assert _unchanged(before, trainer) and trainer.step_count == 0


@pytest.mark.parametrize("scaling", [True, False])
def test_objectives_of_wildly_different_scales_train(scaling: bool) -> None:
    big = Reward(lambda p, c: [1e6 * len(x) for x in c], name="big")
    small = Reward(lambda p, c: [1e-6 * len(x) for x in c], name="small")
    trainer = make_trainer([big, small], aggregator="mgda", use_score_scaling=scaling)
    stats = trainer.step()
    assert all(math.isfinite(v) for v in stats.values())
    assert all(torch.isfinite(v).all() for v in _snapshot(trainer).values())
    if scaling:  # normalised scores: both objectives carry weight
        assert 0 < stats["agg/weight/big"] < 1 and 0 < stats["agg/weight/small"] < 1


def test_empty_and_identical_prompt_batches() -> None:
    trainer = make_trainer([LengthReward(scale=20.0, low=0.0, high=2.0), VaderReward()])
    with pytest.raises(ValueError, match="prompt batch is empty"):
        trainer.step([])
    with pytest.raises(ValueError, match="prompt 1 .* is empty after tokenisation"):
        trainer.step(["the movie", ""] * 4)
    assert trainer.step_count == 0
    stats = trainer.step(["the movie was"] * 8)
    assert all(math.isfinite(v) for v in stats.values())


def test_prompts_longer_than_the_context_are_truncated_from_the_left() -> None:
    trainer = make_trainer([LengthReward(scale=20.0, low=0.0, high=2.0)])
    long_prompt = " ".join(["the movie was good and"] * 40)  # far beyond 64 positions
    with pytest.warns(UserWarning, match=r"1 prompt\(s\) longer than 56 tokens .* from the left"):
        rollout = trainer.generate([long_prompt, "a short one"])
    assert rollout.input_ids.shape[1] <= 64
    ids = trainer.tokenizer(long_prompt)["input_ids"]
    assert rollout.query_ids[0].tolist() == ids[-56:]  # the end of the prompt is kept
    with pytest.raises(ValueError, match="max_new_tokens=64 leaves no room"):
        make_trainer(
            [VaderReward()], generation_kwargs={"max_new_tokens": 64, "do_sample": True}
        ).step()


def test_tokenizer_without_pad_token() -> None:
    model, tokenizer = load_tiny_lm()
    tokenizer.pad_token = None
    trainer = MOTrainer(tiny_config(), model, tokenizer, [VaderReward()], tiny_prompts(tokenizer))
    assert tokenizer.pad_token == tokenizer.eos_token
    assert math.isfinite(trainer.step()["objective/kl"])
    model, tokenizer = load_tiny_lm()
    tokenizer.pad_token = None
    tokenizer.eos_token = None
    with pytest.raises(ValueError, match="neither a pad token nor an EOS token"):
        MOTrainer(tiny_config(), model, tokenizer, [VaderReward()], tiny_prompts(tokenizer))


def test_aggregator_typo_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown aggregator 'pcgard'.*Valid names: .*pcgrad"):
        make_trainer([VaderReward()], aggregator="pcgard")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--reward", "sentiment"], "ValueError: unknown reward"),
        (["--reward", "vader", "--resume"], "FileNotFoundError: no complete checkpoint"),
        (["--reward", "vader", "--batch-size", "6"], "must be a multiple of mini_batch_size"),
    ],
)
def test_cli_user_errors_print_one_line(tmp_path, capsys, flags, message) -> None:
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        main(["train", "--output-dir", str(out), "--steps", "1", "--no-progress", *flags])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mogradient-llm: error:") and message in err and "\n" not in err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(
    ("name", "content"),
    [("empty.jsonl", ""), ("empty.csv", ""), ("blank.jsonl", "\n \n"), ("header.csv", "text\n")],
)
def test_cli_an_empty_dataset_file_is_one_clear_line(tmp_path, capsys, name, content) -> None:
    data = tmp_path / name
    data.write_text(content)
    with pytest.raises(SystemExit) as info:
        main(["train", "--output-dir", str(tmp_path / "out"), "--steps", "1", "--no-progress"]
             + ["--reward", "length", "--dataset", str(data)])  # fmt: skip
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after datasets' progress bars
    assert err == f"mogradient-llm: error: ValueError: the dataset file {data} holds no rows; " \
        "pass a file with data"  # fmt: skip


def test_the_scaling_docs_describe_the_learning_rate_scheduler_that_is_saved(tmp_path) -> None:
    """docs/scaling.md's checkpoint section: the scheduler exists, and a checkpoint restores it."""
    text = (Path(__file__).parents[1] / "docs" / "scaling.md").read_text()
    section = text[text.index("## Checkpoints and resume") : text.index("## Bad inputs")]
    assert "no learning-rate scheduler" not in section
    assert "learning-rate scheduler" in section and "lr_scheduler_type" in section
    trainer = make_trainer([LengthReward()], lr_scheduler_type="linear", max_steps=4)
    trainer.step()
    trainer.save(tmp_path / "checkpoint-1")
    resumed = make_trainer([LengthReward()], lr_scheduler_type="linear", max_steps=4)
    assert resumed.scheduler.get_last_lr() != trainer.scheduler.get_last_lr()
    resumed.load_checkpoint(tmp_path / "checkpoint-1")
    assert resumed.scheduler.state_dict() == trainer.scheduler.state_dict()
