"""What ``torch.distributed`` contributes to a Gramian, in one place: the number of ranks and
the mean of a tensor over them (itself when not running distributed)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over the ranks of ``torch.distributed`` (itself when not running).

    Sum then divide: gloo has no ``AVG`` reduction.
    """
    world = world_size()
    if world == 1:
        return tensor
    tensor = tensor.contiguous()
    dist.all_reduce(tensor)
    return tensor.div_(world)


def world_size() -> int:
    """The number of ranks of ``torch.distributed`` (1 when it is not initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
