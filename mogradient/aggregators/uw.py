"""UW: uncertainty weighting with learned log-variances (Kendall et al., CVPR 2018)."""

from __future__ import annotations

import numpy as np

from mogradient.aggregation.checks import (
    check_loss_signs,
    check_objective_count,
    positive_or_hint,
)
from mogradient.aggregation.kinds import LossWeighting
from mogradient.aggregation.registry import register
from mogradient.aggregators._log_scale import checked_init, implicit_step


@register("uw", "uncertainty")
class UW(LossWeighting):
    """Uncertainty weighting: Σᵢ ½e^(−sᵢ) Lᵢ + ½sᵢ with a learned log-variance sᵢ = log σᵢ² per
    objective, i.e. Kendall et al.'s Σ Lᵢ/(2σᵢ²) + log σᵢ.

    Its gradient in the model is Σ ½e^(−sᵢ) ∇Lᵢ, so the weights are **wᵢ = ½e^(−sᵢ)** (not
    normalised; ½ each at ``init=0``). The log-variances are state inside the object: each call
    returns the weights for the current s, then takes one gradient step on s of the same
    objective, whose s-gradient is ½(1 − Lᵢe^(−sᵢ)). The step is the implicit (backward-Euler)
    one, s' = s − lr·½(1 − Lᵢe^(−s'ᵢ)), solved exactly with the Lambert W function: it agrees
    with the explicit step to first order in ``lr`` but never overshoots, whatever ``lr`` and
    the loss scale (the explicit step needs lr < 4 even near its fixed point, and from s = 0 a
    loss L throws s to about lr·L/2, far past log L, from where it returns by lr/2 per call).
    For a constant loss s → log Lᵢ, so the weight tends to 1/(2Lᵢ): each weighted loss → ½.
    Loss values must be ≥ 0 (for a negative loss the objective is unbounded below in s).

    Cost: one backward of the weighted loss; O(n) per call. See ``docs/aggregators/uw.md``.

    Reference: Kendall, Gal, Cipolla, *Multi-Task Learning Using Uncertainty to Weigh Losses for
    Scene Geometry and Semantics*, CVPR 2018.

    Args:
        lr: step size of the log-variances' gradient step, finite and > 0.
        init: the log-variances' starting value sᵢ (the same for every objective), in
            [-700, 700]; 0 means σ² = 1 and weights ½.
    """

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
    example_settings = ({"lr": 0.2}, {"init": 1.0})

    def __init__(self, lr: float = 0.01, init: float = 0.0) -> None:
        self.lr = positive_or_hint(
            "lr", lr, "for fixed weights use get_aggregator('linear', preference=...)"
        )
        self.init = checked_init(init, "exp(-init)")
        self.log_vars: np.ndarray | None = None

    def _hyperparameters(self) -> dict[str, object]:
        return {"lr": self.lr, "init": self.init}

    def reset(self) -> None:
        self.log_vars = None

    def _weigh(self, losses: np.ndarray) -> np.ndarray:
        n = losses.shape[0]
        check_loss_signs(
            losses,
            "UW needs non-negative loss values, but objective {i} has loss {loss:g} (its "
            "objective ½e^(-s)L + ½s is then unbounded below); shift that objective by a "
            "constant (add a known lower bound) so it stays >= 0",
            allow_zero=True,
        )
        if self.log_vars is None:
            self.log_vars = np.full(n, self.init)
        else:
            check_objective_count("UW", self.log_vars.shape[0], "log-variances", n)
        s = self.log_vars
        weights = 0.5 * np.exp(-s)
        self.log_vars = implicit_step(s, losses, self.lr)
        return weights
