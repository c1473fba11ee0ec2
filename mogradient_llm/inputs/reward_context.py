"""What a reward gets besides its samples, as TRL's ``GRPOTrainer`` passes it: the trainer's
state (``trainer_state``), two logging callbacks (``log_extra``, ``log_metric``), and the event
loop that runs ``async def`` rewards.

TRL's semantics: ``log_extra(column, values)`` adds a column, one value per sample of the batch,
to the logged completions (here: the samples written with the metrics); ``log_metric(name,
value)`` logs a scalar under ``name``, averaged over the calls of a step and over the processes.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import TrainerState

_LOOP: asyncio.AbstractEventLoop | None = None
_LOOP_LOCK = threading.Lock()


def _event_loop() -> asyncio.AbstractEventLoop:
    """The event loop of async rewards, on a daemon thread started once (as TRL does), so that
    a client bound to a loop works from step to step and the calls work under a running loop
    (a notebook) too."""
    global _LOOP
    with _LOOP_LOCK:
        if _LOOP is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="mogradient-async-rewards", daemon=True
            )
            thread.start()
            _LOOP = loop
        return _LOOP


def await_all(awaitables: Sequence[Any]) -> list[Any]:
    """The results of ``awaitables`` run concurrently (``asyncio.gather``, as TRL runs async
    rewards), each exception returned in its result's place."""

    async def gather() -> list[Any]:
        return list(await asyncio.gather(*awaitables, return_exceptions=True))

    return asyncio.run_coroutine_threadsafe(gather(), _event_loop()).result()


def trainer_state(
    global_step: int,
    max_steps: int,
    epoch: float,
    train_batch_size: int,
    save_steps: int = 0,
    is_main_process: bool = True,
    is_local_main_process: bool = True,
) -> TrainerState:
    """A ``transformers.TrainerState`` (what TRL passes as ``trainer_state``) with the fields
    this trainer has: the steps done, ``max_steps``, ``epoch`` (passes over the prompts, a
    float), the batch size, ``save_steps`` and the process flags; the others keep their
    defaults (``log_history`` is empty, there is no best metric)."""
    return TrainerState(
        epoch=epoch,
        global_step=global_step,
        max_steps=max_steps,
        logging_steps=1,
        save_steps=save_steps,
        train_batch_size=train_batch_size,
        num_train_epochs=0,
        is_local_process_zero=is_local_main_process,
        is_world_process_zero=is_main_process,
    )


class RewardLog:
    """What the rewards of one batch of ``n`` samples log through ``log_extra`` and
    ``log_metric`` (:meth:`kwargs` are the two callbacks)."""

    def __init__(self, n: int):
        self.n = n
        self.extra: dict[str, list[Any]] = {}
        self._metrics: dict[str, list[float]] = {}

    def log_extra(self, column: str, values: Sequence[Any]) -> None:
        """TRL's ``log_extra``: a column of the logged samples, one value per sample."""
        if not isinstance(column, str) or not column:
            raise ValueError(f"log_extra needs a column name (a string), got {column!r}")
        if isinstance(values, str) or len(values) != self.n:
            size = "a string" if isinstance(values, str) else f"{len(values)} values"
            raise ValueError(
                f"log_extra({column!r}, ...) got {size}; pass one value per sample ({self.n})"
            )
        if column in self.extra:
            raise ValueError(
                f"log_extra: the column {column!r} was already logged for this batch (by this "
                "or another reward); give each column its own name"
            )
        self.extra[column] = list(values)

    def log_metric(self, name: str, value: float) -> None:
        """TRL's ``log_metric``: a scalar logged under ``name``, averaged over the step."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"log_metric needs a metric name (a string), got {name!r}")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"log_metric({name!r}, {value!r}): the value is not finite")
        self._metrics.setdefault(name, []).append(number)

    def kwargs(self) -> dict[str, Callable[..., None]]:
        """The reward keyword arguments ``log_extra`` and ``log_metric``."""
        return {"log_extra": self.log_extra, "log_metric": self.log_metric}

    def metrics(
        self,
        gather_names: Callable[[list[str]], list[str]] | None = None,
        reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> dict[str, float]:
        """Each logged metric's mean over the calls, over every process when ``gather_names``
        (every rank's names) and ``reduce_sum`` are given: TRL's ``Σ values / count``. Every
        rank must call it alike then: the names are sorted so that the reductions pair up."""
        names = sorted(self._metrics)
        if gather_names is not None:
            names = sorted(set(gather_names(names)))
        if not names:
            return {}
        totals = torch.tensor(
            [[sum(self._metrics.get(n, [])), len(self._metrics.get(n, []))] for n in names],
            dtype=torch.float64,
        )
        if reduce_sum is not None:
            totals = reduce_sum(totals).cpu()
        return {n: float(s / c) for n, (s, c) in zip(names, totals.tolist()) if c > 0}
