"""Command line: run the stages (cached) and write the report.

python -m benchmarks.rlhf_imdb --jobs 2          # full run (docs/benchmarks.md: its measured time)
python -m benchmarks.rlhf_imdb --quick --jobs 2  # a few minutes: a preference sweep's front vs
                                                 # single runs (the offline demo without the data)
python -m benchmarks.rlhf_imdb --constrained     # length s.t. sentiment >= tau (constrained.py)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import Any

import torch

from benchmarks.rlhf_imdb import constrained, constrained_runs
from benchmarks.rlhf_imdb.cache import cached_stage
from benchmarks.rlhf_imdb.compare import write_fronts_report
from benchmarks.rlhf_imdb.data import fingerprint, load_split
from benchmarks.rlhf_imdb.policies import (
    SIZES,
    build_tokenizer,
)
from benchmarks.rlhf_imdb.report import start_rows, write_report
from benchmarks.rlhf_imdb.reward_model import classifier_key, train_reward_model
from benchmarks.rlhf_imdb.runs import ALGORITHMS, METHODS, reference_point
from benchmarks.rlhf_imdb.stages import (
    RunProgress,
    RunStage,
    init_worker,
    policy_stages,
    stage_executor,
)
from benchmarks.tables import write_csv
from mogradient_llm.specs import DEFAULT_DATA_DIR

FULL = {
    "sizes": "tiny,1m,4m",
    "algorithms": "ppo,grpo",
    "aggregators": ",".join(METHODS),
    "seeds": "0,1,2",
    "pretrain_steps": 1000,
    "reward_steps": 1000,  # 85.5 % test accuracy, 8 min on one thread (reward_model.py)
    "steps": 24,
    "eval_every": 8,
    "batch_size": 16,
    "eval_prompts": 64,
    "train_eval_prompts": 32,
    "kl_budgets": "2,4,8,16",  # the larger sizes pass 8 nats by the first evaluation
    "three_objectives": "tiny",
    "sweep": 0,
}
#: ``--constrained``'s default sweep size: weights 1/4, 1/2, 3/4, with the length-only end 0.
CONSTRAINED_SWEEP = 3
QUICK = {
    "sizes": "tiny",
    "algorithms": "grpo",
    "aggregators": "pama,morlhf,mgda,upgrad",
    "seeds": "0",
    "pretrain_steps": 400,
    "reward_steps": 400,  # 86.1 % test accuracy, about 4 min
    "steps": 16,
    "eval_every": 4,
    "batch_size": 16,
    "eval_prompts": 64,
    "train_eval_prompts": 32,
    "kl_budgets": "1,2,4",
    "three_objectives": "",
    "sweep": 4,
}


def quick_help() -> str:
    """``--quick``'s help, read from its budgets (so it cannot drift from them)."""
    seeds = len(str(QUICK["seeds"]).split(","))
    return (
        f"the README's main job: size {QUICK['sizes']}, {QUICK['algorithms']}, "
        f"{seeds} seed{'s' if seeds > 1 else ''}, {QUICK['steps']} steps, "
        f"a {QUICK['sweep']}-point preference sweep"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Arguments; budgets left unset take the ``--quick`` or full defaults."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data",
        help=f"IMDb directory/file, or a hub name (default: {DEFAULT_DATA_DIR} if it is there; "
        "without it, --quick runs the offline demo `mogradient-llm demo` instead)",
    )
    parser.add_argument("--out", default="outputs/rlhf_imdb")
    parser.add_argument("--cache-dir", help="default: OUT/cache")
    parser.add_argument("--quick", action="store_true", help=quick_help())
    parser.add_argument(
        "--sizes", help=f"comma-separated: {', '.join(SIZES)} or hub names/paths (e.g. gpt2)"
    )
    parser.add_argument("--algorithms", help=f"comma-separated: {', '.join(ALGORITHMS)}")
    parser.add_argument("--aggregators", help=f"the methods, comma-separated: {', '.join(METHODS)}")
    parser.add_argument("--seeds")
    parser.add_argument("--pretrain-steps", type=int)
    parser.add_argument("--reward-steps", type=int)
    parser.add_argument("--steps", type=int, help="RL steps per run")
    parser.add_argument("--eval-every", type=int, help="evaluate every this many steps")
    parser.add_argument("--batch-size", type=int, help="completions per RL step")
    parser.add_argument("--eval-prompts", type=int, help="test prompts per evaluation")
    parser.add_argument(
        "--train-eval-prompts",
        type=int,
        help="training-split prompts per evaluation (the best configuration is chosen on them)",
    )
    parser.add_argument(
        "--kl-budgets", help="comma-separated KL budgets (nats per completion) of the tables"
    )
    parser.add_argument(
        "--three-objectives",
        help="sizes (comma-separated, a subset of --sizes; '' for none) that also run every "
        "method with a third objective, distinct-1 diversity",
    )
    parser.add_argument(
        "--sweep",
        type=int,
        help="also train MORLHF at this many preferences (first seed, two objectives) per "
        "algorithm and size, and plot their front against the single runs",
    )
    parser.add_argument(
        "--constrained",
        action="store_true",
        help="the constrained benchmark instead of the methods: maximise length subject to "
        "sentiment >= tau, the Lagrangian against the best weight of the MORLHF sweep "
        f"(--sweep, default {CONSTRAINED_SWEEP}) at matched KL (benchmarks/rlhf_imdb/"
        "constrained.py)",
    )
    parser.add_argument(
        "--conditioned-steps",
        default="",
        help="comma-separated step counts: per count, seed and algorithm, train one "
        "preference-conditioned MORLHF policy that long and compare its front on the sweep's "
        "preferences with the sweep's (needs --sweep; fronts.csv)",
    )
    parser.add_argument(
        "--concentration",
        type=float,
        default=1.0,
        help="the conditioned policy's Dirichlet concentration (1: uniform on the simplex; "
        "below 1: more preferences near the ends of the front)",
    )
    parser.add_argument(
        "--soups",
        action="store_true",
        help="also train the two one-hot MORLHF runs (first seed) and compare Rewarded Soups' "
        "front, their weights mixed at the sweep's preferences (needs --sweep; fronts.csv)",
    )
    parser.add_argument(
        "--sentiment",
        choices=["classifier", "vader"],
        default="classifier",
        help="the trained IMDb classifier's positive logit (default), or VADER",
    )
    parser.add_argument(
        "--no-noon",
        action="store_true",
        help="plain advantages for PAMA too (by default PAMA clips them at zero, Noon, and "
        "every other method uses plain advantages)",
    )
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per job")
    parser.add_argument(
        "--jobs", type=int, default=1, help="stages run in this many processes at once"
    )
    args = parser.parse_args(argv)
    three_objectives_unset = args.three_objectives is None
    if args.constrained:  # two objectives, the sweep and the Lagrangian: no method runs
        args.sweep = CONSTRAINED_SWEEP if args.sweep is None else args.sweep
        args.three_objectives = "" if three_objectives_unset else args.three_objectives
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if three_objectives_unset:  # the default's sizes that this run has
        sizes = args.sizes.split(",")
        args.three_objectives = ",".join(s for s in args.three_objectives.split(",") if s in sizes)
    if args.data is None and not args.quick and not DEFAULT_DATA_DIR.is_dir():
        parser.error(f"no IMDb data at {DEFAULT_DATA_DIR}; pass --data DIR or a hub name")
    if args.jobs < 1 or args.threads < 1:
        parser.error("--jobs and --threads must be at least 1")
    for option, valid in (("aggregators", METHODS), ("algorithms", ALGORITHMS)):
        unknown = sorted(set(getattr(args, option).split(",")) - set(valid))
        if unknown:
            parser.error(f"unknown {option} {unknown}; valid: {', '.join(valid)}")
    extra = set(filter(None, args.three_objectives.split(","))) - set(args.sizes.split(","))
    if extra:
        parser.error(f"--three-objectives sizes {sorted(extra)} are not in --sizes")
    try:
        args.kl_budgets = sorted(float(b) for b in args.kl_budgets.split(","))
    except ValueError:
        parser.error(f"--kl-budgets must be comma-separated numbers, got {args.kl_budgets!r}")
    if args.steps < 1 or args.eval_every < 1 or args.sweep < 0:
        parser.error("--steps and --eval-every must be at least 1, --sweep at least 0")
    if args.constrained and (args.three_objectives or args.sweep < 1):
        parser.error(
            "--constrained compares two objectives with a sweep: --sweep at least 1, "
            "no --three-objectives"
        )
    if (args.conditioned_steps or args.soups) and not args.sweep:
        parser.error(
            "--conditioned-steps and --soups are compared with the preference sweep on its "
            "preferences: add --sweep N"
        )
    try:
        steps = [int(s) for s in filter(None, args.conditioned_steps.split(","))]
    except ValueError:
        steps = [0]
    if any(s < 1 for s in steps):
        parser.error(
            f"--conditioned-steps must be comma-separated positive integers, got "
            f"{args.conditioned_steps!r}"
        )
    if not args.concentration > 0:
        parser.error(f"--concentration must be positive, got {args.concentration}")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run every stage (reusing the cache) and write the report; returns the summary rows."""
    args = parse_args(argv)
    if args.data is None:
        if not DEFAULT_DATA_DIR.is_dir():
            print(f"no IMDb data at {DEFAULT_DATA_DIR} and no --data: running the offline demo")
            return run_offline_demo()
        args.data = str(DEFAULT_DATA_DIR)
    init_worker(args.threads)
    start = time.perf_counter()
    out = Path(args.out)
    cache = Path(args.cache_dir) if args.cache_dir else out / "cache"
    out.mkdir(parents=True, exist_ok=True)
    data_id = fingerprint(args.data)
    train, test = load_split(args.data, "train"), load_split(args.data, "test")
    print(f"data: {args.data} ({len(train.texts)} train / {len(test.texts)} test reviews)")

    tok_config = {"data": data_id, "vocab_size": args.vocab_size}
    tokenizer_dir, _ = cached_stage(
        cache,
        "tokenizer",
        tok_config,
        partial(build_tokenizer, texts=train.texts, vocab_size=args.vocab_size),
    )
    reward_info: dict[str, Any] = {"sentiment": "vader"}
    with stage_executor(args.jobs, args.threads) as pool:
        sentiment: str | Path = "vader"
        reward_config: dict[str, Any] = {"sentiment": "vader"}
        if args.sentiment == "classifier":
            reward_config = {
                "tokenizer": tok_config,
                "steps": args.reward_steps,
                "seed": 0,
                "classifier": classifier_key(),
            }
            reward_future = pool.submit(
                cached_stage,
                cache,
                "reward_model",
                reward_config,
                partial(
                    train_reward_model,
                    tokenizer_dir=tokenizer_dir,
                    train=train,
                    test=test,
                    steps=args.reward_steps,
                    seed=0,
                ),
            )
        policy_futures = {
            pool.submit(cached_stage, cache, "policy", config, compute): (size, config)
            for size, config, compute in policy_stages(
                args, tok_config, tokenizer_dir, data_id, train, test
            )
        }
        if args.sentiment == "classifier":
            sentiment, reward_info = reward_future.result()
            print(f"sentiment reward model: test accuracy {reward_info['test_accuracy']:.3f}")
        sizes = args.sizes.split(",")
        progress = RunProgress()
        policies, start_futures, run_futures, stages = {}, {}, {}, []
        front_futures: dict[Future, dict[str, Any]] = {}
        # in --sizes order, so the smaller sizes' runs are queued (and finish) first
        for future in policy_futures:
            size, policy_config = policy_futures[future]
            policy_dir, info = future.result()
            print(
                f"policy {size}: {info['parameters'] / 1e6:.2f}M parameters, "
                f"held-out perplexity {info['perplexity']:.1f}",
                flush=True,
            )
            policies[size] = {"size": size, **info}
            policy = str(policy_dir) if size in SIZES else size
            stage = RunStage(args, cache, size, policy, policy_config, reward_config, sentiment)
            if args.constrained:
                stage.prepare(train.texts, test.texts)
                stages.append(stage)
                continue
            starts, runs = stage.submit(pool, progress, train.texts, test.texts)
            start_futures.update(starts)
            run_futures.update(runs)
            front_futures.update(stage.submit_fronts(pool))
        if args.constrained:
            results, starts_done = constrained_runs.run_all(pool, progress, stages)
        else:
            starts_done = {label: f.result()[1] for f, label in start_futures.items()}
            results = [{**label, **f.result()[1]} for f, label in run_futures.items()]
        fronts = [(label, f.result()[1]) for f, label in front_futures.items()]
        progress.close()
    refs = {k: reference_point(sentiment, k) for k in (2, 3)}
    if args.constrained:
        write_csv([policies[s] for s in sizes], out / "policies.csv")
        write_csv(start_rows(starts_done), out / "starts.csv")
        rows = constrained.write_report(results, start_rows(starts_done), out)
        wall = time.perf_counter() - start
        write_setup(out / "setup.json", args, reward_info, refs, wall)
        print(f"wall time {wall:.0f} s")
        return rows

    def order(run: dict[str, Any]) -> tuple[Any, ...]:
        method = run["method"]
        rank = list(METHODS).index(method) if method in METHODS else len(METHODS)
        return (
            run["objectives"],
            ALGORITHMS.index(run["algorithm"]),
            sizes.index(run["size"]),
            rank,
            run.get("preference") or (),
            run["seed"],
        )

    summary = write_report(
        sorted(results, key=order),
        starts_done,
        [policies[s] for s in sizes],
        out,
        args.kl_budgets,
        refs,
    )
    if fronts:
        write_fronts_report(results, starts_done, fronts, args.kl_budgets, refs[2], out)
    wall = time.perf_counter() - start
    write_setup(out / "setup.json", args, reward_info, refs, wall)
    print(f"wall time {wall:.0f} s")
    return summary


def write_setup(
    path: Path,
    args: argparse.Namespace,
    reward_info: dict[str, Any],
    ref_points: dict[int, tuple[float, ...]],
    wall_seconds: float,
) -> None:
    """What produced the tables: arguments, reward model, reference points, machine, time."""
    import transformers

    setup = {
        "arguments": vars(args),
        "reward_model": reward_info,
        "hypervolume_reference": {f"{k} objectives": ref for k, ref in ref_points.items()},
        "wall_seconds": round(wall_seconds, 1),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    }
    path.write_text(json.dumps(setup, indent=1))


def run_offline_demo() -> list[dict[str, Any]]:
    """The README's main job without the IMDb data: the command ``mogradient-llm demo`` (run
    as a command: the benchmark uses the RL wing's services, not its command line); no table."""
    subprocess.run([sys.executable, "-m", "mogradient_llm", "demo"], check=True)
    return []
