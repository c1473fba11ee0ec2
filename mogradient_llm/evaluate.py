"""Held-out evaluation: mean reward per objective, hypervolume, KL to the reference."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from transformers import GenerationConfig

from mogradient_llm.rewards import Reward, score_all
from mogradient_llm.rollout import generate_rollout, lm_response_logprobs
from mogradient_llm.sampling import as_sampling_config


def hypervolume(
    points: np.ndarray | Sequence[Sequence[float]], ref_point: Sequence[float]
) -> float:
    """Hypervolume of maximised reward vectors ``[m, k]`` above ``ref_point`` (pymoo's exact HV
    on the negated values)."""
    from pymoo.indicators.hv import HV

    pts = np.atleast_2d(np.asarray(points, dtype=np.float64))
    ref = np.asarray(ref_point, dtype=np.float64)
    if pts.shape[1] != ref.shape[0]:
        raise ValueError(f"points have {pts.shape[1]} objectives, ref_point has {ref.shape[0]}")
    return float(HV(ref_point=-ref)(-pts))


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
    rewards: Sequence[Reward],
    prompts: Sequence[str],
    generation_kwargs: GenerationConfig | Mapping[str, Any],
    ref_model: nn.Module | None = None,
    ref_point: Sequence[float] | None = None,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Sample one completion per prompt and report ``eval/scores/<name>`` (means),
    ``eval/hypervolume`` of the mean vector against ``eval/ref_point``, and ``eval/kl``
    (mean over samples of Σ_t log π − log π_ref) when ``ref_model`` is given.

    Sampling is the trainer's: ``generation_kwargs`` (or a config from
    :func:`~mogradient_llm.sampling.sampling_config`) sample softmax(logits / temperature),
    whatever the model's own ``generation_config`` says, and the KL uses that temperature."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = next(model.parameters()).device
    generation = as_sampling_config(generation_kwargs, model, tokenizer)
    temperature = float(generation.temperature)
    all_scores, kls, samples = [], [], []
    for start in range(0, len(prompts), batch_size):
        rollout = generate_rollout(
            model, tokenizer, prompts[start : start + batch_size], generation, device
        )
        scores = score_all(rewards, rollout.prompts, rollout.completions)
        all_scores.append(scores)
        if ref_model is not None:
            mask = rollout.response_mask.float()
            diff = lm_response_logprobs(model, rollout, temperature) - lm_response_logprobs(
                ref_model, rollout, temperature
            )
            kls.append((diff * mask).sum(1).cpu())
        samples += [
            {"prompt": p, "completion": c, **{r.name: float(s) for r, s in zip(rewards, col)}}
            for p, c, col in zip(rollout.prompts, rollout.completions, scores.T)
        ]
    means = torch.cat(all_scores, 1).mean(1).tolist()
    ref = reference_point(rewards, ref_point)
    result: dict[str, Any] = {f"eval/scores/{r.name}": m for r, m in zip(rewards, means)}
    result["eval/ref_point"] = ref
    result["eval/hypervolume"] = hypervolume([means], ref)
    if kls:
        result["eval/kl"] = float(torch.cat(kls).mean())
    result["eval/n_prompts"] = len(prompts)
    result["samples"] = samples
    return result


def evaluate_checkpoint(
    checkpoint: str | Path,
    rewards: Sequence[Reward],
    prompts: Sequence[str],
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
