"""``mogradient-llm evaluate``: the flags of an :class:`~mogradient_llm.specs.EvalSpec`, then
:func:`mogradient_llm.run.evaluate`; prints the metrics and writes them with ``--output``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mogradient_llm.cli.common import add_data_args, add_generation_args, data_spec, float_list
from mogradient_llm.config import generation_kwargs
from mogradient_llm.specs import EvalSpec

_DEFAULTS = EvalSpec()


def add_parser(sub: Any) -> None:
    """Add ``evaluate`` to the command's subparsers."""
    parser = sub.add_parser("evaluate", help="mean rewards, hypervolume and KL on held-out prompts")
    parser.add_argument("--checkpoint", help="a checkpoint directory written by train")
    parser.add_argument("--policy", help="model name or path (default: CHECKPOINT/policy)")
    parser.add_argument("--ref-policy", help="KL reference (default: the one train used)")
    parser.add_argument("--reward", action="append", help="default: the rewards train used")
    parser.add_argument(
        "--ref-point",
        type=float_list,
        help="hypervolume reference point, comma-separated (default: each reward's worst "
        "value: length low bound, vader -1)",
    )
    parser.add_argument("--num-prompts", type=int, default=_DEFAULTS.num_prompts)
    parser.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size)
    parser.add_argument("--seed", type=int, default=_DEFAULTS.seed)
    parser.add_argument(
        "--preference",
        type=float_list,
        help="a conditioned policy (train --conditioned): the preference it reads, "
        "comma-separated, one weight per reward",
    )
    parser.add_argument("--output", help="write the results as JSON here")
    add_generation_args(parser)
    add_data_args(parser, "test")


def eval_spec(args: argparse.Namespace) -> EvalSpec:
    """The :class:`~mogradient_llm.specs.EvalSpec` of ``evaluate``'s flags."""
    return EvalSpec(
        checkpoint=args.checkpoint,
        policy=args.policy,
        ref_policy=args.ref_policy,
        rewards=tuple(args.reward) if args.reward else None,
        ref_point=tuple(args.ref_point) if args.ref_point is not None else None,
        num_prompts=args.num_prompts,
        batch_size=args.batch_size,
        seed=args.seed,
        generation=generation_kwargs(args.max_new_tokens, args.temperature),
        data=data_spec(args),
        preference=tuple(args.preference) if args.preference is not None else None,
    )


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate, print the metrics (without the samples) and write them all to ``--output``."""
    from mogradient_llm.run import evaluate

    result = evaluate(eval_spec(args))
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=2))
    return result
