"""COSMOS: a linear scalarisation with a cosine penalty (Ruchte & Grabocka, ICDM 2021)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mogradient.aggregation.kinds import LossWeighting, Property
from mogradient.aggregation.preference import DRAWN_PREFERENCE, Preference
from mogradient.aggregation.registry import register
from mogradient.aggregators._scalarizer import non_negative


@register("cosmos")
class COSMOS(LossWeighting):
    """Σᵢ rᵢLᵢ − λ·cos(r, L): the linear scalarisation with preference r, minus λ times the
    cosine between the preference and the loss vector, which pulls the losses towards the ray
    of r and so spreads the solutions of different preferences along the front.

    Its gradient in L gives the weights **w = r − (λ/‖L‖)(r̂ − cos(r, L)·L̂)** (r̂, L̂: unit
    vectors): the preference minus the cosine's gradient, which is orthogonal to L (weights can
    be negative). At L = 0 the cosine is undefined and the weights are r. The paper also feeds
    the preference to the model as an input; that is the model's business, this is the
    objective. Cost: one backward of the weighted loss; O(n) per call, no state. See
    ``docs/aggregators/cosmos.md``.

    Reference: Ruchte, Grabocka, *Scalable Pareto Front Approximation for Deep Multi-Objective
    Learning*, ICDM 2021 (arXiv:2103.13392).

    Args:
        lambda_: the cosine penalty λ ≥ 0 (the paper uses 0.01–8 by data set; 0: linear).
        preference: r, one non-negative entry per objective, not all zero, normalised to sum to
            1; ``None``: uniform.
    """

    properties = frozenset(
        {"scale_equivariant", "deterministic", "reset_restores", "non_differentiable"}
    )  # plus "permutation_invariant" with the uniform preference: see claims()
    preference_aware = True
    example_settings = ({"lambda_": 0.0}, {"lambda_": 8.0, "preference": DRAWN_PREFERENCE})

    def __init__(self, lambda_: float = 1.0, preference: Sequence[float] | None = None) -> None:
        self.lambda_ = non_negative("lambda_", lambda_)
        self.preference = Preference(preference)

    def claims(self) -> frozenset[Property]:
        return self.preference.with_permutation_invariance(self.properties)

    def _hyperparameters(self) -> dict[str, object]:
        return {"lambda_": self.lambda_, "preference": self.preference}

    def _weigh(self, losses: np.ndarray) -> np.ndarray:
        r = self.preference.resolve(losses.shape[0])
        norm = float(np.linalg.norm(losses))
        if self.lambda_ == 0 or norm == 0:
            return r
        r_hat, l_hat = r / np.linalg.norm(r), losses / norm
        cosine = float(r_hat @ l_hat)
        return r - (self.lambda_ / norm) * (r_hat - cosine * l_hat)
