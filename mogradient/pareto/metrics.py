"""Pareto metrics: non-dominated filter, hypervolume, IGD, IGD+ and spacing.

All metrics take objective values ``F`` of shape ``[n_points, n_objectives]`` and follow the
**minimisation** convention, as pymoo does: lower is better in every column. Objectives that are
maximised (rewards) are scored with ``maximize=True`` (all columns) or one flag per column; the
flagged columns (and the reference point or front) are negated before scoring, so
``hypervolume(R, ref, maximize=True)`` equals ``hypervolume(-R, -ref)``.

The computations are pymoo's indicators (pymoo >= 0.6.1.6). In pymoo 0.6.2 ``HV``, ``IGD`` and
``IGD+`` call moocore's exact C implementations (``moocore.hypervolume``, ``moocore.igd``,
``moocore.igd_plus``), and non-dominated sorting calls ``moocore.is_nondominated`` /
``moocore.pareto_rank``; none of them falls back to pymoo's old pure-Python code.
"""

from __future__ import annotations

import re

import numpy as np

from mogradient.pareto._validation import (
    Maximize,
    check_same_objectives,
    objective_matrix,
    objective_vector,
    signs,
)

_NEEDS_PYMOO = (
    "mogradient.pareto needs pymoo>=0.6.1.6 and moocore: pip install 'mogradient[pareto]'"
)
try:
    import moocore
    import pymoo
    from pymoo.indicators.hv import HV
    from pymoo.indicators.igd import IGD
    from pymoo.indicators.igd_plus import IGDPlus
    from pymoo.indicators.spacing import SpacingIndicator
except ImportError as error:
    raise ImportError(_NEEDS_PYMOO) from error
if tuple(int(p) for p in re.findall(r"\d+", pymoo.__version__)[:4]) < (0, 6, 1, 6):
    # older pymoo computes the hypervolume in slow pure Python
    raise ImportError(f"{_NEEDS_PYMOO}; found pymoo {pymoo.__version__}")


def is_non_dominated(F: object, *, maximize: Maximize = False) -> np.ndarray:
    """Boolean mask ``[n_points]``: True where no other point of ``F`` dominates the point.

    A point dominates another if it is no worse in every objective and better in at least one.
    Duplicated points do not dominate each other, so all copies of a non-dominated point are
    kept (as in pymoo's non-dominated sorting).
    """
    F = objective_matrix(F)
    if len(F) == 0:
        return np.zeros(0, dtype=bool)
    return moocore.is_nondominated(F * signs(maximize, F.shape[1]), keep_weakly=True)


def non_dominated(F: object, *, maximize: Maximize = False) -> np.ndarray:
    """The rows of ``F`` that no other row dominates (the first front), in their input order."""
    matrix = objective_matrix(F)
    return matrix[is_non_dominated(matrix, maximize=maximize)]


def hypervolume(F: object, ref_point: object, *, maximize: Maximize = False) -> float:
    """Volume dominated by ``F`` and bounded by ``ref_point`` (exact, moocore through pymoo).

    Points that do not strictly dominate ``ref_point`` add nothing, so a reference point that
    no point dominates gives 0.0, and so does an empty ``F`` (``shape [0, n_objectives]``).
    Choose ``ref_point`` slightly worse than the nadir of the sets you compare, and use the
    same one for all of them.
    """
    F = objective_matrix(F)
    ref = objective_vector(ref_point, F.shape[1], "ref_point")
    if len(F) == 0:
        return 0.0
    s = signs(maximize, F.shape[1])
    return float(HV(ref_point=ref * s)(F * s))


def igd(F: object, front: object, *, maximize: Maximize = False) -> float:
    """Inverted generational distance: mean distance from each ``front`` point to ``F``.

    ``front`` is a reference set, usually a dense sample of the true Pareto front. Lower is
    better; 0 means ``F`` covers every front point exactly.
    """
    F, front = _set_and_front(F, front)
    s = signs(maximize, F.shape[1])
    return float(IGD(front * s)(F * s))


def igd_plus(F: object, front: object, *, maximize: Maximize = False) -> float:
    """IGD+: like :func:`igd`, but only counts how far ``F`` is *worse* than each front point.

    Unlike IGD it is weakly Pareto-compliant: a set that dominates another never scores worse.
    """
    F, front = _set_and_front(F, front)
    s = signs(maximize, F.shape[1])
    return float(IGDPlus(front * s)(F * s))


def spacing(F: object) -> float:
    """Schott's spacing: spread of the L1 distances from each point to its nearest neighbour.

    0 means evenly spaced points. Uses pymoo's ``SpacingIndicator`` (divides by ``n_points``,
    not ``n_points - 1``). Orientation does not matter here. Needs at least two points.
    """
    F = objective_matrix(F)
    if len(F) < 2:
        raise ValueError(f"spacing needs at least 2 points, got {len(F)}")
    return float(SpacingIndicator()(F))


def _set_and_front(F: object, front: object) -> tuple[np.ndarray, np.ndarray]:
    F = objective_matrix(F)
    front = objective_matrix(front, "front")
    check_same_objectives(F, front, "front")
    if len(F) == 0:
        raise ValueError("F is empty: the distance from the front to an empty set is undefined")
    if len(front) == 0:
        raise ValueError("front is empty: pass a sample of the true Pareto front")
    return F, front
