"""Per-objective token rewards, GAE, whitening and running score statistics.

Tensors are laid out ``[k, batch, T]`` (objectives first, as :func:`mogradient.pama_weights`
expects); ``mask`` ``[batch, T]`` is 1 on response tokens up to and including the first EOS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch

from mogradient_llm.objectives.surrogate import masked_mean

#: Sums a tensor over the processes (identity in one process): the trainer passes
#: ``accelerator.reduce(x, "sum")``.
AllReduceSum = Callable[[torch.Tensor], torch.Tensor]


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Whiten each objective ``x[i]`` over its masked tokens (zero mean, unit variance)."""
    dims = tuple(range(1, x.ndim))
    mean = masked_mean(x, mask, dims).view(-1, *([1] * (x.ndim - 1)))
    var = masked_mean((x - mean) ** 2, mask, dims).view_as(mean)
    return (x - mean) * torch.rsqrt(var + eps) * mask


class RunningMeanStd:
    """Running mean and variance per objective (Chan et al. parallel update).

    With ``all_reduce_sum`` every process folds in the moments of the global batch (count, sum
    and sum of squares, shifted by the running mean for precision), so all ranks hold the
    same statistics and one rank's checkpoint restores every rank. NaN scores (a reward that
    could not score a sample) are left out of their objective's moments.
    """

    def __init__(self, n_objectives: int):
        self.mean = torch.zeros(n_objectives, dtype=torch.float64)
        self.var = torch.ones(n_objectives, dtype=torch.float64)
        self.count = torch.zeros(n_objectives, dtype=torch.float64)

    def update(self, scores: torch.Tensor, all_reduce_sum: AllReduceSum | None = None) -> None:
        """Fold in a batch of scores ``[k, batch]`` (of every process, with ``all_reduce_sum``)."""
        valid = ~torch.isnan(scores.detach())
        shifted = scores.detach().to(torch.float64) - self.mean.to(scores.device)[:, None]
        shifted = torch.where(valid, shifted, torch.zeros_like(shifted))
        moments = torch.stack([valid.sum(1).to(shifted), shifted.sum(1), (shifted**2).sum(1)])
        if all_reduce_sum is not None:
            moments = all_reduce_sum(moments)
        n, first, second = moments.cpu()
        seen = n > 0
        shift_mean = first / n.clamp(min=1)
        batch_mean = self.mean + shift_mean
        batch_var = (second / n.clamp(min=1) - shift_mean**2).clamp(min=0)
        total = self.count + n
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total.clamp(min=1)
        self.mean = torch.where(seen, self.mean + delta * n / total.clamp(min=1), self.mean)
        self.var = torch.where(seen, m2 / total.clamp(min=1), self.var)
        self.count = total

    def state_dict(self) -> dict[str, object]:
        return {"mean": self.mean.tolist(), "var": self.var.tolist(), "count": self.count.tolist()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.mean = torch.tensor(state["mean"], dtype=torch.float64)
        self.var = torch.tensor(state["var"], dtype=torch.float64)
        count = torch.as_tensor(cast(list[float], state["count"]), dtype=torch.float64)
        self.count = count.expand_as(self.mean).clone()  # older checkpoints: one shared count


def normalize_scores(
    scores: torch.Tensor,
    stats: RunningMeanStd,
    *,
    use_score_norm: bool,
    clip: float | None = None,
    std_floor: float = 0.0,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Scores ``[k, batch]`` divided by the running std, at least ``std_floor`` (and centred
    when ``use_score_norm``)."""
    mean = stats.mean.to(scores) if use_score_norm else torch.zeros_like(stats.mean).to(scores)
    std = stats.var.to(scores).add(eps).sqrt().clamp(min=std_floor)
    out = (scores - mean[:, None]) / std[:, None]
    return out.clamp(-clip, clip) if clip is not None else out


def token_rewards(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """Token rewards ``[k, batch, T]``: ``-kl_coef * kl`` on every token of every objective,
    plus objective ``i``'s score on each response's last token."""
    penalty = -kl_coef * kl * mask
    rewards = penalty.unsqueeze(0).repeat(scores.shape[0], 1, 1)
    last = (mask.sum(1).long() - 1).clamp(min=0)
    rows = torch.arange(mask.shape[0], device=mask.device)
    rewards[:, rows, last] += scores.to(rewards.dtype)
    return rewards


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation along the last axis; returns ``(advantages, returns)``.

    Works for any leading shape (here ``[k, batch]``); positions where ``mask`` is 0 (after the
    EOS) have zero reward and value, so they add nothing.
    """
    rewards = rewards * mask
    values = values * mask
    length = rewards.shape[-1]
    last = torch.zeros_like(rewards[..., 0])
    reversed_advantages = []
    for t in reversed(range(length)):
        next_value = values[..., t + 1] if t + 1 < length else torch.zeros_like(last)
        delta = rewards[..., t] + gamma * next_value - values[..., t]
        last = delta + gamma * lam * last
        reversed_advantages.append(last)
    advantages = torch.stack(reversed_advantages[::-1], dim=-1) * mask
    return advantages, advantages + values
