"""The preference vector: one validated hyper-parameter for every preference-aware method.

The methods whose class sets ``preference_aware`` (``linear``, ``tchebycheff``, ``stch``,
``epo``, ``upgrad``, ``dualproj``, ``config``, ``aligned-mtl``, ``softmin``, ``pbi``,
``cosmos``) take ``preference=`` — one non-negative entry per objective, not all zero — and use
it normalised to sum to 1, so a sweep can hand any of them the same point of the simplex.
``None`` means the uniform preference 1/n.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from mogradient.aggregation.kinds import Property

#: In :attr:`Aggregator.example_settings`: a preference drawn for the problem at hand, with one
#: positive entry per objective.
DRAWN_PREFERENCE = "<drawn preference>"
#: In :attr:`Aggregator.example_settings`: a drawn preference with zero entries (not all zero).
DRAWN_SPARSE_PREFERENCE = "<drawn preference with zeros>"


#: n -> the uniform preference 1/n (copied out by :meth:`Preference.resolve`, shared by
#: :meth:`Preference.shared`).
_UNIFORM: dict[int, np.ndarray] = {}


class Preference:
    """A validated preference vector; :meth:`resolve` checks its length against ``n``.

    Args:
        values: one entry per objective, finite, ``≥ 0`` (``> 0`` when ``strictly_positive``),
            not all zero; normalised to sum to 1. ``None``: uniform over however many
            objectives the method is called with.
        strictly_positive: refuse zero entries (methods that divide by the preference: EPO).
    """

    def __init__(
        self, values: Sequence[float] | np.ndarray | None, *, strictly_positive: bool = False
    ) -> None:
        self.values: np.ndarray | None = None
        if values is None:
            return
        if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
            raise TypeError(
                f"preference must be a sequence of numbers (one per objective) or None, "
                f"got {values!r}"
            )
        p = np.asarray(values, dtype=np.float64)
        if p.ndim != 1 or p.shape[0] == 0:
            raise ValueError(f"preference must be a non-empty 1-D sequence, got shape {p.shape}")
        if not np.isfinite(p).all() or (p < 0).any():
            raise ValueError(f"preference must be finite and non-negative, got {p.tolist()}")
        if strictly_positive and not (p > 0).all():
            raise ValueError(
                f"preference must be strictly positive for this method, got {p.tolist()}; "
                "give every objective a positive share"
            )
        total = float(p.sum())
        if not total > 0 or not math.isfinite(total):
            raise ValueError(f"preference must not be all zero, got {p.tolist()}")
        self.values = p / total

    def resolve(self, n_objectives: int) -> np.ndarray:
        """The normalised preference for ``n_objectives`` objectives (a fresh array)."""
        return self.shared(n_objectives).copy()  # a copy is cheaper than np.full's Python layer

    def shared(self, n_objectives: int) -> np.ndarray:
        """:meth:`resolve` without the copy, for callers that only read it (the compiled
        solves of a method's fast path): the array is this object's, never to be written."""
        if self.values is None:
            uniform = _UNIFORM.get(n_objectives)
            if uniform is None:
                uniform = _UNIFORM[n_objectives] = np.full(n_objectives, 1.0 / n_objectives)
            return uniform
        if self.values.shape[0] != n_objectives:
            raise ValueError(
                f"the preference has {self.values.shape[0]} entries but got {n_objectives} "
                "objectives; pass one entry per objective"
            )
        return self.values

    def with_permutation_invariance(self, claims: frozenset[Property]) -> frozenset[Property]:
        """``claims`` plus ``permutation_invariant`` when the preference is uniform (``None``):
        any other preference is tied to the objectives' positions, so permuting the objectives
        without it changes the problem."""
        if self.values is None:
            return claims | {"permutation_invariant"}
        return claims

    def __repr__(self) -> str:
        return "None" if self.values is None else repr([round(float(v), 12) for v in self.values])


class PreferenceAware:
    """Mixin of the methods whose one hyper-parameter is ``preference=``: it validates it, adds
    ``permutation_invariant`` to the claims when it is uniform, and shows it in the repr.
    Put it before the kind in the bases (``class Linear(PreferenceAware, LossWeighting)``)."""

    properties: ClassVar[frozenset[Property]]
    preference_aware: ClassVar[bool] = True

    def __init__(self, preference: Sequence[float] | None = None) -> None:
        self.preference = Preference(preference)

    def claims(self) -> frozenset[Property]:
        return self.preference.with_permutation_invariance(self.properties)

    def _hyperparameters(self) -> dict[str, object]:
        return {"preference": self.preference}
