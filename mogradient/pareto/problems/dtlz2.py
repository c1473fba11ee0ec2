"""DTLZ2 (Deb, Thiele, Laumanns & Zitzler 2002): front on the unit sphere, any number of objectives.

With ``k = n_var - n_obj + 1`` distance variables ``x_M`` and ``g = sum((x_M - 0.5)^2)``:
``f_1 = (1 + g) prod_j cos(x_j pi/2)``, ..., ``f_M = (1 + g) sin(x_1 pi/2)``. On the Pareto set
``x_M = 0.5`` (``g = 0``), so the front is the positive part of the unit sphere
``sum f_i^2 = 1``. The front sample is a Das–Dennis lattice pushed onto the sphere (pymoo does the
same); the Pareto set inverts the spherical coordinates of those points.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mogradient.pareto.lattice import simplex_lattice
from mogradient.pareto.problems.base import Problem


class DTLZ2(Problem):
    """DTLZ2 on ``[0, 1]^n_var``, as pymoo's ``get_problem("dtlz2", n_var=..., n_obj=...)``.

    ``n_var`` defaults to ``n_obj + 9`` (``k = 10``, the usual choice). With more than two
    objectives ``pareto_front(n_points)`` returns the smallest full lattice with at least
    ``n_points`` points.
    """

    name = "dtlz2"

    def __init__(self, n_obj: int = 3, n_var: int | None = None) -> None:
        n_var = n_obj + 9 if n_var is None else n_var
        if n_var < n_obj:
            raise ValueError(f"dtlz2: n_var must be at least n_obj={n_obj}, got {n_var}")
        super().__init__(n_var=n_var, n_obj=n_obj, lower=0.0, upper=1.0)

    def _evaluate(self, x: torch.Tensor) -> torch.Tensor:
        m = self.n_obj
        g = ((x[:, m - 1 :] - 0.5) ** 2).sum(dim=1)
        angles = x[:, : m - 1] * (math.pi / 2)
        ones = torch.ones_like(g)[:, None]
        # column i (0-based) of f / (1 + g): prod_{j < m-1-i} cos(angle_j) * sin(angle_{m-1-i})
        cos_prefix = torch.cumprod(torch.cat([ones, torch.cos(angles)], dim=1), dim=1)
        sin_tail = torch.cat([ones, torch.sin(angles).flip(1)], dim=1)
        return (1.0 + g)[:, None] * cos_prefix.flip(1) * sin_tail

    def _pareto_front(self, n_points: int) -> np.ndarray:
        w = simplex_lattice(self.n_obj, n_points)
        return w / np.linalg.norm(w, axis=1, keepdims=True)

    def _pareto_set(self, n_points: int) -> torch.Tensor:
        f = self._pareto_front(n_points)
        m = self.n_obj
        x = np.full((len(f), self.n_var), 0.5)
        for j in range(m - 1):  # angle j from f_{m-j} over the norm of f_1..f_{m-j-1}
            x[:, j] = np.arctan2(f[:, m - 1 - j], np.linalg.norm(f[:, : m - 1 - j], axis=1))
        x[:, : m - 1] /= math.pi / 2
        return torch.as_tensor(np.clip(x, 0.0, 1.0), dtype=torch.float64)
