"""STCH: smooth Tchebycheff scalarisation (Lin et al., ICML 2024)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mogradient.aggregation.checks import positive_or_hint
from mogradient.aggregation.preference import DRAWN_PREFERENCE
from mogradient.aggregation.registry import register
from mogradient.aggregators._ideal_point import IdealPointWeighting


@register("stch", "smooth-tchebycheff")
class STCH(IdealPointWeighting):
    """μ·log Σᵢ exp(pᵢ(Lᵢ − zᵢ)/μ): a smooth upper bound of the Tchebycheff scalarisation
    max pᵢ(Lᵢ − zᵢ), within μ·log n of it.

    Its gradient is Σᵢ pᵢ·sᵢ ∇Lᵢ with s = softmax(p ⊙ (L − z)/μ), so the weights are
    **wᵢ = pᵢ·softmax(p ⊙ (L − z)/μ)ᵢ**: every objective moves, the worst ones most. As μ → 0
    the weights tend to Tchebycheff's (pⱼ on the arg-max, shared on ties); as μ → ∞ to p/n (a
    linear scalarisation with weights p, divided by n). The softmax is taken after subtracting
    the largest exponent, so any finite losses (1e-10 to 1e15 and beyond) and any μ > 0 give
    finite weights. The ideal point defaults to 0 and should lie below the losses (with
    Lᵢ < zᵢ a non-uniform preference is inverted: a ``UserWarning`` says so, once per
    instance); μ is in
    the units of pᵢ·Lᵢ, so scale it with the losses (the authors' multi-task code applies STCH
    to log(Lᵢ/Lᵢ⁰) after a warm-up that estimates Lᵢ⁰: such log-ratios are negative once a loss
    falls below Lᵢ⁰, harmless with the uniform preference the authors use, but with another one
    pass ideal= a lower bound of them).
    Cost: one backward of the weighted loss; O(n) per call, no state.
    See ``docs/aggregators/stch.md``.

    Reference: Lin, Zhang, Yang, Liu, Wang, Zhang, *Smooth Tchebycheff Scalarization for
    Multi-Objective Optimization*, ICML 2024 (arXiv:2402.19078).

    Args:
        mu: smoothing μ, finite and > 0 (the paper tries 0.01–1 and reports small μ working
            well).
        preference: one non-negative entry per objective, not all zero, normalised to sum to 1
            (:class:`~mogradient.aggregators.Preference`); ``None``: uniform.
        ideal: the ideal point z: ``None`` (0), one number for every objective, or one finite
            number per objective.
    """

    example_settings = ({"mu": 1.0}, {"ideal": 0.0}, {"mu": 0.01, "preference": DRAWN_PREFERENCE})

    def __init__(
        self,
        mu: float = 0.1,
        preference: Sequence[float] | None = None,
        ideal: float | Sequence[float] | None = None,
    ) -> None:
        self.mu = positive_or_hint(
            "mu", mu, "for the non-smooth limit mu -> 0 use get_aggregator('tchebycheff')"
        )
        super().__init__(preference, ideal)

    def _hyperparameters(self) -> dict[str, object]:
        return {"mu": self.mu, **super()._hyperparameters()}

    def _weigh(self, losses: np.ndarray) -> np.ndarray:
        p, y = self._gaps(losses)
        # (y − max y) ≤ 0 before dividing by μ: the largest term is exp(0) = 1 and the others
        # lie in [0, 1] for any μ > 0 (a quotient that overflows to -inf gives exactly 0).
        with np.errstate(over="ignore"):
            e = np.exp((y - y.max()) / self.mu)
        return p * (e / e.sum())
