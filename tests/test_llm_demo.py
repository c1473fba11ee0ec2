"""The offline demo runs end to end on generated text (no IMDb subset in reach).

The training budget is 0.06 s: the loop checks the clock before each step, the first time
before any has passed, so it takes at least one step whatever the budget; what these tests check
(the outputs, at least one step) does not depend on how many."""

from __future__ import annotations

import json

from mogradient_llm.demo import demo_texts, run_demo


def test_demo_falls_back_to_generated_reviews_and_writes_its_outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # ../shared/data/imdb is not reachable from here
    train, test, source = demo_texts(None)
    assert source == "generated reviews" and len(train) > len(test) > 0
    summary = run_demo(
        output_dir=tmp_path / "demo", minutes=0.001, pretrain_steps=5, eval_prompts=8
    )
    assert summary["steps"] >= 1 and set(summary["before"]) == {"vader", "length"}
    assert (tmp_path / "demo" / "rewards.png").stat().st_size > 0
    assert json.loads((tmp_path / "demo" / "summary.json").read_text())["after"]
    assert (tmp_path / "demo" / "final" / "policy" / "config.json").is_file()


def test_demo_runs_grpo_from_the_command_line(tmp_path, monkeypatch, capsys):
    from mogradient_llm.cli import main

    monkeypatch.chdir(tmp_path)
    main(["demo", "--algorithm", "grpo", "--minutes", "0.001", "--pretrain-steps", "5"])
    summary = json.loads((tmp_path / "outputs" / "demo" / "summary.json").read_text())
    assert summary["algorithm"] == "grpo" and summary["steps"] >= 1
    assert "GRPO steps" in capsys.readouterr().out
