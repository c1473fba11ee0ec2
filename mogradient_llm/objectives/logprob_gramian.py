"""The features-level Gramian of policy losses that read the policy only through its per-token
log-probs, factorised through the LM head.

A policy loss ``Lᵢ`` of GRPO and its variants, RLOO or PPO (ratios, clipping, soft gates,
sequence-level importance weights, masks and token normalisations are functions of the
log-probs ``ℓₜ = log softmax((W hₜ + b) / T)[yₜ]`` and of detached quantities) depends on the
last hidden state ``hₜ`` only through ``ℓₜ``, so ``∂Lᵢ/∂hₜ = aᵢₜ vₜ`` with ``aᵢₜ = ∂Lᵢ/∂ℓₜ``
(the slopes) and ``vₜ = ∂ℓₜ/∂hₜ = Wᵀ(e_{yₜ} − pₜ) / T`` shared by every objective. The Gramian
of the hidden-state gradients is then ``G_ij = Σₜ aᵢₜ aⱼₜ ‖vₜ‖²``: one pass of the LM head
(for ``‖vₜ‖²``) instead of one backward through it per objective, and the slopes from a graph
of the k losses over the ``[B, C]`` log-prob tensor.

Precision: the slopes are differentiated in float64 (the losses evaluated on a float64 copy of
the forward's log-probs), ``‖vₜ‖²`` is computed in float64 from the float32 (or bf16) hidden
state and head, and the products are float64: ``G`` is the exact Gramian of the losses'
hidden-state gradients at the forward's log-probs within float64 rounding (the bound is stated
in ``tests/test_logprob_gramian.py``).

The factorisation needs logits that are a linear head of ``H``: :func:`head_transform` names what
a model's config applies on top (soft-capping, a logit scale), which callers refuse.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

#: Config fields through which a model transforms ``W h + b`` before the softmax (those TRL's
#: fused LM head applies): a model setting one has no plain linear head.
TRANSFORMS = (
    "final_logit_softcapping",
    "logit_scale",
    "output_multiplier",
    "lm_head_multiplier",
    "logits_scaling",
)
#: Vocabulary columns per float64 tile, and the elements of one ``[tokens, columns]`` tile.
VOCAB_CHUNK = 32768
TILE_ELEMENTS = 2**22


def head_transform(config: Any) -> str | None:
    """The field of ``config`` (a transformers config, its text config for multimodal models)
    that transforms the logits beyond ``(W h + b) / T``, or ``None`` for a plain linear head."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in TRANSFORMS:
        value = getattr(text, name, None)
        if value is not None and value != 1.0:
            return f"{name}={value}"
    return None


def logprob_slopes(
    losses: Sequence[torch.Tensor],
    logprobs: torch.Tensor,
    others: Sequence[torch.Tensor] = (),
) -> torch.Tensor | None:
    """``∂Lᵢ/∂ℓ`` ``[k, *ℓ.shape]`` of each loss with respect to ``logprobs`` (zeros where a
    loss does not depend on them), in ``logprobs``' dtype; keeps the graph. ``None`` when a loss
    has a non-zero gradient with respect to one of ``others`` (other outputs of the forward:
    the losses are then not functions of the log-probs alone)."""
    rows = []
    for loss in losses:
        grads = torch.autograd.grad(loss, [logprobs, *others], retain_graph=True, allow_unused=True)
        if any(g is not None and bool(g.any()) for g in grads[1:]):
            return None
        rows.append(torch.zeros_like(logprobs) if grads[0] is None else grads[0])
    return torch.stack(rows)


def tile_shape(vocab: int, dim: int) -> tuple[int, int]:
    """``(tokens, columns)`` of one float64 tile of :func:`head_gradient_norms`: the logits
    ``[tokens, columns]`` and the head's float64 rows ``[columns, d]`` each within
    ``TILE_ELEMENTS`` elements (32 MB)."""
    columns = max(1, min(vocab, VOCAB_CHUNK, TILE_ELEMENTS // dim))
    return max(1, TILE_ELEMENTS // columns), columns


def head_gradient_norms(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``‖vₜ‖² = ‖Wᵀ(e_{yₜ} − pₜ)‖² / T²`` ``[N]`` in float64 for hidden states ``[N, d]``, the
    head ``weight`` ``[V, d]`` (and ``bias``) and ``targets`` ``[N]``: ``Wᵀpₜ`` by an online
    softmax over vocabulary tiles (:func:`tile_shape`: no ``[N, V]`` logits and no float64 copy
    of ``W`` at once)."""
    step, _ = tile_shape(weight.shape[0], weight.shape[1])
    norms = []
    for start in range(0, hidden.shape[0], step):
        h = hidden[start : start + step].detach().to(torch.float64)
        _, v = logsumexp_and_v(h, targets[start : start + step], weight, temperature, bias)
        norms.append(v.square().sum(-1))
    if not norms:
        return hidden.new_zeros(0, dtype=torch.float64)
    return torch.cat(norms)


def logsumexp_and_v(
    h: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor,
    temperature: float,
    bias: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``log Σⱼ exp zⱼ`` ``[n, 1]`` and ``vₜ = Wᵀ(e_{yₜ} − pₜ) / T`` ``[n, d]`` (float64) of
    float64 hidden states ``h`` ``[n, d]`` with targets ``y``, by an online softmax over the
    vocabulary tiles of :func:`tile_shape` (one ``[n, columns]`` tile of logits at a time)."""
    vocab = weight.shape[0]
    _, columns = tile_shape(vocab, weight.shape[1])
    peak = h.new_full((h.shape[0], 1), -torch.inf)
    total = h.new_zeros(h.shape[0], 1)
    mixed = torch.zeros_like(h)  # Σ_j exp(z_j − peak) w_j
    picked = torch.zeros_like(h)  # w_{yₜ}
    for first in range(0, vocab, columns):
        w = weight[first : first + columns].detach().to(torch.float64)
        z = head_logits(h, w, bias, first, temperature)
        new_peak = torch.maximum(peak, z.amax(-1, keepdim=True))
        rescale = torch.exp(peak - new_peak)
        e = z.sub_(new_peak).exp_()  # in place: one [tokens, columns] tile at a time
        total = total * rescale + e.sum(-1, keepdim=True)
        mixed = mixed * rescale + e @ w
        peak = new_peak
        inside = (y >= first) & (y < first + w.shape[0])
        picked[inside] = w[y[inside] - first]
    return peak + total.log(), (picked - mixed / total) / temperature


def head_logits(
    h: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, first: int, temperature: float
) -> torch.Tensor:
    """``(h wᵀ + b) / T`` of the vocabulary tile starting at ``first``, float64."""
    z = h @ w.T
    if bias is not None:
        z.add_(bias[first : first + w.shape[0]].detach().to(torch.float64))
    return z.div_(temperature)


def token_gramian(
    slopes: torch.Tensor,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    weight: torch.Tensor,
    temperature: float = 1.0,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``G_ij = Σₜ aᵢₜ aⱼₜ ‖vₜ‖²`` (k×k, float64, this rank's tokens) from the ``slopes``
    ``[k, *S]``, the hidden states ``[*S, d]`` that produced the log-probs and their
    ``targets`` ``[*S]``; ``‖vₜ‖²`` is computed only where some slope is non-zero."""
    if slopes.shape[1:] != targets.shape or hidden.shape[:-1] != targets.shape:
        raise ValueError(
            f"slopes {tuple(slopes.shape)}, hidden states {tuple(hidden.shape)} and targets "
            f"{tuple(targets.shape)} must cover the same tokens ([k, *S], [*S, d], [*S])"
        )
    a = slopes.detach().to(torch.float64).flatten(1)
    used = (a != 0).any(0)
    a = a[:, used]
    norms = head_gradient_norms(
        hidden.reshape(-1, hidden.shape[-1])[used],
        weight,
        targets.flatten()[used],
        temperature,
        bias,
    )
    return (a * norms) @ a.T
