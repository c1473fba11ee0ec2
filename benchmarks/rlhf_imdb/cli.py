"""Command line: run the stages (cached) and write the report.

python -m benchmarks.rlhf_imdb --data ../shared/data/imdb          # full run
python -m benchmarks.rlhf_imdb --data ../shared/data/imdb --quick  # < 10 min on 2 cores
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.rlhf_imdb.cache import cached_stage
from benchmarks.rlhf_imdb.data import fingerprint, load_split
from benchmarks.rlhf_imdb.policies import SIZES, build_policy, build_tokenizer, hub_policy_info
from benchmarks.rlhf_imdb.report import write_report
from benchmarks.rlhf_imdb.reward_model import train_reward_model
from benchmarks.rlhf_imdb.runs import AGGREGATORS, evaluate_start, reference_point, run_ppo
from mogradient_llm.data import imdb_prompts

FULL = {
    "sizes": "1m,4m,16m",
    "seeds": "0,1,2",
    "pretrain_steps": 2000,
    "reward_steps": 1000,
    "steps": 100,
    "batch_size": 32,
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
    parser.add_argument("--data", required=True, help="IMDb directory/file, or a hub name")
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
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    unknown = sorted(set(args.aggregators.split(",")) - set(AGGREGATORS))
    if unknown:
        parser.error(f"unknown aggregators {unknown}; valid: {', '.join(AGGREGATORS)}")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run every stage (reusing the cache) and write the report; returns the summary rows."""
    from transformers.utils import logging

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.disable_progress_bar()
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
        lambda d: build_tokenizer(d, train.texts, args.vocab_size),
    )
    sentiment: str | Path = "vader"
    reward_config: dict[str, Any] = {"sentiment": "vader"}
    if args.sentiment == "classifier":
        reward_config = {"tokenizer": tok_config, "steps": args.reward_steps, "seed": 0}
        sentiment, reward_info = cached_stage(
            cache,
            "reward_model",
            reward_config,
            lambda d: train_reward_model(d, tokenizer_dir, train, test, args.reward_steps, seed=0),
        )
        print(f"sentiment reward model: test accuracy {reward_info['test_accuracy']:.3f}")

    runs, policies = [], []
    for size in args.sizes.split(","):
        if size in SIZES:
            policy_config = {
                "tokenizer": tok_config,
                "size": SIZES[size],
                "steps": args.pretrain_steps,
                "seed": 0,
            }
            policy_dir, info = cached_stage(
                cache,
                "policy",
                policy_config,
                lambda d, s=size: build_policy(
                    d, tokenizer_dir, s, train.texts, test.texts, args.pretrain_steps, seed=0
                ),
            )
            policy: str = str(policy_dir)
        else:
            policy_config = {"hub": size, "data": data_id}
            _, info = cached_stage(
                cache, "policy", policy_config, lambda d, s=size: hub_policy_info(s, test.texts)
            )
            policy = size
        print(
            f"policy {size}: {info['parameters'] / 1e6:.2f}M parameters, "
            f"held-out perplexity {info['perplexity']:.1f}"
        )
        policies.append({"size": size, **info})
        runs += policy_runs(
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

    summary = write_report(runs, policies, out, reference_point(sentiment))
    print(f"wall time {time.perf_counter() - start:.0f} s")
    return summary


def policy_runs(
    args: argparse.Namespace,
    cache: Path,
    size: str,
    policy: str,
    policy_config: dict[str, Any],
    reward_config: dict[str, Any],
    sentiment: str | Path,
    train_texts: list[str],
    test_texts: list[str],
) -> list[dict[str, Any]]:
    """Every aggregator x seed PPO run (cached) from one policy."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(policy)
    prompts = imdb_prompts(train_texts, tokenizer, 2, 8, min_chars=0, seed=0)
    held_out = imdb_prompts(test_texts, tokenizer, 2, 8, min_chars=0, seed=1)[: args.eval_prompts]
    start_config = {
        "policy": policy_config,
        "reward": reward_config,
        "eval_prompts": args.eval_prompts,
    }
    _, start = cached_stage(
        cache, "start", start_config, lambda d: evaluate_start(policy, sentiment, held_out)
    )
    runs = [{"size": size, "aggregator": "start", "seed": 0, **start}]
    for aggregator in args.aggregators.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            config = {
                "policy": policy_config,
                "reward": reward_config,
                "aggregator": AGGREGATORS[aggregator],
                "seed": seed,
                "steps": args.steps,
                "batch_size": args.batch_size,
                "eval_prompts": args.eval_prompts,
            }
            _, result = cached_stage(
                cache,
                "ppo",
                config,
                lambda d, a=aggregator, s=seed: run_ppo(
                    policy, sentiment, a, s, args.steps, args.batch_size, prompts, held_out
                ),
            )
            print(
                f"{size} {aggregator} seed {seed}: sentiment {result['sentiment']:.3f}, "
                f"length {result['length']:.3f}, HV {result['hypervolume']:.3f}, "
                f"KL {result['kl']:.2f}, {result['seconds_per_step']:.2f} s/step",
                flush=True,
            )
            runs.append({"size": size, "aggregator": aggregator, "seed": seed, **result})
    return runs
