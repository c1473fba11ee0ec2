"""MoCo: multi-objective gradient correction (Fernando et al., ICLR 2023)."""

from __future__ import annotations

import numpy as np
import torch

from mogradient.aggregation.kinds import JacobianWeighting
from mogradient.aggregation.registry import register
from mogradient.aggregators._tracking import (
    check_non_negative,
    check_unit_rate,
    decayed,
    track,
)


def project_to_simplex(v: np.ndarray) -> np.ndarray:
    """The Euclidean projection of ``v`` onto the probability simplex (sort-based, Held et al.
    1974), after shifting ``v`` by its largest entry, which leaves the projection unchanged and
    keeps it exact when the entries are huge."""
    v = v - v.max()
    u = np.sort(v)[::-1]
    cumulative = np.cumsum(u) - 1.0
    k = np.arange(1, v.shape[0] + 1)
    last = int(np.flatnonzero(u - cumulative / k > 0)[-1])
    return np.maximum(v - cumulative[last] / (last + 1), 0.0)


@register("moco")
class MoCo(JacobianWeighting):
    """Tracks each objective's gradient with an EMA ``yᵢ`` and moves simplex weights λ by a
    projected gradient step on ``½‖Σ λᵢ yᵢ‖² + ½ρ‖λ‖²``; the direction is ``Σ λᵢ yᵢ``.

    Each call t (Algorithm 1): ``yᵢ ← yᵢ − β_t (yᵢ − gᵢ)`` (from y = 0), then
    ``λ ← Π_Δ(λ − γ_t (Y Yᵀ + ρI) λ)`` (from λ uniform) with Y the tracked gradients as rows,
    Π_Δ the Euclidean projection onto the simplex, β_t = ``beta`` / t^``beta_decay`` and
    γ_t = ``gamma`` / t^``gamma_decay``. The tracking EMA removes the bias that stochastic
    gradients put into MGDA-like weights; the λ step is one projected-gradient step of MGDA's
    min-norm problem (regularised by ρ) instead of a full solve. The direction mixes in the
    gradients of past calls, so it is not ``Σ wᵢ gᵢ`` of this call's gradients.

    The paper's optional projection of yᵢ onto a ball is left out (as in LibMTL), and the
    gradients are not rescaled by the losses (LibMTL's ``MoCo`` does; the paper does not). The
    λ step depends on the gradients' scale (γ multiplies Y Yᵀ): scale γ with it.

    State: y (the Jacobian's size, its dtype and device), λ and the call count. Cost: O(n²d)
    per call beyond the Jacobian (the Gramian of y). See ``docs/aggregators/moco.md``.

    Reference: Fernando, Shen, Liu, Chaudhury, Murugesan, Chen, *Mitigating Gradient Bias in
    Multi-objective Learning: A Provably Convergent Approach*, ICLR 2023.

    Args:
        beta: the tracking rate, in [0, 1] (1: y is this call's gradients).
        beta_decay: ≥ 0, β_t = beta / t^beta_decay.
        gamma: ≥ 0, the step of λ (0 keeps λ uniform: the mean of the tracked gradients).
        gamma_decay: ≥ 0, γ_t = gamma / t^gamma_decay.
        rho: ρ ≥ 0, the regularisation of λ.
    """

    properties = frozenset(
        {"permutation_invariant", "deterministic", "reset_restores", "non_differentiable"}
    )
    example_settings = (
        {"beta": 1.0, "beta_decay": 0.0},
        {"gamma": 10.0, "gamma_decay": 0.0, "rho": 0.1},
    )

    def __init__(
        self,
        beta: float = 0.5,
        beta_decay: float = 0.5,
        gamma: float = 0.1,
        gamma_decay: float = 0.5,
        rho: float = 0.0,
    ) -> None:
        self.beta = check_unit_rate("beta", beta, "the tracking rate of the gradients")
        self.beta_decay = check_non_negative("beta_decay", beta_decay, "beta / t^beta_decay")
        self.gamma = check_non_negative("gamma", gamma, "the step of the weights")
        self.gamma_decay = check_non_negative("gamma_decay", gamma_decay, "gamma / t^gamma_decay")
        self.rho = check_non_negative("rho", rho, "the regularisation of the weights")
        self.reset()

    def _hyperparameters(self) -> dict[str, object]:
        return {
            "beta": self.beta,
            "beta_decay": self.beta_decay,
            "gamma": self.gamma,
            "gamma_decay": self.gamma_decay,
            "rho": self.rho,
        }

    def reset(self) -> None:
        self._tracked: torch.Tensor | None = None
        #: the weights λ of the last call (``None`` before the first)
        self.task_weights: np.ndarray | None = None
        self._calls = 0

    def _direction(self, jacobian: torch.Tensor, losses: np.ndarray | None) -> torch.Tensor:
        self._check_state(self._tracked, jacobian)
        n = jacobian.shape[0]
        self._calls += 1
        held = None if self._tracked is None else self._tracked.to(jacobian)
        self._tracked = track(held, jacobian, decayed(self.beta, self.beta_decay, self._calls))
        weights = np.full(n, 1.0 / n) if self.task_weights is None else self.task_weights
        tracked = self._tracked.double()
        gramian = (tracked @ tracked.T).cpu().numpy()
        step = decayed(self.gamma, self.gamma_decay, self._calls)
        self.task_weights = project_to_simplex(
            weights - step * (gramian @ weights + self.rho * weights)
        )
        return torch.from_numpy(self.task_weights).to(jacobian) @ self._tracked
