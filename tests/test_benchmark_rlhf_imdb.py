"""The IMDb headline benchmark runs end to end on generated reviews, and reuses its caches."""

from __future__ import annotations

import csv
import json

import pytest

from benchmarks.rlhf_imdb.cli import main
from benchmarks.rlhf_imdb.report import SWEEP
from mogradient_llm.policy.models import build_tiny_policy, synthetic_reviews

POSITIVE = ("great", "wonderful", "beautiful", "funny", "brilliant", "amazing", "good", "excellent")


def write_split(path, n, seed):
    """Generated reviews labelled 1 when they contain a positive adjective."""
    with open(path, "w") as f:
        for text in synthetic_reviews(n, seed=seed):
            label = int(any(word in text for word in POSITIVE))
            f.write(json.dumps({"text": text, "label": label, "rating": 1 + 9 * label}) + "\n")


@pytest.fixture
def data_dir(tmp_path):
    directory = tmp_path / "data"
    directory.mkdir()
    write_split(directory / "train.jsonl", 200, seed=0)
    write_split(directory / "test.jsonl", 40, seed=1)
    return directory


def test_pipeline_writes_outputs_and_reuses_every_stage(data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [
        "--data", str(data_dir), "--out", str(out), "--sizes", "tiny", "--seeds", "0,1",
        "--algorithms", "ppo,grpo", "--aggregators", "pama,gdpo", "--three-objectives", "tiny",
        "--sweep", "2", "--kl-budgets", "1,0.5", "--pretrain-steps", "2", "--reward-steps", "2",
        "--steps", "2", "--eval-every", "1", "--batch-size", "4", "--eval-prompts", "4",
        "--train-eval-prompts", "4", "--vocab-size", "300",
    ]  # fmt: skip
    summary = main(argv)
    first = capsys.readouterr().out
    assert "computing" in first and "cached" not in first
    # GDPO is GRPO's only; the sweep (two preferences) is one row per algorithm, k = 2 only
    assert [(r["objectives"], r["algorithm"], r["method"], r["seeds"]) for r in summary] == [
        (2, "ppo", "pama", 2),
        (2, "ppo", SWEEP, 1),
        (2, "grpo", "pama", 2),
        (2, "grpo", "gdpo", 2),
        (2, "grpo", SWEEP, 1),
        (3, "ppo", "pama", 2),
        (3, "grpo", "pama", 2),
        (3, "grpo", "gdpo", 2),
    ]
    for name in ("runs.csv", "summary.csv", "best.csv", "policies.csv", "kl_curves.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "front_ppo_tiny.png").is_file() and (out / "front_grpo_tiny.png").is_file()
    setup = json.loads((out / "setup.json").read_text())
    assert 0.0 <= setup["reward_model"]["test_accuracy"] <= 1.0
    assert setup["arguments"]["kl_budgets"] == [0.5, 1.0]
    assert setup["hypervolume_reference"] == {
        "2 objectives": [-3.0, 0.5],
        "3 objectives": [-3.0, 0.5, 0.0],
    }
    with open(out / "runs.csv") as f:
        runs = list(csv.DictReader(f))
    assert len(runs) == 2 * (2 + 2 + 2) + 2 * 2
    assert all(float(r["length"]) >= 0.5 and float(r["kl"]) == float(r["kl"]) for r in runs)
    curves = json.loads((out / "curves.json").read_text())
    assert all([c["step"] for c in run["curve"]] == [1, 2] for run in curves)
    assert all(set(c) == {"step", "test", "train"} for run in curves for c in run["curve"])
    results = sorted((out / "cache").glob("*/*/result.json"))
    stamps = {p: p.stat().st_mtime_ns for p in results}
    assert {p.parent.parent.name for p in results} == {
        "tokenizer", "reward_model", "policy", "start", "rl"
    }  # fmt: skip

    again = main(argv)
    second = capsys.readouterr().out
    assert "computing" not in second and second.count("cached") == len(results)
    assert {p: p.stat().st_mtime_ns for p in results} == stamps
    assert again == summary

    # A changed tokenizer invalidates its dependants, shown on one run of the grid (the cache
    # keys do not depend on which other runs a call asks for): at the old vocabulary every
    # stage of that run is cached, at a new one each is computed again.
    one_run = [*argv[:-2], "--seeds", "0", "--algorithms", "ppo", "--aggregators", "pama"]
    one_run += ["--three-objectives", "", "--sweep", "0"]
    main([*one_run, "--vocab-size", "300"])
    control = capsys.readouterr().out
    assert "computing" not in control and "[rl] cached" in control, control
    main([*one_run, "--vocab-size", "301"])
    third = capsys.readouterr().out
    assert "[tokenizer] computing" in third and "[rl] cached" not in third, third
    for stage in ("reward_model", "policy", "start", "rl"):
        assert f"[{stage}] computing" in third and f"[{stage}] cached" not in third, stage


def test_vader_sentiment_and_a_policy_loaded_by_path(data_dir, tmp_path):
    """VADER skips the reward model and sets its own reference point; a size that is not in
    ``SIZES`` is loaded through ``from_pretrained`` and not pre-trained."""
    model, tokenizer = build_tiny_policy(synthetic_reviews(50), pretrain_steps=0, vocab_size=300)
    model.save_pretrained(tmp_path / "local-gpt2")
    tokenizer.save_pretrained(tmp_path / "local-gpt2")
    out = tmp_path / "out"
    argv = [
        "--data", str(data_dir), "--out", str(out), "--sizes", str(tmp_path / "local-gpt2"),
        "--seeds", "0",
        "--algorithms", "ppo", "--aggregators", "pama", "--sentiment", "vader",
        "--pretrain-steps", "1",
        "--steps", "1", "--batch-size", "2", "--eval-prompts", "2", "--vocab-size", "300",
    ]  # fmt: skip
    summary = main(argv)
    assert [row["method"] for row in summary] == ["pama"]
    assert -1.0 <= summary[0]["sentiment_mean"] <= 1.0
    assert not (out / "cache" / "reward_model").exists()
    with open(out / "policies.csv") as f:
        (policy,) = list(csv.DictReader(f))
    assert int(policy["parameters"]) == sum(p.numel() for p in model.parameters())
    assert not list((out / "cache" / "policy").glob("*/config.json"))  # not pre-trained here
    with open(out / "runs.csv") as f:
        (run,) = list(csv.DictReader(f))
    sentiment, length = float(run["sentiment"]), float(run["length"])
    assert float(run["hypervolume"]) == pytest.approx(max(sentiment + 1, 0) * (length - 0.5))


def test_parallel_jobs_give_the_same_runs(data_dir, tmp_path):
    """``--jobs 2`` runs the stages in two spawned processes; every run's metrics (all but the
    timing) equal the in-process run's, in the same table order."""
    argv = [
        "--data", str(data_dir), "--sizes", "tiny", "--seeds", "0", "--three-objectives", "",
        "--algorithms", "ppo", "--aggregators", "pama,mgda", "--pretrain-steps", "2",
        "--reward-steps", "2",
        "--steps", "1", "--batch-size", "4", "--eval-prompts", "4", "--vocab-size", "300",
    ]  # fmt: skip
    serial = main([*argv, "--out", str(tmp_path / "serial")])
    parallel = main([*argv, "--out", str(tmp_path / "parallel"), "--jobs", "2"])

    def untimed(rows):
        return [{k: v for k, v in row.items() if "seconds" not in k} for row in rows]

    assert untimed(parallel) == untimed(serial)


def test_default_data_and_the_offline_demo_fallback(data_dir, tmp_path, monkeypatch, capsys):
    """Without ``--data`` the subset beside the repository is used; where it is missing,
    ``--quick`` runs the offline demo and a full run stops with an error naming the path."""
    import benchmarks.rlhf_imdb.cli as cli

    monkeypatch.setattr(cli, "DEFAULT_DATA_DIR", data_dir)
    argv = [
        "--out", str(tmp_path / "out"), "--sizes", "tiny", "--seeds", "0",
        "--three-objectives", "", "--algorithms", "ppo", "--aggregators", "pama",
        "--sentiment", "vader", "--pretrain-steps", "1",
        "--steps", "1", "--batch-size", "2", "--eval-prompts", "2", "--vocab-size", "300",
    ]  # fmt: skip
    assert [row["method"] for row in main(argv)] == ["pama"]
    assert f"data: {data_dir}" in capsys.readouterr().out

    missing = tmp_path / "no-such-dir"
    monkeypatch.setattr(cli, "DEFAULT_DATA_DIR", missing)
    calls = []
    monkeypatch.setattr(cli.subprocess, "run", lambda argv, **kwargs: calls.append(argv[1:]))
    assert main(["--quick"]) == []
    assert calls == [["-m", "mogradient_llm", "demo"]]
    assert "running the offline demo" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(argv)
    assert str(missing) in capsys.readouterr().err


def test_no_noon_runs_are_separate_stages(data_dir, tmp_path, capsys):
    """PAMA clips advantages at zero (Noon) unless ``--no-noon``, which trains it with plain
    advantages: new RL stages (their config says so), while the policy and reward-model stages
    are reused. The other methods always use plain advantages."""
    argv = [
        "--data", str(data_dir), "--out", str(tmp_path / "out"), "--sizes", "tiny",
        "--three-objectives", "", "--seeds", "0", "--algorithms", "ppo",
        "--aggregators", "pama,morlhf", "--pretrain-steps", "2",
        "--reward-steps", "2", "--steps", "1", "--batch-size", "4", "--eval-prompts", "4",
        "--vocab-size", "300",
    ]  # fmt: skip
    main(argv)
    capsys.readouterr()
    main([*argv, "--no-noon"])
    output = capsys.readouterr().out
    assert "[policy] cached" in output and "[rl] computing" in output
    configs = [
        json.loads(p.read_text())["config"]
        for p in (tmp_path / "out" / "cache" / "rl").glob("*/result.json")
    ]
    noon = sorted((c["method"]["aggregator"], c["noon"]) for c in configs)
    assert noon == [("morlhf", False), ("pama", False), ("pama", True)]


def test_a_failing_stage_stops_a_parallel_run(data_dir, tmp_path):
    """A stage that raises in a worker process surfaces as the error of the whole run."""
    argv = [
        "--data", str(data_dir), "--out", str(tmp_path / "out"), "--jobs", "2",
        "--sizes", str(tmp_path / "no-such-model"), "--sentiment", "vader", "--seeds", "0",
        "--algorithms", "ppo", "--aggregators", "pama", "--steps", "1", "--batch-size", "2",
        "--eval-prompts", "2",
        "--vocab-size", "300",
    ]  # fmt: skip
    with pytest.raises(OSError, match="no-such-model"):
        main(argv)


@pytest.mark.parametrize(
    ("argv", "three_objectives"),
    [
        ([], "tiny"),  # the full run's default sizes include tiny
        (["--sizes", "1m,4m"], ""),
        (["--sizes", "4m,tiny"], "tiny"),
        (["--three-objectives", "1m", "--sizes", "1m"], "1m"),
        (["--quick"], ""),
    ],
)
def test_the_three_objective_default_follows_the_sizes(data_dir, argv, three_objectives):
    """Left out, ``--three-objectives`` is the default's sizes that the run trains, also when
    ``--sizes`` is left out too (the full run's default ``tiny,1m,4m``)."""
    from benchmarks.rlhf_imdb.cli import parse_args

    assert parse_args([*argv, "--data", str(data_dir)]).three_objectives == three_objectives
