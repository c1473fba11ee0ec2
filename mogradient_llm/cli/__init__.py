"""``mogradient-llm``: ``train``, ``sweep``, ``evaluate`` and ``demo``, one module per command.

Each command's module parses its flags, merges a config file and the flags into the typed
records (:mod:`mogradient_llm.specs` and the algorithm's config) and calls a service
(:mod:`mogradient_llm.run`, :mod:`mogradient_llm.pareto.sweep`, :mod:`mogradient_llm.demo`); nothing
below this package sees an ``argparse.Namespace``.
"""

from __future__ import annotations

import argparse
import sys

from mogradient_llm.cli import demo, evaluate
from mogradient_llm.cli.sweep import parse_sweep_args, sweep_parser
from mogradient_llm.cli.train import parse_train_args, train_parser

__all__ = [
    "build_parser",
    "main",
    "parse_sweep_args",
    "parse_train_args",
    "sweep_parser",
    "train_parser",
]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser of ``mogradient-llm``; ``train``'s own flags are generated from the
    config dataclasses by :func:`train_parser` (``mogradient-llm train --help`` lists them)."""
    parser = argparse.ArgumentParser(
        prog="mogradient-llm",
        description="Multi-objective RL fine-tuning (PPO, GRPO, RLOO) with mogradient",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (torch.set_num_threads); default: torch's own, 1 for demo "
        "(tiny models run fastest on one thread, above all on a busy machine)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "train",
        add_help=False,
        help="train a policy (mogradient-llm train --algorithm ppo|grpo|rloo --help)",
    )
    sub.add_parser(
        "sweep",
        add_help=False,
        help="train one policy per preference and write the front, also at matched KL "
        "(mogradient-llm sweep --help)",
    )
    evaluate.add_parser(sub)
    demo.add_parser(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by the user's input: reported in one line, exit status 2."""
    from mogradient_llm.inputs.rewards import RewardError
    from mogradient_llm.loop.nonfinite import NonFiniteError

    return (ValueError, TypeError, FileNotFoundError, RewardError, NonFiniteError, ImportError)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``mogradient-llm`` script.

    User errors (bad flags or config, a reward that raises, non-finite values, a missing
    checkpoint) print one line ``mogradient-llm: error: ...`` and exit with status 2.
    """
    parser = build_parser()
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if rest and args.command not in ("train", "sweep"):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        _dispatch(args, rest)
    except _user_errors() as exc:
        message = " ".join(str(exc).split())  # one line, whatever the exception's text
        parser.exit(2, f"mogradient-llm: error: {type(exc).__name__}: {message}\n")


def _dispatch(args: argparse.Namespace, rest: list[str]) -> None:
    """Run the parsed command (``rest``: ``train``'s or ``sweep``'s own flags)."""
    from transformers.utils import logging as hf_logging

    from mogradient_llm.cli import sweep, train

    hf_logging.disable_progress_bar()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.command == "train":
        train.main(rest)
    elif args.command == "sweep":
        sweep.main(rest)
    elif args.command == "evaluate":
        evaluate.main(args)
    else:
        demo.main(args)


if __name__ == "__main__":
    main()
