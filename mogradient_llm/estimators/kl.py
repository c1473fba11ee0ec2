"""The per-token KL estimate and the KL-penalty coefficient controllers (fixed, and Ziegler
et al.'s adaptive one)."""

from __future__ import annotations

from typing import Protocol

import torch


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimate of KL(π ‖ π_ref) on tokens sampled from π (Schulman's names, as TRL).

    ``k1``: ``log π − log π_ref``, unbiased but negative wherever π_ref is likelier (a bonus in
    the reward). ``k3``: ``(r − 1) − log r`` with ``r = π_ref / π``: unbiased, never negative.
    """
    log_ratio = ref_logprobs - logprobs
    if estimator == "k1":
        return -log_ratio
    if estimator == "k3":
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"kl_estimator must be 'k1' or 'k3', got {estimator!r}")


class KLController(Protocol):
    """What the trainer needs of a KL controller: the coefficient and its update."""

    value: float

    def update(self, current_kl: float, n_steps: int) -> None:
        """Adapt ``value`` after ``n_steps`` samples whose KL averaged ``current_kl``."""


class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        """Nothing to adapt."""


class AdaptiveKLController:
    """Moves the KL coefficient so that the observed KL approaches ``target`` over ``horizon``.

    The trainer passes the mean KL and the sample count of the global batch (all processes),
    so every rank moves the coefficient identically.
    """

    def __init__(self, kl_coef: float, target: float, horizon: float):
        self.value, self.target, self.horizon = kl_coef, target, horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        """Proportional update after ``n_steps`` samples whose KL averaged ``current_kl``."""
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
