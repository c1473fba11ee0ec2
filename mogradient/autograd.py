"""``backward()``: aggregate several losses into one update and write it into ``.grad``.

Three paths, one per kind of method (:func:`mogradient.aggregators.dispatch`):

* loss weightings (linear, mean, stch, famo, ...): weights from the loss values, then one
  backward of Σ wᵢ Lᵢ.
* Gramian weightings (mgda, upgrad, cagrad, ...): one backward per objective to form the
  Jacobian J over the parameters and its Gramian, then ``.grad = wᵀJ``, or with
  ``through_backward=True`` one more backward of Σ wᵢ Lᵢ (the weights are decided first; the
  update then goes through autograd like any other, so DDP's hooks, AMP loss scaling and
  gradient accumulation see it).
  Or the Gramian layer by layer (``recorder=``, or ``losses`` as a closure with ``model=``),
  then one backward of Σ wᵢ Lᵢ: ``parameter_path`` (:mod:`mogradient.gramian.path`) picks.
  With ``features=h`` (a shared representation, the MGDA-UB bound of Sener & Koltun 2018) the
  gradients are taken w.r.t. ``h`` instead: cheaper (h is small) and followed by one backward
  of Σ wᵢ Lᵢ.
* advantage combiners (pama): the Jacobian over the parameters, combined coordinate-wise.
* Jacobian weightings (excess-mtl, db-mtl, moco): the Jacobian over the parameters, from which
  the method decides a direction with its state across steps; ``.grad = d``, or with
  ``through_backward=True`` one backward of the linear surrogate ``Σ_p ⟨d_p, p⟩`` (whose
  gradient is ``d``). ``features=`` and ``recorder=`` are refused: the state follows the
  parameters' coordinates from step to step, which a batch's representation does not have.

Methods that decide from two independent batches (``needs_two_batches``: MoDo, SDMGrad) take
the second batch's losses as ``second_losses=`` (:mod:`mogradient.gramian.two_batch`): weights
from ``J₁ J₂ᵀ``, update of the mean of both batches' losses; without them they are refused.

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

The Jacobian, the Gramian accumulator and the distributed helpers are in
:mod:`mogradient.gramian` (re-exported here under their former import paths).

Under FSDP2 (``fully_shard``) the loss and features paths work with ``params=None`` (the graph's
leaves, which FSDP's hooks watch); parameter mode needs full gradients and is not supported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Literal, cast

import torch

from mogradient.aggregation.dispatch import dispatch
from mogradient.aggregation.gramian import gramian_of
from mogradient.aggregation.inputs import check_losses
from mogradient.aggregation.kinds import (
    AdvantageCombiner,
    Aggregator,
    GramianWeighting,
    JacobianWeighting,
    LossWeighting,
)
from mogradient.aggregation.registry import get_aggregator
from mogradient.gramian.accumulator import (
    GramianAccumulator,
    _global_values,
    _gramian_aggregator,
    feature_weights,
    parameter_weights,
)
from mogradient.gramian.distributed import all_reduce_mean
from mogradient.gramian.jacobians import jacobian
from mogradient.gramian.path import ParameterPath, choose_parameter_path
from mogradient.gramian.recorder import GramianRecorder
from mogradient.gramian.two_batch import check_two_batches, two_batch_backward

#: The losses, or a closure of no arguments that runs the forward and returns them.
Losses = Sequence[torch.Tensor] | torch.Tensor

__all__ = [
    "GramianAccumulator",
    "all_reduce_mean",
    "along",
    "backward",
    "feature_weights",
    "jacobian",
    "parameter_weights",
]


def backward(
    losses: Losses | Callable[[], Losses],
    params: Iterable[torch.Tensor] | None = None,
    *,
    features: torch.Tensor | Sequence[torch.Tensor] | None = None,
    aggregator: str | Aggregator = "mgda",
    retain_graph: bool = False,
    through_backward: bool = False,
    recorder: GramianRecorder | None = None,
    batched: bool = False,
    gramian_precision: Literal["float64", "input"] = "input",
    second_losses: Sequence[torch.Tensor] | torch.Tensor | None = None,
    parameter_path: ParameterPath = "auto",
    model: torch.nn.Module | None = None,
    memory_budget: float | None = None,
    **kwargs: object,
) -> torch.Tensor | None:
    """Fill ``.grad`` of ``params`` with the aggregated direction of ``losses`` (accumulating).

    Args:
        losses: one scalar loss per objective (a sequence of scalars or a 1-D tensor), or a
            function of no arguments that runs the forward and returns them: with ``model=``
            the forward can then be recorded for the layer path.
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
        recorder: a :class:`~mogradient.gramian.recorder.GramianRecorder` that recorded the
            forward of ``losses``: Gramian methods then take the parameters' Gramian from it,
            layer by layer, never holding the k×d Jacobian, and run the one backward of
            Σ wᵢ Lᵢ (as ``through_backward=True``). ``params`` default to its parameters.
        batched: how the Jacobian's k rows are computed (:func:`jacobian`): ``False``
            (default) one backward per objective, ``True`` one vectorised backward.
        gramian_precision: ``"input"`` (default) forms ``JJᵀ`` in the Jacobian's dtype per
            block of 1024 columns summed in float64 (no float64 copy of J; error at most
            ~6e-5·‖gᵢ‖‖gⱼ‖ per entry, typically ~1e-8, :func:`gramian_of`); ``"float64"``
            copies J to float64 chunk by chunk.
        second_losses: for methods that decide from two independent mini-batches
            (``needs_two_batches``: MoDo, SDMGrad), and required by them: the same objectives'
            losses on a second batch. The weights come from ``J₁ J₂ᵀ`` and the update is that
            of ``Σ wᵢ (Lᵢ + L'ᵢ)/2``, the mean of both batches (parameter mode;
            ``through_backward=True`` runs it as one backward).
        parameter_path: Gramian methods at the parameters: ``"loop"`` (the k×d Jacobian),
            ``"layers"`` (the Gramian layer by layer, then one backward of Σ wᵢ Lᵢ; needs
            ``recorder=``, or ``losses`` as a closure with ``model=``) or ``"auto"`` (default):
            the layer path when it can run and the loop's memory would exceed
            ``memory_budget``, else the loop (:func:`~mogradient.gramian.path.
            choose_parameter_path`). With tensors and no recorder only the loop can run.
        model: the module whose forward the ``losses`` closure runs (recorded when the rule
            may take the layer path; ``params`` then default to its trainable parameters).
        memory_budget: bytes the loop's Jacobian may take (default: a quarter of the memory
            free on the parameters' device).
        **kwargs: hyper-parameters for ``get_aggregator`` when ``aggregator`` is a name.

    Returns:
        The float64 loss weights ``[n]`` used, or ``None`` for PAMA, whose combination is
        coordinate-wise, and for Jacobian weightings, whose direction may mix in past
        gradients: neither has a single weight vector.

    Under ``torch.distributed`` every rank gets the update of the mean of the ranks' losses
    (module docstring); the loss and ``features=`` paths rely on the model being wrapped in DDP
    or FSDP to average their final backward. Parameter mode refuses FSDP-sharded parameters.
    """
    agg = get_aggregator(aggregator, **kwargs)
    if recorder is not None and parameter_path == "loop":
        raise ValueError(
            "parameter_path='loop' computes the Jacobian, and recorder= asks for the layer "
            "path: pass one of them"
        )
    owned = False  # whether the recorder is ours, recorded here, and may be discarded
    if params is not None:
        params = list(params)
    if callable(losses):
        if recorder is None and _may_record(agg, model, features, parameter_path):
            assert model is not None
            recorder, owned = GramianRecorder(model, params), True
        if recorder is not None:  # the closure's forward runs under the recorder
            with recorder:
                losses = losses()
        else:
            losses = losses()
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

    check_two_batches(agg, second_losses, features=features, recorder=recorder)
    second_list = None if second_losses is None else _as_list(second_losses)
    if second_list is not None:
        check_losses(torch.stack([loss.detach() for loss in second_list]))
    loss_values = torch.stack([loss.detach() for loss in loss_list])

    def by_losses(agg: LossWeighting) -> torch.Tensor:
        values = _global_values(agg, loss_list, loss_values)
        w = agg.weights(torch.zeros_like(loss_values) if values is None else values)
        _weighted_backward(loss_list, w, params, retain_graph)
        return w

    def by_gramian(agg: GramianWeighting) -> torch.Tensor:
        if second_list is not None:
            _check_unsharded(params)
            return two_batch_backward(
                loss_list,
                second_list,
                params,
                agg,
                retain_graph=retain_graph,
                through_backward=through_backward,
                batched=batched,
            )
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
        path = choose_parameter_path(
            len(loss_list),
            params,
            requested="layers" if recorder is not None and not owned else parameter_path,
            can_record=recorder is not None,
            memory_budget=memory_budget,
        )
        if recorder is not None and path == "loop":
            recorder.discard()
        elif recorder is not None:
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

    def by_jacobian(agg: JacobianWeighting) -> None:
        if features is not None or recorder is not None:
            raise ValueError(
                f"{agg!r} decides from the k×d Jacobian over the parameters and keeps state in "
                "their coordinates across steps; features= and recorder= give no such Jacobian: "
                "call backward without them (parameter mode)"
            )
        _check_unsharded(params)
        jac = all_reduce_mean(
            jacobian(loss_list, params, retain_graph=retain_graph, batched=batched)
        )
        values = _global_values(agg, loss_list, loss_values)
        direction = agg(jac, values)
        if through_backward:
            torch.autograd.backward(
                along(direction, params), inputs=params, retain_graph=retain_graph
            )
        else:
            _accumulate(params, _split(direction, params))
        return None

    return dispatch(
        agg,
        losses=by_losses,
        gramian=by_gramian,
        advantages=by_advantages,
        jacobian=by_jacobian,
    )


def along(direction: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
    """``Σ_p ⟨d_p, p⟩``: a scalar whose gradient with respect to ``params`` is ``direction``
    (``[d]``, split in their order), so that a direction goes through an ordinary backward."""
    parts = _split(direction.detach(), list(params))
    return cast(torch.Tensor, sum((d.to(p.dtype) * p).sum() for d, p in zip(parts, params)))


def _may_record(
    agg: Aggregator,
    model: torch.nn.Module | None,
    features: object,
    parameter_path: str,
) -> bool:
    """Whether ``backward`` records the closure's forward: a Gramian method at the parameters
    with the model known, unless the loop is asked for (``"auto"`` decides after the forward,
    when k is known, and discards the record if it takes the loop)."""
    if parameter_path == "layers" and model is None:
        raise ValueError(
            "parameter_path='layers' records the forward: pass model= (the module the losses' "
            "closure runs) or a GramianRecorder as recorder="
        )
    return (
        isinstance(agg, GramianWeighting)
        and not agg.needs_two_batches
        and model is not None
        and features is None
        and parameter_path != "loop"
    )


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
