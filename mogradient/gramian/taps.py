"""What the recorder puts into the forward: the record of one module call (:class:`Use`), the
frames that say which module is running (:class:`Frame`), the torch-function watcher that sees
a parameter used outside its owner's call (:class:`UseWatcher`), and the autograd nodes that
hand a module output's k cotangents to the recorder in the backward (:class:`Tap`,
:class:`Collect`).

A parameter is *used outside* when a torch function receives it and returns a tensor requiring
grad while the innermost recorded module running does not own it (an ``nn.Parameter`` in a
functional call of a parent's forward, one module reading another's weight). A parameter
received by any torch function while grad is *disabled* is used outside too, whatever module
runs: the ops inside a custom ``torch.autograd.Function``'s forward run with grad disabled
(``Function.apply`` itself is not a torch function a mode sees), and the gradient that
Function's backward hands the parameter bypasses every recorded call; its forward may only
read the parameter's ``data_ptr()`` (a Triton kernel), so the output is not looked at. A
mode cannot tell that apart from a plain ``no_grad`` region, so both count: a false positive
(a parameter read under ``no_grad`` during the recorded forward, rare in a training forward)
only sends it to the exact fallback, slower, never wrong. The watcher only reports; the recorder
(:mod:`mogradient.gramian.recorder`) decides.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves


class Use:
    """One recorded call of a module: what its backward needs."""

    __slots__ = ("module", "args", "kwargs", "params")

    def __init__(
        self, module: nn.Module, args: tuple, kwargs: dict, params: dict[str, nn.Parameter]
    ):
        self.module = module
        self.args = args
        self.kwargs = kwargs
        self.params = params


class Frame:
    """A recorded module's call in progress: the tracked parameters its call touched, and
    whether a tracked parameter was used with grad disabled during it (``blind``: a replay of
    this call would run that custom ``autograd.Function`` again under ``torch.func``, which
    it may not support, so the call is left unrecorded)."""

    __slots__ = ("module", "own", "touched", "blind")

    def __init__(self, module: nn.Module, own: dict[str, nn.Parameter]):
        self.module = module
        self.own = {id(p) for p in own.values()}
        self.touched: dict[int, str] = {}
        self.blind = False


class Listener(Protocol):
    """What the taps and the watcher call back: the recorder."""

    _wanted: set[int]
    _watching: bool
    _collecting: bool

    def _saw(self, params: list[torch.Tensor], func: Any, grad: bool) -> None: ...

    def _contribute(self, use: Use, delta: torch.Tensor) -> None: ...


class UseWatcher(TorchFunctionMode):
    """Sees every torch function of the recorded forward; reports the ones that take a tracked
    parameter to the recorder: with grad enabled, those giving a tensor that requires grad
    (reading a parameter's shape or ``detach()`` is no use); with grad disabled, all of them
    (a custom ``autograd.Function``'s forward, or a ``no_grad`` region). Quiet while the
    recorder does its own work (``_watching`` false: its taps, replays, backward)."""

    def __init__(self, recorder: Listener):
        super().__init__()
        self.recorder = recorder

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        rec = self.recorder
        if not rec._watching:
            return out
        hits: list[torch.Tensor] = []
        collect_wanted(args, rec._wanted, hits)
        if kwargs:
            collect_wanted(kwargs, rec._wanted, hits)
        if not hits:
            return out
        grad = torch.is_grad_enabled()
        if not grad or any(
            isinstance(o, torch.Tensor) and o.requires_grad for o in tree_leaves(out)
        ):
            rec._saw(hits, func, grad)
        return out


def collect_wanted(value: Any, wanted: set[int], hits: list[torch.Tensor]) -> None:
    """Append the tensors of ``value`` (nested lists, tuples, dicts) whose id is ``wanted``:
    what ``tree_leaves`` finds, without its per-call cost on every torch function of the
    forward."""
    if isinstance(value, torch.Tensor):
        if id(value) in wanted:
            hits.append(value)
    elif isinstance(value, (list, tuple)):
        for item in value:
            collect_wanted(item, wanted, hits)
    elif isinstance(value, dict):
        for item in value.values():
            collect_wanted(item, wanted, hits)


class Collect(torch.autograd.Function):
    """Receives the k stacked cotangents of one module output at once (its ``vmap`` rule sees
    the physical batch) and hands them to the recorder; returns a dummy."""

    @staticmethod
    def forward(recorder: Listener, use: Use, grad: torch.Tensor) -> torch.Tensor:
        recorder._contribute(use, grad.unsqueeze(0))  # a single, unbatched objective
        return grad.new_zeros(())

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Any) -> None:
        pass

    @staticmethod
    def vmap(info: Any, in_dims: tuple, recorder: Listener, use: Use, grad: torch.Tensor):
        dim = in_dims[2]
        stacked = grad.movedim(dim, 0) if dim is not None else grad.unsqueeze(0)
        recorder._contribute(use, stacked)
        return grad.new_zeros(info.batch_size), 0


class Tap(torch.autograd.Function):
    """Identity on a module's output; on the recorder's backward, passes the cotangent to
    :class:`Collect`. Its extra input, the recorder's anchor, makes every tap a node that a
    backward to the anchor must run through."""

    generate_vmap_rule = True

    @staticmethod
    def forward(recorder: Listener, use: Use, anchor: torch.Tensor, out: torch.Tensor):
        return out.detach()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Any) -> None:
        ctx.recorder = inputs[0]
        ctx.use = inputs[1]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        if ctx.recorder._collecting:
            anchor_grad = Collect.apply(ctx.recorder, ctx.use, grad)
        else:
            anchor_grad = None
        return None, None, anchor_grad, grad
