"""PCD: Priority-Constrained Descent (TorchJD 0.18's ``PCD``; TMLR 2026, arXiv 2606.29521)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np

from mogradient.aggregation.kinds import GramianWeighting, Property
from mogradient.aggregation.registry import register
from mogradient.solvers.pcd import pcd_weights
from mogradient.solvers.validation import GRAMIAN_TOL


def _unit_interval(name: str, value: object, upper_open: bool = False) -> float:
    top = "1)" if upper_open else "1]"
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(float(value))
        or not 0.0 <= float(value) <= 1.0
        or (upper_open and float(value) == 1.0)
    ):
        raise ValueError(f"{name} must be a number in [0, {top}, got {value!r}")
    return float(value)


@register("pcd", "priority-constrained-descent")
class PCD(GramianWeighting):
    """Follows the primary objective's gradient (the first row) as closely as possible while each
    secondary objective keeps a fraction τ of the first-order progress its own normalised
    gradient would give:

        d̃ = argmin_d ½‖d − g̃₁‖²   subject to   g̃ⱼ·d ≥ τⱼ‖g̃ⱼ‖²   (j = 2 … m),

    with ``g̃ᵢ = gᵢ / √(v̂ᵢ + eps)``, v̂ᵢ the bias-corrected EMA (decay ``beta``) of ‖gᵢ‖² over the
    calls; the direction is d̃ rescaled to ‖g₁‖. The quadratic program is solved exactly as its
    dual on the orthant by the active-set kernel (:mod:`mogradient.solvers.pcd`): the weights
    are ``[1, μ] · s · ‖g₁‖/‖d̃‖`` ≥ 0, μ the multipliers of the constraints. As in TorchJD: a
    zero primary gradient gives 0; infeasible constraints (possible from m ≥ 3, e.g. two
    opposite secondaries) are dropped, giving g₁; a d̃ that is zero to rounding gives 0.

    State: the EMA and its step count (restarted when the number of objectives changes);
    :meth:`reset` clears both. Not symmetric in the objectives. ``eps`` is compared with the
    squared norms as the solve sees them (Gramians outside 2^±256 are first scaled by a power
    of two). Cost: n backwards for the Gramian, then one O(n·|S| + |S|³) active-set solve.
    Reference: *Not All Objectives Are Born Equal: Priority-Constrained Descent for
    Hierarchical Multi-Objective Optimization*, TMLR 2026 (arXiv 2606.29521); TorchJD 0.18's
    ``PCDWeighting``. See ``docs/aggregators/pcd.md``.

    Args:
        tau: the fraction τ in [0, 1] of normalised progress guaranteed to each secondary:
            one number for all, or one per secondary objective (m − 1 entries).
        beta: decay of the EMA of the squared gradient norms, in [0, 1).
        eps: non-negative number added to the EMA before its inverse square root. 0 (the
            default) keeps the method scale-equivariant; TorchJD's default is 1e-8.
    """

    properties = frozenset(
        {"non_negative_weights", "deterministic", "reset_restores", "non_differentiable"}
    )  # plus "scale_equivariant" with eps = 0 (the default): see claims()
    example_settings = ({"eps": 1e-8}, {"tau": 0.5, "beta": 0.5}, {"tau": 1.0, "beta": 0.0})

    def __init__(
        self, tau: float | Sequence[float] = 0.02, beta: float = 0.999, eps: float = 0.0
    ) -> None:
        if isinstance(tau, numbers.Real) and not isinstance(tau, bool):
            self.tau: float | tuple[float, ...] = _unit_interval("tau", tau)
        else:
            try:
                taus = np.asarray(tau, dtype=np.float64)
            except (TypeError, ValueError):
                taus = np.empty((0, 0))
            if taus.ndim != 1:
                raise ValueError(
                    "tau must be a number in [0, 1] or a sequence of them (one per secondary "
                    f"objective), got {tau!r}"
                )
            self.tau = tuple(_unit_interval(f"tau[{i}]", float(t)) for i, t in enumerate(taus))
        self.beta: float = _unit_interval("beta", beta, upper_open=True)
        if (
            isinstance(eps, bool)
            or not isinstance(eps, numbers.Real)
            or not math.isfinite(eps)
            or eps < 0
        ):
            raise ValueError(f"eps must be a finite number ≥ 0, got {eps!r}")
        self.eps: float = float(eps)
        self._sq_norm_ema: np.ndarray | None = None
        self._n_steps: int = 0

    def claims(self) -> frozenset[Property]:
        if self.eps == 0.0:  # the normalisation is then exactly scale-free
            return self.properties | {"scale_equivariant"}
        return self.properties

    def _hyperparameters(self) -> dict[str, object]:
        return {"tau": self.tau, "beta": self.beta, "eps": self.eps}

    def reset(self) -> None:
        self._sq_norm_ema = None
        self._n_steps = 0

    def _taus(self, m: int) -> np.ndarray:
        if isinstance(self.tau, tuple):
            if len(self.tau) != m - 1:
                raise ValueError(
                    f"tau has {len(self.tau)} entries but there are {m - 1} secondary "
                    f"objectives ({m} in all, the first is the primary); pass one per secondary "
                    "or a single number"
                )
            return np.array(self.tau)
        return np.full(m - 1, self.tau)

    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        m = gramian.shape[0]
        taus = self._taus(m)
        if self._sq_norm_ema is None or self._sq_norm_ema.shape[0] != m:
            self._sq_norm_ema = np.zeros(m)
            self._n_steps = 0
        self._n_steps += 1
        tol = getattr(gramian, "tol", None) or GRAMIAN_TOL
        g = gramian.view(np.ndarray)
        return pcd_weights(g, self._sq_norm_ema, self._n_steps, self.beta, self.eps, taus, tol)
