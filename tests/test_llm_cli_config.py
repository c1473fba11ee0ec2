"""The config is the CLI: flags generated from the dataclasses, one set of defaults,
``--config`` JSON/YAML honoured and overridden only by the flags given; ``--algorithm``."""

from __future__ import annotations

import dataclasses
import json

import pytest

from mogradient_llm.cli import main, parse_train_args
from mogradient_llm.estimators import MOGRPOConfig, MOPPOConfig, MORLOOConfig

RUN = ["--reward", "length", "--output-dir", "unused"]


@pytest.mark.parametrize(
    ("algorithm", "config_class"),
    [("ppo", MOPPOConfig), ("grpo", MOGRPOConfig), ("rloo", MORLOOConfig)],
)
def test_without_flags_the_cli_gives_the_dataclass_defaults(algorithm, config_class) -> None:
    _, config = parse_train_args(["--algorithm", algorithm, *RUN])
    assert config == config_class()


def test_every_field_has_a_flag_with_help() -> None:
    from mogradient_llm.cli import train_parser

    for algorithm, cls in (("ppo", MOPPOConfig), ("grpo", MOGRPOConfig)):
        text = train_parser(algorithm).format_help()
        for field in dataclasses.fields(cls):
            assert f"--{field.name}" in text, field.name
            assert field.metadata.get("help"), field.name


def test_flags_parse_to_the_field_types() -> None:
    argv = [
        "--algorithm",
        "grpo",
        "--aggregator-kwargs",
        '{"granularity": "batch"}',
        "--reward-weights",
        "1",
        "0.5",
        "--aggregator",
        "linear",
        "--no-normalize-weights",
        "--loss-type",
        "dr_grpo",
        "--epsilon-high",
        "0.28",
        "--steps",
        "7",
        "--report-to",
        "none",
        "--max-new-tokens",
        "5",
        *RUN,
    ]
    with pytest.raises(TypeError, match="granularity"):  # linear takes no granularity
        from mogradient_llm.run import build_aggregator

        build_aggregator(parse_train_args(argv)[1])
    _, config = parse_train_args(argv)
    assert config.aggregator_kwargs == {"granularity": "batch"}
    assert config.reward_weights == [1.0, 0.5] and config.normalize_weights is False
    assert config.loss_type == "dr_grpo" and config.epsilon_high == 0.28
    assert config.max_steps == 7 and config.report_to == ["none"] and config.trackers == []
    assert config.generation_kwargs["max_new_tokens"] == 5
    with pytest.raises(SystemExit):
        parse_train_args(["--algorithm", "grpo", "--loss-type", "ppo", *RUN])


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_config_file_values_are_kept_unless_a_flag_is_given(tmp_path, suffix) -> None:
    values = {"algorithm": "grpo", "learning_rate": 3e-4, "batch_size": 8, "beta": 0.1}
    values["mini_batch_size"] = 8
    path = tmp_path / f"config{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(values))
    else:
        path.write_text("".join(f"{k}: {v}\n" for k, v in values.items()))
    flags = ["--batch-size", "12", "--mini-batch-size", "4"]
    _, config = parse_train_args(["--config", str(path), *flags, *RUN])
    assert isinstance(config, MOGRPOConfig) and config.algorithm == "grpo"
    assert config.learning_rate == 3e-4 and config.beta == 0.1  # from the file
    assert config.batch_size == 12 and config.mini_batch_size == 4  # the flags given win
    assert config.num_generations == MOGRPOConfig().num_generations  # neither: the default
    _, flagged = parse_train_args(["--config", str(path), "--algorithm", "rloo", *RUN])
    assert isinstance(flagged, MORLOOConfig)


def test_unknown_config_keys_are_named(tmp_path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"learning_rat": 1e-3}))
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['learning_rat'\]"):
        parse_train_args(["--config", str(path), *RUN])


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_train_runs_offline_with_a_group_algorithm(tmp_path, algorithm) -> None:
    out = tmp_path / "out"
    main(
        [
            "train",
            "--algorithm",
            algorithm,
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
            "--tiny-pretrain-steps",
            "5",
            "--batch-size",
            "8",
            "--mini-batch-size",
            "4",
            "--max-new-tokens",
            "8",
            "--lr-scheduler-type",
            "linear",
            "--warmup-steps",
            "2",
            "--no-progress",
        ]
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    # 2 updates a step: warm-up over updates 1-2, then linear decay to 0 at update 6
    assert [r["train/learning_rate"] for r in rows] == pytest.approx([1e-6, 5e-7, 0.0])
    state = json.loads((out / "final" / "trainer_state.json").read_text())
    assert state["algorithm"] == algorithm and state["config"]["num_generations"] == 4
    assert not (out / "final" / "value_heads.safetensors").exists()
