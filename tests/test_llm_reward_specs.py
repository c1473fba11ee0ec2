"""``--reward [NAME=]SPEC``: built-ins renamed, Python rewards by import path (TRL's
``--reward_funcs my_module.my_reward``), and clear errors for bad specs."""

from __future__ import annotations

import json
import math
import textwrap

import pytest

from mogradient_llm.cli import main
from mogradient_llm.inputs.reward_specs import (
    build_reward,
    check_reward_specs,
    default_reference_known,
    parse_reward_spec,
)

MODULE = '''
import functools

def reward_len(completions, **kwargs):
    """TRL's documentation example."""
    return [-abs(20 - len(c)) for c in completions]

def by_topic(completions, topic, **kwargs):
    return [1.0 if t == "a" else None for t in topic]

def _scaled(completions, factor, **kwargs):
    return [factor * len(c) for c in completions]

scaled = functools.partial(_scaled, factor=2.0)

def bounded(completions, **kwargs):
    return [0.0 for _ in completions]

bounded.hv_reference = -1.0
not_a_function = 3
'''


@pytest.fixture
def module(tmp_path, monkeypatch):
    """A reward module in the working directory, importable as TRL's CLI imports it."""
    (tmp_path / "my_rewards.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_rewards"


def test_a_name_renames_a_built_in_so_two_of_one_kind_combine() -> None:
    short, long = build_reward("short=length:words"), build_reward("long=length")
    assert (short.name, short.fn.unit) == ("short", "words")
    assert (long.name, long.fn.unit) == ("long", "chars")
    assert short.hv_reference == long.hv_reference == 0.5  # the built-in's worst value stays
    assert build_reward("diversity2=distinct:2").fn.n == 2
    assert check_reward_specs(["short=length:words", "long=length"]) == ["short", "long"]
    assert parse_reward_spec("x.y=vader").name == "x.y"


def test_two_rewards_of_one_name_are_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"two rewards are named 'length'.*NAME=SPEC"):
        check_reward_specs(["length", "length:words"])


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        ("=length", ValueError, "the name before '='"),
        ("9x=length", ValueError, "the name before '='"),
        ("short=", ValueError, "nothing after 'short='"),
        ("sentiment", ValueError, "unknown reward 'sentiment'.*module.function"),
        ("my-mod.fn", ValueError, "unknown reward"),
        ("short=length:furlongs", ValueError, "unit must be"),
        ("no_such_module_xyz.reward", ImportError, "cannot import module 'no_such_module_xyz'"),
        ("math.no_such_reward", ValueError, "module 'math' has no 'no_such_reward'"),
        ("math.pi", TypeError, "is a float, not a function"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        build_reward(spec)


def test_a_python_reward_by_import_path(module: str) -> None:
    reward = build_reward(f"{module}.reward_len")
    assert reward.name == "reward_len" and reward.hv_reference is None
    assert list(reward(["p"], ["a" * 18])) == [-2]
    assert build_reward(f"mine={module}.reward_len").name == "mine"
    assert build_reward(f"{module}.scaled").name == "_scaled"  # TRL's name of a partial
    assert build_reward(f"{module}.bounded").hv_reference == -1.0
    assert not default_reference_known(f"{module}.reward_len")
    assert default_reference_known(f"{module}.bounded") and default_reference_known("length")
    assert not default_reference_known("classifier:some/path")
    with pytest.raises(TypeError, match="is a int, not a function"):
        build_reward(f"{module}.not_a_function")


FAST = [
    "--tiny-pretrain-steps",
    "5",
    "--batch-size",
    "8",
    "--mini-batch-size",
    "8",
    "--num-generations",
    "4",
    "--max-new-tokens",
    "8",
    "--no-progress",
]


def test_cli_trains_and_evaluates_python_and_renamed_rewards(module, tmp_path, capsys) -> None:
    """Train with a Python reward scoring only the rows of topic "a" (a dataset column) and two
    length rewards of different units, then evaluate from the checkpoint's recorded specs."""
    data = tmp_path / "prompts.jsonl"
    rows = [
        {"prompt": f"the movie {i} was", "topic": "ab"[i % 2], "text": "a good film " * 3}
        for i in range(8)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    specs = [f"{module}.by_topic", "short=length:words", "long=length"]
    out = tmp_path / "out"
    flags = [x for spec in specs for x in ("--reward", spec)]
    main(
        ["train", "--algorithm", "grpo", "--policy", "tiny", "--dataset", str(data), *flags]
        + ["--aggregator", "mgda", "--steps", "2", "--output-dir", str(out), *FAST]
    )
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"objective/scores/by_topic", "objective/scores/short", "objective/scores/long"} <= set(
        metrics[0]
    )
    assert json.loads((out / "final" / "trainer_state.json").read_text())["rewards"] == specs
    capsys.readouterr()
    result_path = tmp_path / "eval.json"
    main(
        ["evaluate", "--checkpoint", str(out / "final"), "--dataset", str(data)]
        + ["--num-prompts", "8", "--max-new-tokens", "8", "--ref-point", "0,0,0"]
        + ["--output", str(result_path)]
    )
    result = json.loads(result_path.read_text())
    assert result["eval/scored/by_topic"] == 4 and result["eval/scores/by_topic"] == 1.0
    assert result["eval/scored/short"] == result["eval/scored/long"] == 8
    assert math.isfinite(result["eval/hypervolume"])
