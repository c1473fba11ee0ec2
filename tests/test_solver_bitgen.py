"""Visiting orders drawn inside compiled code (:mod:`mogradient.solvers.bitgen`) against NumPy's
own ``Generator.permuted``: the same rows and the same generator state afterwards, draw by
draw (integers: exact)."""

from __future__ import annotations

import numpy as np
import pytest

from mogradient.solvers.bitgen import permuted_rows, random_interval


def _address(rng: np.random.Generator) -> int:
    return rng.bit_generator.ctypes.bit_generator.value


@pytest.mark.parametrize("n", [1, 2, 3, 5, 10, 17, 64])
@pytest.mark.parametrize("seed", [0, 1, 11, 2**40 + 3])
def test_permuted_rows_is_numpys_stream(n: int, seed: int) -> None:
    """Call after call, the rows equal ``Generator.permuted(rows, axis=1)`` of a twin
    generator, and both generators end in the same state (the 32-bit buffer included)."""
    ours, numpys = np.random.default_rng(seed), np.random.default_rng(seed)
    ours.integers(5)  # a draw beforehand: the two streams need not start at a fresh seed
    numpys.integers(5)
    for _ in range(3):
        expected = numpys.permuted(np.tile(np.arange(n), (n, 1)), axis=1)
        np.testing.assert_array_equal(permuted_rows(_address(ours), n), expected)
        assert ours.bit_generator.state == numpys.bit_generator.state


def test_random_interval_is_uniform_and_bounded() -> None:
    """Every value of ``[0, top]`` is reached and none beyond (top 0: no draw at all)."""
    rng = np.random.default_rng(5)
    before = rng.bit_generator.state
    assert random_interval(_address(rng), 0) == 0
    assert rng.bit_generator.state == before
    draws = {random_interval(_address(rng), 5) for _ in range(400)}
    assert draws == set(range(6))
