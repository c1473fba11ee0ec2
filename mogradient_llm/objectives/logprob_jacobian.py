"""The parameters-level Jacobian of policy losses that read the policy only through its
per-token log-probs, factorised through the LM head.

With ``ℓₜ = log softmax((W hₜ + b) / T)[yₜ]`` and the slopes ``aᵢₜ = ∂Lᵢ/∂ℓₜ``
(:func:`~mogradient_llm.objectives.logprob_gramian.logprob_slopes`), each objective's
parameter gradient splits into

* the backbone part ``autograd.grad(H, params, grad_outputs=cᵢ)`` with the cotangent
  ``cᵢₜ = aᵢₜ vₜ``, ``vₜ = Wᵀ(e_{yₜ} − pₜ) / T``, formed in float64 and cast to ``H``'s dtype;
* the head part ``∂Lᵢ/∂W = Σₜ aᵢₜ (e_{yₜ} − pₜ) hₜᵀ / T`` and ``∂Lᵢ/∂b = Σₜ aᵢₜ (e_{yₜ} − pₜ) / T``
  in float64, added (in float64, then cast to the Jacobian's dtype) to the row of the head's
  weight — the input embedding's row when the head is tied to it, its own when untied — and
  of its bias; a frozen head has no head part.

The losses are never differentiated through a log-prob kernel (TRL's fused one or a
log-softmax): two callers holding the same hidden states, head, targets and slopes compute the
same Jacobian bit for bit, and the backward through the head is one float64 pass over the
vocabulary (tiles as :func:`~mogradient_llm.objectives.logprob_gramian.head_gradient_norms`)
instead of one float32 backward per objective.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mogradient_llm.objectives.logprob_gramian import head_logits, logsumexp_and_v, tile_shape


def plain_head(model: nn.Module) -> bool:
    """Whether the LM head is an ``nn.Linear`` whose weight and bias are plain tensors (not
    FSDP's DTensors nor DeepSpeed ZeRO-3 partitions) with no other trainable parameter (LoRA
    on the head): the parameters-level factorisation adds its gradient to the weight's row."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if not isinstance(head, nn.Linear) or any(
        hasattr(head.weight, name) for name in ("full_tensor", "ds_id")
    ):
        return False
    own = {id(head.weight), id(head.bias)}
    return all(id(p) in own for p in head.parameters() if p.requires_grad)


def head_parts(
    slopes: torch.Tensor,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    weight: torch.Tensor,
    temperature: float = 1.0,
    bias: torch.Tensor | None = None,
    head: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """In float64, for ``slopes`` ``[k, N]``, hidden states ``[N, d]`` and ``targets`` ``[N]``:
    the cotangents ``cᵢₜ = aᵢₜ vₜ`` ``[k, N, d]``, and with ``head`` the head's gradients
    ``∂Lᵢ/∂W`` ``[k, V, d]`` and ``∂Lᵢ/∂b`` ``[k, V]`` (``None`` without)."""
    k, vocab = slopes.shape[0], weight.shape[0]
    a = slopes.detach().to(torch.float64)
    cotangents = hidden.new_zeros(k, *hidden.shape, dtype=torch.float64)
    grad_w = weight.new_zeros(k, *weight.shape, dtype=torch.float64) if head else None
    grad_b = weight.new_zeros(k, vocab, dtype=torch.float64) if head else None
    step, columns = tile_shape(vocab, weight.shape[1])
    used = (a != 0).any(0).nonzero().squeeze(-1)
    for start in range(0, used.shape[0], step):
        rows = used[start : start + step]
        h = hidden[rows].detach().to(torch.float64)
        y = targets[rows]
        at = a[:, rows]  # [k, n]
        lse, v = logsumexp_and_v(h, y, weight, temperature, bias)
        cotangents[:, rows] = at[..., None] * v
        if grad_w is None or grad_b is None:
            continue
        for first in range(0, vocab, columns):
            w = weight[first : first + columns].detach().to(torch.float64)
            p = head_logits(h, w, bias, first, temperature).sub_(lse).exp_()
            inside = (y >= first) & (y < first + w.shape[0])
            p[inside, y[inside] - first] -= 1.0  # p − e_y
            r = at[..., None] * p.neg_().div_(temperature)  # [k, n, c]: aᵢₜ (e_y − pₜ) / T
            grad_w[:, first : first + w.shape[0]] += r.transpose(1, 2) @ h
            grad_b[:, first : first + w.shape[0]] += r.sum(1)
    return cotangents, grad_w, grad_b


def factorised_jacobian(
    slopes: torch.Tensor,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    weight: torch.Tensor,
    params: Sequence[torch.Tensor],
    temperature: float = 1.0,
    bias: torch.Tensor | None = None,
    retain_graph: bool = True,
) -> tuple[torch.Tensor, float]:
    """The Jacobian ``scale · J`` ``[k, Σ numel]`` of the losses over ``params`` (rows flattened
    and concatenated in ``params``' order, as :func:`mogradient.jacobian`) from their ``slopes``
    ``[k, *S]``, the hidden states ``[*S, d]`` (with the backbone's graph) that produced the
    log-probs, their ``targets`` ``[*S]`` and the head ``(weight, bias)``: the head part joins
    the rows of whichever of ``weight`` and ``bias`` is among ``params`` (by identity).

    Returns ``(J, scale)``, ``scale = max |aᵢₜ|`` (float64): the slopes are divided by it before
    anything is rounded to the parameters' dtype, so slopes that differ by a common factor
    (two implementations' token normalisers rounded differently) give the same ``J``
    (:meth:`mogradient.GramianAccumulator.add_jacobian` keeps the scale outside)."""
    if slopes.shape[1:] != targets.shape or hidden.shape[:-1] != targets.shape:
        raise ValueError(
            f"slopes {tuple(slopes.shape)}, hidden states {tuple(hidden.shape)} and targets "
            f"{tuple(targets.shape)} must cover the same tokens ([k, *S], [*S, d], [*S])"
        )
    params = list(params)
    scale = float(slopes.detach().abs().max()) if slopes.numel() else 0.0
    scale = scale if 0 < scale < float("inf") else 1.0
    slopes = slopes.detach().to(torch.float64) / scale
    trains_head = any(p is weight for p in params)
    flat = hidden.detach().reshape(-1, hidden.shape[-1])
    cotangents, grad_w, grad_b = head_parts(
        slopes.flatten(1), flat, targets.flatten(), weight, temperature, bias, trains_head
    )
    extra: dict[int, list[torch.Tensor]] = {}
    for index, p in enumerate(params):
        if grad_w is not None and p is weight:
            extra[index] = list(grad_w)
        elif grad_b is not None and bias is not None and p is bias:
            extra[index] = list(grad_b)
    dtype = params[0].dtype
    for p in params[1:]:
        dtype = torch.promote_types(dtype, p.dtype)
    out = torch.empty(
        slopes.shape[0], sum(p.numel() for p in params), dtype=dtype, device=flat.device
    )
    k = slopes.shape[0]
    for i in range(k):
        grads = torch.autograd.grad(
            hidden,
            params,
            grad_outputs=cotangents[i].reshape(hidden.shape).to(hidden.dtype),
            retain_graph=retain_graph or i < k - 1,
            allow_unused=True,
        )
        offset = 0
        for index, (p, g) in enumerate(zip(params, grads)):
            block = out[i, offset : offset + p.numel()]
            if index in extra:
                part = extra[index][i]
                if g is not None:
                    part = part + g.to(torch.float64)
                block.copy_(part.reshape(-1))
            elif g is None:
                block.zero_()
            else:
                block.copy_(g.reshape(-1))
            offset += p.numel()
    return out, scale
