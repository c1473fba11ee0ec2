"""Generation from a sharded policy (FSDP, DeepSpeed ZeRO-3) with the libraries' own tools.

Under sharding no rank holds the whole policy, so ``generate`` on the unwrapped module would
read shards. What the libraries provide instead:

* FSDP2 (``fully_shard``, accelerate's ``fsdp_version: 2``): ``unshard()`` the root, whose
  parameters (embeddings, LM head, value heads) are gathered by its own forward otherwise;
  the sharded blocks gather theirs in their forward hooks;
* FSDP1: ``FullyShardedDataParallel.summon_full_params(recurse=False)`` for the root, the
  nested units as above (TRL's approach);
* ZeRO-3: DeepSpeed's hooks on every module gather parameters as each one runs.

In all three, each forward of a block is a collective, so every rank must run the same number
of forwards: ``generate(synced_gpus=True)`` keeps a rank that has finished its samples
stepping until all have.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch.distributed as dist
from torch import nn


def _zero3() -> bool:
    from transformers.integrations import is_deepspeed_zero3_enabled

    return bool(is_deepspeed_zero3_enabled())


@contextlib.contextmanager
def generation_context(model: nn.Module) -> Iterator[bool | None]:
    """Make the prepared (possibly sharded) ``model``'s policy able to ``generate``; yields
    the ``synced_gpus`` value to pass (``None``: not sharded, transformers' default)."""
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    several = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if isinstance(model, FSDPModule):
        model.unshard()
        try:
            yield several
        finally:
            model.reshard()
    elif isinstance(model, FullyShardedDataParallel):
        with FullyShardedDataParallel.summon_full_params(model, recurse=False, writeback=False):
            yield several
    elif _zero3():
        yield several
    else:
        yield None
