"""``mogradient-llm train`` and ``evaluate`` end to end on the tiny offline policy."""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys

import pytest

from mogradient_llm.cli import main
from mogradient_llm.policy.models import synthetic_reviews

FAST = [
    "--tiny-pretrain-steps",
    "5",
    "--batch-size",
    "8",
    "--mini-batch-size",
    "4",
    "--num-ppo-epochs",
    "1",
    "--max-new-tokens",
    "8",
    "--no-progress",
]


def test_train_then_evaluate(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    main(
        [
            "train",
            "--policy",
            "tiny",
            "--reward",
            "length",
            "--reward",
            "vader",
            "--aggregator",
            "pama",
            "--steps",
            "3",
            "--output-dir",
            str(out),
            "--save-steps",
            "2",
            *FAST,
        ]
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for key in (
        "objective/kl",
        "policy/clipfrac_avg",
        "objective/scores/length",
        "objective/scores/vader",
        "agg/weight/length",
        "agg/s_star",
        "time/step_s",
    ):
        assert key in rows[0], key
    with open(out / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) == 3
    sample = json.loads((out / "samples.jsonl").read_text().splitlines()[0])
    assert {"prompt", "completion", "length", "vader"} <= set(sample)
    for name in ("checkpoint-2", "final"):
        assert (out / name / "policy" / "config.json").is_file()
        assert (out / name / "value_heads.safetensors").is_file()
    state = json.loads((out / "final" / "trainer_state.json").read_text())
    assert state["step"] == 3 and state["rewards"] == ["length", "vader"]
    assert state["config"]["aggregator"] == "pama"

    capsys.readouterr()
    result_path = tmp_path / "eval.json"
    main(
        [
            "evaluate",
            "--checkpoint",
            str(out / "final"),
            "--num-prompts",
            "8",
            "--max-new-tokens",
            "8",
            "--output",
            str(result_path),
        ]
    )
    printed = json.loads(capsys.readouterr().out)
    result = json.loads(result_path.read_text())
    assert printed["eval/hypervolume"] == result["eval/hypervolume"]
    means = [result["eval/scores/length"], result["eval/scores/vader"]]
    assert result["eval/ref_point"] == [0.5, -1.0]
    expected = max(means[0] - 0.5, 0) * max(means[1] + 1.0, 0)
    assert result["eval/hypervolume"] == pytest.approx(expected)
    assert "eval/kl" in result and len(result["samples"]) == 8


def test_train_on_a_local_dataset_with_a_gramian_aggregator(tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with gzip.open(data / "train.jsonl.gz", "wt") as f:
        for text in synthetic_reviews(40, seed=5):
            f.write(json.dumps({"text": text * 3, "label": 1}) + "\n")
    out = tmp_path / "out"
    main(
        [
            "train",
            "--policy",
            "tiny",
            "--reward",
            "length:words",
            "--reward",
            "vader",
            "--aggregator",
            "mgda",
            "--gramian-level",
            "features",
            "--gradient-accumulation-steps",
            "2",
            "--kl-estimator",
            "k3",
            "--steps",
            "1",
            "--dataset",
            str(data),
            "--imdb-prompts",  # reviews, not prompts: cut them into prompts
            "--output-dir",
            str(out),
            *FAST,
        ]
    )
    row = json.loads((out / "metrics.jsonl").read_text())
    assert row["agg/weight/length"] + row["agg/weight/vader"] == pytest.approx(1.0)
    config = json.loads((out / "final" / "trainer_state.json").read_text())["config"]
    assert config["gradient_accumulation_steps"] == 2 and config["kl_estimator"] == "k3"


def test_hypervolume_uses_pymoo_on_maximised_rewards() -> None:
    """Evaluation reports the core's hypervolume of maximised rewards."""
    from functools import partial

    from mogradient.pareto import hypervolume as core

    hypervolume = partial(core, maximize=True)
    assert hypervolume([[2.0, 3.0]], [0.0, 1.0]) == pytest.approx(4.0)
    assert hypervolume([[2.0, 3.0], [1.0, 4.0]], [0.0, 0.0]) == pytest.approx(6.0 + 1.0)
    assert hypervolume([[-1.0, 3.0]], [0.0, 0.0]) == 0.0
    with pytest.raises(ValueError, match="objectives"):
        hypervolume([[1.0, 2.0]], [0.0])


def test_reference_point_defaults_to_each_rewards_worst_value() -> None:
    from mogradient_llm.inputs.builtin_rewards import length, vader
    from mogradient_llm.inputs.rewards import Reward
    from mogradient_llm.policy.evaluation import reference_point

    assert reference_point([length(), vader()]) == [0.5, -1.0]
    assert reference_point([length(), vader()], [1.0, 0.0]) == [1.0, 0.0]
    scorer = Reward(lambda p, c: [0.0] * len(c), name="scorer")
    with pytest.raises(ValueError, match="--ref-point"):
        reference_point([length(), scorer])
    with pytest.raises(ValueError, match="entries"):
        reference_point([length()], [0.0, 1.0])


def test_module_entry_point_and_unknown_aggregator(tmp_path, capsys) -> None:
    help_text = subprocess.run(
        [sys.executable, "-m", "mogradient_llm", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "train" in help_text and "evaluate" in help_text and "demo" in help_text
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "train",
                "--reward",
                "length",
                "--aggregator",
                "mdga",
                "--steps",
                "1",
                "--output-dir",
                str(tmp_path),
                *FAST,
            ]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mogradient-llm: error: ValueError: unknown aggregator 'mdga'")
    assert "Valid names" in err and "\n" not in err
    assert not (tmp_path / "initial_policy").exists()  # failed before building anything
