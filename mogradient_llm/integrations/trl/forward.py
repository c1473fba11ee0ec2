"""One TRL forward shared by every loss call of a ``_compute_loss``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass
class Forward:
    """The outputs of TRL's first ``_get_per_token_logps_and_entropies`` call in the block
    (``None`` until it ran) and what the loss calls see of them: the outputs, or ``view`` of
    them while a view is set (the factorised Gramian's float64 copy of the log-probs)."""

    outputs: Any = None
    view: Callable[[Any], Any] | None = None

    def seen(self) -> Any:
        return self.outputs if self.view is None else self.view(self.outputs)


@contextmanager
def one_forward(trainer: Any) -> Iterator[Forward]:
    """Every ``_get_per_token_logps_and_entropies`` call in the block returns the first one's
    outputs (or their view): the loss calls share one forward (and its graph)."""
    real = trainer._get_per_token_logps_and_entropies
    forward = Forward()

    def cached(*args: Any, **kwargs: Any) -> Any:
        if forward.outputs is None:
            forward.outputs = real(*args, **kwargs)
        return forward.seen()

    trainer._get_per_token_logps_and_entropies = cached
    try:
        yield forward
    finally:
        del trainer._get_per_token_logps_and_entropies
