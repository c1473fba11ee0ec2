"""CR-MOGM: an exponential moving average of another Gramian weighting's weights (Zhou et al.
2022)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from mogradient.aggregation.kinds import GramianWeighting, Property
from mogradient.aggregation.registry import get_aggregator, register

#: The claims an EMA of weights keeps when the wrapped method makes them (a convex combination
#: of simplex or non-negative weights stays so; the others are per-call properties it loses).
#: Permutation invariance is lost too: a method that claims it of its *direction* (MGDA) may
#: return different weights for a permuted, rank-deficient Jacobian, and their average then
#: points elsewhere (found by the contract test: MGDA inside, 6 objectives, step 2).
KEPT: frozenset[Property] = frozenset(
    {
        "simplex_weights",
        "non_negative_weights",
        "scale_equivariant",
        "deterministic",
        "reset_restores",
        "non_differentiable",
    }
)


@register("cr-mogm", "crmogm")
class CRMOGM(GramianWeighting):
    """λₖ = α·λₖ₋₁ + (1 − α)·λ̂ₖ: smooths the weights λ̂ₖ of a wrapped Gramian weighting
    (``inner``, any registered one) across calls; λ₀ = λ̂₁, so the first call returns λ̂₁.

    The paper shows that this smoothing makes stochastic multi-objective gradient methods
    (MGDA, PCGrad, ...) converge with a bounded batch size, with α → 1 as the learning rate
    decays (set ``agg.alpha`` between calls for such a schedule). The wrapped method must decide
    from the Gramian alone with scale-free weights (``weight_exponent() == 0``, no norm cap,
    no loss values): ``nash-mtl``, ``fairgrad``, ``epo`` and ``gradnorm`` are refused. Claims:
    the inner method's, among those an average keeps (not ``non_conflicting`` nor
    ``min_norm_kkt``: an average of weights of different Gramians solves neither step's
    problem). Cost: the inner method's, plus O(n). See ``docs/aggregators/cr-mogm.md``.

    Reference: Zhou, Zhang, Jiang, Wang, Zhang, Zhao, *On the Convergence of Stochastic
    Multi-Objective Gradient Manipulation and Beyond*, NeurIPS 2022.

    Args:
        inner: the wrapped method's registered name.
        alpha: the EMA coefficient on the previous weights, in [0, 1] (0: the inner weights;
            1: frozen at the first call's).
        inner_kwargs: the wrapped method's hyper-parameters.
    """

    properties = KEPT
    example_settings = ({"inner": "upgrad"}, {"alpha": 0.0}, {"inner": "pcgrad", "alpha": 0.5})

    def __init__(
        self,
        inner: str = "mgda",
        alpha: float = 0.9,
        inner_kwargs: Mapping[str, object] | None = None,
    ) -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            raise TypeError(f"alpha must be a number in [0, 1], got {alpha!r}")
        if not (math.isfinite(alpha) and 0.0 <= alpha <= 1.0):
            raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
        self.alpha = float(alpha)
        self.inner_kwargs = dict(inner_kwargs or {})
        method = get_aggregator(inner, **self.inner_kwargs)
        if not isinstance(method, GramianWeighting):
            raise ValueError(
                f"CR-MOGM wraps a Gramian weighting; {inner!r} is a {type(method).__name__}: "
                "pick one of the GramianWeighting methods (mgda, upgrad, pcgrad, ...)"
            )
        if method.uses_loss_values or method.weight_exponent() != 0 or method.norm_cap():
            raise ValueError(
                f"CR-MOGM averages weights across calls, so they must not depend on the "
                f"Gramian's scale nor on loss values; {method!r} does: wrap a method such as "
                "mgda, upgrad, dualproj, pcgrad, imtl-g, krum"
            )
        self.inner = inner
        self.method = method
        self._previous: np.ndarray | None = None

    def claims(self) -> frozenset[Property]:
        return KEPT & self.method.claims()

    def _hyperparameters(self) -> dict[str, object]:
        return {"inner": self.inner, "alpha": self.alpha, "inner_kwargs": self.inner_kwargs}

    def reset(self) -> None:
        self.method.reset()
        self._previous = None

    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        current = self.method._solve(gramian)
        if self._previous is None:
            self._previous = current
        else:
            if self._previous.shape != current.shape:
                raise ValueError(
                    f"CR-MOGM holds weights for {self._previous.shape[0]} objectives but got "
                    f"{current.shape[0]}; call reset() before changing the number of objectives"
                )
            self._previous = self.alpha * self._previous + (1.0 - self.alpha) * current
        return self._previous.copy()
