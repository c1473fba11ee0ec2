"""PPO stage: one run of multi-objective PPO from a pre-trained policy with one aggregator and
seed, then held-out evaluation (mean rewards, hypervolume, KL to the start, seconds per step)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mogradient_llm.demo import GENERATION, demo_config
from mogradient_llm.evaluate import evaluate_policy
from mogradient_llm.rewards import Reward, as_reward, classifier, length, vader

# aggregator name in the tables -> MOPPOConfig fields
#: Part of every PPO stage's cache key: bump it when the trainer's results change, so cached runs
#: of an older loop are not reused (2: MORLHF scalarises before whitening, weights sum to 1,
#: sampling ignores the checkpoint's generation settings, normaliser std floor).
LOOP_REVISION = 2

AGGREGATORS: dict[str, dict[str, Any]] = {
    "pama": {"aggregator": "pama"},
    "morlhf": {"aggregator": "morlhf", "aggregator_kwargs": {"preference": [0.5, 0.5]}},
    "mgda-ub": {"aggregator": "mgda", "gramian_level": "features"},
    "mgda": {"aggregator": "mgda", "gramian_level": "parameters"},
    "pcgrad": {"aggregator": "pcgrad"},
    "cagrad": {"aggregator": "cagrad"},
}
# Hypervolume reference (sentiment, length reward) per sentiment scorer: the classifier's
# positive logit, or VADER's compound score (whose minimum is -1); 0.5 is the length minimum.
REF_POINTS = {"classifier": (-3.0, 0.5), "vader": (-1.0, 0.5)}
OBJECTIVES = ("sentiment", "length")


def benchmark_rewards(sentiment: str | Path) -> list[Reward]:
    """Sentiment (``"vader"``, or the positive-class logit of the classifier saved at this
    path) and the length reward clip(characters / 140, 0.5, 1.5)."""
    scorer = vader() if sentiment == "vader" else classifier(str(sentiment))
    return [as_reward(scorer, "sentiment"), length(unit="chars")]


def reference_point(sentiment: str | Path) -> tuple[float, float]:
    """The fixed hypervolume reference point for this sentiment scorer."""
    return REF_POINTS["vader" if sentiment == "vader" else "classifier"]


def held_out_metrics(
    policy: torch.nn.Module,
    reference: torch.nn.Module,
    tokenizer: Any,
    rewards: Sequence[Reward],
    held_out: Sequence[str],
    ref_point: Sequence[float],
) -> dict[str, Any]:
    """Mean rewards, hypervolume against ``ref_point`` and KL to ``reference`` on the held-out
    prompts (one sampled completion each, the same sampling seed for every run)."""
    torch.manual_seed(1234)
    result = evaluate_policy(
        policy.eval(),
        tokenizer,
        rewards,
        held_out,
        GENERATION,
        ref_model=reference,
        ref_point=ref_point,
    )
    return {
        **{name: result[f"eval/scores/{name}"] for name in OBJECTIVES},
        "hypervolume": result["eval/hypervolume"],
        "kl": result["eval/kl"],
        "samples": result["samples"][:4],
    }


def load_policy(policy_dir: str | Path) -> tuple[Any, Any, Any]:
    """``(policy, frozen reference copy, tokenizer)`` through ``from_pretrained``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    policy = AutoModelForCausalLM.from_pretrained(policy_dir)
    reference = AutoModelForCausalLM.from_pretrained(policy_dir).eval()
    return policy, reference, AutoTokenizer.from_pretrained(policy_dir)


def evaluate_start(
    policy_dir: str | Path, sentiment: str | Path, held_out: Sequence[str]
) -> dict[str, Any]:
    """The pre-trained policy before PPO (the ``start`` row: KL 0, no steps)."""
    policy, reference, tokenizer = load_policy(policy_dir)
    rewards = benchmark_rewards(sentiment)
    return {
        **held_out_metrics(
            policy, reference, tokenizer, rewards, held_out, reference_point(sentiment)
        ),
        "seconds_per_step": 0.0,
        "history": [],
    }


def run_ppo(
    policy_dir: str | Path,
    sentiment: str | Path,
    aggregator: str,
    seed: int,
    steps: int,
    batch_size: int,
    prompts: Sequence[str],
    held_out: Sequence[str],
    noon: bool = True,
) -> dict[str, Any]:
    """Train ``steps`` PPO steps (with Noon clipping unless ``noon`` is false), evaluate on
    ``held_out``; returns metrics and the history."""
    from mogradient_llm.trainer import MOTrainer

    policy, reference, tokenizer = load_policy(policy_dir)
    rewards = benchmark_rewards(sentiment)
    config = demo_config(
        seed=seed,
        batch_size=batch_size,
        mini_batch_size=max(1, batch_size // 2),
        noon=noon,
        **AGGREGATORS[aggregator],
    )
    trainer = MOTrainer(config, policy, tokenizer, rewards, prompts, ref_model=reference)
    start = time.perf_counter()
    history = trainer.train(steps, progress=False)
    seconds = time.perf_counter() - start
    return {
        **held_out_metrics(
            trainer.policy, reference, tokenizer, rewards, held_out, reference_point(sentiment)
        ),
        "seconds_per_step": seconds / max(steps, 1),
        "history": [{name: h[f"objective/scores/{name}"] for name in OBJECTIVES} for h in history],
    }
