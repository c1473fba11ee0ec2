"""Advantages that carry the objective of each row, so no code guesses it from a length."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

#: The name of the one row left once the objectives are combined (a loss weighting's
#: ``Σ wᵢ Aᵢ``, or an advantage combiner's output).
COMBINED = "combined"


@dataclass(frozen=True)
class Advantages:
    """Advantage rows with their names: ``values`` ``[m, B]`` (one per sample) or ``[m, B, T]``
    (one per token).

    ``names``: the objective of each row, or ``("combined",)`` for the single row of objectives
    already combined. ``valid`` (``[m, B]`` bool, default: all) says which samples each
    objective scored (a reward may return ``None``): a combine is over those only.
    """

    values: torch.Tensor
    names: tuple[str, ...]
    valid: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.values.ndim not in (2, 3):
            raise ValueError(
                "advantages are laid out [objectives, samples] or [objectives, samples, tokens]; "
                f"got shape {tuple(self.values.shape)}"
            )
        if len(self.names) != self.values.shape[0]:
            raise ValueError(
                f"{self.values.shape[0]} advantage rows and {len(self.names)} names "
                f"{list(self.names)}; give one name per row"
            )
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"objective names must be unique, got {list(self.names)}")
        if self.valid is not None and tuple(self.valid.shape) != tuple(self.values.shape[:2]):
            raise ValueError(
                f"valid has shape {tuple(self.valid.shape)}; it says which samples each "
                f"objective scored, shape {tuple(self.values.shape[:2])}"
            )

    @classmethod
    def of(
        cls, values: torch.Tensor, names: Sequence[str], valid: torch.Tensor | None = None
    ) -> Advantages:
        """One row per objective of ``names``."""
        return cls(values, tuple(names), valid)

    @classmethod
    def combined(cls, values: torch.Tensor) -> Advantages:
        """The single row of combined advantages (``[1, B]`` or ``[1, B, T]``)."""
        return cls(values, (COMBINED,))

    @property
    def is_combined(self) -> bool:
        """Whether the objectives are already combined into one row."""
        return self.names == (COMBINED,)

    def per_token(self, mask: torch.Tensor) -> torch.Tensor:
        """The values ``[m, B, T]`` on the tokens of ``mask`` ``[B, T]`` (a per-sample value on
        every token of its sample)."""
        mask = mask.to(self.values.dtype)
        if self.values.ndim == 2:
            return self.values[:, :, None] * mask
        return self.values * mask

    def valid_per_token(self) -> torch.Tensor | None:
        """``valid`` broadcast to the values' shape (``None``: every objective scored all)."""
        if self.valid is None:
            return None
        extra = [1] * (self.values.ndim - 2)
        return self.valid.reshape(*self.valid.shape, *extra).expand_as(self.values)

    def with_values(self, values: torch.Tensor) -> Advantages:
        """The same rows and names with new ``values`` (e.g. after a clip)."""
        return Advantages(values, self.names, self.valid)


def noon_clip(advantages: torch.Tensor) -> torch.Tensor:
    """Noon PPO (PAMA, He & Maghsudi 2025): ``max(A, 0)`` per objective and token."""
    return advantages.clamp(min=0)
