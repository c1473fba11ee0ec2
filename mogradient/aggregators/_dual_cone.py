"""What UPGrad and DualProj share: a preference, their claims, and a solve on the dual cone."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mogradient.aggregation.kinds import GramianWeighting
from mogradient.aggregation.preference import PreferenceAware


class DualConeWeighting(PreferenceAware, GramianWeighting):
    """Loss weights from projections onto the dual cone ``{d : gᵢ·d ≥ 0 ∀i}`` of the gradients,
    steered by a preference; subclasses name the solver in :attr:`_weights_of`."""

    #: ``(gramian, preference) -> weights``: one of :mod:`mogradient.solvers.dual_cone`'s.
    _weights_of: Callable[[np.ndarray, np.ndarray], np.ndarray]
    #: ``(address, n, preference, out) -> written``: the same solve, validated in the same
    #: compiled call, by address (one of :mod:`mogradient.solvers.checked`'s).
    _checked_into_of: Callable[[int, int, np.ndarray, int], bool]

    properties = frozenset(
        {
            "non_negative_weights",
            "non_conflicting",
            "scale_equivariant",
            "deterministic",
            "reset_restores",
            "non_differentiable",
        }
    )  # plus "permutation_invariant" with the uniform preference: see claims()

    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        return type(self)._weights_of(gramian, self.preference.resolve(gramian.shape[0]))

    def _checked_into(self, address: int, n: int, out: int) -> bool:
        return type(self)._checked_into_of(address, n, self.preference.shared(n), out)
