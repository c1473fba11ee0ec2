"""Shared part of the ZDT problems (Zitzler, Deb & Thiele 2000): ``f1 = x1`` and ``g(x)``.

Every ZDT problem here has ``x`` in ``[0, 1]^n_var``, ``f1 = x1``,
``g = 1 + 9 / (n_var - 1) * sum(x2..xn)`` and ``f2 = g * h(f1 / g, f1)``. The Pareto set is
``x1`` in the front's range of ``f1`` with ``x2 = ... = xn = 0`` (so ``g = 1``), hence the exact
front ``f2 = h(f1)``.
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np
import torch

from mogradient.pareto.problems.base import Problem


class ZDT(Problem):
    """Two objectives on ``[0, 1]^n_var``; subclasses define ``h(z, f1)`` with ``z = f1 / g``."""

    def __init__(self, n_var: int = 30) -> None:
        if n_var < 2:
            raise ValueError(f"{self.name}: n_var must be at least 2, got {n_var}")
        super().__init__(n_var=n_var, n_obj=2, lower=0.0, upper=1.0)

    @abstractmethod
    def _h(self, z: torch.Tensor, f1: torch.Tensor) -> torch.Tensor:
        """``f2 / g`` as a function of ``z = f1 / g`` (and of ``f1`` for ZDT3)."""

    def _front_f1(self, n_points: int) -> np.ndarray:
        """Values of ``f1`` on the Pareto front (all of ``[0, 1]`` unless overridden)."""
        return np.linspace(0.0, 1.0, n_points)

    def _evaluate(self, x: torch.Tensor) -> torch.Tensor:
        f1 = x[:, 0]
        g = 1.0 + 9.0 / (self.n_var - 1) * x[:, 1:].sum(dim=1)
        return torch.stack([f1, g * self._h(f1 / g, f1)], dim=1)

    def _pareto_front(self, n_points: int) -> np.ndarray:
        f1 = torch.as_tensor(self._front_f1(n_points), dtype=torch.float64)
        return torch.stack([f1, self._h(f1, f1)], dim=1).numpy()

    def _pareto_set(self, n_points: int) -> torch.Tensor:
        x = torch.zeros(n_points, self.n_var, dtype=torch.float64)
        x[:, 0] = torch.as_tensor(self._front_f1(n_points), dtype=torch.float64)
        return x


def safe_sqrt(z: torch.Tensor) -> torch.Tensor:
    """``sqrt(z)`` with a finite gradient at ``z = 0`` (evaluated at the dtype's ``tiny``).

    The value changes by at most ``sqrt(tiny)`` (1e-154 in float64); without it the gradient of
    ``f2`` is infinite on the boundary ``x1 = 0`` where the front starts.
    """
    return torch.sqrt(torch.clamp(z, min=torch.finfo(z.dtype).tiny))
