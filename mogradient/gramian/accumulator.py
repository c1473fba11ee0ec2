"""The Gramian of the mean loss over micro-batches and ranks (:class:`GramianAccumulator`), and
the weights a Gramian method decides from it at the parameters or the features level."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from mogradient.aggregation.dispatch import dispatch
from mogradient.aggregation.gramian import gramian_of
from mogradient.aggregation.kinds import (
    Aggregator,
    GramianWeighting,
    JacobianWeighting,
    LossWeighting,
)
from mogradient.aggregation.registry import get_aggregator
from mogradient.gramian.distributed import all_reduce_mean, world_size
from mogradient.gramian.jacobians import jacobian


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
        #: what the parameters-level total is to be multiplied by (:meth:`add_jacobian`)
        self._scale = 1.0

    def add(
        self,
        losses: Sequence[torch.Tensor],
        inputs: Sequence[torch.Tensor],
        retain_graph: bool = False,
    ) -> None:
        """Fold in one micro-batch: its losses' Jacobian over ``inputs`` (local rank)."""
        jac = jacobian(list(losses), list(inputs), retain_graph=retain_graph, batched=self.batched)
        part = gramian_of(jac, precision=self.precision) if self.level == "features" else jac
        if self._scale != 1.0:
            part = part / self._scale
        self._total = part if self._total is None else self._total + part

    def add_gramian(self, gramian: torch.Tensor) -> None:
        """Fold in one micro-batch's local k×k Gramian, formed by the caller (features level
        only: there the Gramian is block-additive over micro-batches and ranks)."""
        if self.level != "features":
            raise ValueError(
                "a micro-batch's Gramian adds up at the features level only; at the parameters "
                "level add its losses (the Jacobians are averaged before the product)"
            )
        part = gramian.to(torch.float64) if self.precision == "float64" else gramian
        self._total = part if self._total is None else self._total + part

    def add_jacobian(self, jacobian: torch.Tensor, scale: float = 1.0) -> None:
        """Fold in one micro-batch's local k×d Jacobian ``scale · jacobian``, formed by the
        caller (parameters level only: there the Jacobians are averaged before the product).

        The first micro-batch's ``scale`` stays outside the total (later ones join it as
        ``scale / first``), and the Gramian is multiplied by its square in float64: a caller
        that normalised its rows by a common factor before rounding them to float32 gets the
        Gramian of those same float32 rows, whatever that factor."""
        if self.level != "parameters":
            raise ValueError(
                "a micro-batch's Jacobian over shared parameters is kept at the parameters level "
                "only; at the features level add its losses or its Gramian"
            )
        if self._total is None:
            self._scale, self._total = float(scale), jacobian
        else:
            ratio = scale / self._scale
            self._total = self._total + (jacobian if ratio == 1.0 else jacobian * ratio)

    def _mean(self) -> tuple[torch.Tensor, float]:
        """The parameters-level total averaged over the micro-batches and ranks, and its scale
        (under ``torch.distributed`` the ranks' mean scale, each rank's total rescaled to it)."""
        if self._total is None:
            raise RuntimeError("no micro-batch was added")
        total, scale = self._total, self._scale
        if world_size() > 1:
            common = all_reduce_mean(
                torch.tensor([scale], dtype=torch.float64, device=total.device)
            )
            if float(common) != scale:
                total, scale = total * (scale / float(common)), float(common)
        return all_reduce_mean(total) / self.n_micro_batches, scale

    def jacobian(self) -> torch.Tensor:
        """The global k×d Jacobian of the mean loss, identical on every rank (parameters level
        only: at the features level each micro-batch and rank has its own coordinates)."""
        if self.level != "parameters":
            raise ValueError(
                "the Jacobian is kept at the parameters level only; build the accumulator with "
                "level='parameters'"
            )
        mean, scale = self._mean()
        return mean if scale == 1.0 else mean * scale

    def gramian(self) -> torch.Tensor:
        """The global k×k Gramian (float64), identical on every rank."""
        if self.level == "features":
            if self._total is None:
                raise RuntimeError("no micro-batch was added")
            mean = all_reduce_mean(self._total) / self.n_micro_batches
            return mean / (self.n_micro_batches * world_size())
        mean, scale = self._mean()
        gramian = gramian_of(mean, precision=self.precision)
        return gramian if scale == 1.0 else gramian * scale**2


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
    agg: GramianWeighting | LossWeighting | JacobianWeighting,
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
        get_aggregator(aggregator),
        gramian=lambda agg: agg,
        losses=refuse,
        advantages=refuse,
        jacobian=refuse,
    )
