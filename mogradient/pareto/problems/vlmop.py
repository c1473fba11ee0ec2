"""VLMOP1 and VLMOP2 as LibMOON defines them: two objectives on ``[-1, 1]^n_var`` (10 variables).

With ``a = (1/sqrt(n), ..., 1/sqrt(n))`` (so ``|a| = 1``):

* **VLMOP1**: ``f1 = 1 - exp(-|x - a|^2)``, ``f2 = 1 - exp(-|x + a|^2)``: the two-Gaussian
  problem of Fonseca & Fleming (1995), which Van Veldhuizen & Lamont's test suite (1999) lists
  as MOP2 and Knowles' ParEGO paper (2006) calls VLMOP2. Concave front
  ``(1 - exp(-(s - 1)^2), 1 - exp(-(s + 1)^2))`` for ``s`` in ``[-1, 1]``, reached at
  ``x = s a``. LibMOON's box is ``[-1, 1]`` (not ``[-4, 4]``); it contains the Pareto set.
* **VLMOP2**: ``f1 = |x - a|^2 / 4``, ``f2 = |x + a|^2 / 4``: two quadratics (LibMOON's
  definition). At ``x = t a`` they are ``(1 - t)^2 / 4`` and ``(1 + t)^2 / 4``, so the convex
  front is ``sqrt(f1) + sqrt(f2) = 1`` on ``[0, 1]^2``.

The names follow LibMOON (``libmoon.problem.synthetic.vlmop``), so the benchmark against it runs
the same problems under the same names; the tests check the values against LibMOON's classes.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mogradient.pareto.problems.base import Problem


class _VLMOP(Problem):
    """Two objectives of ``x - a`` and ``x + a`` on ``[-1, 1]^n_var``; the Pareto set is
    ``x = s a`` for ``s`` in ``[-1, 1]``."""

    def __init__(self, n_var: int = 10) -> None:
        super().__init__(n_var=n_var, n_obj=2, lower=-1.0, upper=1.0)

    def _squared_distances(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shift = 1.0 / math.sqrt(self.n_var)
        return ((x - shift) ** 2).sum(dim=1), ((x + shift) ** 2).sum(dim=1)

    def _pareto_set(self, n_points: int) -> torch.Tensor:
        s = torch.linspace(-1.0, 1.0, n_points, dtype=torch.float64)
        return (s / math.sqrt(self.n_var))[:, None].expand(n_points, self.n_var).clone()


class VLMOP1(_VLMOP):
    """LibMOON's VLMOP1: ``1 - exp(-|x ∓ a|^2)`` (Fonseca–Fleming's formula on ``[-1, 1]``)."""

    name = "vlmop1"

    def _evaluate(self, x: torch.Tensor) -> torch.Tensor:
        d1, d2 = self._squared_distances(x)
        return torch.stack([1.0 - torch.exp(-d1), 1.0 - torch.exp(-d2)], dim=1)

    def _pareto_front(self, n_points: int) -> np.ndarray:
        s = np.linspace(-1.0, 1.0, n_points)
        return np.stack([1.0 - np.exp(-((s - 1.0) ** 2)), 1.0 - np.exp(-((s + 1.0) ** 2))], 1)


class VLMOP2(_VLMOP):
    """LibMOON's VLMOP2: ``|x ∓ a|^2 / 4``, convex front ``sqrt(f1) + sqrt(f2) = 1``."""

    name = "vlmop2"

    def _evaluate(self, x: torch.Tensor) -> torch.Tensor:
        d1, d2 = self._squared_distances(x)
        return torch.stack([d1 / 4.0, d2 / 4.0], dim=1)

    def _pareto_front(self, n_points: int) -> np.ndarray:
        s = np.linspace(-1.0, 1.0, n_points)
        return np.stack([(1.0 - s) ** 2 / 4.0, (1.0 + s) ** 2 / 4.0], 1)
