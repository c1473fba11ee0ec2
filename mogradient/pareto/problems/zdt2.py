"""ZDT2: concave front ``f2 = 1 - f1^2``, ``f1`` in ``[0, 1]``."""

from __future__ import annotations

import torch

from mogradient.pareto.problems._zdt import ZDT


class ZDT2(ZDT):
    """ZDT2 (``h(z) = 1 - z^2``), same definition as pymoo's ``get_problem("zdt2")``."""

    name = "zdt2"

    def _h(self, z: torch.Tensor, f1: torch.Tensor) -> torch.Tensor:
        return 1.0 - z**2
