"""A check shared by the penalised scalarisations (``pbi``, ``cosmos``; private)."""

from __future__ import annotations

import math


def non_negative(name: str, value: float) -> float:
    """``value`` as a float if it is a finite number ≥ 0 (0 turns the penalty off)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number >= 0, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0 (0: no penalty), got {value!r}")
    return float(value)
