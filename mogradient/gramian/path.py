"""Which parameter-level path takes a Gramian method's Gramian: the rule and its inputs.

Two paths compute the k×k Gramian of k losses' gradients over d parameters:

* ``"loop"``: the k×d Jacobian (one backward per objective), then ``JJᵀ``. Its extra memory
  is the Jacobian itself: measured at :data:`LOOP_MEMORY_FACTOR` × its ``k·d·itemsize``
  bytes at most (``benchmarks/backward_paths.py``, ``docs/backward.md``).
* ``"layers"``: the forward recorded by a :class:`~mogradient.gramian.recorder.GramianRecorder`,
  the Gramian accumulated layer by layer in one vectorised backward, then one backward of
  Σ wᵢ Lᵢ. It never holds the Jacobian (about k × the largest layer and its activations), but
  it needs the forward to be recorded, so it can run only where the caller hands over the
  model and the forward (a closure) or a recorder.

The rule (:func:`choose_parameter_path`), derived from
``docs/results/backward_paths/backward_paths.csv`` (``docs/backward.md`` gives the table): take
the loop while its memory (:data:`LOOP_MEMORY_FACTOR` × the Jacobian's bytes) fits the budget,
the layer path when it does not and it can run. Time does not enter: the loop was 1.7–2.2×
faster on the transformer and the small GPT-2, the two were within 8% of each other on the
5.2M-parameter GPT-2, and the layer path was faster on the parameter-heavy MLP (0.64–0.89×);
k·d does not separate them (the MLP at k·d = 1.6M favours the layers, the transformer at 2.1M
the loop: the layer path's cost follows the activations, which the rule does not see before
the forward), so the budget is the one input that decides. The
default budget (:func:`default_memory_budget`) is a quarter of the memory free on the
parameters' device when the step starts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

import torch
import torch.distributed as dist

from mogradient.gramian.distributed import world_size

__all__ = [
    "LOOP_MEMORY_FACTOR",
    "MEMORY_FRACTION",
    "PARAMETER_PATHS",
    "ParameterPath",
    "choose_parameter_path",
    "default_memory_budget",
    "jacobian_bytes",
]

ParameterPath = Literal["auto", "loop", "layers"]
PARAMETER_PATHS: tuple[str, ...] = ("auto", "loop", "layers")
#: The loop's peak extra memory over a plain step, as a multiple of the k×d Jacobian's bytes:
#: the largest ratio measured (3.06, ``benchmarks.backward_paths.loop_memory_factor`` of the
#: committed CSV), rounded up to a half.
LOOP_MEMORY_FACTOR = 3.5
#: The share of the device's free memory the loop may take (the rest is left to the
#: optimizer's state and the next steps' activations): a choice, not a measurement.
MEMORY_FRACTION = 0.25
#: The budget where the free memory cannot be read (not Linux, not CUDA).
FALLBACK_BUDGET = 4 * 2**30


def jacobian_bytes(k: int, params: Sequence[torch.Tensor]) -> int:
    """Bytes of the k×d Jacobian of ``k`` losses over ``params`` (in the parameters' dtype,
    the widest when they differ)."""
    if not params:
        return 0
    itemsize = max(p.element_size() for p in params)
    return k * sum(p.numel() for p in params) * itemsize


def default_memory_budget(device: torch.device) -> int:
    """:data:`MEMORY_FRACTION` of the memory free now on ``device``: CUDA's
    ``mem_get_info``, the host's available physical pages on the CPU;
    :data:`FALLBACK_BUDGET` where neither can be read."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * MEMORY_FRACTION)
    if device.type == "cpu":
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return FALLBACK_BUDGET
        return int(free * MEMORY_FRACTION)
    return FALLBACK_BUDGET


def choose_parameter_path(
    k: int,
    params: Sequence[torch.Tensor],
    *,
    requested: str = "auto",
    can_record: bool,
    memory_budget: float | None = None,
) -> Literal["loop", "layers"]:
    """The path for ``k`` losses over ``params``.

    ``requested``: ``"loop"`` or ``"layers"`` are taken as given (``"layers"`` only where
    ``can_record``, else a ``ValueError`` says what is missing); ``"auto"`` gives ``"layers"``
    when ``can_record`` and the loop's memory, :data:`LOOP_MEMORY_FACTOR` ×
    :func:`jacobian_bytes`, exceeds ``memory_budget`` (bytes; default
    :func:`default_memory_budget` of the parameters' device), else ``"loop"``.
    """
    if requested not in PARAMETER_PATHS:
        raise ValueError(f"parameter_path must be one of {PARAMETER_PATHS}, got {requested!r}")
    if requested == "layers" and not can_record:
        raise ValueError(
            "parameter_path='layers' needs the forward recorded: pass the losses as a "
            "closure (a function of no arguments that runs the forward and returns them) "
            "with model=, or a GramianRecorder as recorder="
        )
    if requested != "auto":
        return "layers" if requested == "layers" else "loop"
    if not can_record:
        return "loop"
    if memory_budget is None:
        device = params[0].device if params else torch.device("cpu")
        memory_budget = _smallest_over_ranks(default_memory_budget(device), device)
    if memory_budget < 0:
        raise ValueError(f"memory_budget must be >= 0 bytes, got {memory_budget!r}")
    over = LOOP_MEMORY_FACTOR * jacobian_bytes(k, params) > memory_budget
    return "layers" if over else "loop"


def _smallest_over_ranks(budget: int, device: torch.device) -> int:
    """The smallest of the ranks' budgets under ``torch.distributed``, so that every rank takes
    the same path (the two paths' collectives differ: a rank on each would wait forever)."""
    if world_size() == 1:
        return budget
    value = torch.tensor([float(budget)], dtype=torch.float64, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return int(value.item())
