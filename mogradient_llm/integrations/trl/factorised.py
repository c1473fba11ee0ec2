"""The features-level Gramian and the parameters-level Jacobian of TRL's per-objective policy
losses, factorised through TRL's fused LM head (:mod:`mogradient_llm.objectives.logprob_gramian`,
:mod:`mogradient_llm.objectives.logprob_jacobian`).

With the regulariser off, TRL's policy loss reads its forward only through the per-token
log-probs ``ℓ`` ``[B, C]`` (its entropies at most through a non-differentiable mask), so the k
losses are evaluated on a float64 copy of ``ℓ`` — a graph of a few element-wise operations —
for their values and slopes ``∂Lᵢ/∂ℓ``, and TRL's head (``get_output_embeddings()``, its bias,
``trainer.temperature``) gives ``‖∂ℓₜ/∂hₜ‖²`` at the backbone's output ``H[:, -C-1:-1]`` (the
positions TRL's fused forward scores for the completion), or at the parameters level the
cotangents ``aᵢₜ vₜ`` backpropagated from ``H`` and the head's own gradient. No loss is
evaluated on the float32 graph: ``Σ wᵢ Lᵢ`` is returned as ``Σₜ (Σᵢ wᵢ aᵢₜ) ℓₜ`` on TRL's
log-probs (the same gradient) with the value of ``Σ wᵢ Lᵢ``. Where that structure does not
hold (a config that soft-caps or scales the logits, a loss that differentiates the entropies or
the aux loss; at the parameters level also a head that is not a plain ``nn.Linear``, e.g. with
LoRA on it or sharded) :func:`logprob_gramian` returns ``None`` and the caller differentiates
``H`` or the parameters itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mogradient_llm.integrations.trl.forward import Forward
from mogradient_llm.integrations.trl.metrics import metrics_discarded
from mogradient_llm.objectives.logprob_gramian import head_transform, logprob_slopes, token_gramian
from mogradient_llm.objectives.logprob_jacobian import factorised_jacobian, plain_head

ComputeLoss = Callable[[nn.Module, dict[str, Any]], torch.Tensor]


@dataclass(frozen=True)
class Factorised:
    """This rank's features Gramian (k×k float64) or parameters Jacobian (k×d, the parameters'
    dtype, to be multiplied by ``scale``), the k losses (float64 values) and their slopes
    ``[k, B, C]`` (float64) in TRL's log-probs ``logps`` (float32, with the model's graph)."""

    local: torch.Tensor
    losses: torch.Tensor
    slopes: torch.Tensor
    logps: torch.Tensor
    scale: float = 1.0

    def reduce(self, weights: torch.Tensor) -> torch.Tensor:
        """``Σ wᵢ Lᵢ``: its value, and the gradient of ``Σₜ (Σᵢ wᵢ aᵢₜ) ℓₜ`` (equal to
        ``Σ wᵢ ∇Lᵢ``: the losses read the model only through ``ℓ``)."""
        w = weights.detach().to(torch.float64)
        along = torch.tensordot(w, self.slopes, dims=1).to(self.logps.dtype)
        surrogate = (along * self.logps).sum()
        value = (w @ self.losses).to(self.logps.dtype)
        return value + (surrogate - surrogate.detach())


def output_head(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weight and bias TRL's fused LM head multiplies (FSDP2's DTensors gathered)."""
    head = model.get_output_embeddings()  # type: ignore[operator]
    weight, bias = head.weight, getattr(head, "bias", None)
    if hasattr(weight, "full_tensor"):
        weight = weight.full_tensor()
        bias = None if bias is None else bias.full_tensor()
    return weight, bias


def _leaves(outputs: Any) -> tuple[Any, ...]:
    """TRL's forward outputs as leaves: the log-probs in float64, the other floating tensors
    (entropies, aux loss) detached, all requiring grad."""
    logps, *others = outputs
    leaves = [logps.detach().to(torch.float64).requires_grad_()]
    for value in others:
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            value = value.detach().requires_grad_()
        leaves.append(value)
    return tuple(leaves)


def logprob_gramian(
    trainer: Any,
    model: nn.Module,
    unwrapped: nn.Module,
    inputs: dict[str, Any],
    rows: torch.Tensor,
    compute_loss: ComputeLoss,
    forward: Forward,
    hidden: dict[str, torch.Tensor],
    params: list[torch.Tensor] | None = None,
) -> Factorised | None:
    """TRL's policy losses of the advantage ``rows`` ``[k, B]`` factorised, or ``None`` where the
    factorisation does not hold (TRL's forward has then run, into ``forward``).

    ``params``: the trainable parameters, for their Jacobian (parameters level; the graph is
    kept for the update's backward); ``None``: the features Gramian.

    ``unwrapped``: ``model`` without its DDP wrapper; ``forward``: the shared forward
    (:func:`~mogradient_llm.integrations.trl.forward.one_forward`); ``hidden``: where the
    backbone's hook records its last hidden state. Call with the regulariser off
    (:func:`~mogradient_llm.integrations.trl.loss.regulariser_off`).
    """
    from trl.trainer.utils import maybe_gather_lm_head_ctx

    if head_transform(unwrapped.config) is not None:
        return None
    if params is not None and not plain_head(unwrapped):
        return None
    made: list[tuple[Any, ...]] = []

    def leaves(outputs: Any) -> tuple[Any, ...]:
        if not made:
            made.append(_leaves(outputs))
        return made[0]

    forward.view = leaves
    try:
        with metrics_discarded(trainer._metrics):
            losses = [compute_loss(model, {**inputs, "advantages": a}) for a in rows]
    finally:
        forward.view = None
    leaf, *others = made[0]
    logps = forward.outputs[0]
    completion_ids = inputs["completion_ids"]
    if "hidden" not in hidden or logps.shape != completion_ids.shape:
        return None
    extra = [v for v in others if isinstance(v, torch.Tensor) and v.requires_grad]
    slopes = logprob_slopes(losses, leaf, extra)
    if slopes is None:
        return None  # a loss differentiates the entropies or the aux loss
    weight, bias = output_head(unwrapped)
    positions = hidden["hidden"][:, -completion_ids.shape[1] - 1 : -1]
    if params is not None:
        local, scale = factorised_jacobian(
            slopes, positions, completion_ids, weight, params, trainer.temperature, bias
        )
        return Factorised(local, torch.stack(losses).detach(), slopes, logps, scale)
    with maybe_gather_lm_head_ctx(weight, bias):  # type: ignore[arg-type]
        local = token_gramian(slopes, positions, completion_ids, weight, trainer.temperature, bias)
    return Factorised(local, torch.stack(losses).detach(), slopes, logps)
