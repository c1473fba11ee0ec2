"""The constrained IMDb benchmark: its selection at matched KL on a hand-made CSV of
evaluations (every expected value worked out by hand below), and its stages end to end at a
toy size."""

from __future__ import annotations

import json

import pytest

from benchmarks.docs_tables import generate
from benchmarks.rlhf_imdb.cli import main
from benchmarks.rlhf_imdb.constrained import (
    THRESHOLDS,
    choose_weight,
    docs_table,
    format_summary,
    matched_kl,
    per_seed,
    summary,
)
from benchmarks.rlhf_imdb.runs import CONSTRAINED, DUAL_LR
from benchmarks.tables import read_csv, write_csv
from mogradient_llm.policy.models import synthetic_reviews

# τ = 0.4: the Lagrangian's test KL reaches 3.0 (matched KL); seed 0 satisfies at step 16 only
# (length 1.1), seed 1 at both steps (best 1.3): 3 of 4 evaluations, length 1.2 ± 0.1414.
# Its train rows have KL 10: the matched KL is read on the test prompts.
# Sweep (seed 0) on the train prompts within KL 3.0: w=0 never satisfies; w=0.5's satisfying
# evaluations give 1.2 (its 1.45 is at KL 3.5); w=0.25's give 1.3 -> chosen, although on the
# test prompts w=0.5 would look better (the choice reads the train prompts only).
# Chosen w=0.25 on test: seed 0 satisfies only at KL 4.0 (> 3.0: no length), seed 1 at step 8
# (1.0): 2 of 4 satisfied, length 1.0 from 1 seed of 2.
# τ = 0.6: the Lagrangian never satisfies (matched KL 1.0), nor does any sweep weight within
# KL 1.0 on train: no MORLHF row.
EVALUATIONS = """\
size,algorithm,method,threshold,weight,seed,step,split,sentiment,length,kl,multiplier
tiny,grpo,lagrangian,0.4,,0,8,test,0.3,1.2,1.0,0.5
tiny,grpo,lagrangian,0.4,,0,16,test,0.5,1.1,2.0,0.4
tiny,grpo,lagrangian,0.4,,1,8,test,0.45,1.3,1.5,0.0
tiny,grpo,lagrangian,0.4,,1,16,test,0.42,1.25,3.0,0.0
tiny,grpo,lagrangian,0.4,,0,8,train,0.3,1.2,10.0,0.5
tiny,grpo,lagrangian,0.4,,0,16,train,0.5,1.1,10.0,0.4
tiny,grpo,lagrangian,0.6,,0,8,test,0.3,1.0,0.5,0.3
tiny,grpo,lagrangian,0.6,,0,16,test,0.55,1.0,1.0,0.5
tiny,grpo,morlhf-sweep,,0.0,0,8,train,0.1,1.5,1.0,
tiny,grpo,morlhf-sweep,,0.0,0,16,train,0.2,1.6,2.0,
tiny,grpo,morlhf-sweep,,0.5,0,8,train,0.5,1.2,1.0,
tiny,grpo,morlhf-sweep,,0.5,0,16,train,0.6,1.45,3.5,
tiny,grpo,morlhf-sweep,,0.25,0,8,train,0.41,1.3,2.9,
tiny,grpo,morlhf-sweep,,0.25,0,16,train,0.39,1.5,2.0,
tiny,grpo,morlhf-sweep,,0.5,0,8,test,0.7,1.6,1.0,
tiny,grpo,morlhf-sweep,,0.5,0,16,test,0.7,1.6,1.0,
tiny,grpo,morlhf-sweep,,0.25,0,8,test,0.35,1.2,1.0,
tiny,grpo,morlhf-sweep,,0.25,0,16,test,0.5,1.35,4.0,
tiny,grpo,morlhf-sweep,,0.25,1,8,test,0.45,1.0,1.0,
tiny,grpo,morlhf-sweep,,0.25,1,16,test,0.3,1.4,2.0,
"""


@pytest.fixture
def rows(tmp_path):
    path = tmp_path / "evaluations.csv"
    path.write_text(EVALUATIONS)
    return read_csv(path)


def test_matched_kl_and_the_weight_chosen_on_the_train_prompts(rows):
    assert matched_kl(rows, "tiny", "grpo", 0.4) == 3.0
    assert matched_kl(rows, "tiny", "grpo", 0.6) == 1.0
    assert choose_weight(rows, "tiny", "grpo", 0.4, 3.0) == (0.25, 1.3)
    assert choose_weight(rows, "tiny", "grpo", 0.4, 3.5) == (0.5, 1.45)  # a larger budget
    assert choose_weight(rows, "tiny", "grpo", 0.6, 1.0) == (None, None)
    with pytest.raises(ValueError, match="no Lagrangian evaluation of tiny grpo at τ = 0.5"):
        matched_kl(rows, "tiny", "grpo", 0.5)


def test_satisfaction_and_length_at_matched_kl_per_seed_and_summarised(rows, tmp_path):
    seeds = per_seed(rows)
    assert [
        (r["threshold"], r["method"], r["seed"], r["satisfied"], r["length_at_matched_kl"])
        for r in seeds
    ] == [
        (0.4, "lagrangian", 0, 1, 1.1),
        (0.4, "lagrangian", 1, 2, 1.3),
        (0.4, "morlhf w=0.25", 0, 1, None),
        (0.4, "morlhf w=0.25", 1, 1, 1.0),
        (0.6, "lagrangian", 0, 0, None),
    ]
    assert [r["final_multiplier"] for r in seeds[:2]] == [0.4, 0.0]
    table = summary(seeds)
    lagrangian, morlhf, tight = table
    assert lagrangian["satisfied"] == 0.75 and lagrangian["seeds_with_length"] == 2
    assert lagrangian["length_at_matched_kl_mean"] == pytest.approx(1.2, abs=1e-12)
    assert lagrangian["length_at_matched_kl_std"] == pytest.approx(0.2 / 2**0.5, abs=1e-12)
    assert lagrangian["final_multiplier_mean"] == pytest.approx(0.2, abs=1e-12)
    assert (morlhf["satisfied"], morlhf["seeds_with_length"]) == (0.5, 1)
    assert morlhf["length_at_matched_kl_mean"] == 1.0 and morlhf["final_multiplier_mean"] is None
    assert (tight["satisfied"], tight["length_at_matched_kl_mean"]) == (0.0, None)
    # the docs marker's table is the summary's CSV formatted: a changed cell changes it
    folder = tmp_path / "rlhf_imdb_constrained"
    folder.mkdir()
    write_csv(table, folder / "constrained.csv")
    text = generate("rlhf_imdb_constrained/constrained", tmp_path)
    assert text == format_summary(table)
    assert "| tiny | grpo | 0.4 | morlhf w=0.25 | 2 | 3.00 | 50 % | 1.000 ± 0.000 | 1/2 |" in text
    table[1]["satisfied"] = 0.25
    write_csv(table, folder / "constrained.csv")
    assert generate("rlhf_imdb_constrained/constrained", tmp_path) != text
    with pytest.raises(ValueError, match="unknown constrained table 'constrained-nope'"):
        generate("rlhf_imdb_constrained/constrained-nope", tmp_path)


POSITIVE = ("great", "wonderful", "beautiful", "funny", "brilliant", "amazing", "good", "excellent")


def test_constrained_stage_end_to_end_reusing_the_sweep(tmp_path, capsys):
    """At a toy size: the main benchmark's sweep runs are read back from its cache by
    ``--constrained`` (not retrained); each Lagrangian run's first multiplier is one dual
    ascent step, max(0, DUAL_LR (τ − J)), on its first step's mean sentiment J."""
    data = tmp_path / "data"
    data.mkdir()
    for name, n, seed in (("train", 200, 0), ("test", 40, 1)):
        with open(data / f"{name}.jsonl", "w") as f:
            for text in synthetic_reviews(n, seed=seed):
                label = int(any(word in text for word in POSITIVE))
                f.write(json.dumps({"text": text, "label": label, "rating": 1 + 9 * label}) + "\n")
    common = [
        "--data", str(data), "--sizes", "tiny", "--algorithms", "grpo", "--seeds", "0,1",
        "--sweep", "1", "--pretrain-steps", "2", "--reward-steps", "2", "--steps", "2",
        "--eval-every", "1", "--batch-size", "4", "--eval-prompts", "4",
        "--train-eval-prompts", "4", "--vocab-size", "300", "--cache-dir", str(tmp_path / "c"),
    ]  # fmt: skip
    main([*common, "--out", str(tmp_path / "main"), "--aggregators", "pama", "--seeds", "0"])
    capsys.readouterr()
    out = tmp_path / "constrained"
    table = main([*common, "--out", str(out), "--constrained"])
    log = capsys.readouterr().out
    records = [json.loads(p.read_text()) for p in (tmp_path / "c" / "rl").glob("*/result.json")]
    chosen = [r for r in records if r["config"].get("preference") and r["config"]["seed"] == 1]
    # the main run's sweep point (0.5, 0.5) of seed 0 is read back; the length-only end, the
    # four Lagrangian runs and the chosen weight's second seed (if one is chosen) are new
    assert "morlhf-sweep (0.5, 0.5) k=2 seed 0" in log
    assert log.count("[rl] cached") == 1
    assert log.count("[rl] computing") == 1 + 4 + len(chosen)
    lagrangian_rows = [(r["threshold"], r["seeds"]) for r in table if r["method"] == CONSTRAINED]
    assert lagrangian_rows == [(tau, 2) for tau in THRESHOLDS]
    for name in ("constrained.csv", "constrained_seeds.csv", "constrained_sweep.csv"):
        assert docs_table(out, name.removesuffix(".csv").replace("_", "-")).count("\n") >= 2
    assert (out / "constrained.png").stat().st_size > 0
    lagrangian = [r for r in records if "constraint" in r["config"]]
    assert len(lagrangian) == 4
    for record in lagrangian:
        tau = float(record["config"]["constraint"].partition(">=")[2])
        first = record["result"]["history"][0]
        expected = max(0.0, DUAL_LR * (tau - first["sentiment"]))
        # J is the float32 batch mean both ways: they agree to float32 rounding, < 1e-6 here
        assert first["constraint/sentiment/multiplier"] == pytest.approx(expected, abs=1e-6)


def test_constrained_arguments(tmp_path, capsys):
    """``--constrained`` defaults to a 3-weight sweep and two objectives, and refuses a third
    objective or no sweep, naming both."""
    from benchmarks.rlhf_imdb.cli import parse_args

    args = parse_args(["--constrained", "--data", str(tmp_path)])
    assert (args.sweep, args.three_objectives) == (3, "")
    for extra in (["--sweep", "0"], ["--three-objectives", "tiny"]):
        with pytest.raises(SystemExit):
            parse_args(["--constrained", "--data", str(tmp_path), *extra])
        assert "--sweep at least 1, no --three-objectives" in capsys.readouterr().err
