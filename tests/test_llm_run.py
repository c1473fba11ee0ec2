"""The service layer (:mod:`mogradient_llm.run`) below the command line: typed records in, no
``argparse`` below ``cli/``, the aggregator built once and handed to the trainer, one set of
generation defaults."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import mogradient_llm
from mogradient import get_aggregator
from mogradient_llm.cli import build_parser
from mogradient_llm.cli.evaluate import eval_spec
from mogradient_llm.config import DEFAULT_GENERATION, MOConfig
from mogradient_llm.demo import GENERATION
from mogradient_llm.estimators import MOPPOConfig
from mogradient_llm.specs import EvalSpec, ModelSpec, RunSpec

PACKAGE = Path(mogradient_llm.__file__).parent


def _imports(path: Path) -> set[str]:
    """The modules ``path`` imports (``from a.b import c`` counts as ``a.b`` and ``a.b.c``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_only_the_command_line_parses_flags() -> None:
    """No module of ``mogradient_llm`` outside ``cli/`` (and ``__main__``, which runs it)
    imports the CLI or ``argparse``: the sweep and the services take typed records (the sweep
    used to import the CLI's helpers and copy its ``argparse.Namespace``, and the CLI imported
    the sweep back)."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "cli" in path.relative_to(PACKAGE).parts or path.name == "__main__.py":
            continue  # the command line, and ``python -m mogradient_llm`` that runs it
        for name in _imports(path):
            if name == "argparse" or name.startswith("mogradient_llm.cli"):
                offenders.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert offenders == []


def test_one_set_of_generation_defaults() -> None:
    """``evaluate``'s, the configs' and the demo's sampling settings come from one place: they
    differ from :data:`DEFAULT_GENERATION` only where they say so (the demo's length)."""
    args = build_parser().parse_args(["evaluate", "--checkpoint", "c"])
    assert eval_spec(args).generation == DEFAULT_GENERATION == EvalSpec().generation
    assert MOConfig().generation_kwargs == DEFAULT_GENERATION
    assert GENERATION == {**DEFAULT_GENERATION, "max_new_tokens": 48}
    shorter = build_parser().parse_args(["evaluate", "--max-new-tokens", "5", "--temperature", "2"])
    assert eval_spec(shorter).generation == {
        **DEFAULT_GENERATION,
        "max_new_tokens": 5,
        "temperature": 2.0,
    }


def test_a_run_needs_a_reward() -> None:
    with pytest.raises(ValueError, match="at least one reward"):
        RunSpec(output_dir=Path("o"), rewards=())


def test_train_uses_the_aggregator_instance_it_is_handed(tmp_path) -> None:
    """``run.train`` trains with the instance given, not with one built from the config's name
    (the config says ``pama``; the instance is a ``linear`` weighting of one preference)."""
    from mogradient_llm.loop.checkpoint import STATE_FILE
    from mogradient_llm.run import train

    config = MOPPOConfig(
        batch_size=4,
        mini_batch_size=4,
        num_ppo_epochs=1,
        max_steps=1,
        generation_kwargs={**DEFAULT_GENERATION, "max_new_tokens": 4},
    )
    aggregator = get_aggregator("linear", preference=[0.25, 0.75])
    run = RunSpec(
        output_dir=tmp_path / "out",
        rewards=("length", "vader"),
        model=ModelSpec(tiny_pretrain_steps=2),
        progress=False,
    )
    final = train(run, config, aggregator)
    state = json.loads((final / STATE_FILE).read_text())
    assert state["aggregator"] == repr(aggregator)
    assert config.aggregator == "pama" and "pama" not in state["aggregator"].lower()
