"""Hypothesis strategies shared by the core tests."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

finite = st.floats(-10.0, 10.0, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def jacobians(draw, max_n: int = 6, max_d: int = 8, min_n: int = 1) -> torch.Tensor:
    """A float64 Jacobian [n, d] with entries in [-10, 10] times a random scale."""
    n = draw(st.integers(min_n, max_n))
    d = draw(st.integers(1, max_d))
    values = draw(arrays(np.float64, (n, d), elements=finite))
    scale = 10.0 ** draw(st.integers(-3, 3))
    return torch.tensor(values * scale)


def random_jacobian(n: int, d: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.tensor(rng.standard_normal((n, d)) * scale)
