"""The GRPO step benchmark runs TRL's GRPOTrainer and ours end to end and writes its outputs."""

from __future__ import annotations

import csv

import pytest

from benchmarks import grpo_cells
from benchmarks.grpo_step import main


def test_quick_run_times_both_sides_and_writes_csv_and_plot(tmp_path, capsys):
    out = tmp_path / "out"
    rows = main(["--quick", "--out", str(out), "--cells", "linear", "--n-embd", "32"])
    printed = capsys.readouterr().out
    assert [row["cell"] for row in rows] == ["trl", "linear"]
    assert "| trl |" in printed and "| linear |" in printed
    assert "ru_maxrss" in printed or "max_memory_allocated" in printed
    with open(out / "grpo_step_quick.csv") as f:
        written = list(csv.DictReader(f))
    assert list(written[0]) == [
        "cell", "side", "device", "median_s", "min_s", "ratio_vs_trl", "ratio_vs_single",
        "peak_mb", "step_extra_mb", "target", "target_met", "timed_steps",
        "batch_size", "num_generations", "completion_length", "loss_type",
    ]  # fmt: skip
    assert [(r["cell"], r["side"]) for r in written] == [("trl", "trl"), ("linear", "ours")]
    for r in written:
        assert float(r["median_s"]) > 0 and float(r["peak_mb"]) > 0
        assert int(r["timed_steps"]) == 3
    assert float(written[0]["ratio_vs_trl"]) == 1.0
    assert written[1]["target"] == "linear/trl <= 1"
    assert written[1]["target_met"] in ("True", "False")
    assert (out / "grpo_step_quick.png").stat().st_size > 0


def test_unequal_completion_lengths_are_refused(monkeypatch):
    monkeypatch.setattr(grpo_cells, "COMPLETION_TOKENS", [])
    grpo_cells.length_reward(["a b", "c"], completion_ids=[[1, 2], [3, 4]])
    grpo_cells.check_lengths(2)
    grpo_cells.weighted_reward(["a"], completion_ids=[[1]])
    with pytest.raises(RuntimeError, match=r"completions of \[1, 2\] tokens"):
        grpo_cells.check_lengths(2)
