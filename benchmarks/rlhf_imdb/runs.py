"""PPO stage: one run of multi-objective PPO from a pre-trained policy with one aggregator and
seed, then held-out evaluation (mean rewards, hypervolume, KL to the start, seconds per step)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mogradient_llm.config import MOPPOConfig
from mogradient_llm.evaluate import evaluate_policy
from mogradient_llm.rewards import Reward, as_reward, classifier, length

# aggregator name in the tables -> MOPPOConfig fields
AGGREGATORS: dict[str, dict[str, Any]] = {
    "pama": {"aggregator": "pama"},
    "morlhf": {"aggregator": "morlhf", "aggregator_kwargs": {"weights": [0.5, 0.5]}},
    "mgda-ub": {"aggregator": "mgda", "gramian_level": "features"},
    "mgda": {"aggregator": "mgda", "gramian_level": "parameters"},
    "pcgrad": {"aggregator": "pcgrad"},
    "cagrad": {"aggregator": "cagrad"},
}
GENERATION = {"max_new_tokens": 48, "do_sample": True, "top_k": 0, "top_p": 1.0}
# Hypervolume reference (sentiment logit, length reward): worse than any start policy seen.
REF_POINT = (-3.0, 0.5)
OBJECTIVES = ("sentiment", "length")


def benchmark_rewards(reward_model_dir: Path) -> list[Reward]:
    """The positive-class logit of the trained classifier and clip(chars / 140, 0.5, 1.5)."""
    return [as_reward(classifier(str(reward_model_dir)), "sentiment"), length(unit="chars")]


def ppo_config(aggregator: str, seed: int, batch_size: int, **overrides: Any) -> MOPPOConfig:
    """The benchmark's PPO settings (the demo's, with the batch size a parameter)."""
    values: dict[str, Any] = {
        "learning_rate": 3e-4,
        "batch_size": batch_size,
        "mini_batch_size": max(1, batch_size // 2),
        "ppo_epochs": 2,
        "kl_coef": 0.05,
        "seed": seed,
        "generation_kwargs": GENERATION,
        **AGGREGATORS[aggregator],
    }
    return MOPPOConfig(**{**values, **overrides})


def run_ppo(
    policy_dir: str | Path,
    reward_model_dir: Path,
    aggregator: str,
    seed: int,
    steps: int,
    batch_size: int,
    prompts: Sequence[str],
    held_out: Sequence[str],
) -> dict[str, Any]:
    """Train ``steps`` PPO steps, evaluate on ``held_out``; returns metrics and the history."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mogradient_llm.trainer import MOPPOTrainer

    rewards = benchmark_rewards(reward_model_dir)
    policy = AutoModelForCausalLM.from_pretrained(policy_dir)
    reference = AutoModelForCausalLM.from_pretrained(policy_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    config = ppo_config(aggregator, seed, batch_size)
    trainer = MOPPOTrainer(config, policy, tokenizer, rewards, prompts, ref_model=reference)
    start = time.perf_counter()
    history = trainer.train(steps, progress=False)
    seconds = time.perf_counter() - start
    torch.manual_seed(1234 + seed)
    result = evaluate_policy(
        trainer.policy.eval(),
        tokenizer,
        rewards,
        held_out,
        GENERATION,
        ref_model=reference,
        ref_point=REF_POINT,
    )
    return {
        **{name: result[f"eval/scores/{name}"] for name in OBJECTIVES},
        "hypervolume": result["eval/hypervolume"],
        "kl": result["eval/kl"],
        "seconds_per_step": seconds / max(steps, 1),
        "history": [{name: h[f"objective/scores/{name}"] for name in OBJECTIVES} for h in history],
        "samples": result["samples"][:4],
    }
