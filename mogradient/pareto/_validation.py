"""Input checks for the Pareto metrics: shapes, finiteness and orientation.

Every metric works on a matrix ``F`` of shape ``[n_points, n_objectives]`` in the minimisation
convention. These helpers turn numpy arrays, torch tensors and nested lists into float64 numpy
matrices, reject what a metric cannot score (NaN/Inf rows, wrong dimensions, mismatched numbers
of objectives) with a message that says how to fix it, and flip the sign of maximised columns.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

#: Which objectives are maximised: one flag for all, or one per objective.
Maximize = bool | Sequence[bool]


def objective_matrix(F: object, what: str = "F") -> np.ndarray:
    """Return ``F`` as a C-contiguous float64 matrix ``[n_points, n_objectives]``, all finite."""
    if isinstance(F, torch.Tensor):
        F = F.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(F)
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        raise TypeError(f"{what} must hold real numbers, got dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(
            f"{what} must have shape [n_points, n_objectives], got shape {array.shape}; "
            f"for a single point pass {what}[None, :]"
        )
    if array.shape[1] == 0:
        raise ValueError(f"{what} has zero objectives (zero columns); pass at least one")
    array = np.ascontiguousarray(array, dtype=np.float64)
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise ValueError(
            f"row {row} of {what} contains NaN or Inf ({array[row].tolist()}); "
            "drop or repair non-finite points before scoring"
        )
    return array


def objective_vector(point: object, n_objectives: int, what: str) -> np.ndarray:
    """Return ``point`` as a finite float64 vector with ``n_objectives`` entries."""
    if isinstance(point, torch.Tensor):
        point = point.detach().to("cpu", torch.float64).numpy()
    vector = np.asarray(point, dtype=np.float64)
    if vector.shape != (n_objectives,):
        raise ValueError(
            f"{what} must have shape ({n_objectives},) to match {n_objectives} objectives, "
            f"got shape {vector.shape}"
        )
    if not np.isfinite(vector).all():
        raise ValueError(f"{what} contains NaN or Inf: {vector.tolist()}")
    return vector


def signs(maximize: Maximize, n_objectives: int) -> np.ndarray:
    """Per-objective factors that map the given orientation to minimisation (+1 or -1)."""
    if isinstance(maximize, bool | np.bool_):
        flags = np.full(n_objectives, bool(maximize))
    else:
        flags = np.asarray(maximize)
        if flags.dtype != bool or flags.shape != (n_objectives,):
            raise ValueError(
                f"maximize must be a bool or a sequence of {n_objectives} bools (one per "
                f"objective), got {maximize!r}"
            )
    return np.where(flags, -1.0, 1.0)


def check_same_objectives(F: np.ndarray, other: np.ndarray, what: str) -> None:
    """Raise if ``F`` and ``other`` do not have the same number of objectives (columns)."""
    if F.shape[1] != other.shape[1]:
        raise ValueError(
            f"F has {F.shape[1]} objectives but {what} has {other.shape[1]}; "
            "both must list the same objectives in the same order"
        )
