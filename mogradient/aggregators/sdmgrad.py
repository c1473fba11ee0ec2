"""SDMGrad: Stochastic Direction-oriented Multi-objective Gradient (Xiao et al., NeurIPS 2023)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np

from mogradient.aggregation.checks import positive_or_hint
from mogradient.aggregation.cross_gramian import CrossGramianWeighting
from mogradient.aggregation.kinds import Property
from mogradient.aggregation.preference import DRAWN_PREFERENCE, Preference
from mogradient.aggregation.registry import register
from mogradient.solvers.simplex import matvec, project_onto_simplex

#: Added to the normaliser (the squared mean gradient norm) before dividing, as the official
#: code and TorchJD do.
NORMALISER_EPS = 1e-8


@register("sdmgrad")
class SDMGrad(CrossGramianWeighting):
    """Weights w on the simplex for MGDA's problem regularised towards a preferred direction,
    min_w ½‖g_w + λg₀‖² (g₀ = Σ pᵢgᵢ, p the preference), by ``n_iter`` steps of projected SGD
    with momentum on ``A = J₁J₂ᵀ`` of two independent batches; the update is
    Σ ((w + λp)/(1 + λ))ᵢ (g₁ᵢ + g₂ᵢ)/2.

    λ = 0 is a stochastic MGDA, λ → ∞ the preference-weighted mean. Before the inner steps
    ``A`` is divided by the squared mean of the gradient norms √max(Aᵢᵢ, 0) (plus 1e-8), so
    the inner learning rate does not depend on the gradients' scale (section 6.1 of the paper;
    the official code; TorchJD).

    State: w (uniform at the first call; restarted when the number of objectives changes); the
    momentum starts from zero at every call; :meth:`reset` clears w. Cost: 2n backwards for
    the two Jacobians, then O(n_iter·n²). Reference: Xiao, Ban, Ji, *Direction-oriented
    Multi-objective Learning: Simple and Provable Stochastic Algorithms*, NeurIPS 2023
    (Algorithm 1); TorchJD 0.18's ``SDMGradWeighting``. See ``docs/aggregators/sdmgrad.md``.

    Args:
        lr: the inner learning rate > 0.
        momentum: the inner momentum in [0, 1).
        n_iter: the number of inner steps per call (an int ≥ 1).
        lambda_: λ ≥ 0, how strongly the update is pulled towards the preferred direction
            (0.3, as in the paper's experiments and TorchJD).
        preference: the preference p defining g₀ (one entry per objective, normalised);
            ``None``: uniform, g₀ the mean gradient.
    """

    properties = frozenset(
        {
            "simplex_weights",
            "non_negative_weights",
            "deterministic",
            "reset_restores",
            "non_differentiable",
        }
    )  # plus "permutation_invariant" with the uniform preference: see claims()
    preference_aware = True
    example_settings = (
        {"lr": 0.5, "momentum": 0.0, "n_iter": 3},
        {"lambda_": 0.0},
        {"lambda_": 5.0, "preference": DRAWN_PREFERENCE},
    )

    def __init__(
        self,
        lr: float = 10.0,
        momentum: float = 0.5,
        n_iter: int = 20,
        lambda_: float = 0.3,
        preference: Sequence[float] | None = None,
    ) -> None:
        self.lr: float = positive_or_hint("lr", lr, "it is the inner learning rate")
        if (
            isinstance(momentum, bool)
            or not isinstance(momentum, numbers.Real)
            or not 0.0 <= float(momentum) < 1.0
        ):
            raise ValueError(f"momentum must be a number in [0, 1), got {momentum!r}")
        self.momentum: float = float(momentum)
        if isinstance(n_iter, bool) or not isinstance(n_iter, numbers.Integral) or n_iter < 1:
            raise ValueError(f"n_iter must be an int ≥ 1 (inner steps per call), got {n_iter!r}")
        self.n_iter: int = int(n_iter)
        if (
            isinstance(lambda_, bool)
            or not isinstance(lambda_, numbers.Real)
            or not math.isfinite(lambda_)
            or lambda_ < 0
        ):
            raise ValueError(
                f"lambda_ must be a finite number ≥ 0 (0: no pull towards the preferred "
                f"direction), got {lambda_!r}"
            )
        self.lambda_: float = float(lambda_)
        self.preference: Preference = Preference(preference)
        self._w: np.ndarray | None = None

    def claims(self) -> frozenset[Property]:
        return self.preference.with_permutation_invariance(self.properties)

    def _hyperparameters(self) -> dict[str, object]:
        return {
            "lr": self.lr,
            "momentum": self.momentum,
            "n_iter": self.n_iter,
            "lambda_": self.lambda_,
            "preference": self.preference,
        }

    def reset(self) -> None:
        self._w = None

    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        n = gramian.shape[0]
        p = self.preference.resolve(n)
        w = self._w
        if w is None or w.shape[0] != n:
            w = np.full(n, 1.0 / n)
        scale = math.fsum(np.sqrt(np.maximum(np.diagonal(gramian), 0.0))) / n
        a = gramian / (scale * scale + NORMALISER_EPS)
        velocity = np.zeros(n)
        for _ in range(self.n_iter):
            velocity = self.momentum * velocity + matvec(a, w + self.lambda_ * p)
            w = project_onto_simplex(w - self.lr * velocity)
        self._w = w
        return (w + self.lambda_ * p) / (1.0 + self.lambda_)
