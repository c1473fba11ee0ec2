"""The services of the RL wing: load a policy, its prompts and rewards, build the aggregator
once, ``train`` and ``evaluate``; the command line (:mod:`mogradient_llm.cli`) and the sweep
(:mod:`mogradient_llm.pareto.sweep`) call these with typed records (:mod:`mogradient_llm.specs`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mogradient import Aggregator
from mogradient_llm.config import MOConfig
from mogradient_llm.inputs.rewards import Reward
from mogradient_llm.specs import TINY, DataSpec, EvalSpec, ModelSpec, RunSpec

if TYPE_CHECKING:
    from accelerate import Accelerator

    from mogradient_llm.loop.trainer import MOTrainer


def load_lm(name_or_path: str) -> tuple[Any, Any]:
    """A causal LM and its tokenizer, through ``from_pretrained``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(name_or_path)
    return model, AutoTokenizer.from_pretrained(name_or_path)


def load_prompt_rows(
    data: DataSpec, tokenizer: Any, seed: int, limit: int | None = None
) -> list[dict[str, Any]]:
    """The prompt rows: a dataset's prompt column as it is, its texts cut into IMDb-style
    prompts (``data.imdb_prompts``), or, without a dataset, generated reviews cut so (another
    stream for the ``test`` split)."""
    from mogradient_llm.inputs.prompts import (
        as_prompt_rows,
        imdb_prompts,
        load_prompt_dataset,
        load_prompts,
    )
    from mogradient_llm.policy.models import synthetic_reviews

    cut = (data.prompt_min_tokens, data.prompt_max_tokens)
    if data.dataset and data.imdb_prompts:
        texts = load_prompts(
            data.dataset, tokenizer, data.split, data.text_field, limit, *cut, seed=seed
        )
        return as_prompt_rows(texts)
    if data.dataset:
        return load_prompt_dataset(data.dataset, data.split, data.prompt_column, limit)
    texts = synthetic_reviews(limit or 1000, seed=seed + (1 if data.split == "test" else 0))
    return as_prompt_rows(imdb_prompts(texts, tokenizer, *cut, min_chars=0, seed=seed))


def build_rewards(specs: Sequence[str], tokenizer: Any) -> list[Reward]:
    """One reward per ``--reward`` spec (checked all together first)."""
    from mogradient_llm.inputs.reward_specs import build_reward, check_reward_specs

    check_reward_specs(list(specs))
    return [build_reward(spec, tokenizer) for spec in specs]


def build_aggregator(config: MOConfig) -> Aggregator:
    """The config's aggregator (``reward_weights`` as its preference), built once per run and
    handed to the trainer."""
    from mogradient_llm.objectives.building import aggregator_from

    return aggregator_from(
        config.aggregator,
        config.aggregator_kwargs,
        config.reward_weights,
        preference_name="reward_weights",
    )


def save_tiny_policy(model: ModelSpec, data: DataSpec, path: str | Path, seed: int) -> None:
    """Build the tiny offline GPT-2 (pre-trained on ``data``'s texts, or on generated reviews)
    and save it, so that it is loaded back through ``from_pretrained`` like any policy."""
    from mogradient_llm.inputs.prompts import load_text_dataset
    from mogradient_llm.policy.models import build_tiny_policy

    texts = None
    if data.dataset:
        texts = load_text_dataset(data.dataset, data.split)[data.text_field][: data.max_prompts]
    policy, tokenizer = build_tiny_policy(texts, model.tiny_pretrain_steps, seed=seed)
    policy.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))


def build_trainer(
    run: RunSpec,
    config: MOConfig,
    aggregator: Aggregator | None = None,
    accelerator: Accelerator | None = None,
) -> MOTrainer:
    """The trainer of ``run``: its policy (a name or path, not :data:`TINY`), reference, rewards
    and prompts loaded, ready to step. :func:`train` runs it to the end with checkpoints; a
    caller that evaluates between steps (the IMDb benchmark) steps it itself.

    ``aggregator`` and ``accelerator``: as :class:`~mogradient_llm.loop.trainer.MOTrainer`
    takes them (default: the config's aggregator, built by the trainer; a default accelerator).
    """
    from mogradient_llm.loop.trainer import MOTrainer

    if run.model.policy == TINY:
        raise ValueError(
            "build_trainer loads a saved policy; build the tiny one first (save_tiny_policy) and "
            "pass its directory as ModelSpec.policy, or call train, which does"
        )
    model, tokenizer = load_lm(run.model.policy)
    ref_policy = run.model.ref_policy
    ref_model = load_lm(ref_policy)[0] if ref_policy else None
    rewards = build_rewards(run.rewards, tokenizer)
    prompts = load_prompt_rows(run.data, tokenizer, config.seed, run.data.max_prompts)
    return MOTrainer(
        config,
        model,
        tokenizer,
        rewards,
        prompts,
        ref_model=ref_model,
        accelerator=accelerator,
        aggregator=aggregator,
    )


def train(run: RunSpec, config: MOConfig, aggregator: Aggregator | None = None) -> Path:
    """Train a policy as ``run`` and ``config`` say and return its final checkpoint directory.

    ``aggregator``: an instance to train with (default: the one ``config`` names, built here
    before any model is loaded, so that a typo fails at once).
    """
    from accelerate import Accelerator

    from mogradient_llm.inputs.reward_specs import check_reward_specs
    from mogradient_llm.loop.checkpoint import resolve_resume
    from mogradient_llm.loop.setup import gradient_accumulation

    output_dir = Path(run.output_dir)
    if aggregator is None:
        aggregator = build_aggregator(config)
    if config.conditioned:  # before any model loads
        from mogradient_llm.objectives.conditioned import check_conditionable

        check_conditionable(aggregator, bool(config.constraints))
    check_reward_specs(list(run.rewards))
    resume = None
    if run.resume:
        resume = resolve_resume(output_dir if run.resume is True else run.resume)
    accelerator = Accelerator(
        cpu=run.cpu,
        gradient_accumulation_plugin=gradient_accumulation(config.gradient_accumulation_steps),
        log_with=config.trackers or None,
        project_dir=str(output_dir),
    )
    policy_path = run.model.policy
    if policy_path == TINY:  # built by the main process only, the others wait and load it
        policy_path = str(output_dir / "initial_policy")
        if accelerator.is_main_process and (resume is None or not Path(policy_path).is_dir()):
            save_tiny_policy(run.model, run.data, policy_path, config.seed)
        accelerator.wait_for_everyone()
    model_spec = dataclasses.replace(run.model, policy=policy_path)
    trainer = build_trainer(
        dataclasses.replace(run, model=model_spec), config, aggregator, accelerator
    )
    ref_policy = run.model.ref_policy
    if resume is not None and accelerator.is_main_process:
        print(f"resuming from {resume}")
    trainer.train(
        config.max_steps,
        output_dir,
        save_steps=run.save_steps,
        progress=run.progress,
        extra_state={
            "policy_name_or_path": ref_policy or policy_path,
            "rewards": list(run.rewards),
        },
        resume_from=resume,
    )
    if accelerator.is_main_process:
        print(f"saved {output_dir / 'final'}")
    return output_dir / "final"


def evaluate(spec: EvalSpec) -> dict[str, Any]:
    """Mean rewards, hypervolume and KL of a policy on held-out prompts (with the samples)."""
    import torch

    from mogradient_llm.loop.checkpoint import STATE_FILE
    from mogradient_llm.policy.evaluation import evaluate_policy

    state: dict[str, Any] = {}
    if spec.checkpoint:
        state = json.loads((Path(spec.checkpoint) / STATE_FILE).read_text())
    policy = spec.policy or (str(Path(spec.checkpoint) / "policy") if spec.checkpoint else None)
    if policy is None:
        raise ValueError("evaluate needs a checkpoint (--checkpoint) or a policy (--policy)")
    specs = spec.rewards or state.get("rewards")
    if not specs:
        raise ValueError("evaluate needs --reward (or a checkpoint that records its rewards)")
    model, tokenizer = load_lm(policy)
    ref_path = spec.ref_policy or state.get("policy_name_or_path")
    ref_model = load_lm(ref_path)[0] if ref_path else None
    rewards = build_rewards(specs, tokenizer)
    rows = load_prompt_rows(spec.data, tokenizer, spec.seed)[: spec.num_prompts]
    condition = None
    if spec.preference is not None:
        from mogradient_llm.inputs.preferences import conditioning, normalize_preference

        condition = conditioning(normalize_preference(spec.preference, len(rewards)))
    torch.manual_seed(spec.seed)
    result = evaluate_policy(
        model.eval(),
        tokenizer,
        rewards,
        rows,
        dict(spec.generation),
        ref_model=ref_model.eval() if ref_model is not None else None,
        ref_point=list(spec.ref_point) if spec.ref_point is not None else None,
        batch_size=spec.batch_size,
        condition=condition,
    )
    result["eval/policy"] = policy
    result["eval/ref_policy"] = ref_path
    return result
