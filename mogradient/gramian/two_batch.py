"""The update of a method that decides from two independent batches (MoDo, SDMGrad): weights
from ``A = J₁ J₂ᵀ``, then the weighted gradient of the mean of both batches' losses,
``Σ wᵢ (L₁ᵢ + L₂ᵢ)/2`` (MoDo's eq. 2.9b). Called by :func:`mogradient.backward` with
``second_losses=``."""

from __future__ import annotations

from typing import cast

import torch

from mogradient.aggregation.cross_gramian import cross_gramian_of
from mogradient.aggregation.kinds import Aggregator, GramianWeighting
from mogradient.aggregation.registry import registered
from mogradient.gramian.distributed import all_reduce_mean
from mogradient.gramian.jacobians import jacobian


def check_two_batches(
    agg: Aggregator, second_losses: object, *, features: object, recorder: object
) -> None:
    """Refuse a method that needs two batches without ``second_losses=`` (or on a path that
    has no second Jacobian), and ``second_losses=`` for a method that does not read them."""
    if not agg.needs_two_batches:
        if second_losses is not None:
            two = ", ".join(n for n, c in registered().items() if c.needs_two_batches)
            raise ValueError(
                f"second_losses= is for methods that decide from two independent batches "
                f"(needs_two_batches: {two}); {agg!r} decides from one: drop "
                "second_losses, or average both batches' losses into losses="
            )
        return
    if second_losses is None:
        raise ValueError(
            f"{agg!r} decides from J₁J₂ᵀ of two independent mini-batches "
            "(needs_two_batches): pass the second batch's losses as second_losses= (one "
            "scalar per objective, from a different batch than losses=)"
        )
    if features is not None or recorder is not None:
        raise ValueError(
            f"{agg!r} decides from two batches' Jacobians over the parameters; features= and "
            "recorder= give one batch's Gramian: drop them"
        )


def two_batch_backward(
    first: list[torch.Tensor],
    second: list[torch.Tensor],
    params: list[torch.Tensor],
    agg: GramianWeighting,
    *,
    retain_graph: bool,
    through_backward: bool,
    batched: bool,
) -> torch.Tensor:
    """``.grad += ∂(Σ wᵢ (L₁ᵢ + L₂ᵢ)/2)/∂params`` with ``w`` decided from ``J₁ J₂ᵀ`` (the
    Jacobians averaged over the ranks first, so every rank decides alike); returns ``w``.

    By default the update ``wᵀ(J₁ + J₂)/2`` is written into ``.grad`` from the Jacobians
    already formed; ``through_backward=True`` runs one more backward of the weighted mean loss
    instead (DDP's hooks, loss scalers and accumulation then see it).
    """
    if len(first) != len(second):
        raise ValueError(
            f"got {len(first)} losses and {len(second)} second_losses; give one loss per "
            "objective for each batch, in the same order"
        )
    keep = retain_graph or through_backward
    # The batches may share part of a graph (one forward of both): keep it for the second.
    j1 = all_reduce_mean(jacobian(first, params, retain_graph=True, batched=batched))
    j2 = all_reduce_mean(jacobian(second, params, retain_graph=keep, batched=batched))
    w = agg.weights(cross_gramian_of(j1, j2))
    if through_backward:
        total = cast(
            torch.Tensor,
            sum(float(wi) * (a + b) / 2 for wi, a, b in zip(w, first, second, strict=True)),
        )
        torch.autograd.backward(total, inputs=params, retain_graph=retain_graph)
        return w
    direction = (w.to(j1.device) @ (j1.double() + j2.double())) / 2
    start = 0
    for p in params:
        g = direction[start : start + p.numel()].view_as(p).to(p.dtype)
        start += p.numel()
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad += g
    return w
