"""DualProj: the mean gradient projected onto the dual cone of the gradients."""

from __future__ import annotations

from mogradient.aggregation.registry import register
from mogradient.aggregators._dual_cone import DualConeWeighting
from mogradient.solvers import dualproj_weights
from mogradient.solvers.checked import dualproj_into


@register("dualproj")
class DualProj(DualConeWeighting):
    """Projects the preference-weighted mean gradient ``Σ pᵢ gᵢ`` onto the dual cone
    ``{d : gᵢ·d ≥ 0 ∀i}`` of the gradients: the nearest direction to it that conflicts with no
    objective (equation 11 of GEM, Lopez-Paz & Ranzato 2017, with every gradient as a memory).

    On the Gramian the projection is ``Σ vᵢ gᵢ`` with ``v = argmin_{v ≥ p} vᵀGv`` (Quinton & Rey
    2024, Prop. 1): one quadratic program, solved exactly by the active-set kernel
    (:func:`mogradient.solvers.dualproj_weights`). The loss weights are v ≥ p. Cost: n backwards
    for the Gramian, then one projection, O(n² + |S|³) for the |S| objectives the mean conflicts
    with. References: Lopez-Paz & Ranzato, *Gradient Episodic Memory for Continual Learning*,
    NeurIPS 2017; Quinton & Rey, *Jacobian Descent for Multi-Objective Optimization*, 2024
    (arXiv 2406.16232).

    Args:
        preference: one non-negative entry per objective, not all zero, normalised to sum to 1
            (:class:`~mogradient.aggregators.Preference`); ``None``: uniform, 1/n each.
    """

    _weights_of = staticmethod(dualproj_weights)
    _checked_into_of = staticmethod(dualproj_into)
