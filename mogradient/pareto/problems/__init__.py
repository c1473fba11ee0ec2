"""Differentiable multi-objective test problems with exact Pareto fronts, by name.

``get_problem("zdt1")``, ``get_problem("dtlz2", n_obj=2)``; :func:`available_problems` lists
the names. Every problem is a :class:`~mogradient.pareto.problems.base.Problem`.
"""

from __future__ import annotations

from collections.abc import Callable

from mogradient.pareto.problems.base import Problem
from mogradient.pareto.problems.cagrad_toy import CAGradToy
from mogradient.pareto.problems.dtlz2 import DTLZ2
from mogradient.pareto.problems.fonseca_fleming import FonsecaFleming
from mogradient.pareto.problems.vlmop import VLMOP1, VLMOP2
from mogradient.pareto.problems.zdt1 import ZDT1
from mogradient.pareto.problems.zdt2 import ZDT2
from mogradient.pareto.problems.zdt3 import ZDT3

# Callable (not type[Problem]): the constructors take different keyword arguments.
_PROBLEMS: dict[str, Callable[..., Problem]] = {
    cls.name: cls for cls in (ZDT1, ZDT2, ZDT3, DTLZ2, FonsecaFleming, CAGradToy, VLMOP1, VLMOP2)
}


def available_problems() -> list[str]:
    """Sorted names accepted by :func:`get_problem`."""
    return sorted(_PROBLEMS)


def get_problem(name: str, **kwargs: object) -> Problem:
    """Build the problem registered as ``name`` (``kwargs`` go to its constructor)."""
    key = name.strip().lower().replace("-", "_")
    if key not in _PROBLEMS:
        valid = ", ".join(available_problems())
        raise ValueError(f"unknown problem {name!r}; valid names: {valid}")
    return _PROBLEMS[key](**kwargs)


__all__ = [
    "DTLZ2",
    "VLMOP1",
    "VLMOP2",
    "ZDT1",
    "ZDT2",
    "ZDT3",
    "CAGradToy",
    "FonsecaFleming",
    "Problem",
    "available_problems",
    "get_problem",
]
