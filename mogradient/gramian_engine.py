"""The k×k parameter Gramian without the k×d Jacobian: per-layer accumulation in one backward.

For a layer ``y = x Wᵀ + b`` the gradient of objective i w.r.t. ``W`` is ``Δᵢᵀ X``, where ``X``
is the layer's input and ``Δᵢ = ∂Lᵢ/∂y`` its output cotangent. So each layer's share of
``Gᵢⱼ = Σ_params ⟨∂Lᵢ/∂p, ∂Lⱼ/∂p⟩`` is available from (input, k cotangents) at the moment the
backward passes through the layer; it is added to a float64 k×k total and dropped. The k
cotangents come from one backward vectorised over the objectives (``torch.func.vmap`` of
``autograd.grad`` with the rows of the identity as cotangents), which stops at the first
recorded layer and never computes a parameter gradient. Peak extra memory is about k × the
largest layer (or k × its activations), not k × the model.

Usage::

    with GramianRecorder(model) as rec:        # hooks the modules while the forward runs
        losses = objectives(model(batch))      # k scalar losses
    G = rec.gramian(losses)                    # [k, k] float64, graph kept
    w = aggregator.weights(G)
    torch.autograd.backward(sum(float(wi) * li for wi, li in zip(w, losses)))

or, when the forward is cheap to express as a closure, ``module_gramian(model, fn)``.

Layer types (the per-layer rule in brackets):

* ``nn.Linear``, transformers' ``Conv1D`` (GPT-2): closed form, either the k per-objective
  weight gradients of that layer (``Δᵢᵀ X``) or, when the layer sees few rows, the Gram trick
  ``Σₙₘ (X Xᵀ)ₙₘ ⟨Δᵢₙ, Δⱼₘ⟩`` which never forms a weight-sized tensor; bias ``Σₙ Δᵢₙ``.
* ``nn.Embedding`` (no ``scale_grad_by_freq``): cotangents summed per distinct token id (a
  ``[k, distinct ids, dim]`` tensor, never ``[k, vocab, dim]``); ``padding_idx`` gets none.
* ``nn.LayerNorm`` and ``nn.RMSNorm``: closed form, weight ``Σₙ Δᵢₙ ⊙ x̂ₙ`` with ``x̂`` the
  recorded input normalised again, bias ``Σₙ Δᵢₙ``.
* any other module that owns trainable parameters directly and returns one tensor (the
  RMSNorms of transformers' models, GroupNorm, Conv2d, ...): its forward is replayed under
  ``torch.func.vjp`` on the recorded inputs and the vjp vectorised over the k cotangents:
  exact, k × that module's own parameters.
* parameters with any use outside their owner module's recorded call (an ``nn.Parameter``
  used in a functional call such as ``F.linear(x, child.weight)`` in a parent's forward, one
  module's forward reading another module's weight, a call of the owner that returns a tuple):
  the plain ``autograd.grad`` Jacobian for those parameters only, with a warning naming them.
  Such a parameter leaves the per-layer route entirely, even where it also has recorded uses,
  so its per-objective gradient is complete before the inner products. Uses are seen by a
  ``TorchFunctionMode`` active while recording: a torch function that receives a tracked
  parameter and returns a tensor requiring grad, while the innermost recorded module running
  (forward pre/post hooks keep the stack) does not own that parameter, marks it.
* subclasses of ``nn.Linear``, ``Conv1D``, ``nn.Embedding`` or the norms that override
  ``forward`` (a scaled embedding, a quantised linear) take the generic replay, not the closed
  form.

Shared (tied) parameters, e.g. GPT-2's ``wte`` used by the LM head: per-use contributions are
not additive in the Gramian (``⟨a+b, c+d⟩`` has cross terms), so a parameter used more than
once in the recorded forward gets a dense ``[k, *shape]`` buffer that every use adds its
per-objective gradient to; its inner products are taken once all uses are in.

Rounding: every block product is taken in the cotangents' dtype (float32 at least) over at
most ``BLOCK_SIZE`` columns and summed in float64, and its rounding bound (``γ·‖aᵢ‖‖aⱼ‖`` per
entry, :mod:`mogradient._psd`) is summed alongside. A singular Gramian (dependent objectives:
duplicated or rescaled rewards, more objectives than samples) comes out slightly indefinite;
:meth:`GramianRecorder.gramian` projects it onto the PSD cone when that bound explains it and
refuses it otherwise (``GramianRecorder.error`` holds the bound).

Under ``torch.distributed`` the Gramian of the mean gradient is not the mean of the ranks'
Gramians, so every per-layer block is taken densely (``[k, *shape]``) and averaged over the
ranks (one all-reduce per parameter, k × that parameter) before its inner products; every rank
must record the same modules in the same order (same model, same code path).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from mogradient._psd import BLOCK_SIZE, blocked_gram, project_psd, rounding_gamma, symmetric_error2
from mogradient._vmap import quiet_batching_fallback
from mogradient.gramian.distributed import world_size as _world_size

__all__ = ["GramianRecorder", "module_gramian"]


def _conv1d_type() -> type | None:
    """transformers' ``Conv1D`` where transformers is loaded, else ``None``. Read from
    ``sys.modules``, never imported: a module that is a ``Conv1D`` was built by code that
    imported transformers, so the core never loads it (nor pays its import time) itself."""
    conv1d = getattr(sys.modules.get("transformers.pytorch_utils"), "Conv1D", None)
    return conv1d if isinstance(conv1d, type) else None


class _Frame:
    """A recorded module's call in progress: the tracked parameters its call touched."""

    __slots__ = ("module", "own", "touched")

    def __init__(self, module: nn.Module, own: dict[str, nn.Parameter]):
        self.module = module
        self.own = {id(p) for p in own.values()}
        self.touched: dict[int, str] = {}


class _UseWatcher(TorchFunctionMode):
    """Sees every torch function of the recorded forward; reports the ones that take a tracked
    parameter (and give a tensor that requires grad) to the recorder."""

    def __init__(self, recorder: GramianRecorder):
        super().__init__()
        self.recorder = recorder

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        rec = self.recorder
        if rec._replaying or not torch.is_grad_enabled():
            return out
        hits: list[torch.Tensor] = []
        _collect_wanted(args, rec._wanted, hits)
        if kwargs:
            _collect_wanted(kwargs, rec._wanted, hits)
        if hits and any(isinstance(o, torch.Tensor) and o.requires_grad for o in tree_leaves(out)):
            rec._saw(hits, func)
        return out


def _collect_wanted(value: Any, wanted: set[int], hits: list[torch.Tensor]) -> None:
    """Append the tensors of ``value`` (nested lists, tuples, dicts) whose id is ``wanted``:
    what ``tree_leaves`` finds, without its per-call cost on every torch function of the
    forward."""
    if isinstance(value, torch.Tensor):
        if id(value) in wanted:
            hits.append(value)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _collect_wanted(item, wanted, hits)
    elif isinstance(value, dict):
        for item in value.values():
            _collect_wanted(item, wanted, hits)


class _Use:
    """One recorded call of a module: what its backward needs."""

    __slots__ = ("module", "args", "kwargs", "params")

    def __init__(
        self, module: nn.Module, args: tuple, kwargs: dict, params: dict[str, nn.Parameter]
    ):
        self.module = module
        self.args = args
        self.kwargs = kwargs
        self.params = params


class _Collect(torch.autograd.Function):
    """Receives the k stacked cotangents of one module output at once (its ``vmap`` rule sees
    the physical batch) and hands them to the recorder; returns a dummy."""

    @staticmethod
    def forward(recorder: GramianRecorder, use: _Use, grad: torch.Tensor) -> torch.Tensor:
        recorder._contribute(use, grad.unsqueeze(0))  # a single, unbatched objective
        return grad.new_zeros(())

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Any) -> None:
        pass

    @staticmethod
    def vmap(info: Any, in_dims: tuple, recorder: GramianRecorder, use: _Use, grad: torch.Tensor):
        dim = in_dims[2]
        stacked = grad.movedim(dim, 0) if dim is not None else grad.unsqueeze(0)
        recorder._contribute(use, stacked)
        return grad.new_zeros(info.batch_size), 0


class _Tap(torch.autograd.Function):
    """Identity on a module's output; on the recorder's backward, passes the cotangent to
    :class:`_Collect`. Its extra input, the recorder's anchor, makes every tap a node that a
    backward to the anchor must run through."""

    generate_vmap_rule = True

    @staticmethod
    def forward(recorder: GramianRecorder, use: _Use, anchor: torch.Tensor, out: torch.Tensor):
        return out.detach()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Any) -> None:
        ctx.recorder = inputs[0]
        ctx.use = inputs[1]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        if ctx.recorder._collecting:
            anchor_grad = _Collect.apply(ctx.recorder, ctx.use, grad)
        else:
            anchor_grad = None
        return None, None, anchor_grad, grad


class GramianRecorder:
    """Context manager: record the supported modules' calls during a forward, then
    :meth:`gramian` gives the float64 k×k Gramian of the losses' gradients over the
    parameters (default: every trainable parameter of ``model``) without the k×d Jacobian.

    Args:
        model: the module whose forward is recorded (hooks go on it and its submodules).
        params: the parameters the Gramian is over (default: every parameter of ``model`` with
            ``requires_grad``); others are treated as constants.
        gram_trick: ``"auto"`` (per layer, whichever of ``X Xᵀ`` / per-objective weight
            gradients is cheaper), ``"always"`` or ``"never"``. Ignored (dense) under
            ``torch.distributed`` and for shared parameters.
    """

    def __init__(
        self,
        model: nn.Module,
        params: Iterable[torch.Tensor] | None = None,
        *,
        gram_trick: str = "auto",
    ) -> None:
        if gram_trick not in ("auto", "always", "never"):
            raise ValueError(f"gram_trick must be 'auto', 'always' or 'never', got {gram_trick!r}")
        self.model = model
        self.gram_trick = gram_trick
        if params is None:
            params = [p for p in model.parameters() if p.requires_grad]
        self.params = list(params)
        self._wanted = {id(p) for p in self.params}
        self._handles: list[Any] = []
        self._uses: list[_Use] = []
        self._n_uses: dict[int, int] = {}
        self._collecting = False
        self._replaying = False
        self._anchor: torch.Tensor | None = None
        self._stack: list[_Frame] = []
        self._watcher: _UseWatcher | None = None
        # tracked parameter id -> where it was used outside its owner's recorded call
        self._outside: dict[int, str] = {}
        # backward state: the float64 total and its rounding bound e² (``_psd``)
        self._total: torch.Tensor | None = None
        self._error2: torch.Tensor | None = None
        #: ``e`` [k] of the last :meth:`gramian`: ``|Ĝᵢⱼ − Gᵢⱼ| ≤ eᵢeⱼ`` before the projection.
        self.error: torch.Tensor | None = None
        self._remaining: dict[int, int] = {}
        self._dense: dict[int, torch.Tensor] = {}
        self._param_of: dict[int, torch.Tensor] = {}
        self._distributed = False
        self._spent = False

    # -- recording -------------------------------------------------------------------------
    def __enter__(self) -> GramianRecorder:
        self._handles = []
        self._spent = False
        self._uses = []
        self._n_uses = {}
        self._stack = []
        self._outside = {}
        device = self.params[0].device if self.params else torch.device("cpu")
        self._anchor = torch.zeros((), device=device, requires_grad=True)
        for module in self.model.modules():
            own = {
                name: p
                for name, p in module.named_parameters(recurse=False)
                if p.requires_grad and id(p) in self._wanted
            }
            if own:
                self._handles.append(module.register_forward_pre_hook(self._make_pre_hook(own)))
                self._handles.append(
                    module.register_forward_hook(
                        self._make_hook(own), with_kwargs=True, always_call=True
                    )
                )
        self._watcher = _UseWatcher(self)
        self._watcher.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._watcher is not None:
            self._watcher.__exit__(None, None, None)
            self._watcher = None
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._stack = []

    def _saw(self, params: list[torch.Tensor], func: Any) -> None:
        """A torch function took tracked ``params``: inside their owner's call it is part of
        that call (kept in the frame until the call is known to be recorded), else outside."""
        frame = self._stack[-1] if self._stack else None
        where = getattr(func, "__name__", str(func))
        for p in params:
            if frame is not None and id(p) in frame.own:
                frame.touched.setdefault(id(p), where)
            elif id(p) not in self._outside:
                inside = f"inside {type(frame.module).__name__}" if frame else "outside any module"
                self._outside[id(p)] = f"{where} {inside}"

    def _make_pre_hook(self, own: dict[str, nn.Parameter]) -> Callable:
        def pre_hook(module: nn.Module, args: tuple) -> None:
            if not self._replaying:
                self._stack.append(_Frame(module, own))

        return pre_hook

    def _make_hook(self, own: dict[str, nn.Parameter]) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            if self._replaying:
                return output
            frame = self._stack.pop() if self._stack else None
            if frame is not None and frame.module is not module:  # hooks out of step: be safe
                self._stack.append(frame)
                frame = None
            recorded = (
                torch.is_grad_enabled()
                and isinstance(output, torch.Tensor)
                and output.requires_grad
            )
            if frame is not None and not recorded:
                # a call that is not recorded (a tuple output, ...): what it touched falls back
                for key, where in frame.touched.items():
                    self._outside.setdefault(
                        key, f"{where} inside an unrecorded call of {type(module).__name__}"
                    )
            if not recorded:
                return output  # its parameters fall back to autograd.grad
            use = _Use(module, args, kwargs, own)
            self._uses.append(use)
            for p in own.values():
                self._n_uses[id(p)] = self._n_uses.get(id(p), 0) + 1
            return _Tap.apply(self, use, self._anchor, output)

        return hook

    # -- the Gramian -----------------------------------------------------------------------
    def gramian(self, losses: Sequence[torch.Tensor]) -> torch.Tensor:
        """The k×k float64 Gramian ``J Jᵀ`` of ``losses`` over the recorded parameters (the
        mean over the ranks' gradients under ``torch.distributed``). The graph is kept for the
        weighted backward of ``Σ wᵢ Lᵢ`` that follows (which frees it)."""
        if self._spent:
            raise RuntimeError(
                "gramian() was already called for this recorded forward, and its recorded "
                "inputs are released then; record the forward again (a new `with "
                "GramianRecorder(...)` block) for another Gramian"
            )
        losses = [loss.reshape(()) for loss in losses]
        k = len(losses)
        if k == 0:
            raise ValueError("got zero losses")
        device = losses[0].device
        self._total = torch.zeros(k, k, dtype=torch.float64, device=device)
        self._error2 = torch.zeros(k, dtype=torch.float64, device=device)
        self._remaining = dict(self._n_uses)
        self._dense = {}
        self._distributed = _world_size() > 1
        self._param_of = {}
        for use in self._uses:
            for p in use.params.values():
                self._param_of[id(p)] = p

        # a parameter used outside its owner's recorded calls leaves the per-layer route
        # entirely: its k rows come from autograd.grad, complete over all its uses
        untracked = [p for p in self.params if id(p) not in self._n_uses or id(p) in self._outside]
        try:
            if self._uses:
                self._collecting = True
                anchor = self._anchor
                assert anchor is not None

                def one(v: torch.Tensor) -> tuple[torch.Tensor, ...]:
                    return torch.autograd.grad(
                        losses,
                        [anchor],
                        grad_outputs=list(v.unbind()),
                        retain_graph=True,
                        allow_unused=True,
                        materialize_grads=True,
                    )

                eye = torch.eye(k, dtype=losses[0].dtype, device=device)
                if k == 1:
                    one(eye[0])
                else:
                    with quiet_batching_fallback():  # SDPA's backward has no batching rule
                        torch.func.vmap(one)(eye)
                for key in list(self._dense):  # uses that never reached the losses add zero
                    self._flush(key)
        finally:
            # The recorded inputs' graphs reach the taps, whose contexts point back at this
            # recorder: a cycle through autograd nodes that Python's collector cannot free,
            # which kept every recorded activation alive (memory grew by step in the RL loop).
            # Drop them, whether or not the backward succeeded.
            self._collecting = False
            self._dense, self._uses, self._param_of = {}, [], {}
            self._spent = True
        if untracked:
            self._fallback(losses, untracked)
        total, self._total = self._total, None
        self.error, self._error2 = cast(torch.Tensor, self._error2).sqrt(), None
        # per-layer blocks are summed in different orders; float32 rounding of a singular
        # Gramian (dependent objectives) makes it slightly indefinite: project within the bound
        return project_psd(0.5 * (total + total.T), self.error)

    def _fallback(self, losses: list[torch.Tensor], untracked: list[torch.Tensor]) -> None:
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
            return  # the losses do not reach them: they add nothing, nothing to warn about
        names = {id(p): f"<parameter {tuple(p.shape)}>" for p in untracked}
        for name, p in self.model.named_parameters(remove_duplicate=False):
            if id(p) in names and names[id(p)].startswith("<"):
                names[id(p)] = name
        outside = [
            f"{names[id(p)]} (used by {self._outside[id(p)]})"
            for p in untracked
            if id(p) in self._outside
        ]
        unrecorded = [names[id(p)] for p in untracked if id(p) not in self._outside]
        parts = []
        if outside:
            parts.append(
                "used outside their owner module's recorded call: " + ", ".join(outside[:8])
            )
        if unrecorded:
            parts.append(
                "not used through a module the Gramian engine records: " + ", ".join(unrecorded[:8])
            )
        more = len(outside) + len(unrecorded) - len(outside[:8]) - len(unrecorded[:8])
        warnings.warn(
            f"{sum(p.numel() for p in untracked)} parameters in {len(untracked)} tensors are "
            f"{'; '.join(parts)}{f' (and {more} more)' if more > 0 else ''}; their k rows "
            "come from plain autograd.grad",
            stacklevel=3,
        )
        template = next(r for r in rows if r is not None)
        jac = torch.stack([torch.zeros_like(template) if r is None else r for r in rows])
        if self._distributed:
            jac = jac.contiguous()
            dist.all_reduce(jac)
            jac = jac / _world_size()
        self._add_gram(jac)

    # -- per-module contributions (called from the backward with [k, *out] cotangents) ----
    def _add_gram(self, a: torch.Tensor) -> None:
        """total += a aᵀ for a [k, n] block (float32 products of at most ``BLOCK_SIZE``
        columns, summed in float64), and its rounding bound γ‖aᵢ‖‖aⱼ‖ to ``e²``."""
        assert self._total is not None and self._error2 is not None
        gram = blocked_gram(a)
        self._total += gram
        n = min(a[0].numel(), BLOCK_SIZE)
        self._error2 += symmetric_error2(gram, n, a.dtype)

    def _dense_needed(self, p: torch.Tensor) -> bool:
        return self._distributed or self._n_uses.get(id(p), 0) > 1

    def _add_dense(self, p: torch.Tensor, grad: torch.Tensor) -> None:
        """Fold a per-objective gradient ``[k, *p.shape]`` of one use of ``p``."""
        key = id(p)
        if self._n_uses.get(key, 0) > 1:
            buf = self._dense.get(key)
            self._dense[key] = grad if buf is None else buf + grad
            self._remaining[key] -= 1
            if self._remaining[key] == 0:
                self._flush(key)
            return
        self._finish(grad)

    def _flush(self, key: int) -> None:
        grad = self._dense.pop(key)
        self._finish(grad)

    def _finish(self, grad: torch.Tensor) -> None:
        if self._distributed:
            grad = grad.contiguous()
            dist.all_reduce(grad)
            grad = grad / _world_size()
        self._add_gram(grad)

    def _contribute(self, use: _Use, delta: torch.Tensor) -> None:
        with torch.no_grad():
            module = use.module
            if all(id(p) in self._outside for p in use.params.values()):
                return  # every parameter of this call is on the fallback route
            forward = type(module).forward
            if isinstance(module, nn.Linear) and forward is nn.Linear.forward:
                self._linear(use, delta)
            elif (
                (conv1d := _conv1d_type()) is not None
                and isinstance(module, conv1d)
                and forward is getattr(conv1d, "forward", None)
            ):
                self._linear(use, delta)
            elif (
                isinstance(module, nn.Embedding)
                and forward is nn.Embedding.forward
                and not module.scale_grad_by_freq
            ):
                self._embedding(use, delta)
            elif type(module) in (nn.LayerNorm, nn.RMSNorm):
                self._norm(use, delta)
            else:
                self._generic(use, delta)

    def _fast(self, p: torch.Tensor | None) -> bool:
        """Whether ``p`` takes the per-layer route (tracked, and no use outside its owner)."""
        return (
            p is not None
            and p.requires_grad
            and id(p) in self._wanted
            and id(p) not in self._outside
        )

    def _linear(self, use: _Use, delta: torch.Tensor) -> None:
        module = use.module
        x = use.args[0] if use.args else next(iter(use.kwargs.values()))
        k = delta.shape[0]
        d = delta.reshape(k, -1, delta.shape[-1])  # [k, N, out]
        x = x.detach().reshape(-1, x.shape[-1]).to(d.dtype)  # [N, in]
        n, d_in, d_out = x.shape[0], x.shape[1], d.shape[-1]
        weight = cast(torch.Tensor, module.weight)
        if self._fast(weight):
            transposed = not isinstance(module, nn.Linear)  # Conv1D stores [in, out]
            if self._dense_needed(weight):
                g = torch.einsum("kno,ni->kio" if transposed else "kno,ni->koi", d, x)
                self._add_dense(weight, g)
            elif self._use_trick(n, d_in, d_out, k):
                self._add_trick(x, d)
            else:
                self._add_gram(torch.einsum("kno,ni->koi", d, x))
        bias = getattr(module, "bias", None)
        if bias is not None and self._fast(bias):
            g = d.sum(1)
            if self._dense_needed(bias):
                self._add_dense(bias, g)
            else:
                self._add_gram(g)

    def _add_trick(self, x: torch.Tensor, d: torch.Tensor) -> None:
        """total += ``Σₙₘ (X Xᵀ)ₙₘ ⟨Δᵢₙ, Δⱼₘ⟩`` for ``x [N, in]``, ``d [k, N, out]``.

        Rounding: three products (``X Xᵀ`` of ``in`` terms, ``(X Xᵀ) Δ`` of ``N``, the final
        blocks of at most ``BLOCK_SIZE``), each within ``γ`` of the same product of absolute
        values, so an entry errs by at most ``γ_{in+N+b} ⟨|X|ᵀ|Δᵢ|, |X|ᵀ|Δⱼ|⟩ ≤
        γ_{in+N+b} ‖X‖²‖Δᵢ‖‖Δⱼ‖`` (Frobenius norms, taken in float64).
        """
        assert self._total is not None and self._error2 is not None
        k = d.shape[0]
        work = torch.promote_types(d.dtype, torch.float32)
        x, d = x.to(work), d.to(work)
        kd = torch.matmul(x @ x.T, d)  # [k, N, out]
        self._total += blocked_gram(kd.reshape(k, -1), d.reshape(k, -1))
        n, d_in = x.shape
        gamma = rounding_gamma(d_in + n + min(d[0].numel(), BLOCK_SIZE), work)
        x2 = x.double().square().sum()
        self._error2 += gamma * x2 * d.reshape(k, -1).double().square().sum(1)

    def _use_trick(self, n: int, d_in: int, d_out: int, k: int) -> bool:
        if self.gram_trick != "auto":
            return self.gram_trick == "always"
        # flops: trick N²·in + k·N²·out, dense k·N·in·out (+ k²·in·out)
        return n * (d_in + k * d_out) < k * d_in * d_out

    def _embedding(self, use: _Use, delta: torch.Tensor) -> None:
        module = use.module
        if not self._fast(cast(torch.Tensor, module.weight)):
            return
        ids = (use.args[0] if use.args else next(iter(use.kwargs.values()))).reshape(-1)
        k = delta.shape[0]
        d = delta.reshape(k, ids.shape[0], -1)
        if module.padding_idx is not None:
            keep = ids != module.padding_idx
            ids, d = ids[keep], d[:, keep]
        weight = cast(torch.Tensor, module.weight)
        if self._dense_needed(weight):
            g = torch.zeros((k, *weight.shape), dtype=d.dtype, device=d.device)
            g.index_add_(1, ids, d)
            self._add_dense(weight, g)
            return
        distinct, inverse = torch.unique(ids, return_inverse=True)
        summed = torch.zeros(k, distinct.shape[0], d.shape[-1], dtype=d.dtype, device=d.device)
        summed.index_add_(1, inverse, d)
        self._add_gram(summed)

    def _norm(self, use: _Use, delta: torch.Tensor) -> None:
        """LayerNorm / RMSNorm: weight ``Σₙ Δ ⊙ x̂``, bias ``Σₙ Δ`` per objective, with ``x̂``
        the recorded input normalised (without the affine part) as the forward did."""
        module = use.module
        x = (use.args[0] if use.args else next(iter(use.kwargs.values()))).detach()
        shape = tuple(cast(tuple[int, ...], module.normalized_shape))
        if isinstance(module, nn.LayerNorm):
            normed = nn.functional.layer_norm(x, shape, None, None, module.eps)
        else:  # nn.RMSNorm (its eps may be None: the dtype's)
            normed = nn.functional.rms_norm(x, shape, None, cast("float | None", module.eps))
        k = delta.shape[0]
        d = delta.reshape(k, -1, *shape)
        for p, grad in (
            (getattr(module, "weight", None), lambda: (d * normed.reshape(1, -1, *shape)).sum(1)),
            (getattr(module, "bias", None), lambda: d.sum(1)),
        ):
            if not self._fast(p):
                continue
            g = grad().to(delta.dtype)
            if self._dense_needed(cast(torch.Tensor, p)):
                self._add_dense(cast(torch.Tensor, p), g)
            else:
                self._add_gram(g)

    def _generic(self, use: _Use, delta: torch.Tensor) -> None:
        module = use.module
        params = {name: p for name, p in use.params.items() if self._fast(p)}
        if not params:
            return
        args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in use.args)
        kwargs = {
            key: v.detach() if isinstance(v, torch.Tensor) else v for key, v in use.kwargs.items()
        }

        def call(ps: dict[str, torch.Tensor]) -> torch.Tensor:
            return torch.func.functional_call(module, ps, args, kwargs, strict=False)

        self._replaying = True
        try:
            with torch.enable_grad():
                vjp = torch.func.vjp(call, {n: p.detach() for n, p in params.items()})[1]
                with quiet_batching_fallback():
                    grads = torch.func.vmap(vjp)(delta)[0]
        finally:
            self._replaying = False
        for name, p in params.items():
            g = grads[name]
            if self._dense_needed(p):
                self._add_dense(p, g)
            else:
                self._add_gram(g)


def module_gramian(
    model: nn.Module,
    losses_fn: Callable[[], Sequence[torch.Tensor]],
    params: Iterable[torch.Tensor] | None = None,
    **options: Any,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run ``losses_fn()`` (the forward, returning k scalar losses) under a
    :class:`GramianRecorder` of ``model``; return ``(G [k, k] float64, losses)`` with the graph
    kept for the weighted backward."""
    with GramianRecorder(model, params, **options) as rec:
        losses = list(losses_fn())
    return rec.gramian(losses), losses
