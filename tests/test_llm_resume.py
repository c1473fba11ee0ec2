"""Checkpoints are atomic and ``--resume`` continues exactly: a CLI run killed with SIGKILL in
the middle of a checkpoint interval, resumed, ends where an uninterrupted run ends.

Only the killed run needs a process of its own; the uninterrupted run and the resume run the
same command in the test's process (starting an interpreter and importing the trainer is most of
a tiny run's time: about 9 of its 11 CPU seconds)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mogradient_llm.cli import main
from mogradient_llm.loop.checkpoint import LATEST_FILE, latest_checkpoint, resolve_resume

ROOT = Path(__file__).resolve().parents[1]
STEPS, SAVE_STEPS = 9, 3
ARGS = [
    "--threads", "1", "train", "--policy", "tiny", "--tiny-pretrain-steps", "3",
    "--reward", "length", "--reward", "vader", "--aggregator", "mgda",
    "--batch-size", "4", "--mini-batch-size", "2",
    "--max-new-tokens", "6", "--max-prompts", "40", "--no-progress",
    "--steps", str(STEPS), "--save-steps", str(SAVE_STEPS),
]  # fmt: skip
#: Per estimator: PPO (value heads, adaptive KL, score statistics) and GRPO with a KL reference,
#: two passes and a learning-rate schedule (its state is in the checkpoint too).
ALGORITHMS = {
    "ppo": ["--algorithm", "ppo", "--num-ppo-epochs", "1"],
    "grpo": [
        "--algorithm", "grpo", "--num-iterations", "2", "--beta", "0.1",
        "--lr-scheduler-type", "cosine", "--warmup-steps", "2", "--learning-rate", "1e-3",
    ],
}  # fmt: skip


def _cli(out: Path, algorithm: str) -> subprocess.Popen:
    """The command in a process of its own (to be killed)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = [*ARGS, *ALGORITHMS[algorithm]]
    return subprocess.Popen(
        [sys.executable, "-m", "mogradient_llm", *args, "--output-dir", str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _cli_here(out: Path, *extra: str, algorithm: str) -> None:
    """The same command in this process."""
    main([*ARGS, *ALGORITHMS[algorithm], "--output-dir", str(out), *extra])


def _logged_steps(out: Path) -> list[int]:
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line)["step"] for line in lines if line.endswith("}")]  # whole lines


def _kill_mid_interval(out: Path, algorithm: str) -> int:
    """Start a run and SIGKILL it once a step after its newest checkpoint is logged."""
    proc = _cli(out, algorithm=algorithm)
    deadline = time.monotonic() + 600  # a loaded machine: the run takes ~10 s when idle
    while time.monotonic() < deadline and proc.poll() is None:
        latest = latest_checkpoint(out)
        done = _logged_steps(out)
        if latest is not None and done and done[-1] % SAVE_STEPS and done[-1] < STEPS:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return done[-1]
        time.sleep(0.01)
    ended = proc.poll() is not None
    proc.kill()
    why = "ended before it could be killed" if ended else "was not killed within 600 s"
    raise AssertionError(f"the run {why}: {proc.communicate()}")


def _state(out: Path) -> dict[str, torch.Tensor]:
    final = out / "final"
    heads = final / "value_heads.safetensors"
    return {
        **load_file(str(final / "policy" / "model.safetensors")),
        **(load_file(str(heads)) if heads.exists() else {}),
    }


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_killed_run_resumes_from_last_complete_checkpoint(tmp_path, algorithm, capsys) -> None:
    killed = tmp_path / "killed"
    last_logged = _kill_mid_interval(killed, algorithm)
    _cli_here(tmp_path / "reference", algorithm=algorithm)
    checkpoint = latest_checkpoint(killed)
    step = json.loads((checkpoint / "trainer_state.json").read_text())["step"]
    assert step == last_logged - last_logged % SAVE_STEPS
    # plant what a crash mid-save could leave: a staging directory and a half-written checkpoint
    partial = killed / f".tmp-checkpoint-{step + SAVE_STEPS}"
    partial.mkdir(exist_ok=True)
    (partial / "trainer_state.json").write_text("{not json")
    (killed / "checkpoint-99" / "policy").mkdir(parents=True)
    assert resolve_resume(killed) == checkpoint

    capsys.readouterr()
    _cli_here(killed, "--resume", algorithm=algorithm)
    assert f"resuming from {checkpoint}" in capsys.readouterr().out
    assert _logged_steps(killed) == list(range(1, STEPS + 1))
    expected, got = _state(tmp_path / "reference"), _state(killed)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0, msg=name)
    rows = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    ref_rows = [
        json.loads(line) for line in (tmp_path / "reference/metrics.jsonl").read_text().splitlines()
    ]
    for row, ref_row in zip(rows, ref_rows):
        row.pop("time/step_s"), ref_row.pop("time/step_s")
        assert row == ref_row


def test_latest_pointer_and_scan_skip_incomplete_checkpoints(tmp_path) -> None:
    for step, complete in ((2, True), (4, True), (6, False)):
        directory = tmp_path / f"checkpoint-{step}"
        directory.mkdir()
        if complete:
            (directory / "trainer_state.json").write_text("{}")
    (tmp_path / ".tmp-checkpoint-8").mkdir()
    (tmp_path / ".tmp-checkpoint-8" / "trainer_state.json").write_text("{}")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-4"  # no LATEST: scan
    (tmp_path / LATEST_FILE).write_text("checkpoint-2\n")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    (tmp_path / LATEST_FILE).write_text("checkpoint-6\n")  # points at an incomplete one: scan
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
    empty = tmp_path / "empty"
    empty.mkdir()
    try:
        resolve_resume(empty)
    except FileNotFoundError as exc:
        assert "no complete checkpoint" in str(exc)
    else:
        raise AssertionError("resolve_resume accepted a directory without checkpoints")


def test_the_aggregators_state_is_checkpointed(tmp_path: Path) -> None:
    """A stateful method (PCGrad's seeded visiting orders) continues its stream on resume."""
    from mogradient_llm.inputs.builtin_rewards import LengthReward, VaderReward
    from tests.llm_fixtures import make_trainer

    rewards = [LengthReward(scale=20.0, low=0.0, high=2.0), VaderReward()]
    trainer = make_trainer(rewards, aggregator="pcgrad")
    trainer.step()
    trainer.save(tmp_path / "checkpoint-1")
    expected = trainer.aggregator._rng.bit_generator.state
    del trainer
    resumed = make_trainer(rewards, aggregator="pcgrad")
    fresh = resumed.aggregator._rng.bit_generator.state
    assert fresh != expected  # a step has advanced the saved stream
    resumed.load_checkpoint(tmp_path / "checkpoint-1")
    assert resumed.aggregator._rng.bit_generator.state == expected
