"""The two-dimensional toy of the CAGrad (Liu et al. 2021) and Nash-MTL (Navon et al. 2022) papers.

Two objectives of ``x = (x1, x2)`` in ``[-10, 10]^2``, copied from the papers' ``toy.py``::

    f1 = c1(x2) * (log(max(|0.5 (-x1 - 7) - tanh(-x2)|, 5e-6)) + 6)
         + c2(x2) * (((-x1 + 7)^2 + 0.1 (-x2 - 8)^2) / 10 - 20)
    f2 = c1(x2) * (log(max(|0.5 (-x1 + 3) + tanh(-x2) + 2|, 5e-6)) + 6)
         + c2(x2) * (((-x1 - 7)^2 + 0.1 (-x2 - 8)^2) / 10 - 20)

with ``c1 = max(tanh(x2 / 2), 0)`` and ``c2 = max(tanh(-x2 / 2), 0)``. The log valleys in the
upper half trap methods that follow the average gradient; the Pareto set lies in the lower half.

**How the front is computed.** For ``x2 < 0`` only the quadratic part is active, and
``df1/dx1 = c2 (x1 - 7) / 5``, ``df2/dx1 = c2 (x1 + 7) / 5`` have opposite signs exactly when
``x1`` is in ``(-7, 7)``. A Pareto-optimal point must be stationary for some weighting
``lam f1 + (1 - lam) f2``; the ``x1`` component forces ``lam = (x1 + 7) / 14``, and the ``x2``
component makes ``x2`` the minimiser of that weighted sum along the vertical line through
``x1``. So the Pareto set is ``{(x1, x2*(x1)) : x1 in [-7, 7]}``, where ``x2*`` is found by a
golden-section search on ``[-10, 0]`` (the weighted sum is unimodal there; 100 iterations shrink
the bracket below float64 resolution). The result is cached per ``n_points``. Tests check that
no point of a dense grid over the whole box dominates it.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from mogradient.pareto.problems.base import Problem

#: Floor inside the logarithms, as in the papers' code.
LOG_FLOOR = 5e-6


class CAGradToy(Problem):
    """The CAGrad / Nash-MTL toy. ``f1_scale`` multiplies ``f1`` (Nash-MTL's ``scale``)."""

    name = "cagrad_toy"

    def __init__(self, f1_scale: float = 1.0) -> None:
        if not f1_scale > 0:
            raise ValueError(f"cagrad_toy: f1_scale must be positive, got {f1_scale}")
        super().__init__(n_var=2, n_obj=2, lower=-10.0, upper=10.0)
        self.f1_scale = float(f1_scale)

    def _evaluate(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[:, 0], x[:, 1]
        log1 = torch.log(torch.clamp((0.5 * (-x1 - 7) - torch.tanh(-x2)).abs(), LOG_FLOOR)) + 6
        log2 = torch.log(torch.clamp((0.5 * (-x1 + 3) + torch.tanh(-x2) + 2).abs(), LOG_FLOOR)) + 6
        c1 = torch.clamp(torch.tanh(0.5 * x2), min=0)
        c2 = torch.clamp(torch.tanh(-0.5 * x2), min=0)
        sq1 = ((-x1 + 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
        sq2 = ((-x1 - 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
        f1 = (c1 * log1 + c2 * sq1) * self.f1_scale
        f2 = c1 * log2 + c2 * sq2
        return torch.stack([f1, f2], dim=1)

    def _pareto_front(self, n_points: int) -> np.ndarray:
        return self.evaluate(self._pareto_set(n_points)).numpy()

    def _pareto_set(self, n_points: int) -> torch.Tensor:
        return torch.tensor(_pareto_set(n_points), dtype=torch.float64)  # a writable copy


@functools.lru_cache(maxsize=16)
def _pareto_set(n_points: int) -> np.ndarray:
    """``[n_points, 2]``: ``x1`` evenly spaced on ``[-7, 7]``, ``x2`` by golden-section search."""
    x1 = np.linspace(-7.0, 7.0, n_points)
    lam = (x1 + 7.0) / 14.0

    def weighted_sum(x2: np.ndarray) -> np.ndarray:  # lam f1 + (1 - lam) f2 for x2 < 0
        quad = (lam * (x1 - 7) ** 2 + (1 - lam) * (x1 + 7) ** 2 + 0.1 * (x2 + 8) ** 2) / 10
        return np.tanh(-0.5 * x2) * (quad - 20)

    lo, hi = np.full(n_points, -10.0), np.zeros(n_points)
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(100):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        left_better = weighted_sum(a) < weighted_sum(b)
        hi = np.where(left_better, b, hi)
        lo = np.where(left_better, lo, a)
    x = np.stack([x1, 0.5 * (lo + hi)], axis=1)
    x.setflags(write=False)
    return x
