"""The Noon-PPO clipped surrogate (per objective) and the clipped value loss (sum over heads).

Token means divide by ``token_count`` when given (default: the tokens of ``mask``): with
gradient accumulation it is the minibatch's mean number of tokens per micro-batch, so the
mean of the micro-batches' losses is the token mean over the whole minibatch.
"""

from __future__ import annotations

import torch

from mogradient_llm.advantages import masked_mean


def _token_mean(x: torch.Tensor, mask: torch.Tensor, token_count: float | None) -> torch.Tensor:
    """Per-row (first axis) sum of ``x`` over the mask's tokens, over ``token_count``."""
    if token_count is None:
        return masked_mean(x, mask, dim=(1, 2))
    return (x * mask.to(x.dtype)).sum((1, 2)) / token_count


def policy_losses(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
    token_count: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One clipped-surrogate loss per row of ``advantages`` ``[m, batch, T]``.

    ``-min(u A, clip(u, 1 - ε, 1 + ε) A)`` averaged over the response tokens, with the ratio
    ``u = π / π_old`` shared by all objectives. Returns ``([m] losses, stats)``.
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    clipped = torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    unclipped_loss = -advantages * ratio
    clipped_loss = -advantages * clipped
    per_token = torch.maximum(unclipped_loss, clipped_loss)
    losses = _token_mean(per_token, mask, token_count)
    with torch.no_grad():
        clipfrac = masked_mean((clipped_loss > unclipped_loss).float(), mask)
        stats = {
            "policy/approxkl_avg": 0.5 * masked_mean(log_ratio**2, mask),
            "policy/clipfrac_avg": clipfrac,
            "policy/ratio_avg": masked_mean(ratio, mask),
        }
    return losses, stats


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float,
    token_count: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss ``½ max((V - R)², (clip(V) - R)²)`` summed over the k heads.

    All tensors are ``[k, batch, T]``.
    """
    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped_err = (values - returns) ** 2
    clipped_err = (clipped - returns) ** 2
    per_head = 0.5 * _token_mean(torch.maximum(unclipped_err, clipped_err), mask, token_count)
    with torch.no_grad():
        stats = {"val/clipfrac_avg": masked_mean((clipped_err > unclipped_err).float(), mask)}
    return per_head.sum(), stats
