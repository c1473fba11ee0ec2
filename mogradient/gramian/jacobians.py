"""The Jacobian of several losses over a list of tensors, one row per loss: a loop of
``autograd.grad`` calls or one batched (vmapped) call."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence

import torch

from mogradient.aggregation.inputs import check_jacobian


def jacobian(
    losses: Sequence[torch.Tensor],
    inputs: Sequence[torch.Tensor],
    *,
    retain_graph: bool = False,
    batched: bool = False,
) -> torch.Tensor:
    """Rows ∂Lᵢ/∂inputs, flattened and concatenated: ``[n_objectives, Σ numel]`` (local rank).

    Uses ``torch.autograd.grad``, so ``.grad`` is left alone and no DDP hook fires.

    ``batched`` picks how the k rows are computed:

    * ``False`` (default): k sequential backwards, each on its own loss's graph.
    * ``True``: one vectorised backward, ``autograd.grad(stack(losses), inputs,
      grad_outputs=eye(k), is_grads_batched=True)`` (vmap over the backward). Where vmap
      cannot run the graph (an op without a batching rule, a compiled region, ...) it falls
      back to the loop with a warning. It is an option, not the default: on CPU it was slower
      than the loop in most measured cells (``docs/backward.md``), and the choice stays
      deterministic (no timing-dependent switch that could change rounding between runs).

    Each objective keeps its own graph semantics: in the batched backward the other
    objectives' branches receive a zero cotangent, and 0 · inf there (a loss whose local
    derivative is infinite, e.g. ``sqrt`` at 0) would turn a finite row into NaN
    (:func:`_as_list`). So a batched result with any non-finite entry is recomputed by the
    loop, which is the truth (and raises, through ``check_jacobian``, if it too is not finite).
    """
    losses = list(losses)
    inputs = list(inputs)
    if not batched or len(losses) == 1:
        return check_jacobian(_jacobian_loop(losses, inputs, retain_graph))
    try:
        jac = _jacobian_batched(losses, inputs)
    except (RuntimeError, NotImplementedError) as error:
        warnings.warn(
            f"batched=True: the vectorised backward is not supported on this graph ({error}); "
            "using one backward per objective",
            RuntimeWarning,
            stacklevel=2,
        )
        return check_jacobian(_jacobian_loop(losses, inputs, retain_graph))
    if not bool(torch.isfinite(jac).all()):
        # A zero cotangent met an infinite local derivative in another objective's branch.
        del jac
        return check_jacobian(_jacobian_loop(losses, inputs, retain_graph))
    return check_jacobian(jac)


def _jacobian_loop(
    losses: list[torch.Tensor], inputs: list[torch.Tensor], retain_graph: bool
) -> torch.Tensor:
    """k sequential backwards, written into one preallocated ``[k, d]`` (no second copy)."""
    n = len(losses)
    out = _empty_jacobian(n, inputs)
    for i, loss in enumerate(losses):
        grads: list[torch.Tensor | None] = list(
            torch.autograd.grad(
                loss, inputs, retain_graph=retain_graph or i < n - 1, allow_unused=True
            )
        )
        _write_row(out[i], grads, inputs)
    return out


def _jacobian_batched(losses: list[torch.Tensor], inputs: list[torch.Tensor]) -> torch.Tensor:
    """One vectorised backward of the k losses.

    The graph is kept (a non-finite result falls back to the loop, which needs it); its saved
    tensors are released when the caller drops the losses, as after the loop's retained
    backwards. The peak during the backward is the same either way.
    """
    n = len(losses)
    stacked = torch.stack(losses)
    eye = torch.eye(n, dtype=stacked.dtype, device=stacked.device)
    grads: list[torch.Tensor | None] = list(
        torch.autograd.grad(
            stacked,
            inputs,
            grad_outputs=eye,
            retain_graph=True,
            allow_unused=True,
            is_grads_batched=True,
        )
    )
    out = _empty_jacobian(n, inputs)
    offset = 0
    for j, x in enumerate(inputs):
        size = x.numel()
        g = grads[j]
        grads[j] = None  # free each block once copied: peak is J plus one input's k rows
        if g is None:
            out[:, offset : offset + size].zero_()
        else:
            out[:, offset : offset + size].copy_(g.reshape(n, size))
        offset += size
    return out


def _empty_jacobian(n: int, inputs: list[torch.Tensor]) -> torch.Tensor:
    dtype = functools.reduce(torch.promote_types, (x.dtype for x in inputs))
    return torch.empty(n, sum(x.numel() for x in inputs), dtype=dtype, device=inputs[0].device)


def _write_row(
    row: torch.Tensor, grads: list[torch.Tensor | None], inputs: list[torch.Tensor]
) -> None:
    offset = 0
    for j, x in enumerate(inputs):
        size = x.numel()
        g = grads[j]
        grads[j] = None
        if g is None:
            row[offset : offset + size].zero_()
        else:
            row[offset : offset + size].copy_(g.reshape(-1))
        offset += size
