"""Constraint objectives: "maximise the others subject to ``sentiment >= 0.8``".

Safe RLHF's Lagrangian (Dai et al. 2023) at the advantage level: one multiplier ``λⱼ ≥ 0`` per
constraint, and the advantage the policy loss is made of is

    A = (A_primary + Σⱼ λⱼ sⱼ Aⱼ) / (1 + Σⱼ λⱼ),     sⱼ = +1 for ``≥``, −1 for ``≤``,

where ``A_primary`` is the unconstrained objectives' advantages combined by the aggregator.
After each step the multipliers follow the measured constraint values ``Jⱼ`` (the batch's mean
score, over every process) by projected dual ascent, ``λⱼ ← max(0, λⱼ + η·eⱼ)`` with the
violation ``eⱼ = τⱼ − Jⱼ`` (``≥``) or ``Jⱼ − τⱼ`` (``≤``); with ``kp``/``kd`` it is the
PID Lagrangian of Stooke et al. 2020 (``η`` is its integral gain): ``λ = max(0, kp·e + I +
kd·max(0, e − e_prev))``, ``I ← max(0, I + η·e)``. Every rank measures the same all-reduced
values, so every rank holds the same multipliers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

Stats = dict[str, float]
Sense = Literal[">=", "<="]
_SPEC = re.compile(r"^\s*([^<>=\s]+)\s*(>=|<=)\s*([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class Constraint:
    """``objective sense threshold``: the objective's mean score must stay ≥ or ≤ it."""

    objective: str
    sense: Sense
    threshold: float

    @classmethod
    def parse(cls, text: str) -> Constraint:
        """``"sentiment>=0.8"`` or ``"length <= 1.2"``."""
        match = _SPEC.match(text)
        if match is None:
            raise ValueError(
                f"constraint {text!r} is not OBJECTIVE>=VALUE or OBJECTIVE<=VALUE, "
                "e.g. 'sentiment>=0.8'"
            )
        name, sense, value = match.groups()
        try:
            threshold = float(value)
        except ValueError:
            raise ValueError(f"constraint {text!r}: {value!r} is not a number") from None
        return cls(name, ">=" if sense == ">=" else "<=", threshold)

    @property
    def sign(self) -> float:
        """+1 when more of the objective helps (``≥``), −1 when less does (``≤``)."""
        return 1.0 if self.sense == ">=" else -1.0

    def violation(self, value: float) -> float:
        """How far ``value`` is on the wrong side of the threshold (negative: satisfied)."""
        return self.sign * (self.threshold - value)

    def __str__(self) -> str:
        return f"{self.objective}{self.sense}{self.threshold:g}"


class Lagrangian:
    """The multipliers of ``constraints`` over the objectives ``names`` and their updates.

    Args:
        constraints: parsed constraints or their text (``"sentiment>=0.8"``).
        names: every objective; the constrained ones must be among them, and at least one
            must stay unconstrained (the primary objective).
        lr: the dual ascent step ``η`` (PID: the integral gain).
        kp, kd: PID Lagrangian gains (0: plain projected dual ascent).
        initial: the multipliers' starting value.
    """

    def __init__(
        self,
        constraints: Sequence[Constraint | str],
        names: Sequence[str],
        lr: float = 0.05,
        kp: float = 0.0,
        kd: float = 0.0,
        initial: float = 0.0,
    ):
        self.constraints = [
            c if isinstance(c, Constraint) else Constraint.parse(c) for c in constraints
        ]
        self.names = list(names)
        constrained = [c.objective for c in self.constraints]
        unknown = sorted(set(constrained) - set(self.names))
        if unknown:
            raise ValueError(
                f"constraint(s) on {unknown}, which no reward is named; the objectives are "
                f"{self.names}"
            )
        if len(set(constrained)) != len(constrained):
            raise ValueError(
                f"one constraint per objective, got {[str(c) for c in self.constraints]}"
            )
        self.primary = [n for n in self.names if n not in constrained]
        if not self.primary:
            raise ValueError(
                "every objective is constrained; leave at least one unconstrained objective to "
                "maximise (e.g. drop one --constraint)"
            )
        for name, value in (("lr", lr), ("kp", kp), ("kd", kd), ("initial", initial)):
            if value < 0:
                raise ValueError(f"constraint {name} must be non-negative, got {value}")
        self.lr, self.kp, self.kd = lr, kp, kd
        self.multipliers = [float(initial)] * len(self.constraints)
        self._integral = list(self.multipliers)
        self._last_error = [0.0] * len(self.constraints)
        self.values = [float("nan")] * len(self.constraints)

    @property
    def rows(self) -> list[int]:
        """The row of each constraint's objective among ``names``."""
        return [self.names.index(c.objective) for c in self.constraints]

    @property
    def primary_rows(self) -> list[int]:
        """The rows of the unconstrained objectives."""
        return [self.names.index(n) for n in self.primary]

    def merge(self, primary: torch.Tensor, constrained: torch.Tensor) -> torch.Tensor:
        """``(A_primary + Σ λⱼ sⱼ Aⱼ) / (1 + Σ λⱼ)`` for the combined primary advantage and the
        constrained objectives' rows ``[c, ...]``."""
        signed = [lam * c.sign for lam, c in zip(self.multipliers, self.constraints)]
        weights = torch.tensor(signed, dtype=constrained.dtype, device=constrained.device)
        total = primary + torch.tensordot(weights, constrained, dims=1)
        return total / (1.0 + sum(self.multipliers))

    def update(self, scores: torch.Tensor) -> None:
        """Follow the measured mean scores ``[k]`` of every objective (over every process)."""
        for j, (constraint, row) in enumerate(zip(self.constraints, self.rows)):
            value = float(scores[row])
            error = constraint.violation(value)
            self._integral[j] = max(0.0, self._integral[j] + self.lr * error)
            rise = max(0.0, error - self._last_error[j])
            self.multipliers[j] = max(0.0, self.kp * error + self._integral[j] + self.kd * rise)
            self._last_error[j] = error
            self.values[j] = value

    def stats(self) -> Stats:
        """``constraint/<objective>/multiplier``, ``…/value`` (last measured) and
        ``…/satisfied`` (1 or 0)."""
        out: Stats = {}
        for constraint, lam, value in zip(self.constraints, self.multipliers, self.values):
            key = f"constraint/{constraint.objective}"
            out[f"{key}/multiplier"] = lam
            out[f"{key}/value"] = value
            out[f"{key}/satisfied"] = float(constraint.violation(value) <= 0)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "multipliers": list(self.multipliers),
            "integral": list(self._integral),
            "last_error": list(self._last_error),
            "values": list(self.values),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.multipliers = [float(x) for x in state["multipliers"]]
        self._integral = [float(x) for x in state["integral"]]
        self._last_error = [float(x) for x in state["last_error"]]
        self.values = [float(x) for x in state["values"]]


class ConstraintSettings(Protocol):
    """The constraint fields our config and the TRL adapter's configs share."""

    @property
    def constraints(self) -> Sequence[Constraint | str]: ...
    @property
    def constraint_lr(self) -> float: ...
    @property
    def constraint_kp(self) -> float: ...
    @property
    def constraint_kd(self) -> float: ...


def lagrangian_from(settings: ConstraintSettings, names: Sequence[str]) -> Lagrangian | None:
    """The Lagrangian of a config's constraints over the objectives ``names`` (``None`` when it
    has none), with its dual step and PID gains."""
    if not settings.constraints:
        return None
    return Lagrangian(
        settings.constraints,
        names,
        lr=settings.constraint_lr,
        kp=settings.constraint_kp,
        kd=settings.constraint_kd,
    )
