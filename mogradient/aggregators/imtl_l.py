"""IMTL-L: the loss-balancing half of Impartial Multi-Task Learning (Liu et al., ICLR 2021)."""

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


@register("imtl-l", "imtll")
class IMTLL(LossWeighting):
    """Σᵢ (e^(sᵢ) Lᵢ − sᵢ) with a learned log-scale sᵢ per objective: each loss is rescaled so
    that the scaled losses stay comparable, and −sᵢ keeps sᵢ from −∞.

    Its gradient in the model is Σ e^(sᵢ) ∇Lᵢ, so the weights are **wᵢ = e^(sᵢ)** (1 at
    ``init=0``: the plain sum). Each call returns the weights for the current s, then takes one
    implicit (backward-Euler) gradient step on s of the same objective, whose s-gradient is
    e^(sᵢ)Lᵢ − 1: s' = s − lr·(e^(s'ᵢ)Lᵢ − 1), solved exactly (Lambert W), so it never
    overshoots whatever ``lr`` and the loss scale. For a constant loss s → −log Lᵢ: each
    weighted loss → 1. It is ``uw``'s objective at s = −s_UW, times 2 (TorchJD notes the same).
    Loss values must be ≥ 0. Cost: one backward of the weighted loss; O(n) per call. See
    ``docs/aggregators/imtl-l.md``.

    Reference: Liu, Li, Kuang, Xue, Chen, Yang, Liao, Zhang, *Towards Impartial Multi-task
    Learning*, ICLR 2021 (IMTL-L, section 3.2).

    Args:
        lr: step size of the log-scales' gradient step, finite and > 0.
        init: the log-scales' starting value (the same for every objective), in [-700, 700].
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
    example_settings = ({"lr": 0.2}, {"init": -1.0})

    def __init__(self, lr: float = 0.01, init: float = 0.0) -> None:
        self.lr = positive_or_hint(
            "lr", lr, "for fixed weights use get_aggregator('linear', preference=...)"
        )
        self.init = checked_init(init, "exp(init)")
        self.log_scales: np.ndarray | None = None

    def _hyperparameters(self) -> dict[str, object]:
        return {"lr": self.lr, "init": self.init}

    def reset(self) -> None:
        self.log_scales = None

    def _weigh(self, losses: np.ndarray) -> np.ndarray:
        n = losses.shape[0]
        check_loss_signs(
            losses,
            "IMTL-L needs non-negative loss values, but objective {i} has loss {loss:g} (its "
            "objective e^s·L − s is then unbounded below); shift that objective by a constant "
            "(add a known lower bound) so it stays >= 0",
            allow_zero=True,
        )
        if self.log_scales is None:
            self.log_scales = np.full(n, self.init)
        else:
            check_objective_count("IMTL-L", self.log_scales.shape[0], "log-scales", n)
        s = self.log_scales
        weights = np.exp(s)
        # s' = s − lr(e^(s')L − 1) is uw's implicit step at −s with step 2·lr.
        self.log_scales = -implicit_step(-s, losses, 2.0 * self.lr)
        return weights
