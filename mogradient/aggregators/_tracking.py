"""What the methods that track each objective's gradient share (DB-MTL, MoCo): the checks of
their rates, the decaying step ``rate / t^decay`` and one step of the exponential moving
average of the Jacobian's rows, started from zero as in LibMTL."""

from __future__ import annotations

import math
import numbers

import torch


def check_unit_rate(name: str, value: float, meaning: str) -> float:
    """``value`` as a float if it is a number in [0, 1]; ``ValueError`` naming ``meaning``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or not 0.0 <= value <= 1.0
    ):
        raise ValueError(f"{name} must be a number in [0, 1] ({meaning}), got {value!r}")
    return float(value)


def check_non_negative(name: str, value: float, meaning: str) -> float:
    """``value`` as a float if it is a finite number ≥ 0; ``ValueError`` naming ``meaning``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{name} must be a finite number >= 0 ({meaning}), got {value!r}")
    return float(value)


def decayed(rate: float, decay: float, step: int) -> float:
    """``rate / step^decay`` at the 1-based ``step`` (``decay = 0``: constant)."""
    return rate / step**decay if decay else rate


def track(held: torch.Tensor | None, gradients: torch.Tensor, new_share: float) -> torch.Tensor:
    """One EMA step ``held + new_share·(gradients − held)`` (``held = None``: zeros)."""
    if held is None:
        return gradients * new_share
    return held + new_share * (gradients - held)
