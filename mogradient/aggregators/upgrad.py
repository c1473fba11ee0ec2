"""UPGrad: unconflicting projection of gradients (Quinton & Rey, 2024, arXiv 2406.16232)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mogradient.aggregators.base import GramianWeighting, Property
from mogradient.aggregators.preference import Preference
from mogradient.aggregators.registry import register
from mogradient.solvers import upgrad_weights


@register("upgrad")
class UPGrad(GramianWeighting):
    """Projects each gradient onto the dual cone ``{d : gᵢ·d ≥ 0 ∀i}`` of all the gradients and
    sums the projections weighted by the preference p: ``d = Σᵢ pᵢ π(gᵢ)``.

    By Proposition 1 of the paper, ``π(gᵢ) = Σⱼ (vᵢ)ⱼ gⱼ`` with ``vᵢ = argmin_{v ≥ eᵢ} vᵀGv``, so
    the loss weights are ``w = Σᵢ pᵢ vᵢ ≥ p``: n quadratic programs on the Gramian, each solved
    exactly by the active-set kernel (:func:`mogradient.solvers.upgrad_weights`; no ridge, unlike
    the quadprog projector of TorchJD). The direction conflicts with no objective, and at a
    Pareto-stationary point (0 in the hull) it is 0. Cost: n backwards for the Gramian, then n
    small projections, each O(n·|S| + |S|³) for the |S| objectives its gradient conflicts with.
    Reference: Quinton & Rey, *Jacobian Descent for Multi-Objective Optimization*, 2024
    (arXiv 2406.16232).

    Args:
        preference: one non-negative entry per objective, not all zero, normalised to sum to 1
            (:class:`~mogradient.aggregators.Preference`); ``None``: uniform, 1/n each.
    """

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

    def __init__(self, preference: Sequence[float] | None = None) -> None:
        self.preference = Preference(preference)

    def claims(self) -> frozenset[Property]:
        return self.preference.with_permutation_invariance(self.properties)

    def _hyperparameters(self) -> dict[str, object]:
        return {"preference": self.preference}

    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        return upgrad_weights(gramian, self.preference.resolve(gramian.shape[0]))
