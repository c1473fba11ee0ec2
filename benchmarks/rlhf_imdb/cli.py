"""Command line: run the stages (cached) and write the report.

python -m benchmarks.rlhf_imdb --jobs 2          # full run, about 1 h 45 min on 2 cores
python -m benchmarks.rlhf_imdb --quick --jobs 2  # about 4 min (the offline demo without the data)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from benchmarks.rlhf_imdb.cache import cached_stage
from benchmarks.rlhf_imdb.data import Split, fingerprint, load_split
from benchmarks.rlhf_imdb.policies import (
    PRETRAIN_LR,
    SIZES,
    build_policy,
    build_tokenizer,
    hub_policy_info,
)
from benchmarks.rlhf_imdb.report import write_report
from benchmarks.rlhf_imdb.reward_model import train_reward_model
from benchmarks.rlhf_imdb.runs import (
    AGGREGATORS,
    LOOP_REVISION,
    evaluate_start,
    reference_point,
    run_ppo,
)
from mogradient_llm.data import imdb_prompts
from mogradient_llm.demo import DEFAULT_DATA_DIR

FULL = {
    "sizes": "1m,4m,16m",
    "seeds": "0,1,2",
    "pretrain_steps": 1000,
    "reward_steps": 1000,
    "steps": 60,
    "batch_size": 16,
    "eval_prompts": 256,
}
QUICK = {
    "sizes": "1m",
    "seeds": "0,1",
    "pretrain_steps": 400,
    "reward_steps": 400,
    "steps": 8,
    "batch_size": 16,
    "eval_prompts": 64,
}


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
    parser.add_argument("--quick", action="store_true", help="one small size, 2 seeds, few steps")
    parser.add_argument(
        "--sizes", help=f"comma-separated: {', '.join(SIZES)} or hub names/paths (e.g. gpt2)"
    )
    parser.add_argument("--aggregators", default=",".join(AGGREGATORS))
    parser.add_argument("--seeds")
    parser.add_argument("--pretrain-steps", type=int)
    parser.add_argument("--reward-steps", type=int)
    parser.add_argument("--steps", type=int, help="PPO steps per run")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--eval-prompts", type=int)
    parser.add_argument(
        "--sentiment",
        choices=["classifier", "vader"],
        default="classifier",
        help="the trained IMDb classifier's positive logit (default), or VADER",
    )
    parser.add_argument(
        "--no-noon",
        action="store_true",
        help="plain PPO advantages (no Noon clipping at zero) for every aggregator of this run",
    )
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per job")
    parser.add_argument(
        "--jobs", type=int, default=1, help="stages run in this many processes at once"
    )
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.data is None and not args.quick and not DEFAULT_DATA_DIR.is_dir():
        parser.error(f"no IMDb data at {DEFAULT_DATA_DIR}; pass --data DIR or a hub name")
    if args.jobs < 1 or args.threads < 1:
        parser.error("--jobs and --threads must be at least 1")
    unknown = sorted(set(args.aggregators.split(",")) - set(AGGREGATORS))
    if unknown:
        parser.error(f"unknown aggregators {unknown}; valid: {', '.join(AGGREGATORS)}")
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
            reward_config = {"tokenizer": tok_config, "steps": args.reward_steps, "seed": 0}
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
        n_runs = len(sizes) * (1 + len(args.aggregators.split(",")) * len(args.seeds.split(",")))
        progress = RunProgress(n_runs)
        policies, run_futures = {}, {}
        for future in as_completed(policy_futures):
            size, policy_config = policy_futures[future]
            policy_dir, info = future.result()
            print(
                f"policy {size}: {info['parameters'] / 1e6:.2f}M parameters, "
                f"held-out perplexity {info['perplexity']:.1f}",
                flush=True,
            )
            policies[size] = {"size": size, **info}
            policy = str(policy_dir) if size in SIZES else size
            run_futures.update(
                submit_runs(
                    pool,
                    progress,
                    args,
                    cache,
                    size,
                    policy,
                    policy_config,
                    reward_config,
                    sentiment,
                    train.texts,
                    test.texts,
                )
            )
        results = [
            {"size": size, "aggregator": aggregator, "seed": seed, **future.result()[1]}
            for future, (size, aggregator, seed) in run_futures.items()
        ]
        progress.close()

    runs = sorted(results, key=lambda r: (sizes.index(r["size"]), run_order(r)))
    summary = write_report(runs, [policies[s] for s in sizes], out, reference_point(sentiment))
    wall = time.perf_counter() - start
    write_setup(out / "setup.json", args, reward_info, reference_point(sentiment), wall)
    print(f"wall time {wall:.0f} s")
    return summary


def write_setup(
    path: Path,
    args: argparse.Namespace,
    reward_info: dict[str, Any],
    ref_point: tuple[float, float],
    wall_seconds: float,
) -> None:
    """What produced the tables: arguments, reward model, reference point, machine, time."""
    import transformers

    setup = {
        "arguments": vars(args),
        "reward_model": reward_info,
        "hypervolume_reference": ref_point,
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
    """The README's main job without the IMDb data: ``mogradient-llm demo``; no table."""
    from mogradient_llm.cli import main as llm_main

    llm_main(["demo"])
    return []


def init_worker(threads: int) -> None:
    """Per-process setup: the torch thread count, and no per-file download bars."""
    from transformers.utils import logging

    torch.set_num_threads(threads)
    logging.disable_progress_bar()


class InlineExecutor(Executor):
    """Runs each submitted call at once in this process (``--jobs 1``)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # re-raised by future.result(), as a pool would
            future.set_exception(exc)
        return future


@contextmanager
def stage_executor(jobs: int, threads: int) -> Iterator[Executor]:
    """Where stages run: inline for one job, else ``jobs`` spawned processes (each with
    ``threads`` torch threads; stages write to distinct cache directories). An error cancels
    the stages still queued instead of waiting for them."""
    pool: Executor = InlineExecutor()
    if jobs > 1:
        pool = ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=init_worker,
            initargs=(threads,),
        )
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def policy_stages(
    args: argparse.Namespace,
    tok_config: dict[str, Any],
    tokenizer_dir: Path,
    data_id: dict[str, Any],
    train: Split,
    test: Split,
) -> list[tuple[str, dict[str, Any], Callable[[Path], dict[str, Any]]]]:
    """``(size, stage config, compute)`` per ``--sizes`` entry: pre-train a local size, or
    measure a hub model / path as it is."""
    stages = []
    for size in args.sizes.split(","):
        if size in SIZES:
            config = {
                "tokenizer": tok_config,
                "size": SIZES[size],
                "steps": args.pretrain_steps,
                "learning_rate": PRETRAIN_LR[size],
                "seed": 0,
            }
            compute = partial(
                build_policy,
                tokenizer_dir=tokenizer_dir,
                size=size,
                train_texts=train.texts,
                test_texts=test.texts,
                steps=args.pretrain_steps,
                seed=0,
            )
        else:
            config = {"hub": size, "data": data_id}
            compute = partial(without_directory, hub_policy_info, (size, test.texts))
        stages.append((size, config, compute))
    return stages


def without_directory(
    fn: Callable[..., dict[str, Any]], args: tuple[Any, ...], directory: Path
) -> dict[str, Any]:
    """``fn(*args)``: the compute step of a stage that writes nothing into its directory."""
    return fn(*args)


def submit_runs(
    pool: Executor,
    progress: RunProgress,
    args: argparse.Namespace,
    cache: Path,
    size: str,
    policy: str,
    policy_config: dict[str, Any],
    reward_config: dict[str, Any],
    sentiment: str | Path,
    train_texts: list[str],
    test_texts: list[str],
) -> dict[Future, tuple[str, str, int]]:
    """Submit the ``start`` evaluation and every aggregator x seed PPO run (cached) of one
    policy; returns future -> label. ``progress`` reports each run as it ends."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(policy)
    prompts = imdb_prompts(train_texts, tokenizer, 2, 8, min_chars=0, seed=0)
    held_out = imdb_prompts(test_texts, tokenizer, 2, 8, min_chars=0, seed=1)[: args.eval_prompts]
    start_config = {
        "policy": policy_config,
        "reward": reward_config,
        "eval_prompts": args.eval_prompts,
    }
    start = pool.submit(
        cached_stage,
        cache,
        "start",
        start_config,
        partial(without_directory, evaluate_start, (policy, sentiment, held_out)),
    )
    futures = {start: (size, "start", 0)}
    for aggregator in args.aggregators.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            config = {
                "loop": LOOP_REVISION,
                "policy": policy_config,
                "reward": reward_config,
                "aggregator": AGGREGATORS[aggregator],
                "seed": seed,
                "steps": args.steps,
                "batch_size": args.batch_size,
                "eval_prompts": args.eval_prompts,
                **({"noon": False} if args.no_noon else {}),
            }
            compute = partial(
                without_directory,
                run_ppo,
                (
                    policy,
                    sentiment,
                    aggregator,
                    seed,
                    args.steps,
                    args.batch_size,
                    prompts,
                    held_out,
                    not args.no_noon,
                ),
            )
            futures[pool.submit(cached_stage, cache, "ppo", config, compute)] = (
                size,
                aggregator,
                seed,
            )
    for future, label in futures.items():
        future.add_done_callback(partial(progress.report, label))
    return futures


class RunProgress:
    """A progress bar over the runs and one line per finished run, written as each run ends
    (a done-callback, so it works for the inline executor and the process pool alike)."""

    def __init__(self, total: int) -> None:
        self.bar = tqdm(total=total, desc="runs", unit="run", disable=None)

    def report(self, label: tuple[str, str, int], future: Future) -> None:
        if future.exception() is None:
            _, result = future.result()
            size, aggregator, seed = label
            self.bar.write(
                f"{size} {aggregator} seed {seed}: sentiment {result['sentiment']:.3f}, "
                f"length {result['length']:.3f}, HV {result['hypervolume']:.3f}, "
                f"KL {result['kl']:.2f}, {result['seconds_per_step']:.2f} s/step"
            )
        self.bar.update()

    def close(self) -> None:
        self.bar.close()


def run_order(run: dict[str, Any]) -> tuple[int, int]:
    """Table order within a size: ``start`` first, then the aggregators, then seeds."""
    names = ["start", *AGGREGATORS]
    return names.index(run["aggregator"]), run["seed"]
