"""Pareto tools: metrics (minimisation convention, ``maximize=`` for rewards) and test problems.

Metrics wrap pymoo's indicators, which call moocore's exact C code (see :mod:`.metrics`).
Problems are differentiable torch functions with exact fronts (see :mod:`.problems`).
"""

from mogradient.pareto.lattice import simplex_lattice
from mogradient.pareto.metrics import (
    hypervolume,
    igd,
    igd_plus,
    is_non_dominated,
    non_dominated,
    spacing,
)
from mogradient.pareto.problems import Problem, available_problems, get_problem

__all__ = [
    "Problem",
    "available_problems",
    "get_problem",
    "hypervolume",
    "igd",
    "igd_plus",
    "is_non_dominated",
    "non_dominated",
    "simplex_lattice",
    "spacing",
]
