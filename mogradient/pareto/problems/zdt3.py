"""ZDT3: front made of five disconnected pieces of ``f2 = 1 - sqrt(f1) - f1 sin(10 pi f1)``.

The curve ``h(f1)`` goes up and down; only the parts below every earlier value are
non-dominated. Those parts are the five ``f1`` intervals in :data:`FRONT_REGIONS` (the values
used by pymoo and the literature; ``tests/test_pareto_problems.py`` re-derives them by filtering
a dense sample of the curve).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mogradient.pareto.problems._zdt import ZDT, safe_sqrt

#: ``f1`` intervals of the five pieces of the ZDT3 front.
FRONT_REGIONS: tuple[tuple[float, float], ...] = (
    (0.0, 0.0830015349),
    (0.182228780, 0.2577623634),
    (0.4093136748, 0.4538821041),
    (0.6183967944, 0.6525117038),
    (0.8233317983, 0.8518328654),
)


class ZDT3(ZDT):
    """ZDT3 (``h = 1 - sqrt(z) - z sin(10 pi f1)``), as pymoo's ``get_problem("zdt3")``."""

    name = "zdt3"

    def _h(self, z: torch.Tensor, f1: torch.Tensor) -> torch.Tensor:
        return 1.0 - safe_sqrt(z) - z * torch.sin(10.0 * math.pi * f1)

    def _front_f1(self, n_points: int) -> np.ndarray:
        """``n_points`` values evenly spaced along the five regions laid end to end."""
        starts = np.array([a for a, _ in FRONT_REGIONS])
        lengths = np.array([b - a for a, b in FRONT_REGIONS])
        offsets = np.concatenate([[0.0], np.cumsum(lengths)])
        t = np.linspace(0.0, offsets[-1], n_points)
        region = np.clip(np.searchsorted(offsets, t, side="right") - 1, 0, len(lengths) - 1)
        return starts[region] + (t - offsets[region])
