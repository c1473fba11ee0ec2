"""The clipped surrogate (one loss per advantage row) and the token weights of every loss.

Every loss is a weighted sum over tokens: ``token_weights [B, T]`` (zero off the response) say
what each token counts for, so one function serves every normalisation — PPO's token mean, DAPO's
(over every process), BNPO's (per micro-batch), GRPO's per-sequence mean, Dr. GRPO's constant —
and gradient accumulation (the weights of a micro-batch divide by the whole minibatch's count;
see :func:`token_weights`).
"""

from __future__ import annotations

from typing import Literal

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | tuple[int, ...] | None = None):
    """Mean of ``x`` over the positions where ``mask`` (broadcast to ``x``) is 1."""
    mask = mask.to(x.dtype).expand_as(x)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


#: How token losses are normalised: ``token`` (sum / the minibatch's tokens on this process: PPO),
#: ``global_token`` (sum / the tokens of an optimiser step over every process: DAPO as TRL's),
#: ``micro_token`` (each micro-batch's own token mean: BNPO as TRL's), ``sequence`` (mean per
#: sequence, then over sequences: GRPO), ``constant`` (sum / (sequences × max length): Dr. GRPO).
TokenNormalization = Literal["token", "global_token", "micro_token", "sequence", "constant"]


def token_weights(
    mask: torch.Tensor,
    normalization: TokenNormalization,
    rows: float,
    tokens: float,
    max_length: int,
) -> torch.Tensor:
    """Per-token weights ``[b, T]`` of a micro-batch's ``mask`` under ``normalization``.

    ``rows`` / ``tokens``: the sequences / response tokens the loss is averaged over (the whole
    minibatch's divided by the number of micro-batches, which ``accelerator.accumulate`` divides
    the summed losses by again), so accumulated micro-batches give the minibatch's loss
    (``global_token``: ``tokens`` counts every process's, see
    :func:`mogradient_llm.loop.update.global_token_count`; ``micro_token`` ignores both: each
    micro-batch is its own token mean, averaged over them).
    """
    mask = mask.float()
    if normalization in ("token", "global_token"):
        return mask / max(tokens, 1.0)
    if normalization == "micro_token":
        return mask / mask.sum().clamp(min=1)
    if normalization == "sequence":
        return mask / mask.sum(1, keepdim=True).clamp(min=1) / max(rows, 1.0)
    if normalization == "constant":
        return mask / (max(rows, 1.0) * max_length)
    raise ValueError(f"unknown token normalization {normalization!r}")


def clipped_surrogate(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    weights: torch.Tensor,
    epsilon: float,
    epsilon_high: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One clipped-surrogate loss per row of ``advantages`` ``[m, B, T]``.

    ``-min(u A, clip(u, 1 - ε, 1 + ε_high) A)`` summed with ``weights`` ``[B, T]``, the ratio
    ``u = π / π_old`` shared by all rows (``ε_high`` defaults to ``ε``). Returns ``([m], stats)``.
    """
    high = epsilon if epsilon_high is None else epsilon_high
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    clipped = torch.clamp(ratio, 1.0 - epsilon, 1.0 + high)
    unclipped_loss = -advantages * ratio
    clipped_loss = -advantages * clipped
    per_token = torch.maximum(unclipped_loss, clipped_loss)
    losses = (per_token * weights.to(per_token.dtype)).sum((1, 2))
    with torch.no_grad():
        mask = weights > 0
        stats = {
            "policy/approxkl_avg": 0.5 * masked_mean(log_ratio**2, mask),
            "policy/clipfrac_avg": masked_mean((clipped_loss > unclipped_loss).float(), mask),
            "policy/ratio_avg": masked_mean(ratio, mask),
        }
    return losses, stats
