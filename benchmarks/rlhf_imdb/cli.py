"""Command line: run the stages (cached) and write the report.

python -m benchmarks.rlhf_imdb --jobs 2          # full run (docs/benchmarks.md: its measured time)
python -m benchmarks.rlhf_imdb --quick --jobs 2  # a few minutes: a preference sweep's front vs
                                                 # single runs (the offline demo without the data)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
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
    PRETRAIN_WARMUP,
    SIZES,
    build_policy,
    build_tokenizer,
    hub_policy_info,
)
from benchmarks.rlhf_imdb.report import SWEEP, write_report
from benchmarks.rlhf_imdb.reward_model import classifier_key, train_reward_model
from benchmarks.rlhf_imdb.runs import (
    ALGORITHMS,
    LOOP_REVISION,
    METHODS,
    NOON,
    evaluate_start,
    evaluation,
    method_applies,
    method_config,
    reference_point,
    rl_stage,
    run_config,
    write_prompts,
)
from mogradient_llm.inputs.prompts import imdb_prompts
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
        policies, start_futures, run_futures = {}, {}, {}
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
            starts, runs = stage.submit(pool, progress, train.texts, test.texts)
            start_futures.update(starts)
            run_futures.update(runs)
        starts_done = {label: f.result()[1] for f, label in start_futures.items()}
        results = [{**label, **f.result()[1]} for f, label in run_futures.items()]
        progress.close()

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

    refs = {k: reference_point(sentiment, k) for k in (2, 3)}
    summary = write_report(
        sorted(results, key=order),
        starts_done,
        [policies[s] for s in sizes],
        out,
        args.kl_budgets,
        refs,
    )
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
    stages: list[tuple[str, dict[str, Any], Callable[[Path], dict[str, Any]]]] = []
    for size in args.sizes.split(","):
        config: dict[str, Any]
        compute: Callable[[Path], dict[str, Any]]
        if size in SIZES:
            config = {
                "tokenizer": tok_config,
                "size": SIZES[size],
                "steps": args.pretrain_steps,
                "learning_rate": PRETRAIN_LR[size],
                "warmup_ratio": PRETRAIN_WARMUP,
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


class RunStage:
    """The evaluation and RL stages of one policy size: the ``start`` evaluation per objective
    count, every algorithm x method x seed run, and the optional preference sweep."""

    def __init__(
        self,
        args: argparse.Namespace,
        cache: Path,
        size: str,
        policy: str,
        policy_config: dict[str, Any],
        reward_config: dict[str, Any],
        sentiment: str | Path,
    ) -> None:
        self.args, self.cache, self.size, self.policy = args, cache, size, policy
        self.sentiment = sentiment
        self.common = {"policy": policy_config, "reward": reward_config}

    def objective_counts(self) -> list[int]:
        """2, and 3 when this size is among ``--three-objectives``."""
        return [2, 3] if self.size in self.args.three_objectives.split(",") else [2]

    def runs(self) -> list[dict[str, Any]]:
        """The labels of this size's RL runs (objectives, algorithm, method, seed, preference)."""
        args, labels = self.args, []
        for k in self.objective_counts():
            for algorithm in args.algorithms.split(","):
                for method in args.aggregators.split(","):
                    if method_applies(method, algorithm):
                        labels += [
                            self.label(k, algorithm, method, int(seed))
                            for seed in args.seeds.split(",")
                        ]
                if k == 2 and args.sweep:
                    first_seed = int(args.seeds.split(",")[0])
                    for w in sweep_weights(args.sweep):
                        labels.append(
                            self.label(2, algorithm, SWEEP, first_seed, (w, round(1 - w, 4)))
                        )
        return labels

    def label(
        self,
        k: int,
        algorithm: str,
        method: str,
        seed: int,
        preference: tuple[float, ...] | None = None,
    ) -> dict[str, Any]:
        return {
            "objectives": k,
            "algorithm": algorithm,
            "size": self.size,
            "method": method,
            "seed": seed,
            "preference": preference,
        }

    def submit(
        self,
        pool: Executor,
        progress: RunProgress,
        train_texts: list[str],
        test_texts: list[str],
    ) -> tuple[dict[Future, tuple[int, str]], dict[Future, dict[str, Any]]]:
        """Submit the start evaluations and the runs (cached); returns future -> label for
        each. ``progress`` reports each run as it ends."""
        from transformers import AutoTokenizer

        args = self.args
        tokenizer = AutoTokenizer.from_pretrained(self.policy)
        prompts = imdb_prompts(train_texts, tokenizer, 2, 8, min_chars=0, seed=0)
        held_out = imdb_prompts(test_texts, tokenizer, 2, 8, min_chars=0, seed=1)
        held_out = held_out[: args.eval_prompts]
        # training-split prompts for choosing the best configuration: other reviews' openings
        train_eval = imdb_prompts(train_texts[::-1], tokenizer, 2, 8, min_chars=0, seed=2)
        train_eval = train_eval[: args.train_eval_prompts]
        evaluation_key = {  # what the evaluations depend on, in every stage's cache key
            **self.common,
            "eval_prompts": args.eval_prompts,
            "train_eval_prompts": args.train_eval_prompts,
        }
        prompt_dir = self.cache / "prompts"  # files of prompt rows, named by their content
        files = {
            name: write_prompts(prompt_dir, rows)
            for name, rows in (("train", prompts), ("test", held_out), ("train_eval", train_eval))
        }
        specs = {
            k: evaluation(
                self.sentiment,
                k,
                files["test"],
                files["train_eval"],
                args.eval_prompts,
                args.train_eval_prompts,
            )
            for k in self.objective_counts()
        }
        starts = {}
        for k in self.objective_counts():
            compute = partial(without_directory, evaluate_start, (self.policy, specs[k]))
            config = {**evaluation_key, "objectives": k}
            starts[pool.submit(cached_stage, self.cache, "start", config, compute)] = (
                k,
                self.size,
            )
        runs = {}
        labels = self.runs()
        progress.add(len(labels))
        for label in labels:
            k, method = label["objectives"], label["method"]
            trained = "morlhf" if method == SWEEP else method  # a sweep run is MORLHF
            config = {
                **evaluation_key,
                "loop": LOOP_REVISION,
                "algorithm": label["algorithm"],
                "method": method_config(trained, k),
                "objectives": k,
                "seed": label["seed"],
                "steps": args.steps,
                "eval_every": args.eval_every,
                "batch_size": args.batch_size,
                **({"preference": label["preference"]} if label["preference"] else {}),
                "noon": method in NOON and not args.no_noon,
            }
            run = run_config(
                label["algorithm"],
                trained,
                label["seed"],
                args.steps,
                args.batch_size,
                k,
                config["noon"],
                label["preference"],
            )
            compute = partial(
                rl_stage,
                self.policy,
                self.sentiment,
                files["train"],
                run,
                args.eval_every,
                specs[k],
            )
            future = pool.submit(cached_stage, self.cache, "rl", config, compute)
            future.add_done_callback(partial(progress.report, label))
            runs[future] = label
        return starts, runs


def sweep_weights(n: int) -> list[float]:
    """``n`` weights of the first objective, evenly spread strictly inside (0, 1)."""
    return [round((i + 1) / (n + 1), 4) for i in range(n)]


class RunProgress:
    """A progress bar over the runs and one line per finished run, written as each run ends
    (a done-callback, so it works for the inline executor and the process pool alike)."""

    def __init__(self) -> None:
        self.bar = tqdm(total=0, desc="runs", unit="run", disable=None)

    def add(self, n: int) -> None:
        """``n`` more runs were submitted."""
        self.bar.total += n
        self.bar.refresh()

    def report(self, label: dict[str, Any], future: Future) -> None:
        if future.exception() is None:
            _, result = future.result()
            preference = f" {label['preference']}" if label["preference"] else ""
            self.bar.write(
                f"{label['size']} {label['algorithm']} {label['method']}{preference} "
                f"k={label['objectives']} seed {label['seed']}: HV {result['hypervolume']:.3f}, "
                f"KL {result['kl']:.2f}, {result['seconds_per_step']:.2f} s/step"
            )
        self.bar.update()

    def close(self) -> None:
        self.bar.close()
