"""Seconds per PPO step for each aggregator vs single-objective PPO (same model and batch).

    python -m benchmarks.ppo_step --out outputs/ppo_step

Every configuration gets its own trainer on the same tiny GPT-2, the same prompts and nearly
the same response length: the model is randomly initialised, so EOS has a probability of about
1/vocab per token and almost every response runs to ``max_new_tokens`` (``min_new_tokens``
would change the sampled distribution, which the trainer refuses), and all do about the same
generation and forward work. Rewards are k cheap length scores, so the table measures the trainer's
multi-objective overhead, not the reward models. Steps are interleaved round-robin across
configurations (system noise hits all alike); the table reports the median seconds over
repetitions and the median over repetitions of the ratio to single-objective PPO's step in the
same round (k = 1, one reward, aggregator ``mean``).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from benchmarks.tables import write_csv
from mogradient_llm.estimators import MOPPOConfig
from mogradient_llm.inputs.builtin_rewards import LengthReward
from mogradient_llm.inputs.prompts import imdb_prompts
from mogradient_llm.inputs.rewards import Reward
from mogradient_llm.loop.trainer import MOTrainer
from mogradient_llm.policy.models import synthetic_reviews, tiny_gpt2, train_tokenizer

#: label: (aggregator, extra MOPPOConfig keyword arguments)
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "pama": ("pama", {"aggregator_kwargs": {"granularity": "token"}}),
    "pama-batch": ("pama", {"aggregator_kwargs": {"granularity": "batch"}}),
    "linear": ("linear", {}),
    "mgda": ("mgda", {"gramian_level": "parameters"}),
    "mgda-ub": ("mgda", {"gramian_level": "features"}),
    "pcgrad": ("pcgrad", {"gramian_level": "parameters"}),
    "cagrad": ("cagrad", {"gramian_level": "parameters"}),
}


def _rewards(k: int) -> list[Reward]:
    return [
        Reward(LengthReward(scale=40.0 * (i + 1), low=0.0, high=3.0), name=f"length{i}")
        for i in range(k)
    ]


def _policy_dir(path: Path, n_layer: int, n_embd: int) -> Path:
    tokenizer = train_tokenizer(synthetic_reviews(1000, seed=0), vocab_size=2000)
    model = tiny_gpt2(tokenizer, n_layer=n_layer, n_embd=n_embd, n_head=4, n_positions=128)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def run(args: argparse.Namespace) -> list[dict[str, object]]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    policy_dir = _policy_dir(out / "policy", args.n_layer, args.n_embd)
    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    prompts = imdb_prompts(synthetic_reviews(512, seed=1), tokenizer, 2, 8, min_chars=0)
    generation = {
        "max_new_tokens": args.response_length,
        "do_sample": True,
        "top_k": 0,
        "top_p": 1.0,
    }
    # (label, k, aggregator, extra MOPPOConfig keyword arguments)
    configs: list[tuple[str, int, str, dict[str, Any]]] = [("single-objective PPO", 1, "mean", {})]
    for k in args.ks:
        configs += [(label, k, *METHODS[label]) for label in args.methods]
    trainers = []
    for _label, k, aggregator, extra in configs:
        config = MOPPOConfig(
            batch_size=args.batch_size,
            mini_batch_size=args.mini_batch_size,
            num_ppo_epochs=args.num_ppo_epochs,
            learning_rate=1e-5,
            aggregator=aggregator,
            generation_kwargs=generation,
            seed=0,
            **extra,
        )
        model = AutoModelForCausalLM.from_pretrained(policy_dir)
        tok = AutoTokenizer.from_pretrained(policy_dir)
        trainers.append(MOTrainer(config, model, tok, _rewards(k), prompts))
    times: list[list[float]] = [[] for _ in configs]
    for rep in range(args.warmup + args.reps):
        for i, trainer in enumerate(trainers):
            seconds = trainer.step()["time/step_s"]
            if rep >= args.warmup:
                times[i].append(seconds)
        print(f"repetition {rep + 1}/{args.warmup + args.reps} done", flush=True)
    rows = []
    for (label, k, _, _), t in zip(configs, times):
        median = statistics.median(t)
        paired = statistics.median(a / b for a, b in zip(t, times[0]))
        rows.append(
            {
                "method": label,
                "k": k,
                "median_s": median,
                "mean_s": statistics.mean(t),
                "min_s": min(t),
                "ratio_vs_single": paired,
                "reps": len(t),
            }
        )
    return rows


def print_table(rows: list[dict[str, object]]) -> None:
    print(f"\n{'method':<22}{'k':>3}{'median s/step':>15}{'min s/step':>12}{'vs single':>11}")
    for r in rows:
        print(
            f"{r['method']:<22}{r['k']:>3}{r['median_s']:>15.3f}{r['min_s']:>12.3f}"
            f"{r['ratio_vs_single']:>10.3f}x"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="outputs/ppo_step")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--mini-batch-size", type=int, default=8)
    parser.add_argument("--num-ppo-epochs", type=int, default=4)
    parser.add_argument("--response-length", type=int, default=32)
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--n-embd", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    rows = run(args)
    print_table(rows)
    path = Path(args.out) / "ppo_step.csv"
    write_csv(rows, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
