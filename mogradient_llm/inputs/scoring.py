"""Scoring a grouped rollout the way TRL's trainers call reward functions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mogradient_llm.inputs.prompts import completion_for_reward, reward_columns
from mogradient_llm.inputs.rewards import Reward, score_all


def score_groups(
    rewards: Sequence[Reward],
    rows: Sequence[dict[str, Any]],
    num_generations: int,
    completions: Sequence[str],
    completion_ids: Sequence[list[int]],
    extra_kwargs: dict[str, Any],
) -> torch.Tensor:
    """Scores ``[k, B]`` (NaN: a reward returned ``None``) of ``num_generations`` consecutive
    completions per row: each reward gets the rows' prompts (repeated), the completions (as
    messages for a conversational prompt), their token ids, the rows' other columns and
    ``extra_kwargs`` (TRL's ``trainer_state``, ``log_extra``, ``log_metric``)."""
    repeated = [row for row in rows for _ in range(num_generations)]
    prompts = [row["prompt"] for row in repeated]
    texts = [completion_for_reward(p, c) for p, c in zip(prompts, completions)]
    return score_all(
        rewards,
        prompts,
        texts,
        reward_columns(repeated),
        completion_ids=list(completion_ids),
        extra_kwargs=extra_kwargs,
    )
