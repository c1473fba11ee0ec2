"""GradVac: Gradient Vaccine (Wang et al., ICLR 2021)."""

from __future__ import annotations

import math
import numbers

import numpy as np

from mogradient.aggregation.checks import stream_seed
from mogradient.aggregation.kinds import GramianWeighting, Property
from mogradient.aggregation.registry import register
from mogradient.solvers.checked import gradvac_into, status_at
from mogradient.solvers.gradvac import gradvac_weights
from mogradient.solvers.validation import OK


@register("gradvac", "gradient-vaccine")
class GradVac(GramianWeighting):
    """Raises the cosine of each gradient with every other (visited in a random order) to an
    adaptive target, an EMA of the observed cosines, by adding a multiple of the other; sums
    the corrected gradients.

    Reference: Wang, Tsvetkov, Firat, Cao, *Gradient Vaccine: Investigating and Improving
    Multi-task Optimization in Massively Multilingual Models*, ICLR 2021 (Algorithm 1).

    The corrected gradients are combinations of the originals, so the procedure runs on the
    Gramian (:func:`mogradient.solvers.gradvac.gradvac_weights`) and returns loss weights, all
    ≥ 1. With ``beta = 0`` the targets stay 0 and it is PCGrad. State: the targets φ̂ (start at
    0; restarted when the number of objectives changes) and the random stream; :meth:`reset`
    restores both. Cost: n backwards for the Gramian, then O(n³). See
    ``docs/aggregators/gradvac.md``.

    Args:
        beta: EMA rate of the targets in [0, 1]: φ̂ ← (1 − beta)·φ̂ + beta·φ.
        seed: seed of the random visiting orders (a non-negative int); the same seed gives the
            same sequence of weights, again after :meth:`reset`. ``None`` draws a seed from
            fresh entropy once, at construction, so :meth:`reset` still restores this
            instance's sequence (but two instances built with ``None`` differ).
    """

    properties = frozenset(
        {
            "non_negative_weights",
            "scale_equivariant",
            "reset_restores",
            "non_differentiable",
        }
    )  # plus "deterministic" with an integer seed (the default): see claims()
    seeded = True
    example_settings = ({"beta": 0.01}, {"beta": 1.0}, {"seed": None})

    def __init__(self, beta: float = 0.5, seed: int | None = 0) -> None:
        if (
            isinstance(beta, bool)
            or not isinstance(beta, numbers.Real)
            or not math.isfinite(beta)
            or not 0.0 <= beta <= 1.0
        ):
            raise ValueError(f"beta must be a number in [0, 1] (the EMA rate), got {beta!r}")
        self._stream_seed: int = stream_seed(seed)
        self.beta: float = float(beta)
        self.seed: int | None = seed
        self._rng: np.random.Generator = np.random.default_rng(self._stream_seed)
        self._phi_hat: np.ndarray | None = None

    def claims(self) -> frozenset[Property]:
        if self.seed is None:  # two instances draw different visiting orders
            return self.properties
        return self.properties | {"deterministic"}

    def _hyperparameters(self) -> dict[str, object]:
        return {"beta": self.beta, "seed": self.seed}

    def reset(self) -> None:
        self._rng = np.random.default_rng(self._stream_seed)
        self._phi_hat = None

    def _step_state(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """This step's visiting orders and the targets φ̂ (restarted for a new n)."""
        if self._phi_hat is None or self._phi_hat.shape[0] != n:
            self._phi_hat = np.zeros((n, n))
        return np.argsort(self._rng.random((n, n)), axis=1), self._phi_hat

    def _checked_into(self, address: int, n: int, out: int) -> bool:
        if status_at(address, n) != OK:  # validated before the state moves
            return False
        orders, phi_hat = self._step_state(n)
        return gradvac_into(address, n, orders, phi_hat, self.beta, out)

    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        orders, phi_hat = self._step_state(gramian.shape[0])
        return gradvac_weights(gramian, orders, phi_hat, self.beta)
