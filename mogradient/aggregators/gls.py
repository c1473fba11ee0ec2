"""GLS: the geometric loss strategy (Chennupati et al., CVPR Workshops 2019)."""

from __future__ import annotations

import numpy as np

from mogradient.aggregation.checks import check_loss_signs
from mogradient.aggregation.kinds import LossWeighting
from mogradient.aggregation.registry import register


@register("gls", "geometric-mean")
class GLS(LossWeighting):
    """The geometric mean of the losses, GLS = (Π Lᵢ)^(1/n), trained through its gradient.

    ∇GLS = Σᵢ (GLS/(n·Lᵢ)) ∇Lᵢ, so the weights are **wᵢ = GLS/(n·Lᵢ)**, and Σ wᵢLᵢ = GLS:
    the weighted loss that :meth:`scalarize` returns is the geometric mean itself. Each
    objective is weighted by the inverse of its loss, so the update is invariant to rescaling
    any one loss by a constant (only the common factor (Π cᵢ)^(1/n) remains): objectives on very
    different scales are balanced without tuning. Computed in log space (exp(mean log L −
    log Lᵢ)/n), so losses from 1e-300 to 1e300 are fine. Loss values must be positive.

    Cost: one backward of the weighted loss; O(n) per call, no state.
    See ``docs/aggregators/gls.md``.

    Reference: Chennupati, Sistu, Yogamani, Rawashdeh, *MultiNet++: Multi-Stream Feature
    Aggregation and Geometric Loss Strategy for Multi-Task Learning*, CVPR Workshops (WAD) 2019.
    """

    properties = frozenset(
        {
            "non_negative_weights",
            "permutation_invariant",
            "scale_equivariant",
            "deterministic",
            "reset_restores",
            "non_differentiable",
        }
    )
    needs_positive_losses = True

    def _weigh(self, losses: np.ndarray) -> np.ndarray:
        check_loss_signs(
            losses,
            "GLS needs positive loss values (the geometric mean of a zero or negative loss has "
            "no useful gradient), but objective {i} has loss {loss:g}; shift that objective by "
            "a constant so it stays > 0",
        )
        log_l = np.log(losses)
        return np.exp(log_l.mean() - log_l) / losses.shape[0]
