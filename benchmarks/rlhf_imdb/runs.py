"""RL stage: one run of multi-objective PPO or GRPO from a pre-trained policy with one method
and seed, evaluated on held-out test prompts and on training-split prompts every
``eval_every`` steps, so that the report can compare methods at matched KL."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mogradient_llm.demo import GENERATION, demo_config
from mogradient_llm.inputs.builtin_rewards import classifier, distinct, length, vader
from mogradient_llm.inputs.rewards import Reward, as_reward
from mogradient_llm.pareto.evaluate import evaluate_policy

#: Part of every RL stage's cache key: bump it when the trainer's results change, so cached runs
#: of an older loop are not reused (2: MORLHF scalarises before whitening, weights sum to 1,
#: sampling ignores the checkpoint's generation settings, normaliser std floor; 3: one loop for
#: PPO and GRPO, checkpoints evaluated along training).
LOOP_REVISION = 3

ALGORITHMS = ("ppo", "grpo")
# method name in the tables -> config fields (the preference of the scalarising methods is the
# uniform one over the run's objectives, set in method_config)
METHODS: dict[str, dict[str, Any]] = {
    "pama": {"aggregator": "pama"},
    "morlhf": {"aggregator": "morlhf"},
    "mgda-ub": {"aggregator": "mgda", "gramian_level": "features"},
    "mgda": {"aggregator": "mgda", "gramian_level": "parameters"},
    "upgrad": {"aggregator": "upgrad"},
    "pcgrad": {"aggregator": "pcgrad"},
    "cagrad": {"aggregator": "cagrad"},
    "gdpo": {"aggregator": "morlhf", "multi_objective_aggregation": "normalize_then_sum"},
}
SCALARISED = {"morlhf", "gdpo"}
# Noon (advantages clipped at zero before aggregating) is PAMA's; the paper's baselines, and
# every other method here, train on plain advantages (with Noon, v1 saw them collapse to the
# shortest completions on the largest policy).
NOON = {"pama"}
# GDPO is an advantage normalisation of GRPO's groups: PPO has no groups
ONLY_FOR = {"gdpo": "grpo"}
# The third objective of the k = 3 table.
OBJECTIVES = ("sentiment", "length", "diversity")
# Hypervolume reference per objective: the sentiment classifier's positive logit (VADER's
# compound score has minimum -1), the length reward's minimum 0.5, diversity's minimum 0.
SENTIMENT_REFERENCE = {"classifier": -3.0, "vader": -1.0}
REFERENCE = {"length": 0.5, "diversity": 0.0}


def method_applies(method: str, algorithm: str) -> bool:
    """Whether ``method`` is defined for ``algorithm`` (GDPO is GRPO's)."""
    return ONLY_FOR.get(method, algorithm) == algorithm


def method_config(method: str, n_objectives: int) -> dict[str, Any]:
    """The config fields of ``method``; scalarised methods weigh the objectives equally."""
    fields = dict(METHODS[method])
    if method in SCALARISED:
        fields["reward_weights"] = [1.0 / n_objectives] * n_objectives
    return fields


def benchmark_rewards(sentiment: str | Path, n_objectives: int = 2) -> list[Reward]:
    """Sentiment (``"vader"``, or the positive-class logit of the classifier saved at this
    path), the length reward clip(characters / 140, 0.5, 1.5) and, for three objectives,
    distinct-1 diversity of the completion's words."""
    scorer = vader() if sentiment == "vader" else classifier(str(sentiment))
    rewards = [as_reward(scorer, "sentiment"), length(unit="chars"), distinct()]
    return rewards[:n_objectives]


def reference_point(sentiment: str | Path, n_objectives: int = 2) -> tuple[float, ...]:
    """The fixed hypervolume reference point for this sentiment scorer and objective count."""
    kind = "vader" if sentiment == "vader" else "classifier"
    values = (SENTIMENT_REFERENCE[kind], REFERENCE["length"], REFERENCE["diversity"])
    return values[:n_objectives]


def held_out_metrics(
    policy: torch.nn.Module,
    reference: torch.nn.Module,
    tokenizer: Any,
    rewards: Sequence[Reward],
    prompts: Sequence[str],
    ref_point: Sequence[float],
) -> dict[str, Any]:
    """Mean rewards, hypervolume against ``ref_point`` and KL to ``reference`` on ``prompts``
    (one sampled completion each, the same sampling seed for every run and checkpoint)."""
    torch.manual_seed(1234)
    result = evaluate_policy(
        policy.eval(),
        tokenizer,
        rewards,
        prompts,
        GENERATION,
        ref_model=reference,
        ref_point=ref_point,
    )
    policy.train()
    return {
        **{r.name: result[f"eval/scores/{r.name}"] for r in rewards},
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
    policy_dir: str | Path,
    sentiment: str | Path,
    held_out: Sequence[str],
    train_eval: Sequence[str],
    n_objectives: int = 2,
) -> dict[str, Any]:
    """The pre-trained policy before RL (the ``start`` row and every curve's step 0, KL 0)."""
    policy, reference, tokenizer = load_policy(policy_dir)
    rewards = benchmark_rewards(sentiment, n_objectives)
    ref_point = reference_point(sentiment, n_objectives)
    test = held_out_metrics(policy, reference, tokenizer, rewards, held_out, ref_point)
    train = held_out_metrics(policy, reference, tokenizer, rewards, train_eval, ref_point)
    point = {"step": 0, "test": without_samples(test), "train": without_samples(train)}
    return {**test, "seconds_per_step": 0.0, "curve": [point], "history": []}


def without_samples(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` less its sample completions (kept for the final evaluation only)."""
    return {k: v for k, v in metrics.items() if k != "samples"}


def run_rl(
    policy_dir: str | Path,
    sentiment: str | Path,
    algorithm: str,
    method: str,
    seed: int,
    steps: int,
    eval_every: int,
    batch_size: int,
    prompts: Sequence[str],
    held_out: Sequence[str],
    train_eval: Sequence[str],
    n_objectives: int = 2,
    noon: bool = True,
    preference: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Train ``steps`` steps of ``algorithm`` with ``method`` on ``batch_size`` completions a
    step (GRPO: ``batch_size / 4`` prompts × 4; Noon clipping unless ``noon`` is false;
    ``preference`` overrides a scalarised method's equal weights), evaluating on the test
    prompts ``held_out`` and the training-split prompts ``train_eval`` every ``eval_every``
    steps and at the end. Returns the final test metrics, the ``curve`` of evaluations, the
    per-step training means and the seconds per training step (evaluations excluded)."""
    from mogradient_llm.loop.trainer import MOTrainer

    policy, reference, tokenizer = load_policy(policy_dir)
    rewards = benchmark_rewards(sentiment, n_objectives)
    ref_point = reference_point(sentiment, n_objectives)
    fields = method_config(method, n_objectives)
    if preference is not None:
        fields["reward_weights"] = list(preference)
    config = demo_config(
        algorithm=algorithm,
        seed=seed,
        noon=noon,
        max_steps=steps,
        batch_size=batch_size,
        mini_batch_size=max(1, batch_size // 2),
        **fields,
    )
    trainer = MOTrainer(config, policy, tokenizer, rewards, prompts, ref_model=reference)
    history, curve, seconds = [], [], 0.0
    stops = sorted({*range(eval_every, steps, eval_every), steps}) if steps else []
    test: dict[str, Any] = {}
    for stop in stops:
        start = time.perf_counter()
        history += trainer.train(stop, progress=False)
        seconds += time.perf_counter() - start
        test = held_out_metrics(trainer.policy, reference, tokenizer, rewards, held_out, ref_point)
        train = held_out_metrics(
            trainer.policy, reference, tokenizer, rewards, train_eval, ref_point
        )
        curve.append({"step": stop, "test": without_samples(test), "train": without_samples(train)})
    names = [r.name for r in rewards]
    return {
        **test,
        "seconds_per_step": seconds / max(steps, 1),
        "curve": curve,
        "history": [{n: h[f"objective/scores/{n}"] for n in names} for h in history],
    }
