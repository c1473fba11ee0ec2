"""The two routes of the Gramian engine that are not a closed form.

* The generic replay (:func:`replay`): any module that owns trainable parameters directly and
  returns one tensor (the RMSNorms of transformers' models, GroupNorm, Conv2d, ...) has its
  forward replayed under ``torch.func.vjp`` on the recorded inputs, and the vjp vectorised
  over the k cotangents: exact, k × that module's own parameters.
* The fallback (:func:`fallback_jacobian`): parameters with any use outside their owner
  module's recorded call (an ``nn.Parameter`` used in a functional call such as
  ``F.linear(x, child.weight)`` in a parent's forward, one module's forward reading another
  module's weight, a call of the owner that returns a tuple, any use with grad disabled: inside
  a custom ``autograd.Function``'s forward or a ``no_grad`` region, where a false positive
  costs speed only) get the plain ``autograd.grad`` Jacobian for those parameters only, with
  a warning naming them (:func:`fallback_message`).
  Such a parameter leaves the per-layer route entirely, even where it also has recorded uses,
  so its per-objective gradient is complete before the inner products.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mogradient._vmap import quiet_batching_fallback
from mogradient.gramian.rules import Block, RuleContext, as_block
from mogradient.gramian.taps import Use


def replay(use: Use, delta: torch.Tensor, ctx: RuleContext) -> list[Block]:
    """Any module: its forward replayed under ``torch.func.vjp`` on the recorded inputs, the
    vjp vectorised over the k cotangents ``delta``. The caller keeps its hooks quiet meanwhile
    (the replay calls the module's forward again)."""
    module = use.module
    params = {name: p for name, p in use.params.items() if ctx.fast(p)}
    if not params:
        return []
    args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in use.args)
    kwargs = {
        key: v.detach() if isinstance(v, torch.Tensor) else v for key, v in use.kwargs.items()
    }

    def call(ps: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.func.functional_call(module, ps, args, kwargs, strict=False)

    with torch.enable_grad():
        vjp = torch.func.vjp(call, {n: p.detach() for n, p in params.items()})[1]
        with quiet_batching_fallback():
            grads = torch.func.vmap(vjp)(delta)[0]
    return [as_block(p, grads[name], ctx) for name, p in params.items()]


def fallback_jacobian(
    losses: Sequence[torch.Tensor], untracked: Sequence[torch.Tensor]
) -> torch.Tensor | None:
    """The k rows ``∂Lᵢ/∂untracked`` (flattened, concatenated) from plain ``autograd.grad``,
    the graph kept; ``None`` when no loss reaches them (they add nothing)."""
    rows = []
    for loss in losses:
        grads = torch.autograd.grad(loss, untracked, retain_graph=True, allow_unused=True)
        rows.append(
            None
            if all(g is None for g in grads)
            else torch.cat(
                [
                    (torch.zeros_like(p) if g is None else g).reshape(-1)
                    for p, g in zip(untracked, grads)
                ]
            )
        )
    if all(r is None for r in rows):
        return None
    template = next(r for r in rows if r is not None)
    return torch.stack([torch.zeros_like(template) if r is None else r for r in rows])


def fallback_message(
    model: nn.Module, untracked: Sequence[torch.Tensor], outside: dict[int, str]
) -> str:
    """The warning for parameters on the fallback route, each named as in ``model`` with where
    it was used (``outside``: parameter id → where)."""
    names = {id(p): f"<parameter {tuple(p.shape)}>" for p in untracked}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in names and names[id(p)].startswith("<"):
            names[id(p)] = name
    used = [f"{names[id(p)]} (used by {outside[id(p)]})" for p in untracked if id(p) in outside]
    unrecorded = [names[id(p)] for p in untracked if id(p) not in outside]
    parts = []
    if used:
        parts.append("used outside their owner module's recorded call: " + ", ".join(used[:8]))
    if unrecorded:
        parts.append(
            "not used through a module the Gramian engine records: " + ", ".join(unrecorded[:8])
        )
    more = len(used) + len(unrecorded) - len(used[:8]) - len(unrecorded[:8])
    return (
        f"{sum(p.numel() for p in untracked)} parameters in {len(untracked)} tensors are "
        f"{'; '.join(parts)}{f' (and {more} more)' if more > 0 else ''}; their k rows "
        "come from plain autograd.grad"
    )
