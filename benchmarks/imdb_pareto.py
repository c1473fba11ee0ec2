"""Pareto quality on IMDb sentiment (VADER) vs length: PAMA, MORLHF and MGDA-UB, across seeds.

    python -m benchmarks.imdb_pareto --data-dir ../shared/data/imdb --out outputs/imdb_pareto

The shape of the paper's Table 3, scaled to CPU: the demo's tiny GPT-2 (pre-trained once on the
IMDb subset, or on generated reviews when no ``--data-dir`` is given), then for every method
and seed the same number of PPO steps from the same start. Held-out mean rewards per objective
(128 test prompts), the hypervolume of the mean vector against the reference point
(vader -1, length 0.5) and the KL to the start are reported per run and averaged over seeds.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mogradient_llm.data import imdb_prompts
from mogradient_llm.demo import GENERATION, build_demo_policy, demo_config, demo_rewards, demo_texts
from mogradient_llm.evaluate import evaluate_policy
from mogradient_llm.trainer import MOPPOTrainer

METHODS = {
    "pama": {"aggregator": "pama"},
    "morlhf": {"aggregator": "morlhf"},
    "mgda-ub": {"aggregator": "mgda", "gramian_level": "features"},
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", help="IMDb subset directory (default: generated reviews)")
    parser.add_argument("--out", default="outputs/imdb_pareto")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--pretrain-steps", type=int, default=400)
    parser.add_argument("--eval-prompts", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    train_texts, test_texts, source = demo_texts(args.data_dir)
    policy_dir = out / "policy"
    model, tokenizer = build_demo_policy(train_texts, args.pretrain_steps, seed=0)
    model.save_pretrained(policy_dir)
    tokenizer.save_pretrained(policy_dir)
    prompts = imdb_prompts(train_texts, tokenizer, 2, 8, min_chars=0, seed=0)
    held_out = imdb_prompts(test_texts, tokenizer, 2, 8, min_chars=0, seed=1)[: args.eval_prompts]
    rewards = demo_rewards()
    reference = AutoModelForCausalLM.from_pretrained(policy_dir).eval()
    print(f"text: {source}; {args.steps} PPO steps per run; {len(held_out)} held-out prompts")

    def evaluate(policy: torch.nn.Module) -> dict[str, float]:
        torch.manual_seed(1234)
        result = evaluate_policy(
            policy.eval(),
            AutoTokenizer.from_pretrained(policy_dir),
            rewards,
            held_out,
            GENERATION,
            ref_model=reference,
        )
        return {
            "vader": result["eval/scores/vader"],
            "length": result["eval/scores/length"],
            "hypervolume": result["eval/hypervolume"],
            "kl": result["eval/kl"],
        }

    rows = [{"method": "start", "seed": "-", **evaluate(reference)}]
    for method in args.methods:
        for seed in args.seeds:
            policy = AutoModelForCausalLM.from_pretrained(policy_dir)
            tok = AutoTokenizer.from_pretrained(policy_dir)
            config = demo_config(seed=seed, **METHODS[method])
            trainer = MOPPOTrainer(config, policy, tok, rewards, prompts)
            trainer.train(args.steps, progress=False)
            rows.append({"method": method, "seed": seed, **evaluate(trainer.policy)})
            print(
                ", ".join(
                    f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in rows[-1].items()
                ),
                flush=True,
            )
    for method in args.methods:
        runs = [r for r in rows if r["method"] == method]
        rows.append(
            {
                "method": method,
                "seed": "mean",
                **{
                    key: statistics.mean(r[key] for r in runs)
                    for key in ("vader", "length", "hypervolume", "kl")
                },
            }
        )
    print(f"\n{'method':<10}{'seed':>6}{'vader':>9}{'length':>9}{'HV':>9}{'KL':>9}")
    for r in rows:
        print(
            f"{r['method']:<10}{r['seed']!s:>6}{r['vader']:>9.3f}{r['length']:>9.3f}"
            f"{r['hypervolume']:>9.3f}{r['kl']:>9.2f}"
        )
    with open(out / "imdb_pareto.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out / 'imdb_pareto.csv'}")


if __name__ == "__main__":
    main()
