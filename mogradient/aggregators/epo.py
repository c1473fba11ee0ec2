"""EPO: Exact Pareto Optimal search with a preference (Mahapatra & Rajan, ICML 2020)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from mogradient.aggregation.kinds import GramianWeighting
from mogradient.aggregation.preference import Preference
from mogradient.aggregation.registry import register
from mogradient.solvers.epo import BALANCE, DESCENT, epo_weights

_MODES = {BALANCE: "balance", DESCENT: "descent"}


@register("epo", "epo-search")
class EPO(GramianWeighting):
    """Simplex weights α for ``d = Σ αᵢ gᵢ`` that steer the losses onto the preference ray
    ``r₁l₁ = … = rₙlₙ`` and then descend along it, from one small LP per step.

    EPO decides from the Gramian **and the current loss values**: far from the ray
    (non-uniformity ``μ(r∘l) > eps``) it maximises the alignment of d with the direction that
    equalises ``r∘l`` while never raising the loss with the largest ``rᵢlᵢ`` (controlled
    ascent on the others); on the ray it maximises the total decrease ``1ᵀGα`` with ``Gα ≥ 0``.
    The LP is solved exactly by a dense two-phase simplex method
    (:func:`mogradient.solvers.epo.epo_weights`, numba, float64) instead of the reference code's
    cvxpy/GLPK call. An infeasible LP falls back to ``α = r`` as in the reference code
    (:attr:`last_mode` then reads ``"fallback"``). Cost: n backwards for the Gramian plus a solve
    of a few µs.

    It sets ``uses_loss_values``: call it with the losses, ``epo(jacobian, losses=l)`` or
    ``epo.weights(gramian, losses=l)``; the loss values must be > 0 (EPO compares them through
    ``log(n l̂ᵢ)``).

    Reference: Mahapatra & Rajan, *Multi-Task Learning with User Preferences: Gradient Descent
    with Controlled Ascent in Pareto Optimization*, ICML 2020.

    Args:
        preference: ``r``, one entry > 0 per objective, normalised to sum to 1 (the shared
            convention); a larger ``rᵢ`` asks for a smaller loss ``lᵢ`` (``lᵢ ∝ 1/rᵢ`` on the
            ray). ``None``: uniform, i.e. equal losses. The reference code takes ``r`` as given
            (unit-norm circle points in its experiments); its balance LP depends on the scale
            of ``r``, so results match it for ``r`` summing to 1.
        eps: the non-uniformity ``μ`` at and below which the losses count as on the ray
            (reference default 1e-4).
        relax: drop the descent mode's "stay on the ray" constraint ``αᵀGa ≥ min(max Ga, 0)``
            (the reference's ``relax=True``).
    """

    properties = frozenset(
        {"simplex_weights", "deterministic", "reset_restores", "non_differentiable"}
    )
    preference_aware = True
    needs_positive_losses = True
    example_settings = ({"eps": 1e-2},)
    uses_loss_values = True

    def __init__(
        self,
        preference: Sequence[float] | None = None,
        eps: float = 1e-4,
        relax: bool = False,
    ) -> None:
        self.preference = Preference(preference, strictly_positive=True)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)):
            raise TypeError(f"eps must be a number >= 0, got {eps!r}")
        if not math.isfinite(eps) or eps < 0:
            raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
        if not isinstance(relax, bool):
            raise TypeError(f"relax must be True or False, got {relax!r}")
        self.eps = float(eps)
        self.relax = relax
        #: The mode of the last step: "balance", "descent" or "fallback" (None before any).
        self.last_mode: str | None = None
        #: The non-uniformity μ(r∘l) at the last step.
        self.last_mu: float | None = None

    def _hyperparameters(self) -> dict[str, object]:
        return {"preference": self.preference, "eps": self.eps, "relax": self.relax}

    def reset(self) -> None:
        self.last_mode = None
        self.last_mu = None

    def _solve_with_losses(self, gramian: np.ndarray, losses: np.ndarray) -> np.ndarray:
        if not (losses > 0).all():
            i = int(np.argmax(~(losses > 0)))
            raise ValueError(
                f"EPO needs loss values > 0, got {losses[i]} for objective {i}; EPO compares "
                "losses through log(n r_i l_i / sum r l): shift them by a known lower bound"
            )
        n = gramian.shape[0]
        w, mode, mu = epo_weights(gramian, losses, self.preference.resolve(n), self.eps, self.relax)
        self.last_mode = _MODES.get(mode, "fallback")
        self.last_mu = float(mu)
        return w

    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        raise ValueError(
            f"{self!r} decides from the Gramian and the loss values; call "
            "weights(gramian, losses=...) or agg(jacobian, losses=...)"
        )
