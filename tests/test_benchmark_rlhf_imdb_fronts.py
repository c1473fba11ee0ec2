"""The IMDb benchmark's conditioned-policy and Rewarded Soups stages, compared with its
preference sweep at matched KL (``fronts.csv``), end to end at toy size on generated reviews."""

from __future__ import annotations

import json

import pytest

from benchmarks.rlhf_imdb.cli import main, parse_args
from benchmarks.rlhf_imdb.compare import format_fronts
from benchmarks.rlhf_imdb.docs import docs_table
from benchmarks.rlhf_imdb.fronts import lattice
from benchmarks.rlhf_imdb.report import SWEEP
from benchmarks.tables import read_csv
from tests import test_benchmark_rlhf_imdb

#: The toy IMDb split the pipeline tests train on.
data_dir = test_benchmark_rlhf_imdb.data_dir


def test_fronts_are_compared_on_the_sweep_lattice_with_their_compute(data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [
        "--data", str(data_dir), "--out", str(out), "--sizes", "tiny", "--seeds", "0,1",
        "--algorithms", "grpo", "--aggregators", "morlhf", "--three-objectives", "",
        "--sweep", "2", "--conditioned-steps", "2,3", "--concentration", "0.5", "--soups",
        "--kl-budgets", "1,0.5",
        "--pretrain-steps", "2", "--reward-steps", "2", "--steps", "2", "--eval-every", "1",
        "--batch-size", "4", "--eval-prompts", "4", "--train-eval-prompts", "4",
        "--vocab-size", "300",
    ]  # fmt: skip
    summary = main(argv)
    capsys.readouterr()
    rows = read_csv(out / "fronts.csv")
    # the sweep: its 2 runs and the equal-weights morlhf run of seed 0, 2 steps each; the soups:
    # two one-hot runs of 2 steps; each conditioned step budget: one run per seed
    assert [(r["front"], r["runs"], r["seeds"], r["train_steps"]) for r in rows] == [
        ("morlhf sweep", 3, 1, 6),
        ("rewarded soups", 2, 1, 4),
        ("conditioned, 2 steps, α = 0.5", 1, 2, 2),
        ("conditioned, 3 steps, α = 0.5", 1, 2, 3),
    ]
    assert all(r["train_seconds"] > 0 for r in rows)
    # the sweep's front here is the main table's sweep row
    (sweep,) = [r for r in summary if r["method"] == SWEEP]
    for budget in (0.5, 1):
        assert rows[0][f"hv@{budget:g}_mean"] == pytest.approx(sweep[f"test_hv@{budget:g}_mean"])
    top = rows[0]["hv@1_mean"]  # the share is NaN when the sweep's hypervolume is 0
    assert rows[0]["sweep_share"] == pytest.approx(1.0) if top else rows[0]["sweep_share"] != top
    for row in rows:
        for name in ("sentiment", "length"):
            rho = row[f"spearman_{name}_mean"]
            assert rho != rho or -1.0 <= rho <= 1.0  # NaN when a front's rewards are constant
            ordered = row[f"ordered_{name}_mean"]
            assert ordered != ordered or 0.0 <= ordered <= 1.0
    assert (out / "fronts_grpo_tiny.png").stat().st_size > 0

    stages = {
        p.parent.parent.name: json.loads(p.read_text())
        for p in (out / "cache").glob("*/*/result.json")
        if p.parent.parent.name in ("conditioned", "soups")
    }
    expected = [1 / 3, 2 / 3, 0.5, 0.5, 2 / 3, 1 / 3]  # the sweep's weights, rounded
    for name, record in stages.items():
        result = record["result"]
        flat = [w for p in result["preferences"] for w in p]
        assert flat == pytest.approx(expected, abs=1e-4)
        steps = record["config"]["steps"]
        first = 0 if name == "conditioned" else 1  # the soups' step 0 is the start policy
        for points in result["curves"].values():
            assert [c["step"] for c in points] == list(range(first, steps + 1))
    conditioned = next(
        r["result"]
        for p in (out / "cache" / "conditioned").glob("*/result.json")
        if (r := json.loads(p.read_text()))
    )
    for points in conditioned["curves"].values():  # step 0: the policy is its reference
        assert points[0]["test"]["kl"] == pytest.approx(0.0, abs=1e-5)

    again = main(argv)  # every stage is cached, the report is the same
    second = capsys.readouterr().out
    assert "computing" not in second and "[conditioned] cached" in second
    assert "[soups] cached" in second and again == summary
    assert repr(read_csv(out / "fronts.csv")) == repr(rows)  # repr: NaN cells compare equal


def test_the_docs_table_is_the_csv(tmp_path):
    """``docs_table(folder, "fronts")`` prints ``fronts.csv`` as the report does; a changed
    cell in the CSV changes the table."""
    from benchmarks.tables import write_csv

    row = {
        "algorithm": "grpo", "size": "tiny", "front": "conditioned, 16 steps, α = 1", "runs": 1,
        "seeds": 2, "train_steps": 16, "train_seconds": 12.3, "hv@1_mean": 2.0, "hv@1_std": 0.1,
        "hv_final_mean": 2.5, "hv_final_std": 0.2, "kl_final_max_mean": 3.0,
        "kl_final_max_std": 0.5, "spearman_sentiment_mean": 0.9, "spearman_sentiment_std": 0.1,
        "ordered_sentiment_mean": 0.8, "ordered_sentiment_std": 0.1,
        "spearman_length_mean": float("nan"), "spearman_length_std": float("nan"),
        "ordered_length_mean": 0.5, "ordered_length_std": 0.0, "sweep_share": 0.95,
    }  # fmt: skip
    write_csv([row], tmp_path / "fronts.csv")
    table = docs_table(tmp_path, "fronts")
    assert table == format_fronts(read_csv(tmp_path / "fronts.csv"))
    assert "| conditioned, 16 steps, α = 1 | 1 | 2 | 16 | 12 | 2.000 ± 0.100 | 95 % |" in table
    assert "| n/a |" in table and "0.90 ± 0.10" in table
    write_csv([{**row, "hv@1_mean": 2.5}], tmp_path / "fronts.csv")
    assert docs_table(tmp_path, "fronts") != table


def test_the_lattice_is_the_sweeps():
    """The sweep's weights, and 0.5 where the equal-weights run is its middle point."""
    assert lattice([0.2, 0.4, 0.6, 0.8], True) == [
        (0.2, 0.8), (0.4, 0.6), (0.5, 0.5), (0.6, 0.4), (0.8, 0.2)
    ]  # fmt: skip
    assert lattice([0.3333, 0.6667], False) == [(0.3333, 0.6667), (0.6667, 0.3333)]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--conditioned-steps", "4"], "add --sweep N"),
        (["--soups"], "add --sweep N"),
        (["--sweep", "2", "--conditioned-steps", "4,x"], "positive integers"),
        (["--sweep", "2", "--conditioned-steps", "0"], "positive integers"),
        (["--sweep", "2", "--concentration", "0"], "--concentration must be positive"),
    ],
)
def test_bad_front_options_are_refused(data_dir, capsys, extra, message):
    with pytest.raises(SystemExit):
        parse_args(["--data", str(data_dir), "--quick", "--sweep", "0", *extra])
    assert message in capsys.readouterr().err
