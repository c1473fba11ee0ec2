"""``mogradient-llm demo``: the offline demo (:func:`mogradient_llm.demo.run_demo`)."""

from __future__ import annotations

import argparse
from typing import Any

from mogradient_llm.estimators import estimators


def add_parser(sub: Any) -> None:
    """Add ``demo`` to the command's subparsers."""
    demo = sub.add_parser("demo", help="offline demo: tiny GPT-2, PAMA on vader + length")
    demo.add_argument("--algorithm", choices=sorted(estimators()), default="ppo")
    demo.add_argument("--data-dir", help="IMDb subset directory (default: ../shared/data/imdb)")
    demo.add_argument("--output-dir", default="outputs/demo")
    demo.add_argument("--minutes", type=float, default=3.0, help="training time budget")
    demo.add_argument("--pretrain-steps", type=int, default=400)
    demo.add_argument("--aggregator", default="pama")
    demo.add_argument("--seed", type=int, default=0)


def main(args: argparse.Namespace) -> None:
    """Run the demo on one thread unless ``--threads`` says otherwise (tiny models run fastest
    on one thread, above all on a busy machine)."""
    import torch

    from mogradient_llm.demo import run_demo

    torch.set_num_threads(args.threads or 1)
    run_demo(
        args.data_dir,
        args.output_dir,
        args.minutes,
        args.aggregator,
        args.seed,
        pretrain_steps=args.pretrain_steps,
        algorithm=args.algorithm,
    )
