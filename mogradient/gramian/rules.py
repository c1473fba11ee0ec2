"""The closed-form per-layer rules of the Gramian engine, and the blocks every rule returns.

A rule takes one recorded call (:class:`~mogradient.gramian.taps.Use`), the k stacked
cotangents ``Δ`` of its output and a read-only :class:`RuleContext`, and *returns* that call's
share of the Gramian: a :class:`Gram` block (``a aᵀ`` summed in float64 with its rounding bound)
or, for a parameter whose per-objective gradient must first be summed over its uses or averaged
over the ranks, a :class:`Gradient` ``[k, *shape]``. It changes no shared state; the recorder
(:mod:`mogradient.gramian.recorder`) adds the blocks up.

Layer types with a closed form (:func:`closed_form`; any other module takes the generic replay
of :mod:`mogradient.gramian.replay`):

* ``nn.Linear``, transformers' ``Conv1D`` (GPT-2): either the k per-objective weight gradients
  of that layer (``Δᵢᵀ X``) or, when the layer sees few rows, the Gram trick
  ``Σₙₘ (X Xᵀ)ₙₘ ⟨Δᵢₙ, Δⱼₘ⟩`` which never forms a weight-sized tensor; bias ``Σₙ Δᵢₙ``.
* ``nn.Embedding`` (no ``scale_grad_by_freq``): cotangents summed per distinct token id (a
  ``[k, distinct ids, dim]`` tensor, never ``[k, vocab, dim]``); ``padding_idx`` gets none.
* ``nn.LayerNorm`` and ``nn.RMSNorm``: weight ``Σₙ Δᵢₙ ⊙ x̂ₙ`` with ``x̂`` the recorded input
  normalised again, bias ``Σₙ Δᵢₙ``.
* subclasses of these that override ``forward`` (a scaled embedding, a quantised linear) take
  the generic replay, not the closed form.

Rounding: every block product is taken in the cotangents' dtype (float32 at least) over at
most ``BLOCK_SIZE`` columns and summed in float64, and its rounding bound (``γ·‖aᵢ‖‖aⱼ‖`` per
entry, :mod:`mogradient._psd`) is returned with it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Container
from typing import NamedTuple, cast

import torch
from torch import nn

from mogradient._psd import BLOCK_SIZE, blocked_gram, rounding_gamma, symmetric_error2
from mogradient.gramian.taps import Use


class Gram(NamedTuple):
    """A finished share of the Gramian: ``gram`` [k, k] float64 and its rounding bound
    ``error2`` [k] (``|Ĝᵢⱼ − Gᵢⱼ| ≤ eᵢeⱼ`` with ``e² = error2``)."""

    gram: torch.Tensor
    error2: torch.Tensor


class Gradient(NamedTuple):
    """The per-objective gradient ``[k, *param.shape]`` of one use of ``param``, for a
    parameter the context wants dense (shared, or under ``torch.distributed``)."""

    param: torch.Tensor
    grad: torch.Tensor


Block = Gram | Gradient


class RuleContext:
    """What a rule may read about the recording: the parameters on the per-layer route, the
    ones that must be gathered densely, and the ``gram_trick`` option."""

    __slots__ = ("wanted", "outside", "shared", "distributed", "gram_trick")

    def __init__(
        self,
        wanted: set[int],
        outside: Container[int],
        shared: set[int],
        distributed: bool,
        gram_trick: str,
    ) -> None:
        self.wanted = wanted
        self.outside = outside
        self.shared = shared
        self.distributed = distributed
        self.gram_trick = gram_trick

    def fast(self, p: torch.Tensor | None) -> bool:
        """Whether ``p`` takes the per-layer route (tracked, and no use outside its owner)."""
        return (
            p is not None and p.requires_grad and id(p) in self.wanted and id(p) not in self.outside
        )

    def dense(self, p: torch.Tensor) -> bool:
        """Whether ``p``'s per-objective gradient is needed whole: summed over its uses (a
        shared parameter) or averaged over the ranks before the inner products."""
        return self.distributed or id(p) in self.shared

    def use_trick(self, n: int, d_in: int, d_out: int, k: int) -> bool:
        """Whether a linear layer's block is cheaper by the Gram trick."""
        if self.gram_trick != "auto":
            return self.gram_trick == "always"
        # flops: trick N²·in + k·N²·out, dense k·N·in·out (+ k²·in·out)
        return n * (d_in + k * d_out) < k * d_in * d_out


Rule = Callable[[Use, torch.Tensor, RuleContext], list[Block]]


def gram_block(a: torch.Tensor) -> Gram:
    """``a aᵀ`` for a [k, n] block (products of at most ``BLOCK_SIZE`` columns in ``a``'s dtype,
    summed in float64) and its rounding bound ``γ‖aᵢ‖‖aⱼ‖``."""
    gram = blocked_gram(a)
    n = min(a[0].numel(), BLOCK_SIZE)
    return Gram(gram, symmetric_error2(gram, n, a.dtype))


def trick_block(x: torch.Tensor, d: torch.Tensor) -> Gram:
    """``Σₙₘ (X Xᵀ)ₙₘ ⟨Δᵢₙ, Δⱼₘ⟩`` for ``x [N, in]``, ``d [k, N, out]``.

    Rounding: three products (``X Xᵀ`` of ``in`` terms, ``(X Xᵀ) Δ`` of ``N``, the final
    blocks of at most ``BLOCK_SIZE``), each within ``γ`` of the same product of absolute
    values, so an entry errs by at most ``γ_{in+N+b} ⟨|X|ᵀ|Δᵢ|, |X|ᵀ|Δⱼ|⟩ ≤
    γ_{in+N+b} ‖X‖²‖Δᵢ‖‖Δⱼ‖`` (Frobenius norms, taken in float64).
    """
    k = d.shape[0]
    work = torch.promote_types(d.dtype, torch.float32)
    x, d = x.to(work), d.to(work)
    kd = torch.matmul(x @ x.T, d)  # [k, N, out]
    gram = blocked_gram(kd.reshape(k, -1), d.reshape(k, -1))
    n, d_in = x.shape
    gamma = rounding_gamma(d_in + n + min(d[0].numel(), BLOCK_SIZE), work)
    x2 = x.double().square().sum()
    return Gram(gram, gamma * x2 * d.reshape(k, -1).double().square().sum(1))


def as_block(p: torch.Tensor, grad: torch.Tensor, ctx: RuleContext) -> Block:
    """A per-objective gradient of ``p`` as the block the context wants."""
    return Gradient(p, grad) if ctx.dense(p) else gram_block(grad)


def _first_input(use: Use) -> torch.Tensor:
    return use.args[0] if use.args else next(iter(use.kwargs.values()))


def linear(use: Use, delta: torch.Tensor, ctx: RuleContext) -> list[Block]:
    """``nn.Linear`` and ``Conv1D``: weight ``Δᵢᵀ X`` (or the Gram trick), bias ``Σₙ Δᵢₙ``."""
    module = use.module
    x = _first_input(use)
    k = delta.shape[0]
    d = delta.reshape(k, -1, delta.shape[-1])  # [k, N, out]
    x = x.detach().reshape(-1, x.shape[-1]).to(d.dtype)  # [N, in]
    n, d_in, d_out = x.shape[0], x.shape[1], d.shape[-1]
    blocks: list[Block] = []
    weight = cast(torch.Tensor, module.weight)
    if ctx.fast(weight):
        transposed = not isinstance(module, nn.Linear)  # Conv1D stores [in, out]
        if ctx.dense(weight):
            g = torch.einsum("kno,ni->kio" if transposed else "kno,ni->koi", d, x)
            blocks.append(Gradient(weight, g))
        elif ctx.use_trick(n, d_in, d_out, k):
            blocks.append(trick_block(x, d))
        else:
            blocks.append(gram_block(torch.einsum("kno,ni->koi", d, x)))
    bias = getattr(module, "bias", None)
    if bias is not None and ctx.fast(bias):
        blocks.append(as_block(bias, d.sum(1), ctx))
    return blocks


def embedding(use: Use, delta: torch.Tensor, ctx: RuleContext) -> list[Block]:
    """``nn.Embedding``: the cotangents summed per distinct id (dense: per row of the table)."""
    module = use.module
    weight = cast(torch.Tensor, module.weight)
    if not ctx.fast(weight):
        return []
    ids = _first_input(use).reshape(-1)
    k = delta.shape[0]
    d = delta.reshape(k, ids.shape[0], -1)
    if module.padding_idx is not None:
        keep = ids != module.padding_idx
        ids, d = ids[keep], d[:, keep]
    if ctx.dense(weight):
        g = torch.zeros((k, *weight.shape), dtype=d.dtype, device=d.device)
        g.index_add_(1, ids, d)
        return [Gradient(weight, g)]
    distinct, inverse = torch.unique(ids, return_inverse=True)
    summed = torch.zeros(k, distinct.shape[0], d.shape[-1], dtype=d.dtype, device=d.device)
    summed.index_add_(1, inverse, d)
    return [gram_block(summed)]


def norm(use: Use, delta: torch.Tensor, ctx: RuleContext) -> list[Block]:
    """LayerNorm / RMSNorm: weight ``Σₙ Δ ⊙ x̂``, bias ``Σₙ Δ`` per objective, with ``x̂`` the
    recorded input normalised (without the affine part) as the forward did."""
    module = use.module
    x = _first_input(use).detach()
    shape = tuple(cast(tuple[int, ...], module.normalized_shape))
    if isinstance(module, nn.LayerNorm):
        normed = nn.functional.layer_norm(x, shape, None, None, module.eps)
    else:  # nn.RMSNorm (its eps may be None: the dtype's)
        normed = nn.functional.rms_norm(x, shape, None, cast("float | None", module.eps))
    k = delta.shape[0]
    d = delta.reshape(k, -1, *shape)
    blocks: list[Block] = []
    weight = getattr(module, "weight", None)
    if weight is not None and ctx.fast(weight):
        g = (d * normed.reshape(1, -1, *shape)).sum(1).to(delta.dtype)
        blocks.append(as_block(weight, g, ctx))
    bias = getattr(module, "bias", None)
    if bias is not None and ctx.fast(bias):
        blocks.append(as_block(bias, d.sum(1).to(delta.dtype), ctx))
    return blocks


def conv1d_type() -> type | None:
    """transformers' ``Conv1D`` where transformers is loaded, else ``None``. Read from
    ``sys.modules``, never imported: a module that is a ``Conv1D`` was built by code that
    imported transformers, so the core never loads it (nor pays its import time) itself."""
    conv1d = getattr(sys.modules.get("transformers.pytorch_utils"), "Conv1D", None)
    return conv1d if isinstance(conv1d, type) else None


def closed_form(module: nn.Module) -> Rule | None:
    """The closed-form rule for ``module``, or ``None`` (the generic replay)."""
    forward = type(module).forward
    if isinstance(module, nn.Linear) and forward is nn.Linear.forward:
        return linear
    conv1d = conv1d_type()
    if (
        conv1d is not None
        and isinstance(module, conv1d)
        and forward is getattr(conv1d, "forward", None)
    ):
        return linear
    if (
        isinstance(module, nn.Embedding)
        and forward is nn.Embedding.forward
        and not module.scale_grad_by_freq
    ):
        return embedding
    if type(module) in (nn.LayerNorm, nn.RMSNorm):
        return norm
    return None
