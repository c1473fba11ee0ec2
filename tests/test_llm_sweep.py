"""``mogradient-llm sweep``: one run per preference, the front, matched-KL selection, caching
and resume, on the tiny offline policy."""

from __future__ import annotations

import csv
import json
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import mogradient_llm.policy.evaluation as evaluate_module
import mogradient_llm.run as run_module
from mogradient.pareto import hypervolume
from mogradient_llm.cli import main, parse_sweep_args
from mogradient_llm.pareto.front import (
    PolicyPoint,
    front_at_kl_budget,
    front_metrics,
    select_at_kl_budget,
)
from mogradient_llm.pareto.soups import interpolate_policies
from mogradient_llm.pareto.sweep import (
    preference_aware_aggregators,
    preference_label,
    preference_lattice,
)

FAST = [
    "--policy",
    "tiny",
    "--tiny-pretrain-steps",
    "5",
    "--reward",
    "length",
    "--reward",
    "vader",
    "--batch-size",
    "8",
    "--mini-batch-size",
    "4",
    "--learning-rate",
    "1e-3",
    "--max-new-tokens",
    "8",
    "--no-progress",
    "--eval-num-prompts",
    "8",
    "--ref-point",
    "0,-1",
]


def _point(run: str, step: int, kl: float, scores: tuple[float, ...] = (0.0, 0.0)) -> PolicyPoint:
    return PolicyPoint(run, (0.5, 0.5), step, f"checkpoint-{step}", scores, kl)


# ---------------------------------------------------------------------- pure functions


def test_preference_lattice_and_labels() -> None:
    lattice = preference_lattice(2, 5)
    assert lattice == [(0.0, 1.0), (0.25, 0.75), (0.5, 0.5), (0.75, 0.25), (1.0, 0.0)]
    assert [preference_label(p) for p in lattice[:2]] == ["0_1", "0.25_0.75"]
    three = preference_lattice(3, 6)
    assert len(three) == 6 and all(abs(sum(p) - 1) < 1e-12 for p in three)
    with pytest.raises(ValueError, match="at least 2 points"):
        preference_lattice(2, 1)


def test_select_at_kl_budget_takes_the_last_checkpoint_within_the_budget() -> None:
    # KL is not monotone along training: step 3 dips back under the budget after step 2
    curve = [_point("a", 0, 0.0), _point("a", 1, 1.0), _point("a", 2, 6.0), _point("a", 3, 4.0)]

    def step(points: list[PolicyPoint], budget: float) -> int | None:
        chosen = select_at_kl_budget(points, budget)
        return None if chosen is None else chosen.step

    assert step(curve, 5.0) == 3  # the later step, not the lower KL
    assert step(curve, 2.0) == 1
    assert step(curve, 4.0) == 3  # the budget is inclusive
    assert step(curve[1:], 0.5) is None
    assert step(list(reversed(curve)), 5.0) == 3  # order does not matter


def test_front_at_kl_budget_and_its_hypervolume() -> None:
    curves = {
        "a": [_point("a", 1, 1.0, (1.0, 0.0)), _point("a", 2, 3.0, (2.0, 0.5))],
        "b": [_point("b", 1, 2.5, (0.0, 1.0)), _point("b", 2, 9.0, (0.5, 3.0))],
        "c": [_point("c", 1, 7.0, (5.0, 5.0))],
    }
    chosen = front_at_kl_budget(curves, 3.0)
    assert [(p.run, p.step) for p in chosen] == [("a", 2), ("b", 1)]  # c has none within 3
    metrics = front_metrics(chosen, (-1.0, -1.0))
    # boxes (3 x 1.5) and (1 x 2) above (-1, -1), overlapping in (1 x 1.5)
    assert metrics["hypervolume"] == pytest.approx(3 * 1.5 + 1 * 2 - 1 * 1.5)
    assert metrics["non_dominated"] == [True, True]
    dominated = front_metrics([*chosen, _point("d", 1, 0.0, (0.0, 0.0))], (-1.0, -1.0))
    assert dominated["non_dominated"] == [True, True, False]
    assert dominated["hypervolume"] == pytest.approx(metrics["hypervolume"])
    assert front_metrics(chosen[:1], (-1.0, -1.0))["spacing"] is None


def test_sweep_flags_parse_on_top_of_train_flags() -> None:
    run, config, options = parse_sweep_args(
        [*FAST, "--algorithm", "grpo", "--aggregator", "stch", "--num-generations", "2",
         "--preference", "7,3", "--preference", "1,1", "--kl-budgets", "2,5", "--output-dir", "o"]
    )  # fmt: skip
    assert config.algorithm == "grpo" and config.num_generations == 2
    assert options.preferences == ((0.7, 0.3), (0.5, 0.5))
    assert options.kl_budgets == (2.0, 5.0) and options.ref_point == (0.0, -1.0)
    assert run.rewards == ("length", "vader")
    _, _, lattice = parse_sweep_args([*FAST, "--preferences", "3", "--output-dir", "o"])
    assert lattice.preferences == ((0.0, 1.0), (0.5, 0.5), (1.0, 0.0))


# ---------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--aggregator", "mgda"], "takes no preference"),
        (["--aggregator", "pama"], "takes no preference"),
        (["--aggregator", "epo", "--preferences", "3"], "preference 0_1: .*strictly positive"),
        (["--aggregator", "linear", "--preference", "1,2,3"], "3 entries for 2 rewards"),
        (["--aggregator", "linear", "--reward-weights", "1", "1"], "drop --reward-weights"),
        (["--aggregator", "linear", "--preferences", "3", "--preference", "1,1"], "not both"),
        (["--aggregator", "linear", "--resume"], "drop --resume"),
        (["--aggregator", "linear", "--kl-budgets", "0,2"], "must be positive"),
    ],
)
def test_bad_inputs_fail_before_training(tmp_path, capsys, flags, message) -> None:
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", *FAST, *flags, "--steps", "1", "--output-dir", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mogradient-llm: error:") and "\n" not in err
    assert re.search(message, err), err
    if "no preference" in message:
        for name in ("linear", "tchebycheff", "stch", "epo", "upgrad"):
            assert name in err and name in preference_aware_aggregators()
    assert not (out / "runs").exists()


# ---------------------------------------------------------------------- end to end


def _read_csv(path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _sweep(out, *flags: str) -> None:
    main(["--threads", "1", "sweep", *FAST, *flags, "--output-dir", str(out)])


def test_ppo_sweep_writes_the_front_caches_and_resumes(tmp_path, capsys, monkeypatch) -> None:
    out = tmp_path / "out"
    flags = ["--aggregator", "linear", "--preferences", "2", "--steps", "2", "--save-steps", "1",
             "--kl-budgets", "0.001,1000"]  # fmt: skip
    _sweep(out, *flags)
    printed = capsys.readouterr().out
    assert "KL <= 0.001" in printed and "final front: hypervolume" in printed

    front = _read_csv(out / "front.csv")
    assert [row["run"] for row in front] == ["0_1", "1_0"]
    assert set(front[0]) == {
        "run", "preference/length", "preference/vader", "step", "score/length", "score/vader",
        "kl", "non_dominated",
    }  # fmt: skip
    assert [row["preference/length"] for row in front] == ["0.0", "1.0"]
    assert all(row["step"] == "2" and float(row["kl"]) > 0 for row in front)
    curve = _read_csv(out / "kl_curve.csv")
    assert [(r["run"], r["checkpoint"]) for r in curve] == [
        (run, name) for run in ("0_1", "1_0") for name in ("initial", "checkpoint-1", "final")
    ]
    assert float(curve[0]["kl"]) == 0.0  # the initial policy is the reference
    for image in ("front.png", "kl_curve.png"):
        assert (out / image).read_bytes()[:4] == b"\x89PNG"

    summary = json.loads((out / "summary.json").read_text())
    assert summary["ref_point"] == [0.0, -1.0]
    scores = [[float(r["score/length"]), float(r["score/vader"])] for r in front]
    expected = hypervolume(scores, [0.0, -1.0], maximize=True)
    assert summary["final"]["hypervolume"] == pytest.approx(expected)
    assert summary["final"]["spacing"] is not None
    tight, loose = summary["kl_budgets"]
    # a budget below every trained checkpoint's KL keeps the initial policy of each run
    assert {v["checkpoint"] for v in tight["selected"].values()} == {"initial"}
    assert {v["checkpoint"] for v in loose["selected"].values()} == {"final"}
    assert loose["hypervolume"] == pytest.approx(summary["final"]["hypervolume"])

    # a second call trains nothing and evaluates nothing: both are cached
    def fail(*args, **kwargs):
        raise AssertionError("cached work was redone")

    with monkeypatch.context() as patch:
        patch.setattr(run_module, "train", fail)
        patch.setattr(evaluate_module, "evaluate_checkpoint", fail)
        _sweep(out, *flags)
    assert printed.splitlines()[-4:] == capsys.readouterr().out.splitlines()[-4:]
    assert json.loads((out / "summary.json").read_text()) == summary

    # a run killed after its first checkpoint resumes from it; the other stays cached
    run = out / "runs" / "1_0"
    shutil.rmtree(run / "final")
    shutil.rmtree(run / "checkpoint-2")
    _sweep(out, *flags)
    printed = capsys.readouterr().out
    assert "[sweep] 0_1: cached" in printed and "[sweep] 1_0: resuming" in printed
    assert "resuming from" in printed and "checkpoint-1" in printed
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    assert json.loads((run / "final" / "trainer_state.json").read_text())["step"] == 2

    # other settings in the same directory are refused, naming what differs
    with pytest.raises(SystemExit):
        _sweep(out, *flags[:-2], "--learning-rate", "1e-4")
    assert "config.learning_rate differ" in capsys.readouterr().err


def test_grpo_sweep_with_explicit_preferences(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    _sweep(
        out, "--algorithm", "grpo", "--aggregator", "tchebycheff", "--num-generations", "2",
        "--preference", "0.7,0.3", "--preference", "0.3,0.7", "--steps", "2",
        "--kl-budgets", "1000",
    )  # fmt: skip
    front = _read_csv(out / "front.csv")
    assert [row["run"] for row in front] == ["0.7_0.3", "0.3_0.7"]
    for run in ("0.7_0.3", "0.3_0.7"):
        state = json.loads((out / "runs" / run / "final" / "trainer_state.json").read_text())
        assert state["algorithm"] == "grpo"
        assert state["config"]["aggregator_kwargs"]["preference"] == [
            float(x) for x in run.split("_")
        ]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algorithm"] == "grpo" and summary["aggregator"] == "tchebycheff"
    assert summary["kl_budgets"][0]["n_points"] == 2
    # no --save-steps: each run's curve is the initial policy and the final one
    assert len(_read_csv(out / "kl_curve.csv")) == 4


def test_interpolate_policies_mixes_float_tensors_and_refuses_other_shapes(tmp_path) -> None:
    sources = []
    for i, value in enumerate((1.0, 3.0)):
        source = tmp_path / f"p{i}"
        source.mkdir()
        tensors = {"w": torch.full((2, 2), value), "ids": torch.tensor([7, 8])}
        save_file(tensors, str(source / "model.safetensors"))
        (source / "config.json").write_text("{}")
        sources.append(source)
    interpolate_policies(sources, [0.25, 0.75], tmp_path / "mix")
    mixed = load_file(tmp_path / "mix" / "model.safetensors")
    assert torch.equal(mixed["w"], torch.full((2, 2), 2.5))
    assert torch.equal(mixed["ids"], torch.tensor([7, 8]))
    assert (tmp_path / "mix" / "config.json").is_file()
    save_file(
        {"w": torch.ones(3), "ids": torch.tensor([7, 8])}, str(sources[1] / "model.safetensors")
    )
    with pytest.raises(ValueError, match="same tensors"):
        interpolate_policies(sources, [0.5, 0.5], tmp_path / "mix")


def test_rewarded_soups_of_lora_adapters(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    _sweep(
        out, "--aggregator", "linear", "--preference", "0.5,0.5", "--rewarded-soups", "3",
        "--lora-r", "4", "--steps", "2",
    )  # fmt: skip
    assert "Rewarded Soups (3 mixes" in capsys.readouterr().out
    # the one-hot runs it mixes are added to the sweep
    front = {row["run"]: row for row in _read_csv(out / "front.csv")}
    assert set(front) == {"0.5_0.5", "1_0", "0_1"}
    assert (out / "runs" / "1_0" / "final" / "policy" / "adapter_model.safetensors").is_file()
    soups = {row["run"]: row for row in _read_csv(out / "soups.csv")}
    assert set(soups) == {"soup 0_1", "soup 0.5_0.5", "soup 1_0"}
    # a mix with all its weight on one run is that run's policy: same held-out evaluation
    for label in ("1_0", "0_1"):
        for key in ("score/length", "score/vader", "kl"):
            assert float(soups[f"soup {label}"][key]) == pytest.approx(float(front[label][key]))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rewarded_soups"]["n_points"] == 3
    name = "adapter_model.safetensors"
    ends = [load_file(out / "runs" / label / "final" / "policy" / name) for label in ("1_0", "0_1")]
    mid = load_file(out / "soups" / "0.5_0.5" / "policy" / name)
    assert not all(torch.equal(ends[0][key], ends[1][key]) for key in mid)
    for key, value in mid.items():
        assert torch.allclose(value, (ends[0][key] + ends[1][key]) / 2)
