"""Aligned-MTL: independent component alignment (Senushkin et al., CVPR 2023)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from mogradient.aggregation.kinds import GramianWeighting, Property
from mogradient.aggregation.preference import Preference
from mogradient.aggregation.registry import register
from mogradient.solvers.aligned_mtl import SCALE_MODES, aligned_mtl_weights
from mogradient.solvers.checked import aligned_mtl_into

ScaleMode = Literal["min", "median", "rmse"]


@register("aligned-mtl", "alignedmtl")
class AlignedMTL(GramianWeighting):
    """The p-weighted combination of aligned gradients that span the same space as the
    originals with every non-zero singular value equal (condition number 1).

    Reference: Senushkin, Patakin, Kuznetsov, Konushin, *Independent Component Alignment for
    Multi-Task Learning*, CVPR 2023 (Algorithm 1).

    From the eigendecomposition G = VΛVᵀ (rank r), B = √s·V_rΛ_r^(-1/2)V_rᵀ and the loss weights
    are Bp. Cost: n backwards for the Gramian, then one n×n eigendecomposition (a few µs).
    See ``docs/aggregators/aligned-mtl.md``.

    Args:
        preference: the task weights p (non-negative, normalised to sum to 1); ``None``:
            uniform 1/n.
        scale_mode: the common singular value's square s: ``"min"`` the smallest non-zero
            eigenvalue of G (the paper's choice), ``"median"`` the median one (the lower middle
            one for an even rank, as TorchJD), ``"rmse"`` their mean.
    """

    properties = frozenset(
        {
            "scale_equivariant",
            "deterministic",
            "reset_restores",
            "non_differentiable",
        }
    )  # plus "permutation_invariant" with the uniform preference: see claims()
    preference_aware = True
    example_settings = ({"scale_mode": "median"}, {"scale_mode": "rmse"})

    def __init__(
        self, preference: Sequence[float] | None = None, scale_mode: ScaleMode = "min"
    ) -> None:
        self.preference = Preference(preference)
        if not isinstance(scale_mode, str):
            raise TypeError(
                f"scale_mode must be one of {sorted(SCALE_MODES)} (a string), got {scale_mode!r}"
            )
        if scale_mode not in SCALE_MODES:
            raise ValueError(f"scale_mode must be one of {sorted(SCALE_MODES)}, got {scale_mode!r}")
        self.scale_mode: ScaleMode = scale_mode

    def claims(self) -> frozenset[Property]:
        return self.preference.with_permutation_invariance(self.properties)

    def _hyperparameters(self) -> dict[str, object]:
        return {"preference": self.preference, "scale_mode": self.scale_mode}

    def _checked_into(self, address: int, n: int, out: int) -> bool:
        p = self.preference.shared(n)
        return aligned_mtl_into(address, n, p, SCALE_MODES[self.scale_mode], out)

    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        p = self.preference.resolve(gramian.shape[0])
        return aligned_mtl_weights(gramian, p, self.scale_mode)
