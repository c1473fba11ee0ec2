"""The stages' machinery: where they run (inline or in spawned processes), the policy stages
of each size, and the start evaluations and RL runs of one size, submitted to the stage cache,
with a progress report as each run ends."""

from __future__ import annotations

import argparse
import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from benchmarks.rlhf_imdb.cache import cached_stage
from benchmarks.rlhf_imdb.data import Split
from benchmarks.rlhf_imdb.fronts import conditioned_config, conditioned_stage, lattice, soups_stage
from benchmarks.rlhf_imdb.policies import (
    PRETRAIN_LR,
    PRETRAIN_WARMUP,
    SIZES,
    build_policy,
    hub_policy_info,
)
from benchmarks.rlhf_imdb.report import SWEEP
from benchmarks.rlhf_imdb.runs import (
    CONSTRAINED,
    DUAL_LR,
    LOOP_REVISION,
    NOON,
    evaluate_start,
    evaluation,
    method_applies,
    method_config,
    rl_stage,
    run_config,
    write_prompts,
)
from mogradient_llm.inputs.prompts import imdb_prompts


def init_worker(threads: int) -> None:
    """Per-process setup: the torch thread count, and no per-file download bars nor bars of
    the data files read (the reviews, and each run's prompt files)."""
    import datasets
    from transformers.utils import logging

    torch.set_num_threads(threads)
    logging.disable_progress_bar()
    datasets.disable_progress_bars()


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
        constraint: str | None = None,
    ) -> dict[str, Any]:
        label = {
            "objectives": k,
            "algorithm": algorithm,
            "size": self.size,
            "method": method,
            "seed": seed,
            "preference": preference,
        }
        return label | ({"constraint": constraint} if constraint else {})

    def submit(
        self,
        pool: Executor,
        progress: RunProgress,
        train_texts: list[str],
        test_texts: list[str],
    ) -> tuple[dict[Future, tuple[int, str]], dict[Future, dict[str, Any]]]:
        """Submit the start evaluations and the runs (cached); returns future -> label for
        each. ``progress`` reports each run as it ends."""
        self.prepare(train_texts, test_texts)
        return self.submit_starts(pool), self.submit_runs(pool, progress, self.runs())

    def prepare(self, train_texts: list[str], test_texts: list[str]) -> None:
        """Write the prompt files and build the evaluation specs every stage of this size uses."""
        from transformers import AutoTokenizer

        args = self.args
        tokenizer = AutoTokenizer.from_pretrained(self.policy)
        prompts = imdb_prompts(train_texts, tokenizer, 2, 8, min_chars=0, seed=0)
        held_out = imdb_prompts(test_texts, tokenizer, 2, 8, min_chars=0, seed=1)
        held_out = held_out[: args.eval_prompts]
        # training-split prompts for choosing the best configuration: other reviews' openings
        train_eval = imdb_prompts(train_texts[::-1], tokenizer, 2, 8, min_chars=0, seed=2)
        train_eval = train_eval[: args.train_eval_prompts]
        self.evaluation_key = {  # what the evaluations depend on, in every stage's cache key
            **self.common,
            "eval_prompts": args.eval_prompts,
            "train_eval_prompts": args.train_eval_prompts,
        }
        prompt_dir = self.cache / "prompts"  # files of prompt rows, named by their content
        self.files = {
            name: write_prompts(prompt_dir, rows)
            for name, rows in (("train", prompts), ("test", held_out), ("train_eval", train_eval))
        }
        self.specs = {
            k: evaluation(
                self.sentiment,
                k,
                self.files["test"],
                self.files["train_eval"],
                args.eval_prompts,
                args.train_eval_prompts,
            )
            for k in self.objective_counts()
        }

    def submit_starts(self, pool: Executor) -> dict[Future, tuple[int, str]]:
        """Submit the start evaluation of each objective count (after :meth:`prepare`)."""
        starts = {}
        for k in self.objective_counts():
            compute = partial(without_directory, evaluate_start, (self.policy, self.specs[k]))
            config = {**self.evaluation_key, "objectives": k}
            starts[pool.submit(cached_stage, self.cache, "start", config, compute)] = (
                k,
                self.size,
            )
        return starts

    def submit_runs(
        self, pool: Executor, progress: RunProgress, labels: list[dict[str, Any]]
    ) -> dict[Future, dict[str, Any]]:
        """Submit the runs of ``labels`` (after :meth:`prepare`); returns future -> label. A
        constrained run's config adds its constraint and dual step, so every other run keeps
        the cache key it had."""
        args = self.args
        runs = {}
        progress.add(len(labels))
        for label in labels:
            k, method = label["objectives"], label["method"]
            trained = "morlhf" if method in (SWEEP, CONSTRAINED) else method  # both MORLHF's
            constraint = label.get("constraint")
            config = {
                **self.evaluation_key,
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
                **({"constraint": constraint, "dual_lr": DUAL_LR} if constraint else {}),
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
                constraint,
            )
            compute = partial(
                rl_stage,
                self.policy,
                self.sentiment,
                self.files["train"],
                run,
                args.eval_every,
                self.specs[k],
            )
            future = pool.submit(cached_stage, self.cache, "rl", config, compute)
            future.add_done_callback(partial(progress.report, label))
            runs[future] = label
        return runs

    def submit_fronts(self, pool: Executor) -> dict[Future, dict[str, Any]]:
        """Submit (after :meth:`submit`) the fronts compared with the preference sweep, per
        algorithm: a conditioned policy per ``--conditioned-steps`` entry and seed, and, with
        ``--soups``, Rewarded Soups of the first seed (:mod:`benchmarks.rlhf_imdb.fronts`);
        returns future -> label."""
        args = self.args
        steps_list = [int(s) for s in filter(None, args.conditioned_steps.split(","))]
        if not args.sweep or not (steps_list or args.soups):
            return {}
        points = lattice(sweep_weights(args.sweep), "morlhf" in args.aggregators.split(","))
        common = {
            **self.evaluation_key,
            "loop": LOOP_REVISION,
            "eval_every": args.eval_every,
            "batch_size": args.batch_size,
            "lattice": points,
        }
        seeds = [int(seed) for seed in args.seeds.split(",")]
        train, spec = self.files["train"], self.specs[2]
        futures: dict[Future, dict[str, Any]] = {}
        for algorithm in args.algorithms.split(","):
            label = {"algorithm": algorithm, "size": self.size}
            if args.soups:
                one_hot = [(1.0, 0.0), (0.0, 1.0)]
                runs = [
                    run_config(algorithm, "morlhf", seeds[0], args.steps, args.batch_size, 2,
                               False, p)
                    for p in one_hot
                ]  # fmt: skip
                config = {**common, "algorithm": algorithm, "seed": seeds[0], "steps": args.steps}
                compute = partial(
                    soups_stage, self.policy, self.sentiment, train, runs, args.eval_every, spec,
                    points,
                )  # fmt: skip
                future = pool.submit(cached_stage, self.cache, "soups", config, compute)
                futures[future] = {**label, "front": "soups", "steps": args.steps, "seed": seeds[0]}
            for steps in steps_list:
                for seed in seeds:
                    config = {
                        **common,
                        "algorithm": algorithm,
                        "seed": seed,
                        "steps": steps,
                        "concentration": args.concentration,
                    }
                    run = conditioned_config(
                        algorithm, seed, steps, args.batch_size, args.concentration
                    )
                    compute = partial(
                        conditioned_stage, self.policy, self.sentiment, train, run,
                        args.eval_every, spec, points,
                    )  # fmt: skip
                    future = pool.submit(cached_stage, self.cache, "conditioned", config, compute)
                    futures[future] = {
                        **label, "front": "conditioned", "steps": steps, "seed": seed,
                        "concentration": args.concentration,
                    }  # fmt: skip
        return futures


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
            preference += f" {label['constraint']}" if label.get("constraint") else ""
            self.bar.write(
                f"{label['size']} {label['algorithm']} {label['method']}{preference} "
                f"k={label['objectives']} seed {label['seed']}: HV {result['hypervolume']:.3f}, "
                f"KL {result['kl']:.2f}, {result['seconds_per_step']:.2f} s/step"
            )
        self.bar.update()

    def close(self) -> None:
        self.bar.close()
