"""What every differentiable test problem offers: batched torch objectives, bounds, exact front.

A problem maps decision vectors ``x`` of shape ``[n_points, n_var]`` inside the box
``[lower, upper]`` to objectives ``[n_points, n_obj]``, all minimised. ``evaluate`` is written
in torch, so gradients come from autograd; ``pareto_front`` and ``pareto_set`` are exact (or,
where stated, computed numerically to machine precision) and need no download.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch


class Problem(ABC):
    """A box-constrained multi-objective minimisation problem with a known Pareto front."""

    #: Registry name, e.g. ``"zdt1"``.
    name: str

    def __init__(self, n_var: int, n_obj: int, lower: float, upper: float) -> None:
        if n_var < 1 or n_obj < 2:
            raise ValueError(f"need n_var >= 1 and n_obj >= 2, got n_var={n_var}, n_obj={n_obj}")
        self.n_var = n_var
        self.n_obj = n_obj
        self.lower = torch.full((n_var,), float(lower), dtype=torch.float64)
        self.upper = torch.full((n_var,), float(upper), dtype=torch.float64)

    @property
    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lower, upper)``: float64 tensors ``[n_var]`` delimiting the feasible box."""
        return self.lower, self.upper

    def evaluate(self, x: torch.Tensor) -> torch.Tensor:
        """Objectives ``[n_points, n_obj]`` of ``x`` ``[n_points, n_var]``; differentiable."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"{self.name}: x must be a floating-point torch.Tensor")
        if x.ndim != 2 or x.shape[1] != self.n_var:
            raise ValueError(
                f"{self.name}: x must have shape [n_points, {self.n_var}], got {tuple(x.shape)}"
            )
        return self._evaluate(x)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Clip ``x`` into the box ``[lower, upper]`` (the projection of a projected step)."""
        return torch.clamp(x, self.lower.to(x), self.upper.to(x))

    def pareto_front(self, n_points: int = 100) -> np.ndarray:
        """Pareto front sample as a float64 array ``[n, n_obj]``, minimisation convention.

        ``n`` is ``n_points`` except where a problem says otherwise (DTLZ2 with more than two
        objectives returns a full simplex lattice).
        """
        return self._pareto_front(self._checked(n_points))

    def pareto_set(self, n_points: int = 100) -> torch.Tensor:
        """Decision vectors ``[n, n_var]`` (float64) whose images are ``pareto_front(n_points)``."""
        return self._pareto_set(self._checked(n_points))

    def _checked(self, n_points: int) -> int:
        if n_points < 2:
            raise ValueError(f"{self.name}: n_points must be at least 2, got {n_points}")
        return int(n_points)

    @abstractmethod
    def _evaluate(self, x: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def _pareto_front(self, n_points: int) -> np.ndarray: ...

    @abstractmethod
    def _pareto_set(self, n_points: int) -> torch.Tensor: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_var={self.n_var}, n_obj={self.n_obj})"
