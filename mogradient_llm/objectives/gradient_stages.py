"""The gradient-level stages of :class:`~mogradient_llm.objectives.loss.MultiObjectiveLoss`:
deciding weights from a Gramian or a direction from a Jacobian, and forming what they decide
from (a float64 Gramian accumulator at the loss's level). Engines that accumulate over
micro-batches or record layer by layer (our updater) call these stages themselves."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from mogradient import (
    Aggregator,
    GramianAccumulator,
    GramianWeighting,
    JacobianWeighting,
    along,
    gramian_of,
)
from mogradient_llm.objectives.diagnostics import gradient_diagnostics

Level = Literal["features", "parameters"]
Stats = dict[str, float]


class GradientStages:
    """Deciding from gradients, for a loss of ``names``' objectives (``aggregated``: those the
    aggregator combines) at ``level``, weights rescaled to Σw = 1 with ``normalize_weights``."""

    aggregator: Aggregator
    names: tuple[str, ...]
    aggregated: tuple[str, ...]
    level: Level
    normalize_weights: bool

    def _weight_stats(self, weights: torch.Tensor) -> Stats:
        return {f"agg/weight/{n}": w for n, w in zip(self.aggregated, weights.tolist())}

    def _normalized(self, weights: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        """``weights / Σ weights`` with ``normalize_weights`` (and a positive sum)."""
        total = float(weights.sum())
        if self.normalize_weights and total > 0:
            weights = weights / total
        return weights, {"agg/weight_sum": total}

    def _loss_values(self, losses: torch.Tensor | None) -> torch.Tensor | None:
        """The loss values for methods that read them (float64); ``None`` for the others,
        which would refuse an overflowing mean they never use."""
        if not getattr(self.aggregator, "uses_loss_values", False):
            return None
        if losses is None:
            raise ValueError(f"{self.aggregator!r} reads the loss values: pass losses")
        return losses.to(torch.float64)

    def decide(
        self, gramian: torch.Tensor, losses: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, Stats]:
        """Gramian weightings: the weights for a global ``gramian`` (k×k, the same on every
        rank) and, for methods that read them, the objectives' loss values; the stats include
        every pair's gradient cosine and the conflict rate."""
        if not isinstance(self.aggregator, GramianWeighting):
            raise TypeError("only Gramian weightings decide weights from a Gramian")
        values = self._loss_values(losses)
        with torch.no_grad():
            raw = self.aggregator.weights(gramian, values)
        weights, stats = self._normalized(raw)
        stats.update(self._weight_stats(weights))
        if len(self.names) > 1:
            stats.update(gradient_diagnostics(gramian, self.names))
        return weights, stats

    def decide_direction(
        self, jacobian: torch.Tensor, losses: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, Stats]:
        """Jacobian weightings: the direction ``[d]`` for a global ``jacobian`` (k×d, the same
        on every rank; advances the method's state) and, for methods that read them, the
        objectives' loss values; the stats include every pair's gradient cosine."""
        if not isinstance(self.aggregator, JacobianWeighting):
            raise TypeError("only Jacobian weightings decide a direction from the Jacobian")
        direction = self.aggregator(jacobian.detach(), self._loss_values(losses))
        stats: Stats = {"agg/direction_norm": float(direction.double().norm())}
        if len(self.names) > 1:
            stats.update(gradient_diagnostics(gramian_of(jacobian.detach()), self.names))
        return direction, stats

    @staticmethod
    def along(direction: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
        """``Σ_p ⟨d_p, p⟩``: the scalar whose gradient over ``params`` is ``direction``."""
        return along(direction, params)

    @staticmethod
    def reduce(losses: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        """``Σ wᵢ Lᵢ`` with the decided weights; the single combined loss otherwise."""
        if weights is None:
            if len(losses) != 1:
                raise ValueError(f"{len(losses)} policy losses and no weights to combine them")
            return losses[0]
        return weights.to(losses) @ losses

    def accumulator(self, n_micro_batches: int = 1) -> GramianAccumulator:
        """The Gramian accumulator of this loss's level over ``n_micro_batches``, with products
        in float64 (``gramian_of(precision="float64")``): each entry within
        ``γ_d ‖gᵢ‖‖gⱼ‖``, ``γ_d = d·u/(1 − d·u)``, ``u = 2⁻⁵³``, of the exact Gramian of the
        gradients (``d`` columns summed), where float32 blocks of 1024 round at
        ``1024 · 2⁻²⁴ ≈ 6e-5`` — the weights then depend on the gradients alone, not on the
        order the engine summed them in. The float64 copy is taken one chunk of 2²⁰ columns at a
        time: about 3 ms for k = 2 and 853k parameters on one CPU core (0.5 ms in float32
        blocks), under 1 % of that policy's parameters-level step (``docs/trl.md``)."""
        return GramianAccumulator(self.level, n_micro_batches, precision="float64")

    def gramian(
        self, losses: torch.Tensor, inputs: torch.Tensor | Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """The k×k float64 Gramian of the ``losses``' gradients with respect to ``inputs`` (the
        hidden state at the features level, the trainable parameters at the parameters level),
        averaged over the ranks of ``torch.distributed`` (:meth:`accumulator`); keeps the graph
        for the backward."""
        accumulator = self.accumulator()
        tensors = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
        accumulator.add(losses.unbind(), tensors, retain_graph=True)
        return accumulator.gramian()

    def logprob_gramian(self, gramian: torch.Tensor) -> torch.Tensor:
        """The global k×k float64 features Gramian from this rank's factorised one
        (:func:`~mogradient_llm.objectives.logprob_gramian.token_gramian`), averaged over the
        ranks as :meth:`gramian` averages the hidden-state gradients' Gramian."""
        if self.level != "features":
            raise ValueError(
                "the factorised Gramian is that of the hidden-state gradients: it needs "
                f"level='features', this loss has level={self.level!r}"
            )
        accumulator = self.accumulator()
        accumulator.add_gramian(gramian)
        return accumulator.gramian()

    def jacobian_gramian(self, jacobian: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """The global k×k float64 Gramian from this rank's k×d parameters Jacobian
        ``scale · jacobian`` (factorised through the LM head,
        :mod:`~mogradient_llm.objectives.logprob_jacobian`), averaged over the ranks and
        multiplied as :meth:`gramian` does."""
        if self.level != "parameters":
            raise ValueError(
                "a Jacobian over the parameters needs level='parameters', this loss has "
                f"level={self.level!r}"
            )
        accumulator = self.accumulator()
        accumulator.add_jacobian(jacobian, scale)
        return accumulator.gramian()
