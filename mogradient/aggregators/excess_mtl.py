"""ExcessMTL: robust multi-task learning with excess risks (He et al., ICML 2024)."""

from __future__ import annotations

import numbers

import numpy as np
import torch

from mogradient.aggregation.checks import positive_number
from mogradient.aggregation.kinds import JacobianWeighting
from mogradient.aggregation.registry import register

#: Added under the square root of the accumulated squares and to the baseline excess risks
#: (the authors' code, LibMTL and TorchJD use the same value).
_EPS = 1e-7


@register("excess-mtl", "excessmtl")
class ExcessMTL(JacobianWeighting):
    """Simplex weights w moved by an exponentiated-gradient step towards the objectives with the
    largest estimated excess risk, ``w ← softmax(log w + η·r)``, the direction ``Σ wᵢ gᵢ``.

    The excess risk of objective i is estimated to second order as ``gᵢᵀ Hᵢ⁻¹ gᵢ`` with the
    diagonal Hessian approximated AdaGrad's way, ``Hᵢ = diag(√(Sᵢ + ε))``, where ``Sᵢ`` sums the
    squares of gᵢ over every call so far (equations 6–7), so ``rᵢ = Σⱼ gᵢⱼ² / √(Sᵢⱼ + ε)``. Each
    estimate is divided by its baseline (section 3.2): the first call's estimates, or with
    ``n_warmup_steps`` the mean estimate over that many warm-up calls, which return the mean
    gradient. Without warm-up the first call's estimates enter the step undivided, as in the
    authors' code. The weights start uniform (the paper's 1/n) and the step (equation 9) is taken
    in log space, so a huge estimate saturates the weights instead of overflowing.

    State: S (the Jacobian's size), the weights, the baselines; in the Jacobian's dtype and on
    its device. Cost: O(nd) per call beyond the Jacobian. See ``docs/aggregators/excess-mtl.md``.

    Reference: He et al., *Robust Multi-Task Learning with Excess Risks*, ICML
    2024 (PMLR 235).

    Args:
        robust_step_size: η > 0, the step of the exponentiated-gradient update of the weights.
        n_warmup_steps: calls (≥ 0) that return the mean gradient while the baselines are
            collected; the paper recommends three epochs' worth.
    """

    properties = frozenset(
        {"permutation_invariant", "deterministic", "reset_restores", "non_differentiable"}
    )
    example_settings = ({"n_warmup_steps": 2}, {"robust_step_size": 0.01})

    def __init__(self, robust_step_size: float = 1.0, n_warmup_steps: int = 0) -> None:
        self.robust_step_size = positive_number(
            "robust_step_size",
            robust_step_size,
            "robust_step_size must be > 0 (0 would freeze the weights at uniform: use 'mean')",
        )
        if (
            isinstance(n_warmup_steps, bool)
            or not isinstance(n_warmup_steps, numbers.Integral)
            or n_warmup_steps < 0
        ):
            raise ValueError(f"n_warmup_steps must be an int >= 0, got {n_warmup_steps!r}")
        self.n_warmup_steps: int = int(n_warmup_steps)
        self.reset()

    def _hyperparameters(self) -> dict[str, object]:
        return {"robust_step_size": self.robust_step_size, "n_warmup_steps": self.n_warmup_steps}

    def reset(self) -> None:
        #: the weights of the last call (``None`` before the first)
        self.task_weights: torch.Tensor | None = None
        self._squares: torch.Tensor | None = None
        self._warmup_sum: torch.Tensor | None = None
        self._baseline: torch.Tensor | None = None
        self._calls = 0

    def _direction(self, jacobian: torch.Tensor, losses: np.ndarray | None) -> torch.Tensor:
        self._check_state(self._squares, jacobian)
        n = jacobian.shape[0]
        if self._squares is None or self.task_weights is None:
            self._squares = torch.zeros_like(jacobian)
            self.task_weights = jacobian.new_full((n,), 1.0 / n)
        squares = jacobian.square()
        self._squares = self._squares.to(jacobian) + squares
        risks = (squares / torch.sqrt(self._squares + _EPS)).sum(dim=1)
        self._calls += 1
        weights = self.task_weights.to(jacobian)
        if self._calls <= self.n_warmup_steps:
            self._warmup_sum = risks if self._warmup_sum is None else self._warmup_sum + risks
            return weights @ jacobian
        if self._baseline is None:
            if self.n_warmup_steps:
                assert self._warmup_sum is not None
                self._baseline = self._warmup_sum / self.n_warmup_steps
                risks = risks / (self._baseline + _EPS)
            else:
                self._baseline = risks
        else:
            risks = risks / (self._baseline.to(jacobian) + _EPS)
        self.task_weights = torch.softmax(torch.log(weights) + self.robust_step_size * risks, dim=0)
        return self.task_weights @ jacobian
