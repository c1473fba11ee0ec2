"""FAMO: fast adaptive multitask optimisation (Liu et al., NeurIPS 2023)."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from mogradient.aggregation.checks import check_loss_signs, check_objective_count
from mogradient.aggregation.kinds import LossWeighting
from mogradient.aggregation.registry import register

_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8  # torch.optim.Adam's defaults, as in the authors' code


@register("famo")
class FAMO(LossWeighting):
    """Weights softmax(ξ − log L) that make every loss fall at about the same relative rate, the
    logits ξ learned from how much each log loss fell between calls; loss values only.

    FAMO's update is c·Σᵢ (zᵢ/Lᵢ)∇Lᵢ, the gradient of c·Σ zᵢ log Lᵢ, with z = softmax(ξ) and
    c = (Σ zⱼ/Lⱼ)⁻¹ held fixed; so the weights are **wᵢ = c·zᵢ/Lᵢ = softmax(ξ − log L)ᵢ**, on the
    simplex (computed in that log form, so losses from 1e-300 to 1e300 are fine). The logits ξ
    (0 at the start) are state. The paper updates them after each model step from the decrease
    of the log losses over that step, δᵢ = log Lᵢ(θₜ) − log Lᵢ(θₜ₊₁) on the same batch:
    ξ ← ξ − β(J_z(ξ)ᵀδ + γξ), J_z the softmax Jacobian, so an objective that decreased less than
    the z-weighted average gains weight.

    Here every call plays both parts: it first updates ξ with δ = log L(previous call) −
    log L(this call), then returns the weights for this call's losses with the new ξ. The
    losses of call t thus serve as the "after" losses of step t−1: no second forward pass, at
    the price of batch-to-batch loss noise entering δ. With the same batch at every step (full
    batch) this is exactly the paper's algorithm. The step on ξ is Adam's (β₁ = 0.9, β₂ =
    0.999, ε = 1e-8, ``weight_decay`` added to the gradient), as in the authors' code; set
    ``optimizer="sgd"`` for the plain step the paper writes. Loss values must be positive (FAMO
    takes their logarithm).

    Cost: one backward of the weighted loss; O(n) per call; state: ξ, Adam's two moments and
    the previous call's losses. See ``docs/aggregators/famo.md``.

    Reference: Liu, Feng, Stone, Liu, *FAMO: Fast Adaptive Multitask Optimization*, NeurIPS 2023
    (arXiv:2306.03792).

    Args:
        lr: step size β of the logits (the paper's ``w_lr``), finite and ≥ 0 (0 freezes ξ = 0:
            then the weights are (1/Lᵢ)/Σ(1/Lⱼ)).
        weight_decay: γ ≥ 0, the decay of the logits towards 0 (LibMTL's default 1e-3; the
            authors' code uses 1e-5 to 1e-2).
        optimizer: ``"adam"`` (the authors' code) or ``"sgd"`` (the plain step the paper
            writes).
    """

    properties = frozenset(
        {
            "simplex_weights",
            "non_negative_weights",
            "permutation_invariant",
            "scale_equivariant",
            "deterministic",
            "reset_restores",
            "non_differentiable",
        }
    )
    needs_positive_losses = True
    example_settings = ({"optimizer": "sgd"}, {"lr": 0.2, "weight_decay": 0.0})

    def __init__(
        self,
        lr: float = 0.025,
        weight_decay: float = 1e-3,
        optimizer: Literal["adam", "sgd"] = "adam",
    ) -> None:
        for name, value in (("lr", lr), ("weight_decay", weight_decay)):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.optimizer = optimizer
        self.reset()

    def _hyperparameters(self) -> dict[str, object]:
        return {"lr": self.lr, "weight_decay": self.weight_decay, "optimizer": self.optimizer}

    def reset(self) -> None:
        self.logits: np.ndarray | None = None
        self._previous_log_losses: np.ndarray | None = None
        self._m: np.ndarray | None = None
        self._v: np.ndarray | None = None
        self._steps = 0

    def _weigh(self, losses: np.ndarray) -> np.ndarray:
        n = losses.shape[0]
        check_loss_signs(
            losses,
            "FAMO needs positive loss values (it takes their logarithm), but objective {i} has "
            "loss {loss:g}; shift that objective by a constant (subtract a known lower bound, "
            "add a small margin) so it stays > 0",
        )
        if self.logits is None:
            self.logits = np.zeros(n)
        else:
            check_objective_count("FAMO", self.logits.shape[0], "logits", n)
        log_l = np.log(losses)
        if self._previous_log_losses is not None:
            self._update_logits(self._previous_log_losses - log_l)
        self._previous_log_losses = log_l
        y = self.logits - log_l
        e = np.exp(y - y.max())
        return e / e.sum()

    def _update_logits(self, delta: np.ndarray) -> None:
        xi = self.logits
        assert xi is not None
        e = np.exp(xi - xi.max())
        z = e / e.sum()
        grad = z * (delta - z @ delta) + self.weight_decay * xi  # J_z(ξ)ᵀδ + γξ
        if self.optimizer == "sgd":
            self.logits = xi - self.lr * grad
            return
        self._steps += 1
        if self._m is None or self._v is None:
            self._m, self._v = np.zeros_like(xi), np.zeros_like(xi)
        self._m = _BETA1 * self._m + (1 - _BETA1) * grad
        self._v = _BETA2 * self._v + (1 - _BETA2) * grad * grad
        m_hat = self._m / (1 - _BETA1**self._steps)
        v_hat = self._v / (1 - _BETA2**self._steps)
        self.logits = xi - self.lr * m_hat / (np.sqrt(v_hat) + _EPS)
