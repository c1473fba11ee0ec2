"""TRL's GRPO quick-start with two reward functions, trained with UPGrad instead of TRL's
weighted sum: two lines differ from TRL's own (the import and ``aggregator="upgrad"``).

Runs offline on a tiny GPT-2 built here (or ``--policy``, any causal LM directory or hub id)::

    python examples/trl_grpo_upgrad.py --max-steps 5
    accelerate launch --num_processes 2 --cpu examples/trl_grpo_upgrad.py --max-steps 5

On a GPU with a real model, give ``--policy Qwen/Qwen2-0.5B-Instruct`` and drop ``--cpu``; vLLM
and DeepSpeed are TRL's options (``docs/trl.md``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from datasets import Dataset

from mogradient_llm.integrations.trl import MOGRPOConfig, MOGRPOTrainer


def reward_num_unique_letters(completions: list[str], **kwargs: object) -> list[float]:
    """TRL's quick-start reward: the number of distinct letters of each completion."""
    return [float(len(set(c.lower()) & set("abcdefghijklmnopqrstuvwxyz"))) for c in completions]


def reward_brevity(completions: list[str], **kwargs: object) -> list[float]:
    """A second objective that conflicts with the first: shorter is better."""
    return [-len(c) / 10.0 for c in completions]


def tiny_policy(path: Path) -> str:
    """A tiny GPT-2 and its tokenizer, trained and saved under ``path`` (offline)."""
    from mogradient_llm.policy.models import synthetic_reviews, tiny_gpt2, train_tokenizer

    tokenizer = train_tokenizer(synthetic_reviews(300, seed=0), vocab_size=400)
    model = tiny_gpt2(tokenizer, n_layer=2, n_embd=32, n_head=2, n_positions=64, seed=0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def main(argv: list[str] | None = None) -> MOGRPOTrainer:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--policy", default=None, help="model directory or hub id (default: tiny)")
    parser.add_argument("--aggregator", default="upgrad")
    parser.add_argument("--gramian-level", default="features", choices=["features", "parameters"])
    parser.add_argument("--output-dir", default=None)
    args = parser.parse_args(argv)
    workdir = Path(args.output_dir or tempfile.mkdtemp(prefix="trl-grpo-upgrad-"))
    policy = args.policy or tiny_policy(workdir / "policy")
    tiny = args.policy is None
    prompts = ["the movie was", "the actors", "it was a", "a film that", "i think", "the plot"]
    dataset = Dataset.from_dict({"prompt": prompts * 4})

    training_args = MOGRPOConfig(  # TRL: GRPOConfig(
        output_dir=str(workdir / "run"),
        aggregator=args.aggregator,  # the one new line: UPGrad over the two rewards
        gramian_level=args.gramian_level,
        max_steps=args.max_steps,
        per_device_train_batch_size=8 if tiny else 16,
        num_generations=4 if tiny else 8,
        max_completion_length=8 if tiny else 256,
        learning_rate=1e-3 if tiny else 1e-6,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=not tiny,
    )
    trainer = MOGRPOTrainer(  # TRL: GRPOTrainer(
        model=policy,
        reward_funcs=[reward_num_unique_letters, reward_brevity],
        args=training_args,
        train_dataset=dataset,
    )
    trainer.train()
    last = [h for h in trainer.state.log_history if "mo/weight/reward_brevity" in h][-1]
    weights = {k: round(v, 4) for k, v in last.items() if k.startswith("mo/")}
    if trainer.accelerator.is_main_process:
        print("last step:", weights)
    return trainer


if __name__ == "__main__":
    main()
