"""Quiet torch's notice that an op has no batching rule, where our vectorised backwards run.

The Gramian engine runs one backward vectorised over the k objectives (``torch.func.vmap``),
and replays some modules under a vectorised vjp. For an op without a batching rule
(on CPU: ``aten::_scaled_dot_product_flash_attention_for_cpu_backward``, the backward of every
SDPA attention of a transformers model in eval mode) torch falls back to a loop over the k
cotangents and warns "There is a performance drop because we have not yet implemented the
batching rule for ...". The result is exact, and the loop is what the non-vectorised path
would run anyway, so the warning tells the user nothing actionable; in the RL loop it was
printed once per process with a stack line, for every run of a benchmark. Only that message
is silenced, only around our own vectorised calls: every other warning still shows.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

#: The start of torch's message (``aten/src/ATen/functorch/BatchedFallback.cpp``).
NO_BATCHING_RULE = (
    r"There is a performance drop because we have not yet implemented the batching rule"
)


@contextlib.contextmanager
def quiet_batching_fallback() -> Iterator[None]:
    """Ignore torch's "no batching rule" performance warning inside the block (see module)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=NO_BATCHING_RULE, category=UserWarning)
        yield
