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

The engine's parts: the taps in the forward and the backward (:mod:`~mogradient.gramian.taps`),
this recorder, the closed-form per-layer rules (:mod:`~mogradient.gramian.rules`: Linear,
Conv1D, Embedding, LayerNorm, RMSNorm) and the generic replay and autograd fallback
(:mod:`~mogradient.gramian.replay`). A rule returns its blocks; only the recorder adds them up.

Shared (tied) parameters, e.g. GPT-2's ``wte`` used by the LM head: per-use contributions are
not additive in the Gramian (``⟨a+b, c+d⟩`` has cross terms), so a parameter used more than
once in the recorded forward gets a dense ``[k, *shape]`` buffer that every use adds its
per-objective gradient to; its inner products are taken once all uses are in.

Rounding: every block carries its rounding bound, summed alongside the Gramian. A singular
Gramian (dependent objectives: duplicated or rescaled rewards, more objectives than samples)
comes out slightly indefinite; :meth:`GramianRecorder.gramian` projects it onto the PSD cone
when that bound explains it and refuses it otherwise (``GramianRecorder.error`` holds the bound).

Under ``torch.distributed`` the Gramian of the mean gradient is not the mean of the ranks'
Gramians, so every per-layer block is taken densely (``[k, *shape]``) and averaged over the
ranks (one all-reduce per parameter, k × that parameter) before its inner products; every rank
must record the same modules in the same order (same model, same code path).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import torch
from torch import nn

from mogradient._psd import project_psd
from mogradient._vmap import quiet_batching_fallback
from mogradient.gramian.distributed import all_reduce_mean, world_size
from mogradient.gramian.replay import fallback_jacobian, fallback_message, replay
from mogradient.gramian.rules import Block, Gram, RuleContext, closed_form, gram_block
from mogradient.gramian.taps import Frame, Tap, Use, UseWatcher

__all__ = ["GramianRecorder", "module_gramian"]


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
        self._uses: list[Use] = []
        self._n_uses: dict[int, int] = {}
        self._collecting = False
        self._replaying = False  # a replay runs the forward again: the hooks keep quiet
        self._watching = False  # the watcher reports uses (the forward runs, not the engine)
        self._anchor: torch.Tensor | None = None
        self._stack: list[Frame] = []
        self._watcher: UseWatcher | None = None
        # tracked parameter id -> where it was used outside its owner's recorded call
        self._outside: dict[int, str] = {}
        # backward state: the float64 total and its rounding bound e² (``_psd``)
        self._total: torch.Tensor | None = None
        self._error2: torch.Tensor | None = None
        #: ``e`` [k] of the last :meth:`gramian`: ``|Ĝᵢⱼ − Gᵢⱼ| ≤ eᵢeⱼ`` before the projection.
        self.error: torch.Tensor | None = None
        self._remaining: dict[int, int] = {}
        self._dense: dict[int, torch.Tensor] = {}
        self._context: RuleContext | None = None
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
        self._watcher = UseWatcher(self)
        self._watcher.__enter__()
        self._watching = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._watching = False
        if self._watcher is not None:
            self._watcher.__exit__(None, None, None)
            self._watcher = None
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._stack = []

    def _saw(self, params: list[torch.Tensor], func: Any, grad: bool) -> None:
        """A torch function took tracked ``params``: inside their owner's call it is part of
        that call (kept in the frame until the call is known to be recorded), else outside.
        With grad disabled (``grad`` false) it is outside wherever it runs: a custom
        ``autograd.Function``'s backward may hand the parameter a gradient no recorded call
        sees (a plain ``no_grad`` read is sent to the exact fallback too, only slower)."""
        frame = self._stack[-1] if self._stack else None
        where = getattr(func, "__name__", str(func))
        if not grad:
            where += " with grad disabled (inside a no-grad region or a custom autograd.Function)"
            for running in self._stack:  # their replays would run it again
                running.blind = True
        for p in params:
            if grad and frame is not None and id(p) in frame.own:
                frame.touched.setdefault(id(p), where)
            elif id(p) not in self._outside:
                inside = f"inside {type(frame.module).__name__}" if frame else "outside any module"
                self._outside[id(p)] = f"{where} {inside}"

    def _make_pre_hook(self, own: dict[str, nn.Parameter]) -> Callable:
        def pre_hook(module: nn.Module, args: tuple) -> None:
            if not self._replaying:
                self._stack.append(Frame(module, own))

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
                not (frame is not None and frame.blind)
                and torch.is_grad_enabled()
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
            use = Use(module, args, kwargs, own)
            self._uses.append(use)
            for p in own.values():
                self._n_uses[id(p)] = self._n_uses.get(id(p), 0) + 1
            watching, self._watching = self._watching, False  # the tap's own no-grad forward
            try:
                return Tap.apply(self, use, self._anchor, output)
            finally:
                self._watching = watching

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
        self._watching = False  # what follows is the engine's own backward, not the forward
        losses = [loss.reshape(()) for loss in losses]
        k = len(losses)
        if k == 0:
            raise ValueError("got zero losses")
        device = losses[0].device
        self._total = torch.zeros(k, k, dtype=torch.float64, device=device)
        self._error2 = torch.zeros(k, dtype=torch.float64, device=device)
        self._remaining = dict(self._n_uses)
        self._dense = {}
        shared = {key for key, count in self._n_uses.items() if count > 1}
        self._context = RuleContext(
            self._wanted, self._outside, shared, world_size() > 1, self.gram_trick
        )

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
                    self._finish(self._dense.pop(key))
        finally:
            # The recorded inputs' graphs reach the taps, whose contexts point back at this
            # recorder: a cycle through autograd nodes that Python's collector cannot free,
            # which kept every recorded activation alive (memory grew by step in the RL loop).
            # Drop them, whether or not the backward succeeded.
            self._collecting = False
            self._dense, self._uses = {}, []
            self._spent = True
        if untracked:
            self._fallback(losses, untracked)
        self._context = None
        total, self._total = self._total, None
        self.error, self._error2 = cast(torch.Tensor, self._error2).sqrt(), None
        # per-layer blocks are summed in different orders; float32 rounding of a singular
        # Gramian (dependent objectives) makes it slightly indefinite: project within the bound
        return project_psd(0.5 * (total + total.T), self.error)

    def discard(self) -> None:
        """Drop what was recorded, without a Gramian: the forward's graph then serves an
        ordinary backward (the taps pass cotangents through) and frees as usual."""
        self._uses, self._dense, self._spent = [], {}, True

    def _fallback(self, losses: list[torch.Tensor], untracked: list[torch.Tensor]) -> None:
        jac = fallback_jacobian(losses, untracked)
        if jac is None:
            return  # the losses do not reach them: they add nothing, nothing to warn about
        warnings.warn(fallback_message(self.model, untracked, self._outside), stacklevel=3)
        self._finish(jac)

    # -- adding the blocks up (called from the backward with [k, *out] cotangents) ---------
    def _contribute(self, use: Use, delta: torch.Tensor) -> None:
        """Run the rule of ``use``'s module on its cotangents ``delta`` and add its blocks."""
        context = self._context
        assert context is not None
        with torch.no_grad():
            if all(id(p) in self._outside for p in use.params.values()):
                return  # every parameter of this call is on the fallback route
            rule = closed_form(use.module) or replay
            replaying, self._replaying = self._replaying, True  # a replay calls the forward
            try:
                blocks = rule(use, delta, context)
            finally:
                self._replaying = replaying
            for block in blocks:
                self._take(block)

    def _take(self, block: Block) -> None:
        if isinstance(block, Gram):
            self._add(block)
            return
        key = id(block.param)
        if self._n_uses.get(key, 0) > 1:  # a shared parameter: sum its uses first
            buf = self._dense.get(key)
            self._dense[key] = block.grad if buf is None else buf + block.grad
            self._remaining[key] -= 1
            if self._remaining[key] == 0:
                self._finish(self._dense.pop(key))
            return
        self._finish(block.grad)

    def _finish(self, grad: torch.Tensor) -> None:
        """Add the Gram block of a complete per-objective gradient (averaged over the ranks)."""
        context = self._context
        if context is not None and context.distributed:
            grad = all_reduce_mean(grad)
        self._add(gram_block(grad))

    def _add(self, block: Gram) -> None:
        assert self._total is not None and self._error2 is not None
        self._total += block.gram
        self._error2 += block.error2


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
