"""Fonseca–Fleming (1995): two objectives with a concave front, ``x`` in ``[-4, 4]^n_var``.

``f1 = 1 - exp(-sum((x_i - 1/sqrt(n))^2))`` and ``f2 = 1 - exp(-sum((x_i + 1/sqrt(n))^2))``.
The Pareto set is the segment ``x_1 = ... = x_n = s / sqrt(n)`` for ``s`` in ``[-1, 1]``, where
the sums reduce to ``(s - 1)^2`` and ``(s + 1)^2``: the front is
``(1 - exp(-(s - 1)^2), 1 - exp(-(s + 1)^2))``. pymoo does not ship this problem.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mogradient.pareto.problems.base import Problem


class FonsecaFleming(Problem):
    """Fonseca–Fleming with ``n_var`` variables (3 by default, as in Fonseca & Fleming)."""

    name = "fonseca_fleming"

    def __init__(self, n_var: int = 3) -> None:
        super().__init__(n_var=n_var, n_obj=2, lower=-4.0, upper=4.0)

    def _evaluate(self, x: torch.Tensor) -> torch.Tensor:
        shift = 1.0 / math.sqrt(self.n_var)
        f1 = 1.0 - torch.exp(-((x - shift) ** 2).sum(dim=1))
        f2 = 1.0 - torch.exp(-((x + shift) ** 2).sum(dim=1))
        return torch.stack([f1, f2], dim=1)

    def _pareto_front(self, n_points: int) -> np.ndarray:
        s = np.linspace(-1.0, 1.0, n_points)
        return np.stack([1.0 - np.exp(-((s - 1.0) ** 2)), 1.0 - np.exp(-((s + 1.0) ** 2))], 1)

    def _pareto_set(self, n_points: int) -> torch.Tensor:
        s = torch.linspace(-1.0, 1.0, n_points, dtype=torch.float64)
        return (s / math.sqrt(self.n_var))[:, None].expand(n_points, self.n_var).clone()
