"""``mogradient-llm train``: the algorithm's config fields as flags (generated from its
dataclass) plus the run's own flags, merged over ``--config FILE`` into a
:class:`~mogradient_llm.specs.RunSpec` and the config, then :func:`mogradient_llm.run.train`."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, cast

from mogradient_llm.cli.common import (
    add_data_args,
    add_generation_args,
    data_spec,
    json_object,
    read_config_file,
)
from mogradient_llm.config import MOConfig, refuse_renamed
from mogradient_llm.estimators import estimator_class, estimators
from mogradient_llm.specs import TINY, ModelSpec, RunSpec

if TYPE_CHECKING:
    from transformers import HfArgumentParser
    from transformers.hf_argparser import DataClassType

DEFAULT_ALGORITHM = "ppo"


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """What a run needs besides its config: models, rewards, output, resuming."""
    run = parser.add_argument_group("run")
    run.add_argument(
        "--algorithm",
        choices=sorted(estimators()),
        default=DEFAULT_ALGORITHM,
        help="the advantage estimator (its config's flags follow)",
    )
    run.add_argument(
        "--config",
        help="a JSON or YAML file of config fields (and 'algorithm'); flags given override it",
    )
    run.add_argument("--policy", default=TINY, help="model name or path, or 'tiny' (offline)")
    run.add_argument("--ref-policy", help="KL reference (default: a frozen copy of --policy)")
    run.add_argument(
        "--reward",
        action="append",
        required=True,
        help="[NAME=]SPEC, SPEC one of length[:chars|words|tokens], vader, distinct[:N], "
        "classifier:PATH[@LABEL] or a Python function's import path module.function; NAME= "
        "renames the objective; repeat per objective",
    )
    run.add_argument("--output-dir", required=True)
    run.add_argument("--save-steps", type=int, default=0, help="checkpoint every N steps")
    run.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        help="continue from the newest complete checkpoint of --output-dir (or of the given "
        "checkpoint/run directory) up to --steps in total",
    )
    run.add_argument("--tiny-pretrain-steps", type=int, default=ModelSpec().tiny_pretrain_steps)
    run.add_argument("--no-progress", action="store_true")
    run.add_argument(
        "--cpu",
        action="store_true",
        help="run on CPU even where a GPU is present; several CPU processes (gloo) need it: "
        "torchrun --nproc_per_node 2 -m mogradient_llm train --cpu ...",
    )
    add_generation_args(run)
    add_data_args(parser, "train")


def train_parser(algorithm: str) -> HfArgumentParser:
    """``mogradient-llm train``'s parser for ``algorithm``: the run's flags, then one flag per
    field of its config dataclass (``transformers.HfArgumentParser``: help text, choices and
    defaults come from the dataclass; booleans get ``--no-...``)."""
    from transformers import HfArgumentParser

    config_class = estimator_class(algorithm).config_class
    parser = HfArgumentParser(
        cast("DataClassType", config_class),
        prog="mogradient-llm train",
        description=f"Train with {algorithm.upper()}; {config_class.__name__}'s fields as flags.",
    )
    dict_fields = {f.name for f in dataclasses.fields(config_class) if "dict" in str(f.type)}
    for action in parser._actions:  # argparse offers no public way to change an action's type
        if action.dest in dict_fields:
            action.type = json_object
    add_run_args(parser)
    for old, new in config_class.renamed.items():  # booleans had a --no-... flag too
        names = (old.replace("_", "-"), old, f"no-{old.replace('_', '-')}", f"no_{old}")
        flags = [f"--{name}" for name in dict.fromkeys(names)]
        parser.add_argument(*flags, action=_Renamed, nargs="?", help=argparse.SUPPRESS, metavar=new)
    return parser


class _Renamed(argparse.Action):
    """A flag of a renamed field: refused, naming the new flag (an exact match, so that argparse
    does not take ``--target`` as an abbreviation of ``--target-kl``)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        new = str(self.metavar)
        flag = "--" + new.split()[0].replace("_", "-")
        raise argparse.ArgumentError(self, f"renamed: use {flag} ({new})")


def run_spec(args: argparse.Namespace) -> RunSpec:
    """The :class:`~mogradient_llm.specs.RunSpec` of the run's flags."""
    return RunSpec(
        output_dir=Path(args.output_dir),
        rewards=tuple(args.reward),
        model=ModelSpec(args.policy, args.ref_policy, args.tiny_pretrain_steps),
        data=data_spec(args),
        save_steps=args.save_steps,
        resume=args.resume,
        progress=not args.no_progress,
        cpu=args.cpu,
    )


def parse_train_args(argv: list[str]) -> tuple[RunSpec, MOConfig]:
    """The run and the config: ``--config``'s values, then the flags given."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--algorithm")
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    values = read_config_file(known.config) if known.config else {}
    algorithm = known.algorithm or values.pop("algorithm", DEFAULT_ALGORITHM)
    values.pop("algorithm", None)
    parser = train_parser(algorithm)
    config_class = estimator_class(algorithm).config_class
    refuse_renamed(config_class, values, f" in {known.config}")
    fields = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown} in {known.config} for --algorithm {algorithm}; "
            f"valid: {sorted(fields)}"
        )
    parser.set_defaults(**values)
    args = parser.parse_args(argv)
    config_values = {name: getattr(args, name) for name in fields}
    generation = dict(config_values["generation_kwargs"])
    for key in ("max_new_tokens", "temperature"):
        if getattr(args, key) is not None:
            generation[key] = getattr(args, key)
    config_values["generation_kwargs"] = generation
    return run_spec(args), config_class(**config_values)


def main(argv: list[str]) -> None:
    """Parse ``train``'s flags and train."""
    from mogradient_llm.run import train

    train(*parse_train_args(argv))
