"""GradNorm: weights that equalise the objectives' weighted gradient norms (Chen et al. 2018)."""

from __future__ import annotations

import math

import numpy as np

from mogradient.aggregation.checks import (
    check_loss_signs,
    check_objective_count,
    positive_or_hint,
)
from mogradient.aggregation.kinds import GramianWeighting
from mogradient.aggregation.registry import register


@register("gradnorm", "grad-norm")
class GradNorm(GramianWeighting):
    """Learned weights w (Σw = n) that pull each weighted gradient norm wᵢ‖gᵢ‖ towards the mean
    Ḡ times rᵢ^α, where rᵢ is objective i's relative inverse training rate
    (Lᵢ/Lᵢ⁽⁰⁾ over its mean): objectives that fall slower get larger gradients.

    Each call returns the current weights (1 at the first call), then takes one gradient step on
    GradNorm's loss Σᵢ |wᵢ‖gᵢ‖ − Ḡ·rᵢ^α| (the target held constant, as in the paper):
    wᵢ ← wᵢ − lr·sign(wᵢ‖gᵢ‖ − Ḡrᵢ^α)·‖gᵢ‖/ν, with ν the mean of the norms ‖gⱼ‖ (a gap within
    the rounding of the means, 4n·u of its terms, counts as 0), then clips at 0 and
    renormalises to Σw = n. Dividing by ν makes ``lr`` unitless and the method
    scale-equivariant (the paper steps in the units of the norms, its rate tuned per network);
    the norms are √Gᵢᵢ. Lᵢ⁽⁰⁾ are the loss values of the first call; losses must be > 0.
    Cost: the Gramian's diagonal (the n backwards that form it) and O(n) per call. See
    ``docs/aggregators/gradnorm.md``.

    Reference: Chen, Badrinarayanan, Lee, Rabinovich, *GradNorm: Gradient Normalization for
    Adaptive Loss Balancing in Deep Multitask Networks*, ICML 2018 (Algorithm 1).

    Args:
        alpha: the restoring force α ≥ 0 (0: equal weighted norms; the paper uses 0.12–1.5).
        lr: the step on the weights, finite and > 0 (relative to the mean gradient norm).
    """

    uses_loss_values = True
    properties = frozenset(
        {
            "non_negative_weights",
            "permutation_invariant",
            "scale_equivariant",
            "deterministic",
            "reset_restores",
            "non_differentiable",
        }
    )
    needs_positive_losses = True
    example_settings = ({"alpha": 0.0}, {"lr": 0.5, "alpha": 0.5})

    def __init__(self, alpha: float = 1.5, lr: float = 0.025) -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            raise TypeError(f"alpha must be a number >= 0, got {alpha!r}")
        if not math.isfinite(alpha) or alpha < 0:
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
        self.alpha = float(alpha)
        self.lr = positive_or_hint("lr", lr, "for fixed weights use get_aggregator('mean')")
        self._weights: np.ndarray | None = None
        self._initial: np.ndarray | None = None

    def _hyperparameters(self) -> dict[str, object]:
        return {"alpha": self.alpha, "lr": self.lr}

    def reset(self) -> None:
        self._weights = None
        self._initial = None

    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        raise ValueError(f"{self!r} decides from the Gramian and the loss values; pass losses=")

    def _solve_with_losses(self, gramian: np.ndarray, losses: np.ndarray) -> np.ndarray:
        n = losses.shape[0]
        check_loss_signs(
            losses,
            "GradNorm needs positive loss values (it divides by the first ones), but objective "
            "{i} has loss {loss:g}; shift that objective by a constant so it stays > 0",
        )
        if self._weights is None or self._initial is None:
            self._weights, self._initial = np.ones(n), losses.copy()
        else:
            check_objective_count("GradNorm", self._weights.shape[0], "weights", n)
        w = self._weights
        norms = np.sqrt(np.maximum(np.diagonal(gramian), 0.0))
        scale = float(norms.mean())
        if scale > 0:
            weighted = w * norms
            ratio = losses / self._initial
            target = weighted.mean() * (ratio / ratio.mean()) ** self.alpha
            gap = weighted - target
            # a gap within the rounding of the means (4n·u of the terms) counts as none
            gap[np.abs(gap) <= 4 * n * 2.0**-53 * (weighted + target)] = 0.0
            step = np.maximum(w - self.lr * np.sign(gap) * norms / scale, 0.0)
            total = float(step.sum())
            self._weights = step * (n / total) if total > 0 else np.ones(n)
        return w
