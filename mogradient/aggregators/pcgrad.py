"""PCGrad: gradient surgery (Yu et al., NeurIPS 2020)."""

from __future__ import annotations

import functools

import numpy as np

from mogradient.aggregation.kinds import GramianWeighting, Property
from mogradient.aggregation.registry import register
from mogradient.solvers import pcgrad_weights
from mogradient.solvers.checked import pcgrad_into


@functools.cache
def _aranges(n: int) -> np.ndarray:
    """``n`` rows of ``range(n)`` (read-only: ``Generator.permuted`` shuffles a copy)."""
    rows = np.tile(np.arange(n), (n, 1))
    rows.flags.writeable = False
    return rows


@register("pcgrad")
class PCGrad(GramianWeighting):
    """Projects each gradient off the normal plane of every other gradient it conflicts with
    (gᵢ·gⱼ < 0), visiting the others in a random order, then sums the projected gradients.

    The result is a linear combination of the gradients, so it is computed from the Gramian
    alone (:func:`mogradient.solvers.pcgrad_weights`) and returned as loss weights. Cost: n
    backwards for the Gramian, then O(n³) on the n×n matrix.

    Args:
        seed: seed of the random visiting orders; the same seed gives the same sequence of
            weights after :meth:`reset`. ``None`` draws a seed from fresh entropy once, at
            construction (so :meth:`reset` still restores this instance's sequence).
    """

    properties = frozenset(
        {"non_negative_weights", "scale_equivariant", "reset_restores", "non_differentiable"}
    )  # plus "deterministic" with an integer seed (the default): see claims()
    seeded = True
    example_settings = ({"seed": 7}, {"seed": None})

    def __init__(self, seed: int | None = 0) -> None:
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
        self.seed = seed
        self._entropy = np.random.SeedSequence(seed).entropy
        self._rng = np.random.default_rng(self._entropy)

    def claims(self) -> frozenset[Property]:
        if self.seed is None:  # fresh entropy: two instances draw different orders
            return self.properties
        return self.properties | {"deterministic"}

    def _hyperparameters(self) -> dict[str, object]:
        return {"seed": self.seed}

    def _orders(self, n: int) -> np.ndarray:
        # One random permutation of range(n) per row, drawn row after row: the stream of
        # ``[self._rng.permutation(n) for _ in range(n)]`` in a single call.
        return self._rng.permuted(_aranges(n), axis=1)

    def _checked_into(self, address: int, n: int, out: int) -> bool:
        # Validated, then the orders drawn (the same stream as _orders) and solved, in one
        # compiled call: a refused Gramian leaves the stream where it was.
        return pcgrad_into(address, n, self._rng.bit_generator.ctypes.bit_generator.value, out)

    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        return pcgrad_weights(gramian, self._orders(gramian.shape[0]))

    def reset(self) -> None:
        self._rng = np.random.default_rng(self._entropy)
