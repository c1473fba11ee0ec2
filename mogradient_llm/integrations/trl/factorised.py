"""The features-level Gramian of TRL's per-objective policy losses, factorised through TRL's
fused LM head (:mod:`mogradient_llm.objectives.logprob_gramian`).

With the regulariser off, TRL's policy loss reads its forward only through the per-token
log-probs ``ℓ`` ``[B, C]`` (its entropies at most through a non-differentiable mask), so the k
losses are evaluated again on a float64 copy of ``ℓ`` — a graph of a few element-wise
operations — for the slopes ``∂Lᵢ/∂ℓ``, and TRL's head (``get_output_embeddings()``, its bias,
``trainer.temperature``) gives ``‖∂ℓₜ/∂hₜ‖²`` at the backbone's output ``H[:, -C-1:-1]`` (the
positions TRL's fused forward scores for the completion). Where that structure does not hold
(a config that soft-caps or scales the logits, a loss that differentiates the entropies or the
aux loss) :func:`logprob_gramian` returns ``None`` and the caller differentiates ``H`` itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mogradient_llm.integrations.trl.metrics import metrics_discarded
from mogradient_llm.objectives.logprob_gramian import head_transform, logprob_slopes, token_gramian

ComputeLoss = Callable[[nn.Module, dict[str, Any]], torch.Tensor]


def output_head(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weight and bias TRL's fused LM head multiplies (FSDP2's DTensors gathered)."""
    head = model.get_output_embeddings()  # type: ignore[operator]
    weight, bias = head.weight, getattr(head, "bias", None)
    if hasattr(weight, "full_tensor"):
        weight = weight.full_tensor()
        bias = None if bias is None else bias.full_tensor()
    return weight, bias


def _leaf(value: Any) -> Any:
    """A detached copy of a floating tensor that requires grad (anything else as is)."""
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.detach().requires_grad_()
    return value


def logprob_gramian(
    trainer: Any,
    model: nn.Module,
    inputs: dict[str, Any],
    rows: torch.Tensor,
    compute_loss: ComputeLoss,
    forward: list[Any],
    hidden: torch.Tensor,
) -> torch.Tensor | None:
    """This rank's k×k float64 Gramian of the hidden-state gradients of TRL's policy losses of
    the advantage ``rows`` ``[k, B]``, or ``None`` where the factorisation does not hold.

    ``forward``: the cached outputs of TRL's forward (``(logps, entropies, aux_loss)``, replaced
    while the losses are re-evaluated); ``hidden``: the backbone's last hidden state of it. Call
    with the regulariser off (:func:`~mogradient_llm.integrations.trl.loss.regulariser_off`).
    """
    from trl.trainer.utils import maybe_gather_lm_head_ctx

    unwrapped = trainer.accelerator.unwrap_model(model)
    completion_ids = inputs["completion_ids"]
    logps, *others = forward[0]
    if head_transform(unwrapped.config) is not None or logps.shape != completion_ids.shape:
        return None
    leaf = logps.detach().to(torch.float64).requires_grad_()
    other_leaves = [_leaf(value) for value in others]
    forward[0] = (leaf, *other_leaves)
    try:
        with metrics_discarded(trainer._metrics):
            losses = [compute_loss(model, {**inputs, "advantages": a}) for a in rows]
    finally:
        forward[0] = (logps, *others)
    extra = [v for v in other_leaves if isinstance(v, torch.Tensor) and v.requires_grad]
    for loss in losses:
        grads = torch.autograd.grad(loss, extra, retain_graph=True, allow_unused=True)
        if any(g is not None and bool(g.any()) for g in grads):
            return None  # the loss differentiates the entropies or the aux loss
    a = logprob_slopes(losses, leaf)
    weight, bias = output_head(unwrapped)
    positions = hidden[:, -completion_ids.shape[1] - 1 : -1]
    with maybe_gather_lm_head_ctx(weight, bias):  # type: ignore[arg-type]
        return token_gramian(a, positions, completion_ids, weight, trainer.temperature, bias)
