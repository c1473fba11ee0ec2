"""Gramian weightings that decide from the cross product ``A = J₁ J₂ᵀ`` of two independent
mini-batches' Jacobians (MoDo, SDMGrad).

``A`` is an unbiased estimate of the true Gramian's products ``∇Lᵢ·∇Lⱼ`` where ``J₁ J₁ᵀ`` is
biased by the noise of one batch (its diagonal holds ``‖gᵢ‖²``, which includes the variance),
and the methods' convergence guarantees rest on that. ``A`` is square but neither symmetric
nor positive semi-definite in general; a single batch's Gramian ``J Jᵀ`` (symmetric PSD) is the
special case of two identical batches (exact for deterministic objectives).

These methods' weights are not homogeneous in the matrix (their step sizes are in its units),
so they decide at the matrix's own scale: no power-of-two rescaling as the other Gramian
weightings do; a product beyond float64's range is refused.
"""

from __future__ import annotations

from typing import overload

import numpy as np
import torch

from mogradient.aggregation.inputs import check_jacobian
from mogradient.aggregation.kinds import GramianWeighting

__all__ = ["CrossGramianWeighting", "check_cross_gramian", "cross_gramian_of"]


def check_cross_gramian(matrix: np.ndarray | torch.Tensor) -> np.ndarray:
    """A square, finite, real ``[n, n]`` matrix as C-contiguous float64 numpy (no symmetry or
    definiteness asked: ``J₁ J₂ᵀ`` has neither)."""
    if isinstance(matrix, torch.Tensor):
        if matrix.is_complex() or matrix.dtype == torch.bool:
            raise TypeError(f"expected a real-valued matrix, got dtype {matrix.dtype}")
        matrix = matrix.detach().to("cpu", torch.float64).numpy()
    if not isinstance(matrix, np.ndarray):
        raise TypeError(
            f"expected the matrix J₁J₂ᵀ as a numpy array or torch tensor, got "
            f"{type(matrix).__name__}"
        )
    if matrix.dtype.kind not in "fiu":
        raise TypeError(f"expected a real-valued matrix, got dtype {matrix.dtype}")
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(
            f"expected a square [n_objectives, n_objectives] matrix, got shape {matrix.shape}; "
            "form it as J1 @ J2.T from two Jacobians [n_objectives, d] of independent batches"
        )
    a = np.ascontiguousarray(matrix, dtype=np.float64)
    bad = ~np.isfinite(a)
    if bad.any():
        i, j = (int(x) for x in np.argwhere(bad)[0])
        raise ValueError(
            f"the matrix J₁J₂ᵀ has a non-finite entry A[{i}, {j}] = {a[i, j]}: objective {i}'s "
            f"or {j}'s gradient is not finite, or their product overflowed float64; check those "
            "losses, or scale them down"
        )
    return a


def cross_gramian_of(
    first: torch.Tensor, second: torch.Tensor, chunk_size: int = 1 << 20
) -> torch.Tensor:
    """``J₁ J₂ᵀ`` as a float64 ``[k, k]`` matrix on the Jacobians' device, over column chunks
    copied to float64 (exact to float64 rounding)."""
    if first.shape != second.shape:
        raise ValueError(
            f"the two batches' Jacobians differ in shape, {tuple(first.shape)} and "
            f"{tuple(second.shape)}; give the same objectives and parameters for both batches"
        )
    n, d = first.shape
    out = torch.zeros(n, n, dtype=torch.float64, device=first.device)
    for start in range(0, d, chunk_size):
        a = first[:, start : start + chunk_size].to(torch.float64)
        b = second[:, start : start + chunk_size].to(torch.float64)
        out += a @ b.T
    return out


class CrossGramianWeighting(GramianWeighting):
    """A Gramian weighting that decides from ``A = J₁ J₂ᵀ`` of two independent batches
    (``needs_two_batches``): :meth:`weights` takes any square finite matrix, and the update is
    ``wᵀ(J₁ + J₂)/2``, the weighted mean of both batches' gradients (MoDo's eq. 2.9b).

    ``agg(J₁, second_jacobian=J₂)`` returns that update; ``agg(J)`` decides from ``J Jᵀ``, the
    case of two identical batches (exact for deterministic objectives; with noisy mini-batches
    the methods' guarantees need the second batch). ``mogradient.backward`` asks for the second
    batch's losses (``second_losses=``). Subclasses implement :meth:`_solve` on the float64
    matrix at its own scale (see the module docstring).
    """

    needs_two_batches = True

    @overload
    def weights(
        self, gramian: np.ndarray, losses: np.ndarray | torch.Tensor | None = None
    ) -> np.ndarray: ...
    @overload
    def weights(
        self, gramian: torch.Tensor, losses: np.ndarray | torch.Tensor | None = None
    ) -> torch.Tensor: ...
    def weights(
        self,
        gramian: np.ndarray | torch.Tensor,
        losses: np.ndarray | torch.Tensor | None = None,
    ) -> np.ndarray | torch.Tensor:
        """Float64 weights ``[n]`` for ``A = J₁ J₂ᵀ`` ``[n, n]`` (or a Gramian ``J Jᵀ``);
        numpy in → numpy out, torch in → torch out. ``losses`` are checked and ignored."""
        a = check_cross_gramian(gramian)
        if losses is not None:
            self._loss_values(a.shape[0], losses)
        w = self._solve(a)
        if isinstance(gramian, torch.Tensor):
            return torch.from_numpy(np.ascontiguousarray(w, dtype=np.float64)).to(gramian.device)
        return w

    def __call__(
        self,
        jacobian: torch.Tensor,
        losses: torch.Tensor | None = None,
        second_jacobian: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``wᵀ(J₁ + J₂)/2`` with ``w`` from ``J₁ J₂ᵀ`` (``second_jacobian`` ``J₂``; without
        it, ``J₂ = J₁``)."""
        jacobian = check_jacobian(jacobian)
        second = jacobian if second_jacobian is None else check_jacobian(second_jacobian)
        with torch.no_grad():
            w = self.weights(cross_gramian_of(jacobian, second), losses)
            if second_jacobian is None:
                return w.to(jacobian.dtype) @ jacobian
            return (w.to(torch.float64) @ (jacobian.double() + second.double()) / 2).to(
                jacobian.dtype
            )
