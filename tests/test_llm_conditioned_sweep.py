"""Evaluating one conditioned policy: controllability against hand-computed values, and
``mogradient-llm sweep --conditioned`` end to end (train one policy, evaluate it along the
lattice: front, controllability, compute)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from mogradient_llm.cli import main
from mogradient_llm.pareto.conditioned import controllability

LATTICE = [[0.0, 1.0], [0.25, 0.75], [0.5, 0.5], [0.75, 0.25], [1.0, 0.0]]


def test_controllability_against_hand_computed_values() -> None:
    """Objective a: rewards 0.1, 0.3, 0.2, 0.5, 0.6 at weights 0 … 1 — ranks 1, 3, 2, 4, 5, so
    Σd² = 2 and ρ = 1 − 6·2 / (5·24) = 0.9; of the 10 pairs only (0.25, 0.5) is reversed: 0.9.
    Objective b: weights 1 … 0, rewards 0.9, 0.9, 0.5, 0.4, 0.8 — average ranks 4.5, 4.5, 2, 1,
    3 against 5, 4, 3, 2, 1: ρ = 6.5 / √(10 · 9.5); ordered pairs: not the tie (0.9, 0.9), not
    (0.5, 0.8), not (0.4, 0.8): 7 of 10."""
    scores = [[0.1, 0.9], [0.3, 0.9], [0.2, 0.5], [0.5, 0.4], [0.6, 0.8]]
    values = controllability(LATTICE, scores, ["a", "b"])
    assert values["a"]["spearman"] == pytest.approx(0.9)
    assert values["a"]["pairs_ordered"] == pytest.approx(0.9)
    assert values["b"]["spearman"] == pytest.approx(6.5 / math.sqrt(95))
    assert values["b"]["pairs_ordered"] == pytest.approx(0.7)
    assert values["mean"]["spearman"] == pytest.approx((0.9 + 6.5 / math.sqrt(95)) / 2)
    assert values["mean"]["pairs_ordered"] == pytest.approx(0.8)


def test_controllability_edge_cases() -> None:
    """A policy that ignores its preference (constant rewards) has no correlation (NaN) and no
    ordered pair; a reversed one has ρ = −1 and none ordered."""
    flat = controllability(LATTICE, [[0.5, 0.5]] * 5, ["a", "b"])
    assert math.isnan(flat["a"]["spearman"]) and flat["a"]["pairs_ordered"] == 0.0
    reversed_scores = [[1 - w[0], 1 - w[1]] for w in LATTICE]
    backwards = controllability(LATTICE, reversed_scores, ["a", "b"])
    assert backwards["a"]["spearman"] == pytest.approx(-1.0)
    assert backwards["b"]["pairs_ordered"] == 0.0
    with pytest.raises(ValueError, match="same shape"):
        controllability(LATTICE, [[0.1, 0.2]], ["a", "b"])


FAST = [
    "--policy", "tiny", "--tiny-pretrain-steps", "3",
    "--reward", "length", "--reward", "vader",
    "--aggregator", "linear", "--batch-size", "8", "--mini-batch-size", "4",
    "--learning-rate", "1e-3", "--max-new-tokens", "6", "--max-prompts", "40",
    "--no-progress", "--eval-num-prompts", "8", "--ref-point", "0,-1",
]  # fmt: skip


def test_sweep_conditioned_trains_one_policy_and_evaluates_the_lattice(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    args = ["--threads", "1", "sweep", "--conditioned", *FAST, "--algorithm", "grpo"]
    main([*args, "--steps", "2", "--preferences", "3", "--output-dir", str(out)])
    assert sorted(p.name for p in (out / "conditioned").iterdir() if p.name == "final") == ["final"]
    assert not (out / "runs").exists()  # one run, not one per preference
    with (out / "front.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["preference/length"], r["preference/vader"]) for r in rows] == [
        ("0.0", "1.0"),
        ("0.5", "0.5"),
        ("1.0", "0.0"),
    ]
    assert all(float(r["kl"]) >= -1e-6 and r["step"] == "2" for r in rows)
    with (out / "controllability.csv").open() as f:
        assert [r["objective"] for r in csv.DictReader(f)] == ["length", "vader", "mean"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["conditioned"] is True
    assert summary["compute"]["train_steps"] == 2.0 and summary["compute"]["train_seconds"] > 0
    assert set(summary["controllability"]) == {"length", "vader", "mean"}
    assert (out / "front.png").stat().st_size > 0
    assert "controllability of vader" in capsys.readouterr().out
    # the trained checkpoint, evaluated at one preference: the policy reads it before the prompt
    result = tmp_path / "eval.json"
    final = str(out / "conditioned" / "final")
    evaluate = ["evaluate", "--checkpoint", final, "--ref-point", "0,-1"]
    main([*evaluate, "--preference", "3,7", "--num-prompts", "4", "--output", str(result)])
    samples = json.loads(result.read_text())["samples"]
    assert len(samples) == 4 and all(s["prompt"].startswith("<0.30|0.70> ") for s in samples)
    with pytest.raises(SystemExit):
        main([*evaluate, "--preference", "1,2,3", "--num-prompts", "4"])
    assert "one entry per --reward" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--kl-budgets", "1"], "--kl-budgets and --rewarded-soups compare runs"),
        (["--aggregator", "mgda"], "takes no preference"),
    ],
)
def test_sweep_conditioned_refuses_what_it_cannot_do(tmp_path: Path, capsys, extra, message):
    argv = ["sweep", "--conditioned", *FAST, *extra, "--steps", "1"]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--output-dir", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_two_processes_with_lora_train_and_resume_conditioned(tmp_path: Path) -> None:
    """``accelerate launch`` with two CPU processes, LoRA adapters, GRPO: each rank keeps its
    own preference stream in the checkpoint (different draws). That a resumed run continues the
    stream is checked in one process (``test_llm_conditioned.py``); the checkpoint it reads is
    the one written here, rank by rank."""
    import os
    import subprocess
    import sys

    from tests.llm_fixtures import tiny_lm_dir
    from tests.test_llm_distributed import _free_port

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
        "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        "-m", "mogradient_llm", "--threads", "1",
        "train", "--cpu", "--conditioned", "--policy", str(tiny_lm_dir()),
        "--reward", "length", "--reward", "vader", "--aggregator", "linear",
        "--algorithm", "grpo", "--lora-r", "4", "--batch-size", "4", "--mini-batch-size", "2",
        "--num-generations", "2", "--max-new-tokens", "6", "--no-progress", "--save-steps", "1",
        "--output-dir", str(tmp_path),
    ]  # fmt: skip
    run = subprocess.run([*command, "--steps", "2"], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    state = tmp_path / "final" / "resume"
    streams = [json.loads((state / f"preference_sampler_{r}.json").read_text()) for r in (0, 1)]
    assert streams[0] != streams[1]  # each rank its own stream
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2]
    assert (tmp_path / "final" / "policy" / "adapter_config.json").is_file()
