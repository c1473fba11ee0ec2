"""The input checks of the coordinate-wise combiners (``trimmed-mean``, ``graddrop``): methods
that decide per coordinate of the gradients (per sample of the advantages), from the n values
there, and so need ``J`` itself, not its Gramian.

They keep no state across steps, so they are not Jacobian weightings (that kind is for state in
the gradients' coordinates); an :class:`AdvantageCombiner` is the kind whose call on a Jacobian
``[n, d]`` combines each column on its own (each coordinate a sample), which is exactly what
these methods do, so they subclass it: ``mogradient.backward`` forms the
Jacobian and combines it column by column, and the RL trainer combines the objectives'
advantages per token.
"""

from __future__ import annotations

import torch


def checked(
    advantages: torch.Tensor,
    mask: torch.Tensor | None,
    valid: torch.Tensor | None,
    *,
    noun: str = "values",
    fix: str = "check that objective's loss or rewards",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(values, mask, valid)`` validated: floating values ``[n, *batch]`` (half precision
    promoted to float32), the mask ``[*batch]`` in their dtype (default ones) and ``valid``
    ``[n, *batch]`` bool (default all True). The errors call the values ``noun`` and a
    non-finite one's remedy ``fix``."""
    a = torch.as_tensor(advantages)
    if a.ndim == 0 or a.shape[0] == 0:
        raise ValueError(
            f"expected {noun} of shape [n_objectives, *batch] with at least one objective"
        )
    if not a.is_floating_point() or a.dtype in (torch.float16, torch.bfloat16):
        a = a.to(torch.float32)
    finite = torch.isfinite(a).reshape(a.shape[0], -1).all(dim=1)
    if not bool(finite.all()):
        i = int(torch.nonzero(~finite)[0])
        raise ValueError(
            f"the {noun} of objective {i} contain NaN or Inf; {fix}, or skip this batch"
        )
    if mask is None:
        mask = torch.ones(a.shape[1:], dtype=a.dtype, device=a.device)
    elif mask.shape != a.shape[1:]:
        raise ValueError(
            f"the mask has shape {tuple(mask.shape)} but the {noun}' batch shape is "
            f"{tuple(a.shape[1:])}; pass one mask entry per sample"
        )
    if valid is None:
        valid = torch.ones(a.shape, dtype=torch.bool, device=a.device)
    elif valid.shape != a.shape:
        raise ValueError(
            f"valid has shape {tuple(valid.shape)} but the {noun} {tuple(a.shape)}; pass one "
            "entry per objective and sample (True where that objective scored it)"
        )
    return a, mask.to(device=a.device, dtype=a.dtype), valid.to(device=a.device, dtype=torch.bool)
