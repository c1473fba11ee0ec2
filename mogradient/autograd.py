"""``backward()``: aggregate several losses into one update and write it into ``.grad``.

Three paths, one per kind of method (:func:`mogradient.aggregators.dispatch`):

* loss weightings (linear, mean, stch, famo, ...): weights from the loss values, then one
  backward of Σ wᵢ Lᵢ.
* Gramian weightings (mgda, upgrad, cagrad, ...): one backward per objective to form the
  Jacobian J over the parameters and its Gramian, then ``.grad = wᵀJ``, or with
  ``through_backward=True`` one more backward of Σ wᵢ Lᵢ (the weights are decided first; the
  update then goes through autograd like any other, so DDP's hooks, AMP loss scaling and
  gradient accumulation see it).
  With ``features=h`` (a shared representation, the MGDA-UB bound of Sener & Koltun 2018) the
  gradients are taken w.r.t. ``h`` instead: cheaper (h is small) and followed by one backward
  of Σ wᵢ Lᵢ.
* advantage combiners (pama): the Jacobian over the parameters, combined coordinate-wise.

Under ``torch.distributed`` (data parallelism, the model wrapped in DDP or accelerate's
``prepare``) every rank ends with the same update, that of the mean of the ranks' losses:

* paths that end in a backward of Σ wᵢ Lᵢ (losses, features, ``through_backward=True``) run it
  through ``torch.autograd.backward``, so DDP's hooks average it like any other backward; the
  weights are decided first from the all-reduced k×k Gramian (``features=``) or k×d Jacobian
  (parameters), so every rank solves the same problem;
* the default parameter path all-reduces (averages) the k×d Jacobian once, solves on it, and
  writes the already-global direction into ``.grad`` (``torch.autograd.grad`` never triggers
  DDP's hooks, so no gradient is averaged twice). It bypasses DDP's reducer, a ``GradScaler``
  and ``accelerate``'s accumulation: use ``through_backward=True`` with those.

Under FSDP2 (``fully_shard``) the loss and features paths work with ``params=None`` (the graph's
leaves, which FSDP's hooks watch); parameter mode needs full gradients and is not supported.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Literal, cast

import torch
import torch.distributed as dist

from mogradient._checks import check_jacobian, check_losses
from mogradient.aggregators.base import (
    AdvantageCombiner,
    Aggregator,
    GramianWeighting,
    LossWeighting,
    gramian_of,
)
from mogradient.aggregators.dispatch import dispatch
from mogradient.aggregators.registry import get_aggregator

if TYPE_CHECKING:
    from mogradient.gramian_engine import GramianRecorder


def backward(
    losses: Sequence[torch.Tensor] | torch.Tensor,
    params: Iterable[torch.Tensor] | None = None,
    *,
    features: torch.Tensor | Sequence[torch.Tensor] | None = None,
    aggregator: str | Aggregator = "mgda",
    retain_graph: bool = False,
    through_backward: bool = False,
    recorder: GramianRecorder | None = None,
    batched: bool = False,
    gramian_precision: Literal["float64", "input"] = "input",
    **kwargs: object,
) -> torch.Tensor | None:
    """Fill ``.grad`` of ``params`` with the aggregated direction of ``losses`` (accumulating).

    Args:
        losses: one scalar loss per objective (a sequence of scalars or a 1-D tensor).
        params: tensors to receive gradients; default: every leaf tensor that requires grad in
            the losses' graph.
        features: a shared representation (or several) that every loss depends on; Gramian
            methods then weigh the losses by the Gramian of ∂Lᵢ/∂features (MGDA-UB style).
        aggregator: a registered name (see ``available_aggregators()``) or an instance.
        retain_graph: keep the graph after the final backward.
        through_backward: parameter mode only: decide the weights from the (all-reduced)
            Jacobian, then run one ``torch.autograd.backward`` of Σ wᵢ Lᵢ instead of writing
            ``wᵀJ`` into ``.grad`` — one more backward, but the update is an ordinary backward
            that DDP averages (every parameter the losses reach gets a gradient, as DDP
            requires), that a loss scaler scales and that accumulates like any other.
        recorder: a :class:`~mogradient.gramian_engine.GramianRecorder` that recorded the
            forward of ``losses``: Gramian methods then take the parameters' Gramian from it,
            layer by layer, never holding the k×d Jacobian, and run the one backward of
            Σ wᵢ Lᵢ (as ``through_backward=True``). ``params`` default to its parameters.
        batched: how the Jacobian's k rows are computed (:func:`jacobian`): ``False``
            (default) one backward per objective, ``True`` one vectorised backward.
        gramian_precision: ``"input"`` (default) forms ``JJᵀ`` in the Jacobian's dtype per
            block of 1024 columns summed in float64 (no float64 copy of J; error at most
            ~6e-5·‖gᵢ‖‖gⱼ‖ per entry, typically ~1e-8, :func:`gramian_of`); ``"float64"``
            copies J to float64 chunk by chunk.
        **kwargs: hyper-parameters for ``get_aggregator`` when ``aggregator`` is a name.

    Returns:
        The float64 loss weights ``[n]`` used, or ``None`` for PAMA, whose combination is
        coordinate-wise and so has no single weight vector.

    Under ``torch.distributed`` every rank gets the update of the mean of the ranks' losses
    (module docstring); the loss and ``features=`` paths rely on the model being wrapped in DDP
    or FSDP to average their final backward. Parameter mode refuses FSDP-sharded parameters.
    """
    agg = get_aggregator(aggregator, **kwargs)
    loss_list = _as_list(losses)
    check_losses(torch.stack([loss.detach() for loss in loss_list]))
    if params is None:
        params = recorder.params if recorder is not None else _leaves(loss_list)
    params = list(params)
    _check_params(params)
    if recorder is not None and (
        features is not None or {id(p) for p in params} != {id(p) for p in recorder.params}
    ):
        raise ValueError(
            "recorder= gives the Gramian over the recorder's parameters: pass no features= and "
            "the same params (or none) as GramianRecorder(model, params)"
        )

    loss_values = torch.stack([loss.detach() for loss in loss_list])

    def by_losses(agg: LossWeighting) -> torch.Tensor:
        values = _global_values(agg, loss_list, loss_values)
        w = agg.weights(torch.zeros_like(loss_values) if values is None else values)
        _weighted_backward(loss_list, w, params, retain_graph)
        return w

    def by_gramian(agg: GramianWeighting) -> torch.Tensor:
        if features is not None:
            w = feature_weights(
                loss_list,
                features,
                agg,
                loss_values,
                batched=batched,
                precision=gramian_precision,
            )
            _weighted_backward(loss_list, w, params, retain_graph)
            return w
        _check_unsharded(params)
        if recorder is not None:
            gram = recorder.gramian(loss_list)
            w = agg.weights(gram, _global_values(agg, loss_list, loss_values))
            _weighted_backward(loss_list, w, params, retain_graph)
            return w
        if through_backward:
            w = parameter_weights(
                loss_list,
                params,
                agg,
                loss_values,
                batched=batched,
                precision=gramian_precision,
            )
            _weighted_backward(loss_list, w, params, retain_graph)
            return w
        jac = all_reduce_mean(
            jacobian(loss_list, params, retain_graph=retain_graph, batched=batched)
        )
        gram = gramian_of(jac, precision=gramian_precision)
        w = agg.weights(gram, _global_values(agg, loss_list, loss_values))
        _accumulate(params, _split(w.to(jac.dtype) @ jac, params))
        return w

    def by_advantages(agg: AdvantageCombiner) -> None:
        if features is not None:
            _gramian_aggregator(agg, "representation-level (features=)")  # raises
        if through_backward or recorder is not None:
            _gramian_aggregator(agg, "through_backward=True or recorder=")  # raises
        _check_unsharded(params)
        jac = all_reduce_mean(
            jacobian(loss_list, params, retain_graph=retain_graph, batched=batched)
        )
        _accumulate(params, _split(agg(jac), params))
        return None

    return dispatch(agg, losses=by_losses, gramian=by_gramian, advantages=by_advantages)


def _as_list(losses: Sequence[torch.Tensor] | torch.Tensor) -> list[torch.Tensor]:
    """The losses as separate scalars.

    Each objective is differentiated on its own graph: going through a ``torch.stack`` would
    send a zero cotangent into the other objectives' branches, and 0 · inf there turns a
    finite gradient into NaN.
    """
    if isinstance(losses, torch.Tensor):
        if losses.ndim != 1:
            check_losses(losses)  # raises the shape error
        losses = list(losses.unbind())
    else:
        losses = list(losses)
    if not losses:
        raise ValueError("got zero losses; pass one scalar loss per objective")
    for i, loss in enumerate(losses):
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ValueError(
                f"loss {i} must be a scalar tensor, got "
                f"{tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__}; "
                "reduce it with .mean() or .sum()"
            )
    return [loss.reshape(()) for loss in losses]


def _leaves(losses: list[torch.Tensor]) -> list[torch.Tensor]:
    """Every leaf tensor requiring grad in the losses' graph, in a stable order."""
    found: dict[int, torch.Tensor] = {}
    seen: set[int] = set()
    stack = [loss.grad_fn for loss in reversed(losses)]
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        variable = getattr(fn, "variable", None)
        if variable is not None:
            found.setdefault(id(variable), variable)
        stack.extend(next_fn for next_fn, _ in reversed(fn.next_functions))
    if not found:
        raise ValueError(
            "the losses do not depend on any tensor that requires grad; pass params= or check "
            "that the model's parameters have requires_grad=True"
        )
    return list(found.values())


def _check_unsharded(params: list[torch.Tensor]) -> None:
    """Parameter-mode aggregation needs every objective's full gradient on every rank.

    FSDP2 leaves the parameters of blocks it resharded after the forward as DTensors; the root
    module's stay unsharded until its backward, so only the former can be detected here.
    """
    from torch.distributed.tensor import DTensor

    if any(isinstance(p, DTensor) for p in params):
        raise ValueError(
            "some parameters are sharded (FSDP's DTensors), and aggregating over the parameters "
            "needs each objective's full gradient; pass features= (a shared representation, "
            "MGDA-UB) or use a loss-level aggregator (linear, mean)"
        )


def _check_params(params: list[torch.Tensor]) -> None:
    if not params:
        raise ValueError("params is empty; pass the tensors that should receive gradients")
    for i, p in enumerate(params):
        if not isinstance(p, torch.Tensor) or not p.requires_grad:
            raise ValueError(
                f"params[{i}] does not require grad; pass only trainable tensors "
                "(for example [p for p in model.parameters() if p.requires_grad])"
            )


class GramianAccumulator:
    """The Gramian of the mean loss over ``n_micro_batches`` micro-batches and every rank of
    ``torch.distributed``, from each micro-batch's per-objective losses.

    ``level="parameters"``: the inputs are shared coordinates, so the Jacobian is averaged
    (over the micro-batches, then one k×d all-reduce over the ranks) before ``JJᵀ`` is taken —
    the Gramian of the mean gradients is not the mean of the Gramians. ``level="features"``:
    each micro-batch and rank has its own representation, so the Gramian is block-additive,
    ``Σ Gₘ,r / (M R)²``: one k×k all-reduce. Every rank gets the same Gramian.

    ``batched`` and ``precision`` are passed to :func:`jacobian` and :func:`gramian_of`.
    """

    def __init__(
        self,
        level: Literal["parameters", "features"],
        n_micro_batches: int = 1,
        *,
        batched: bool = False,
        precision: Literal["float64", "input"] = "input",
    ):
        if level not in ("parameters", "features"):
            raise ValueError(f"level must be 'parameters' or 'features', got {level!r}")
        self.level = level
        self.n_micro_batches = n_micro_batches
        self.batched = batched
        self.precision = precision
        self._total: torch.Tensor | None = None

    def add(
        self,
        losses: Sequence[torch.Tensor],
        inputs: Sequence[torch.Tensor],
        retain_graph: bool = False,
    ) -> None:
        """Fold in one micro-batch: its losses' Jacobian over ``inputs`` (local rank)."""
        jac = jacobian(list(losses), list(inputs), retain_graph=retain_graph, batched=self.batched)
        part = gramian_of(jac, precision=self.precision) if self.level == "features" else jac
        self._total = part if self._total is None else self._total + part

    def gramian(self) -> torch.Tensor:
        """The global k×k Gramian (float64), identical on every rank."""
        if self._total is None:
            raise RuntimeError("no micro-batch was added")
        mean = all_reduce_mean(self._total) / self.n_micro_batches
        if self.level == "features":
            return mean / (self.n_micro_batches * _world_size())
        return gramian_of(mean, precision=self.precision)


def feature_weights(
    losses: Sequence[torch.Tensor],
    features: torch.Tensor | Sequence[torch.Tensor],
    aggregator: str | Aggregator,
    loss_values: torch.Tensor | None = None,
    *,
    batched: bool = False,
    precision: Literal["float64", "input"] = "input",
) -> torch.Tensor:
    """Weights ``[n]`` of a Gramian aggregator from ∂Lᵢ/∂features (MGDA-UB), keeping the graph.

    Under ``torch.distributed`` each rank's features are its own samples, so the Gramian of the
    mean of the R ranks' losses is Σ_r G_r / R²: one k×k all-reduce, and every rank solves the
    same problem and gets the same weights (:class:`GramianAccumulator`).
    """
    agg = _gramian_aggregator(aggregator, "representation-level (features=)")
    feats = [features] if isinstance(features, torch.Tensor) else list(features)
    gramian = GramianAccumulator("features", batched=batched, precision=precision)
    gramian.add(losses, feats, retain_graph=True)
    return agg.weights(gramian.gramian(), _global_values(agg, losses, loss_values))


def parameter_weights(
    losses: Sequence[torch.Tensor],
    params: Sequence[torch.Tensor],
    aggregator: str | Aggregator,
    loss_values: torch.Tensor | None = None,
    *,
    batched: bool = False,
    precision: Literal["float64", "input"] = "input",
) -> torch.Tensor:
    """Weights ``[n]`` of a Gramian aggregator from the Jacobian over ``params``, keeping the
    graph for the backward of Σ wᵢ Lᵢ that follows.

    Under ``torch.distributed`` the k×d Jacobian is averaged over the ranks first (the Gramian
    of the mean gradients is not the mean of the ranks' Gramians), so every rank solves the
    same problem and gets the same weights (:class:`GramianAccumulator`).
    """
    agg = _gramian_aggregator(aggregator, "through_backward=True")
    gramian = GramianAccumulator("parameters", batched=batched, precision=precision)
    gramian.add(losses, params, retain_graph=True)
    return agg.weights(gramian.gramian(), _global_values(agg, losses, loss_values))


def _global_values(
    agg: GramianWeighting | LossWeighting,
    losses: Sequence[torch.Tensor],
    values: torch.Tensor | None,
) -> torch.Tensor | None:
    """The loss values (detached, float64) averaged over the ranks, for methods that read them
    (``None`` for the others: no collective is spent on them)."""
    if not agg.uses_loss_values:
        return None
    if values is None:
        values = torch.stack([loss.detach() for loss in losses])
    return all_reduce_mean(values.to(torch.float64))


def _gramian_aggregator(aggregator: str | Aggregator, mode: str) -> GramianWeighting:
    """``aggregator`` as an instance, refused unless it weighs losses from a Gramian."""

    def refuse(agg: Aggregator) -> GramianWeighting:
        raise ValueError(
            f"{agg!r} does not weigh losses from a Gramian, so it has no {mode} mode; call "
            "backward without it, or pick a Gramian method (mgda, upgrad, cagrad, ...)"
        )

    return dispatch(
        get_aggregator(aggregator), gramian=lambda agg: agg, losses=refuse, advantages=refuse
    )


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over the ranks of ``torch.distributed`` (itself when not running).

    Sum then divide: gloo has no ``AVG`` reduction.
    """
    world = _world_size()
    if world == 1:
        return tensor
    tensor = tensor.contiguous()
    dist.all_reduce(tensor)
    return tensor.div_(world)


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


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


def _weighted_backward(
    losses: list[torch.Tensor],
    weights: torch.Tensor,
    params: list[torch.Tensor],
    retain_graph: bool,
) -> None:
    """``.grad += ∂(Σ wᵢ Lᵢ)/∂params`` through ``autograd.backward``, so DDP's hooks average it."""
    # ``losses`` is never empty, so the sum is a tensor, not sum()'s start value 0.
    total = cast(torch.Tensor, sum(float(w) * loss for w, loss in zip(weights, losses)))
    torch.autograd.backward(total, inputs=params, retain_graph=retain_graph)


def _split(direction: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    sizes = [p.numel() for p in params]
    return [g.view_as(p) for g, p in zip(torch.split(direction, sizes), params)]


def _accumulate(params: list[torch.Tensor], grads: Sequence[torch.Tensor | None]) -> None:
    for p, g in zip(params, grads):
        if g is None:
            continue
        g = g.detach().to(p.dtype)
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad += g
