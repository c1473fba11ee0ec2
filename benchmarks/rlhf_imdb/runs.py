"""RL stage: one run of multi-objective PPO or GRPO from a pre-trained policy with one method
and seed, evaluated on held-out test prompts and on training-split prompts every
``eval_every`` steps, so that the report can compare methods at matched KL.

A run is described by the RL wing's typed records (:mod:`mogradient_llm.specs`: a ``RunSpec``
whose prompts are a file of prompt rows, two ``EvalSpec`` for the evaluations) and the
algorithm's config with its ``demo`` preset, and goes through the services of
:mod:`mogradient_llm.run`: the trainer comes from ``build_trainer`` (the benchmark steps it
itself, evaluating between steps in the same process: each evaluation reseeds the sampling, so
evaluating afterwards from checkpoints would train differently), the start row from
``evaluate``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.rlhf_imdb.cache import stage_key
from mogradient_llm.config import DEMO_GENERATION, MOConfig
from mogradient_llm.estimators import estimator_class
from mogradient_llm.inputs.rewards import Reward
from mogradient_llm.policy.evaluation import evaluate_policy
from mogradient_llm.run import build_trainer, evaluate, load_lm, load_prompt_rows
from mogradient_llm.specs import DataSpec, EvalSpec, ModelSpec, RunSpec

#: Part of every RL stage's cache key: bump it when the trainer's results change, so cached runs
#: of an older loop are not reused (2: MORLHF scalarises before whitening, weights sum to 1,
#: sampling ignores the checkpoint's generation settings, normaliser std floor; 3: one loop for
#: PPO and GRPO, checkpoints evaluated along training; 4: MORLHF trains with its sweep
#: preference, which the ``morlhf`` alias had dropped for equal weights).
LOOP_REVISION = 4

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
#: The method name of the constrained benchmark's runs: length maximised subject to a sentiment
#: threshold by the Lagrangian (MORLHF's config; its one unconstrained objective needs no
#: weighting).
CONSTRAINED = "lagrangian"
# Noon (advantages clipped at zero before aggregating) is PAMA's; the paper's baselines, and
# every other method here, train on plain advantages (with Noon, v1 saw them collapse to the
# shortest completions on the largest policy).
NOON = {"pama"}
# GDPO is an advantage normalisation of GRPO's groups: PPO has no groups
ONLY_FOR = {"gdpo": "grpo"}
# The third objective of the k = 3 table.
OBJECTIVES = ("sentiment", "length", "diversity")
#: The dual ascent step of a constrained run's multiplier. The sentiment logit's violations are
#: a few tenths (the thresholds sit a few tenths above the start policy's mean), so a step of
#: 0.5 raises λ to about 1 (the constraint's advantage weighs as much as the primary one) within
#: 8 steps of a steady violation; the library's default 0.05 would leave λ near 0.2 after the
#: benchmark's 16 or 24 steps.
DUAL_LR = 0.5
# Hypervolume reference per objective: the sentiment classifier's positive logit (VADER's
# compound score has minimum -1), the length reward's minimum 0.5, diversity's minimum 0.
#: The sampling seed of every evaluation (each run and checkpoint sees the same draws).
EVAL_SEED = 1234
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


def reward_specs(sentiment: str | Path, n_objectives: int = 2) -> tuple[str, ...]:
    """The objectives as ``--reward`` specs: sentiment (``"vader"``, or the positive-class logit
    of the classifier saved at this path), the length reward clip(characters / 140, 0.5, 1.5)
    and, for three objectives, distinct-1 diversity of the completion's words."""
    scorer = "vader" if sentiment == "vader" else f"classifier:{sentiment}"
    return (f"sentiment={scorer}", "length:chars", "distinct")[:n_objectives]


def run_config(
    algorithm: str,
    method: str,
    seed: int,
    steps: int,
    batch_size: int,
    n_objectives: int = 2,
    noon: bool = True,
    preference: tuple[float, ...] | None = None,
    constraint: str | None = None,
) -> MOConfig:
    """The config of one run: the algorithm's ``demo`` preset with ``method``'s fields,
    ``steps`` steps of ``batch_size`` completions in two minibatches (GRPO: ``batch_size / 4``
    prompts × 4), Noon clipping only if ``noon``, ``preference`` instead of a scalarised
    method's equal weights, and ``constraint`` (``"sentiment>=0.4"``) kept by the Lagrangian
    with dual step :data:`DUAL_LR`."""
    fields = method_config(method, n_objectives)
    if preference is not None:
        fields["reward_weights"] = list(preference)
    if constraint is not None:
        fields["constraints"] = [constraint]
        fields["constraint_lr"] = DUAL_LR
    return estimator_class(algorithm).config_class.demo(
        seed=seed,
        noon=noon,
        max_steps=steps,
        batch_size=batch_size,
        mini_batch_size=max(1, batch_size // 2),
        **fields,
    )


def write_prompts(directory: Path, prompts: list[str]) -> Path:
    """``prompts`` as a file of prompt rows (``{"prompt": ...}`` per line) in ``directory``,
    named by their content (written once, atomically), for a ``DataSpec`` to read."""
    path = directory / f"{stage_key({'prompts': prompts})}.jsonl"
    if not path.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{path.name}.{os.getpid()}.tmp"
        tmp.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
        os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class Evaluation:
    """The two evaluations of every checkpoint: on test prompts (the tables) and on
    training-split prompts (choosing the best configuration), same rewards and sampling."""

    test: EvalSpec
    train: EvalSpec


def evaluation(
    sentiment: str | Path,
    n_objectives: int,
    test_prompts: Path,
    train_prompts: Path,
    num_test: int,
    num_train: int,
) -> Evaluation:
    """The evaluation specs: ``DEMO_GENERATION`` sampling after ``torch.manual_seed(1234)``
    (the same for every run and checkpoint), the fixed reference point, prompts from files."""

    def spec(prompts: Path, n: int) -> EvalSpec:
        return EvalSpec(
            rewards=reward_specs(sentiment, n_objectives),
            ref_point=reference_point(sentiment, n_objectives),
            num_prompts=n,
            seed=EVAL_SEED,
            generation=dict(DEMO_GENERATION),
            data=DataSpec(dataset=str(prompts)),
        )

    return Evaluation(spec(test_prompts, num_test), spec(train_prompts, num_train))


def reference_point(sentiment: str | Path, n_objectives: int = 2) -> tuple[float, ...]:
    """The fixed hypervolume reference point for this sentiment scorer and objective count."""
    kind = "vader" if sentiment == "vader" else "classifier"
    values = (SENTIMENT_REFERENCE[kind], REFERENCE["length"], REFERENCE["diversity"])
    return values[:n_objectives]


def held_out_metrics(
    policy: torch.nn.Module,
    reference: torch.nn.Module,
    tokenizer: Any,
    rewards: list[Reward],
    rows: list[dict[str, Any]],
    spec: EvalSpec,
    condition: Callable[[list[str]], list[str]] | None = None,
) -> dict[str, Any]:
    """:func:`mogradient_llm.run.evaluate` of ``spec`` on a policy in memory: mean rewards,
    hypervolume against ``spec.ref_point`` and KL to ``reference`` on ``rows`` (one sampled
    completion each, after ``torch.manual_seed(spec.seed)``). ``condition``: the texts a
    conditioned policy (and its reference) reads instead of the prompts (its preference)."""
    torch.manual_seed(spec.seed)
    result = evaluate_policy(
        policy.eval(),
        tokenizer,
        rewards,
        rows,
        dict(spec.generation),
        ref_model=reference,
        ref_point=list(spec.ref_point) if spec.ref_point is not None else None,
        batch_size=spec.batch_size,
        condition=condition,
    )
    policy.train()
    return metrics(result, [r.name for r in rewards])


def metrics(result: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The benchmark's fields of an evaluation: each objective's mean, the hypervolume, the KL
    and four sample completions."""
    return {
        **{name: result[f"eval/scores/{name}"] for name in names},
        "hypervolume": result["eval/hypervolume"],
        "kl": result["eval/kl"],
        "samples": result["samples"][:4],
    }


def evaluate_start(policy_dir: str | Path, specs: Evaluation) -> dict[str, Any]:
    """The pre-trained policy before RL (the ``start`` row and every curve's step 0, KL 0)."""
    points = {}
    for split, spec in (("test", specs.test), ("train", specs.train)):
        start = dataclasses.replace(spec, policy=str(policy_dir), ref_policy=str(policy_dir))
        names = list(OBJECTIVES[: len(spec.rewards or ())])
        points[split] = metrics(evaluate(start), names)
    test = points["test"]
    curve = [{"step": 0, "test": without_samples(test), "train": without_samples(points["train"])}]
    return {**test, "seconds_per_step": 0.0, "curve": curve, "history": []}


def without_samples(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` less its sample completions (kept for the final evaluation only)."""
    return {k: v for k, v in metrics.items() if k != "samples"}


def run_rl(run: RunSpec, config: MOConfig, eval_every: int, specs: Evaluation) -> dict[str, Any]:
    """Train ``config.max_steps`` steps of ``run``, evaluating with ``specs`` every
    ``eval_every`` steps and at the end. Returns the final test metrics, the ``curve`` of
    evaluations, the per-step training means and the seconds per training step (evaluations
    excluded)."""
    trainer = build_trainer(run, config)
    tokenizer, rewards, names = trainer.tokenizer, trainer.rewards, trainer.names
    reference = trainer.ref_model
    if reference is None:  # the estimator trains without one; the KL is still reported
        reference = load_lm(run.model.policy)[0].eval()
    rows = {
        split: load_prompt_rows(spec.data, tokenizer, spec.seed)[: spec.num_prompts]
        for split, spec in (("test", specs.test), ("train", specs.train))
    }
    steps = config.max_steps
    history, curve, seconds = [], [], 0.0
    stops = sorted({*range(eval_every, steps, eval_every), steps})
    test: dict[str, Any] = {}
    for stop in stops:
        start = time.perf_counter()
        history += trainer.train(stop, progress=False)
        seconds += time.perf_counter() - start
        policy = trainer.policy
        test = held_out_metrics(policy, reference, tokenizer, rewards, rows["test"], specs.test)
        train = held_out_metrics(policy, reference, tokenizer, rewards, rows["train"], specs.train)
        curve.append({"step": stop, "test": without_samples(test), "train": without_samples(train)})
    return {
        **test,
        "seconds_per_step": seconds / max(steps, 1),
        "curve": curve,
        "history": [step_record(h, names) for h in history],
    }


def step_record(stats: dict[str, float], names: list[str]) -> dict[str, float]:
    """One training step's mean score per objective and, in a constrained run, its
    multipliers and measured constraint values (``constraint/<objective>/multiplier`` …)."""
    record = {n: stats[f"objective/scores/{n}"] for n in names}
    return record | {k: v for k, v in stats.items() if k.startswith("constraint/")}


def rl_stage(
    policy_dir: str | Path,
    sentiment: str | Path,
    prompts: Path,
    config: MOConfig,
    eval_every: int,
    specs: Evaluation,
    directory: Path,
) -> dict[str, Any]:
    """One RL stage (see :func:`run_rl`): from the policy at ``policy_dir`` with a frozen copy
    of it as the reference, on the prompt rows in the file ``prompts``. ``directory``, the
    stage's, is the run's output directory; the benchmark keeps no checkpoint there."""
    run = RunSpec(
        output_dir=directory,
        rewards=reward_specs(sentiment, len(specs.test.rewards or ())),
        model=ModelSpec(policy=str(policy_dir), ref_policy=str(policy_dir)),
        data=DataSpec(dataset=str(prompts)),
        progress=False,
    )
    return run_rl(run, config, eval_every, specs)
