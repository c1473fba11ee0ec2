"""Front stages beside the MORLHF preference sweep: one preference-conditioned policy, and
Rewarded Soups, each evaluated along the sweep's preference lattice at every evaluation step,
so that the report compares the three fronts at the same KL budgets.

* ``conditioned``: one GRPO/PPO run of MORLHF (linear scalarisation) with ``conditioned``
  set (:mod:`mogradient_llm.inputs.preferences`: a Dirichlet preference per prompt, written
  before it). At step 0 and every ``eval_every`` steps its policy is evaluated once per
  lattice preference on the test prompts, the preference written before each prompt, every
  preference after the same seed; the reference reads the same prefixed prompt.
* ``soups``: the two one-hot MORLHF runs (sentiment only, length only), their policies saved
  at every evaluation step; at each such step the two are interpolated at every lattice
  weight (:func:`mogradient_llm.pareto.soups.interpolate_policies`) and the mix evaluated.
  Step 0 is the start policy (both runs start from it), which the report prepends.

Each stage returns one evaluation curve per lattice point and its training compute: steps
and seconds of the training steps alone (evaluations, saving and mixing excluded), the
measure the sweep's runs report (``seconds_per_step`` × steps).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.rlhf_imdb.runs import (
    Evaluation,
    held_out_metrics,
    reward_specs,
    without_samples,
)
from mogradient_llm.config import MOConfig
from mogradient_llm.estimators import estimator_class
from mogradient_llm.inputs.preferences import conditioning
from mogradient_llm.pareto.soups import interpolate_policies
from mogradient_llm.run import build_rewards, build_trainer, load_lm, load_prompt_rows
from mogradient_llm.specs import DataSpec, ModelSpec, RunSpec

if TYPE_CHECKING:
    from mogradient_llm.loop.trainer import MOTrainer

#: The scalarising method of the sweep, of the soups' one-hot runs and of the conditioned
#: policy (``morlhf`` is the linear scalarisation, preference-aware per sample).
METHOD = "morlhf"


def lattice(weights: Sequence[float], with_middle: bool) -> list[tuple[float, float]]:
    """The sweep's preferences ``(w, 1 - w)`` on (sentiment, length): its sentiment
    ``weights`` and, ``with_middle`` (the equal-weights ``morlhf`` run is trained), ``w = 0.5``
    (the sweep's row counts that run as its middle point)."""
    chosen = sorted({*weights, *([0.5] if with_middle else [])})
    return [(w, round(1 - w, 4)) for w in chosen]


def conditioned_config(
    algorithm: str, seed: int, steps: int, batch_size: int, concentration: float
) -> MOConfig:
    """The conditioned run's config: the benchmark's ``demo`` preset (as :func:`run_config`
    gives the sweep's runs) with MORLHF, no Noon, and a preference drawn per prompt."""
    return estimator_class(algorithm).config_class.demo(
        aggregator=METHOD,
        seed=seed,
        noon=False,
        max_steps=steps,
        batch_size=batch_size,
        mini_batch_size=max(1, batch_size // 2),
        conditioned=True,
        preference_concentration=concentration,
    )


def _trainer(
    policy_dir: str | Path, sentiment: str | Path, prompts: Path, config: MOConfig, out: Path
) -> MOTrainer:
    """A trainer from the policy at ``policy_dir`` (a frozen copy as reference), as
    :func:`benchmarks.rlhf_imdb.runs.rl_stage` builds it."""
    run = RunSpec(
        output_dir=out,
        rewards=reward_specs(sentiment, 2),
        model=ModelSpec(policy=str(policy_dir), ref_policy=str(policy_dir)),
        data=DataSpec(dataset=str(prompts)),
        progress=False,
    )
    return build_trainer(run, config)


def _stops(steps: int, eval_every: int) -> list[int]:
    return sorted({*range(eval_every, steps, eval_every), steps})


def point_label(preference: Sequence[float]) -> str:
    """A lattice point's name in the curves: ``w=0.2`` (its sentiment weight)."""
    return f"w={preference[0]:g}"


def conditioned_stage(
    policy_dir: str | Path,
    sentiment: str | Path,
    prompts: Path,
    config: MOConfig,
    eval_every: int,
    specs: Evaluation,
    preferences: Sequence[Sequence[float]],
    directory: Path,
) -> dict[str, Any]:
    """Train the conditioned policy, evaluating it at every lattice preference at step 0 and
    every ``eval_every`` steps (test prompts). Returns ``curves`` (label -> evaluations),
    ``preferences``, ``train_steps`` and ``train_seconds``."""
    trainer = _trainer(policy_dir, sentiment, prompts, config, directory)
    tokenizer, rewards = trainer.tokenizer, trainer.rewards
    reference = trainer.ref_model
    if reference is None:
        reference = load_lm(str(policy_dir))[0].eval()
    spec = specs.test
    rows = load_prompt_rows(spec.data, tokenizer, spec.seed)[: spec.num_prompts]
    curves: dict[str, list[dict[str, Any]]] = {point_label(p): [] for p in preferences}

    def evaluate(step: int) -> None:
        for p in preferences:
            result = held_out_metrics(
                trainer.policy, reference, tokenizer, rewards, rows, spec, conditioning(p)
            )
            curves[point_label(p)].append({"step": step, "test": without_samples(result)})

    evaluate(0)
    seconds = 0.0
    for stop in _stops(config.max_steps, eval_every):
        start = time.perf_counter()
        trainer.train(stop, progress=False)
        seconds += time.perf_counter() - start
        evaluate(stop)
    return {
        "preferences": [list(p) for p in preferences],
        "curves": curves,
        "train_steps": config.max_steps,
        "train_seconds": seconds,
    }


def soups_stage(
    policy_dir: str | Path,
    sentiment: str | Path,
    prompts: Path,
    configs: Sequence[MOConfig],
    eval_every: int,
    specs: Evaluation,
    preferences: Sequence[Sequence[float]],
    directory: Path,
) -> dict[str, Any]:
    """Train the one-hot runs ``configs`` (sentiment only, then length only), saving their
    policies at every evaluation step; then mix them at every lattice weight ``(w, 1 - w)``
    at each of those steps and evaluate the mix (test prompts). Returns ``curves`` (label ->
    evaluations from the first evaluation step on), ``preferences``, ``train_steps`` and
    ``train_seconds`` (both runs)."""
    steps = configs[0].max_steps
    stops = _stops(steps, eval_every)
    seconds = 0.0
    for i, config in enumerate(configs):
        trainer = _trainer(policy_dir, sentiment, prompts, config, directory / f"run-{i}")
        for stop in stops:
            start = time.perf_counter()
            trainer.train(stop, progress=False)
            seconds += time.perf_counter() - start
            saved = directory / f"run-{i}" / f"step-{stop}"
            policy: Any = trainer.policy  # a transformers model
            policy.save_pretrained(saved)
            trainer.tokenizer.save_pretrained(saved)
        del trainer
    reference, tokenizer = load_lm(str(policy_dir))
    reference.eval()
    rewards = build_rewards(reward_specs(sentiment, 2), tokenizer)
    spec = specs.test
    rows = load_prompt_rows(spec.data, tokenizer, spec.seed)[: spec.num_prompts]
    curves: dict[str, list[dict[str, Any]]] = {point_label(p): [] for p in preferences}
    mix = directory / "mix"
    for stop in stops:
        sources = [directory / f"run-{i}" / f"step-{stop}" for i in range(len(configs))]
        for p in preferences:
            interpolate_policies(sources, list(p), mix)
            mixed = load_lm(str(mix))[0]
            result = held_out_metrics(mixed, reference, tokenizer, rewards, rows, spec)
            curves[point_label(p)].append({"step": stop, "test": without_samples(result)})
    for i in range(len(configs)):  # the saved policies are large and not needed again
        shutil.rmtree(directory / f"run-{i}", ignore_errors=True)
    shutil.rmtree(mix, ignore_errors=True)
    return {
        "preferences": [list(p) for p in preferences],
        "curves": curves,
        "train_steps": steps * len(configs),
        "train_seconds": seconds,
    }
