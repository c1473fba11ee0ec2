"""ZDT1: convex front ``f2 = 1 - sqrt(f1)``, ``f1`` in ``[0, 1]``."""

from __future__ import annotations

import torch

from mogradient.pareto.problems._zdt import ZDT, safe_sqrt


class ZDT1(ZDT):
    """ZDT1 (``h(z) = 1 - sqrt(z)``), same definition as pymoo's ``get_problem("zdt1")``."""

    name = "zdt1"

    def _h(self, z: torch.Tensor, f1: torch.Tensor) -> torch.Tensor:
        return 1.0 - safe_sqrt(z)
