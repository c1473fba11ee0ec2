"""Pareto tools: metrics (minimisation convention, ``maximize=`` for rewards) and test problems.

Metrics wrap pymoo's indicators, which call moocore's exact C code (see :mod:`.metrics`).
Problems are differentiable torch functions with exact fronts (see :mod:`.problems`).
:func:`preference_sweep` turns any preference-aware aggregator into a front (see :mod:`.sweep`);
:func:`pareto_set_learning` trains one preference-to-solution model with it (see :mod:`.psl`).
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
from mogradient.pareto.psl import pareto_set_learning
from mogradient.pareto.sweep import (
    SweepResult,
    default_reference_point,
    preference_sweep,
    ray_preferences,
)

__all__ = [
    "Problem",
    "SweepResult",
    "available_problems",
    "default_reference_point",
    "get_problem",
    "hypervolume",
    "igd",
    "igd_plus",
    "is_non_dominated",
    "non_dominated",
    "pareto_set_learning",
    "preference_sweep",
    "ray_preferences",
    "simplex_lattice",
    "spacing",
]
