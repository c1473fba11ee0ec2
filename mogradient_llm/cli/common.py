"""Flags and parsing that several commands share: prompts, generation, config files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mogradient_llm.specs import DataSpec


def float_list(text: str) -> list[float]:
    """A comma-separated list of numbers (``0,-1``)."""
    return [float(x) for x in text.split(",")]


def json_object(text: str) -> dict[str, Any]:
    """A JSON object from the command line (dict-valued config fields)."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def add_data_args(parser: argparse.ArgumentParser, split: str) -> None:
    """The flags of a :class:`~mogradient_llm.specs.DataSpec` (``split``: its default)."""
    defaults = DataSpec()
    group = parser.add_argument_group("prompts")
    group.add_argument(
        "--dataset",
        help="hub dataset name, or a local .jsonl/.csv(.gz) file or directory with "
        "{split}.jsonl.gz (e.g. ../shared/data/imdb); default: generated reviews",
    )
    group.add_argument("--split", default=split)
    group.add_argument(
        "--prompt-column",
        default=defaults.prompt_column,
        help="the dataset's prompt column, used as it is",
    )
    group.add_argument(
        "--imdb-prompts",
        action="store_true",
        help="instead, cut the --text-field texts (reviews) into prompts of their first "
        "--prompt-min-tokens..--prompt-max-tokens tokens",
    )
    group.add_argument("--text-field", default=defaults.text_field)
    group.add_argument("--max-prompts", type=int, default=None, help="use the first N rows")
    group.add_argument("--prompt-min-tokens", type=int, default=defaults.prompt_min_tokens)
    group.add_argument("--prompt-max-tokens", type=int, default=defaults.prompt_max_tokens)


def data_spec(args: argparse.Namespace) -> DataSpec:
    """The :class:`~mogradient_llm.specs.DataSpec` of :func:`add_data_args`' flags."""
    return DataSpec(
        dataset=args.dataset,
        split=args.split,
        prompt_column=args.prompt_column,
        imdb_prompts=args.imdb_prompts,
        text_field=args.text_field,
        max_prompts=args.max_prompts,
        prompt_min_tokens=args.prompt_min_tokens,
        prompt_max_tokens=args.prompt_max_tokens,
    )


def add_generation_args(parser: argparse.ArgumentParser | Any) -> None:
    """``--max-new-tokens`` and ``--temperature``: shorthands over the default sampling settings
    (:data:`mogradient_llm.config.DEFAULT_GENERATION`) or the config's ``generation_kwargs``."""
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        help="shorthand for generation_kwargs' max_new_tokens (default 32)",
    )
    parser.add_argument(
        "--temperature", type=float, help="shorthand for generation_kwargs' temperature"
    )


def read_config_file(path: str) -> dict[str, Any]:
    """A config file's values: JSON, or YAML (``.yaml``/``.yml``)."""
    text = Path(path).read_text()
    if Path(path).suffix in (".yaml", ".yml"):
        import yaml  # type: ignore[import-untyped]

        values = yaml.safe_load(text) or {}
    else:
        values = json.loads(text)
    if not isinstance(values, dict):
        raise ValueError(
            f"{path} must hold a mapping of config fields, got {type(values).__name__}"
        )
    return values
