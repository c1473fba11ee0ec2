"""UPGrad: unconflicting projection of gradients (Quinton & Rey, 2024, arXiv 2406.16232)."""

from __future__ import annotations

from mogradient.aggregation.registry import register
from mogradient.aggregators._dual_cone import DualConeWeighting
from mogradient.solvers import upgrad_weights
from mogradient.solvers.checked import upgrad_into


@register("upgrad")
class UPGrad(DualConeWeighting):
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

    _weights_of = staticmethod(upgrad_weights)
    _checked_into_of = staticmethod(upgrad_into)
