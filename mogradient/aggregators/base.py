"""Base classes: what an aggregation method needs, and how it turns that into a direction.

Three kinds, by what the method needs (DESIGN.md §3):

* :class:`GramianWeighting` — needs the Gramian ``G = J Jᵀ`` (n×n); returns loss weights ``w``
  and the direction ``wᵀJ``. MGDA, PCGrad, CAGrad.
* :class:`LossWeighting` — needs only the number of objectives; fixed weights, so training costs
  one backward of ``Σ wᵢ Lᵢ``. Linear scalarisation (MORLHF), mean.
* :class:`CoefficientAggregator` — needs per-sample scalar coefficients (advantages), not
  gradients. PAMA.

Weighting (statistics → weights) is kept apart from combining (weights → direction), so a
Gramian method never needs more than the n×n Gramian to decide, and the combine step can be one
extra backward of ``Σ wᵢ Lᵢ`` (see :func:`mogradient.backward`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Literal, overload

import numpy as np
import torch

from mogradient._checks import check_gramian, check_jacobian

Needs = Literal["gramian", "losses", "coefficients"]


class Aggregator(ABC):
    """Maps a Jacobian ``[n_objectives, d]`` to one update direction ``[d]``.

    Subclasses validate their hyper-parameters in ``__init__`` and list them in
    :meth:`_hyperparameters` for the ``repr``. State (warm starts, EMAs) lives in the object and
    is cleared by :meth:`reset`.
    """

    #: What the method needs to decide its combination: see the module docstring.
    needs: ClassVar[Needs]

    @abstractmethod
    def __call__(self, jacobian: torch.Tensor) -> torch.Tensor:
        """Return the aggregated direction ``[d]`` for a Jacobian ``[n_objectives, d]``."""

    def reset(self) -> None:
        """Forget any state carried between steps (stateless methods: nothing to do)."""
        return None

    def _hyperparameters(self) -> dict[str, object]:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._hyperparameters().items())
        return f"{type(self).__name__}({args})"


class WeightedAggregator(Aggregator):
    """A method whose direction is a weighted sum of the objectives' gradients, ``wᵀJ``."""

    @overload
    def weights(self, gramian: np.ndarray) -> np.ndarray: ...
    @overload
    def weights(self, gramian: torch.Tensor) -> torch.Tensor: ...
    @abstractmethod
    def weights(self, gramian: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Weights ``[n]`` for a Gramian ``[n, n]`` (numpy in → numpy out, torch in → torch out)."""

    def __call__(self, jacobian: torch.Tensor) -> torch.Tensor:
        jacobian = check_jacobian(jacobian)
        w = self.weights(gramian_of(jacobian))
        return w.to(jacobian.dtype) @ jacobian


class GramianWeighting(WeightedAggregator):
    """A weighting decided from the Gramian alone (the solve runs in float64 numba code)."""

    needs: ClassVar[Needs] = "gramian"

    @abstractmethod
    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        """Weights for a validated float64 Gramian."""

    @overload
    def weights(self, gramian: np.ndarray) -> np.ndarray: ...
    @overload
    def weights(self, gramian: torch.Tensor) -> torch.Tensor: ...
    def weights(self, gramian: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        w = self._solve(check_gramian(gramian))
        if isinstance(gramian, torch.Tensor):
            return torch.as_tensor(w, dtype=torch.float64, device=gramian.device)
        return w


class LossWeighting(WeightedAggregator):
    """A weighting that needs only the number of objectives (one backward of ``Σ wᵢ Lᵢ``)."""

    needs: ClassVar[Needs] = "losses"

    @abstractmethod
    def loss_weights(self, n_objectives: int) -> np.ndarray:
        """Float64 weights ``[n_objectives]``; raises if they do not fit ``n_objectives``."""

    @overload
    def weights(self, gramian: np.ndarray) -> np.ndarray: ...
    @overload
    def weights(self, gramian: torch.Tensor) -> torch.Tensor: ...
    def weights(self, gramian: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        n = int(gramian.shape[0])
        w = self.loss_weights(n)
        if isinstance(gramian, torch.Tensor):
            return torch.as_tensor(w, dtype=torch.float64, device=gramian.device)
        return w

    def __call__(self, jacobian: torch.Tensor) -> torch.Tensor:
        jacobian = check_jacobian(jacobian)
        w = torch.as_tensor(self.loss_weights(jacobian.shape[0]), device=jacobian.device)
        return w.to(jacobian.dtype) @ jacobian


class CoefficientAggregator(Aggregator):
    """A method decided from per-sample scalar coefficients (advantages) instead of gradients."""

    needs: ClassVar[Needs] = "coefficients"


def gramian_of(jacobian: torch.Tensor, chunk_size: int = 1 << 20) -> torch.Tensor:
    """``J Jᵀ`` in float64 on the Jacobian's device, accumulated over column chunks.

    Chunking keeps the float64 copy small for large ``d`` while keeping the precision that the
    min-norm solve needs on nearly conflicting gradients.
    """
    n, d = jacobian.shape
    gram = torch.zeros(n, n, dtype=torch.float64, device=jacobian.device)
    for start in range(0, d, chunk_size):
        block = jacobian[:, start : start + chunk_size].to(torch.float64)
        gram += block @ block.T
    return 0.5 * (gram + gram.T)
