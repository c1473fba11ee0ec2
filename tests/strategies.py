"""The older tests' strategy signatures, served by the public kit (``mogradient.testing``).

New tests import from :mod:`mogradient.testing` directly. This module stays for the tests that
still import ``finite`` and ``jacobians(max_n, max_d, min_n)`` from here (``tests/test_pama.py``,
``tests/test_aggregators.py``): float64 Jacobians of generic construction, magnitudes 1e-3 to
1e3, as those tests' tolerances assume.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from mogradient.testing import jacobians as _kit_jacobians
from mogradient.testing import random_jacobian

finite = st.floats(-10.0, 10.0, allow_nan=False, allow_infinity=False, width=64)


def jacobians(max_n: int = 6, max_d: int = 8, min_n: int = 1) -> SearchStrategy[torch.Tensor]:
    """A float64 Jacobian [n, d] (generic construction, scale 1e-3 … 1e3)."""
    return _kit_jacobians(
        n=(min_n, max_n), d=(1, max_d), dtype=torch.float64, kind="generic", scale=(1e-3, 1e3)
    )


__all__ = ["finite", "jacobians", "random_jacobian"]
