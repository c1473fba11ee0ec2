"""Argument and input checks shared by several aggregators (private: the registry skips it)."""

from __future__ import annotations

import math

import numpy as np


def positive_number(name: str, value: float, zero_hint: str, *, also: str = "") -> float:
    """``value`` as a float if it is a finite number > 0.

    A non-number raises ``TypeError``; 0 raises ``ValueError(zero_hint)`` (what 0 would mean and
    what to pass instead); anything else not finite and > 0 raises ``ValueError``. ``also``
    completes "must be a number > 0" in the messages (e.g. ``" or None"``).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number > 0{also}, got {value!r}")
    if value == 0:
        raise ValueError(zero_hint)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number > 0{also}, got {value!r}")
    return float(value)


def positive_or_hint(name: str, value: float, hint: str) -> float:
    """``value`` as a float if it is a finite number > 0; ``ValueError`` otherwise, with
    ``hint`` (what to use instead) appended when it is a finite number ≤ 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}; {hint}")
    return float(value)


def check_loss_signs(losses: np.ndarray, message: str, *, allow_zero: bool = False) -> None:
    """Raise ``ValueError(message)`` for the first loss that is ≤ 0 (< 0 with ``allow_zero``).

    ``message`` is formatted with ``i`` (the objective) and ``loss`` (its value, a float).
    """
    bad = np.flatnonzero(losses < 0 if allow_zero else losses <= 0)
    if bad.size:
        i = int(bad[0])
        raise ValueError(message.format(i=i, loss=float(losses[i])))


def check_objective_count(owner: str, held: int, what: str, n: int) -> None:
    """Raise if state sized for ``held`` objectives meets ``n`` loss values: "``owner`` holds
    ``held`` ``what``"."""
    if held != n:
        raise ValueError(
            f"{owner} holds {held} {what} but got {n} loss values; call reset() before "
            "changing the number of objectives"
        )


def stream_seed(seed: object) -> int:
    """The seed of a seeded method's random stream: ``seed`` (a non-negative int), or with
    ``None`` fresh entropy drawn once, so that ``reset()`` restores the same stream."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed must be a non-negative int or None (fresh entropy), got {seed!r}")
    return seed if seed is not None else int(np.random.SeedSequence().generate_state(1)[0])
