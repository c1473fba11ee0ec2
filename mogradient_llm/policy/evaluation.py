"""Held-out evaluation: mean reward per objective, hypervolume, KL to the reference."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from transformers import GenerationConfig

from mogradient.pareto import hypervolume
from mogradient_llm.inputs.prompts import (
    as_prompt_rows,
    completion_for_reward,
    prompt_text,
    reward_columns,
)
from mogradient_llm.inputs.reward_context import RewardLog, trainer_state
from mogradient_llm.inputs.rewards import Reward, RewardFn, as_reward, score_all
from mogradient_llm.policy.rollout import generate_rollout, lm_response_logprobs
from mogradient_llm.policy.sampling import as_sampling_config


def reference_point(rewards: Sequence[Reward], given: Sequence[float] | None = None) -> list[float]:
    """``given``, or each reward's worst value (``hv_reference``); raises if one has none."""
    if given is not None:
        if len(given) != len(rewards):
            raise ValueError(f"ref point has {len(given)} entries for {len(rewards)} rewards")
        return [float(x) for x in given]
    missing = [r.name for r in rewards if r.hv_reference is None]
    if missing:
        raise ValueError(
            f"rewards {missing} have no default hypervolume reference; "
            "pass ref_point (--ref-point on the command line)"
        )
    # ``missing`` is empty: every reward has a reference.
    return [float(cast(float, r.hv_reference)) for r in rewards]


@torch.no_grad()
def evaluate_policy(
    model: nn.Module,
    tokenizer: Any,
    rewards: Sequence[Reward | RewardFn],
    prompts: Sequence[Any] | Any,
    generation_kwargs: GenerationConfig | Mapping[str, Any],
    ref_model: nn.Module | None = None,
    ref_point: Sequence[float] | None = None,
    batch_size: int = 32,
    condition: Callable[[list[str]], list[str]] | None = None,
) -> dict[str, Any]:
    """Sample one completion per prompt and report ``eval/scores/<name>`` (the mean over the
    samples the reward scored), ``eval/scored/<name>`` (how many it scored: ``None`` is no
    score), ``eval/hypervolume`` of the mean vector against ``eval/ref_point`` (NaN when a
    reward scored no sample), and ``eval/kl`` (mean over samples of Σ_t log π − log π_ref)
    when ``ref_model`` is given.

    ``prompts`` are what the trainer takes (strings, conversations, rows with a ``prompt`` key
    or a ``datasets.Dataset``), and the rewards (plain functions or :class:`Reward`) are called
    as in training: prompts, completions, ``completion_ids``, the rows' other columns,
    ``trainer_state`` (a ``TrainerState`` at step 0), ``log_extra`` (columns of ``samples``)
    and ``log_metric`` (``eval/<name>``, averaged over the batches).

    Sampling is the trainer's: ``generation_kwargs`` (or a config from
    :func:`~mogradient_llm.policy.sampling.sampling_config`) sample softmax(logits / temperature),
    whatever the model's own ``generation_config`` says, and the KL uses that temperature.

    ``condition``: what a conditioned policy reads instead of the prompt texts (the preference
    injected, :mod:`mogradient_llm.inputs.preferences`); the rewards see the rows as they are,
    and the reference reads the same texts as the policy."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    wrapped = [as_reward(r) for r in rewards]
    rows = as_prompt_rows(prompts)
    device = next(model.parameters()).device
    generation = as_sampling_config(generation_kwargs, model, tokenizer)
    temperature = float(generation.temperature)
    state = trainer_state(0, 0, 0.0, batch_size)
    metrics: dict[str, list[float]] = {}
    all_scores, kls, samples = [], [], []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        texts = [prompt_text(row["prompt"], tokenizer) for row in chunk]
        if condition is not None:
            texts = condition(texts)
        rollout = generate_rollout(model, tokenizer, texts, generation, device)
        reward_prompts = [row["prompt"] for row in chunk]
        log = RewardLog(len(chunk))
        scores = score_all(
            wrapped,
            reward_prompts,
            [completion_for_reward(p, c) for p, c in zip(reward_prompts, rollout.completions)],
            reward_columns(chunk),
            completion_ids=[
                ids[: int(n)].tolist()
                for ids, n in zip(rollout.response_ids, rollout.response_mask.sum(1))
            ],
            extra_kwargs={"trainer_state": state, **log.kwargs()},
        )
        for name, value in log.metrics().items():
            metrics.setdefault(name, []).append(value)
        all_scores.append(scores)
        if ref_model is not None:
            mask = rollout.response_mask.float()
            diff = lm_response_logprobs(model, rollout, temperature) - lm_response_logprobs(
                ref_model, rollout, temperature
            )
            kls.append((diff * mask).sum(1).cpu())
        samples += [
            {
                "prompt": p,
                "completion": c,
                **{r.name: None if math.isnan(s) else float(s) for r, s in zip(wrapped, col)},
                **{column: values[i] for column, values in log.extra.items()},
            }
            for i, (p, c, col) in enumerate(zip(rollout.prompts, rollout.completions, scores.T))
        ]
    scores = torch.cat(all_scores, 1)
    counts = (~scores.isnan()).sum(1).tolist()
    means = [float(row.nanmean()) if c else math.nan for row, c in zip(scores, counts)]
    ref = reference_point(wrapped, ref_point)
    result: dict[str, Any] = {f"eval/scores/{r.name}": m for r, m in zip(wrapped, means)}
    result.update({f"eval/scored/{r.name}": int(c) for r, c in zip(wrapped, counts)})
    result["eval/ref_point"] = ref
    scored = all(math.isfinite(m) for m in means)
    result["eval/hypervolume"] = hypervolume([means], ref, maximize=True) if scored else math.nan
    if kls:
        result["eval/kl"] = float(torch.cat(kls).mean())
    result.update({f"eval/{name}": sum(v) / len(v) for name, v in metrics.items()})
    result["eval/n_prompts"] = len(rows)
    result["samples"] = samples
    return result


def evaluate_checkpoint(
    checkpoint: str | Path,
    rewards: Sequence[Reward | RewardFn],
    prompts: Sequence[Any] | Any,
    generation_kwargs: GenerationConfig | Mapping[str, Any],
    ref_model: nn.Module | None = None,
    ref_point: Sequence[float] | None = None,
    batch_size: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
    """:func:`evaluate_policy` of a saved policy: a checkpoint written by ``train`` (its
    ``policy/``) or any ``from_pretrained`` directory, sampled after ``torch.manual_seed(seed)``
    so that every checkpoint of a sweep sees the same prompts and the same random stream."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(checkpoint)
    if (path / "policy").is_dir():
        path = path / "policy"
    if not path.is_dir():
        raise FileNotFoundError(f"no saved policy at {checkpoint}; pass a checkpoint directory")
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(seed)
    return evaluate_policy(
        model,
        tokenizer,
        rewards,
        prompts,
        generation_kwargs,
        ref_model=ref_model,
        ref_point=ref_point,
        batch_size=batch_size,
    )
