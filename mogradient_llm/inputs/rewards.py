"""Reward functions written as TRL users write them, and calling them.

A reward function is called the way TRL's ``GRPOTrainer`` calls it:
``fn(prompts=..., completions=..., completion_ids=..., **columns)``, where ``columns`` are the
prompt dataset's other columns as lists aligned with the completions, and returns one score per
completion, or ``None`` where it cannot score a sample. With conversational prompts, ``prompts``
are message lists and each completion is ``[{"role": "assistant", "content": text}]``. Older
functions written ``fn(prompts, completions)`` still work: :class:`Reward` reads the signature once
and passes only what the function accepts.

Built-ins are in :mod:`mogradient_llm.inputs.builtin_rewards`. :func:`score_all` calls rewards
(awaiting ``async def`` ones) and checks their output, naming the reward that misbehaved. Rewards
named on the command line: :mod:`mogradient_llm.inputs.reward_specs`.
"""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from mogradient_llm.inputs.prompts import Completion, Prompt
from mogradient_llm.inputs.reward_context import await_all

#: ``fn(prompts=..., completions=..., **kwargs) -> list[float | None]`` (or the older
#: ``fn(prompts, completions) -> list[float]``); ``async def`` functions are awaited.
RewardFn = Callable[..., Sequence[float | None]]
#: Keyword names :func:`score_all` fills itself, so no column may take them.
_RESERVED = ("prompts", "completions", "completion_ids")


class RewardError(RuntimeError):
    """A reward function raised, or returned the wrong number of scores or non-finite scores."""


class NonFiniteRewardError(RewardError):
    """A reward function returned NaN or an infinite score."""


class RewardArgumentError(RewardError, ValueError):
    """A reward function needs an argument that neither score_all nor any column provides."""


def callable_name(fn: Callable[..., Any]) -> str:
    """TRL's name of a reward callable: a ``functools.partial``'s function's, else its
    ``__name__``, else its class's name."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return str(getattr(fn, "__name__", type(fn).__name__))


def is_async_callable(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` returns a coroutine (as TRL decides it: through
    ``functools.partial`` and a class's ``async def __call__``)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    call = type(fn).__call__ if not inspect.isroutine(fn) else None
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins and extension callables have none
        return None


class Reward:
    """A named reward function; ``hv_reference`` is its worst value (hypervolume reference).

    The calling convention is read from ``fn``'s signature once, here: a function with
    ``**kwargs`` gets every keyword argument; one with a ``completions`` parameter gets, by
    keyword, only the arguments it names; any other (the older ``fn(prompts, completions)``
    written with other parameter names) gets ``prompts`` and ``completions`` positionally.
    """

    def __init__(self, fn: RewardFn, name: str | None = None, hv_reference: float | None = None):
        if not callable(fn):
            raise TypeError(f"a reward must be callable, got {type(fn).__name__}")
        self.fn = fn
        name = name or getattr(fn, "name", None) or callable_name(fn)
        if not name or name == "<lambda>":
            raise ValueError("give the reward a name: Reward(fn, name=...)")
        self.name: str = name
        if hv_reference is None:
            hv_reference = getattr(fn, "hv_reference", None)
        self.hv_reference = hv_reference
        #: ``async def``: :func:`score_all` awaits it, concurrently with the other async ones.
        self.is_async = is_async_callable(fn)
        self._warned_unscored = False  # warned once that it scored no sample of a batch
        signature = _signature(fn)
        params = list(signature.parameters.values()) if signature is not None else []
        self._takes_all = any(p.kind is p.VAR_KEYWORD for p in params)
        by_keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        self._keywords = frozenset(p.name for p in params if p.kind in by_keyword)
        self._required = tuple(
            p.name
            for p in params
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        )
        self._positional = not self._takes_all and "completions" not in self._keywords
        if self._positional and signature is not None:
            try:
                signature.bind(None, None)
            except TypeError:
                raise TypeError(
                    f"reward {name!r} has the signature {signature}: write it TRL's way, "
                    "fn(completions, **kwargs) with keyword arguments such as prompts, "
                    "completions and dataset columns, or as fn(prompts, completions)"
                ) from None

    def __call__(
        self, prompts: Sequence[Prompt], completions: Sequence[Completion], **kwargs: Any
    ) -> Sequence[float | None]:
        """Call the function with the arguments it accepts (see the class docstring).

        Raises :class:`RewardArgumentError` when it needs an argument nobody provides.
        """
        if self._positional:
            return self.fn(prompts, completions)
        available = {"prompts": prompts, "completions": completions, **kwargs}
        missing = [p for p in self._required if p not in available]
        if missing:
            raise RewardArgumentError(
                f"reward {self.name!r} needs the argument(s) {missing}, which no dataset column "
                f"provides; the arguments given are {sorted(available)}. Add a column of that "
                "name to the prompt rows, or give the parameter a default"
            )
        if self._takes_all:
            return self.fn(**available)
        return self.fn(**{k: v for k, v in available.items() if k in self._keywords})

    def __repr__(self) -> str:
        return f"Reward({self.name!r}, {self.fn!r})"


def as_reward(fn: RewardFn | Reward, name: str | None = None) -> Reward:
    """Wrap a callable as a :class:`Reward` (a :class:`Reward` passes through unless renamed)."""
    if isinstance(fn, Reward) and name is None:
        return fn
    if isinstance(fn, Reward):
        return Reward(fn.fn, name, fn.hv_reference)
    return Reward(fn, name)


def as_rewards(fns: Sequence[RewardFn | Reward]) -> list[Reward]:
    """One :class:`Reward` per objective, at least one, with unique names."""
    rewards = [as_reward(fn) for fn in fns]
    names = [r.name for r in rewards]
    if not rewards:
        raise ValueError("pass at least one reward function")
    if len(set(names)) != len(names):
        raise ValueError(f"reward names must be unique, got {names}")
    return rewards


def _reward_kwargs(
    n: int,
    columns: Mapping[str, Sequence[Any]] | None,
    completion_ids: Sequence[Sequence[int]] | None,
    extra_kwargs: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The keyword arguments of every reward call, each column checked to hold ``n`` values."""
    kwargs: dict[str, Any] = {}
    if completion_ids is not None:
        if len(completion_ids) != n:
            raise ValueError(f"got {len(completion_ids)} completion_ids for {n} completions")
        kwargs["completion_ids"] = completion_ids
    for name, values in (columns or {}).items():
        if name in _RESERVED:
            raise ValueError(
                f"a column may not be named {name!r}: score_all passes that argument itself; "
                "rename the column"
            )
        if isinstance(values, str) or len(values) != n:
            size = "a string" if isinstance(values, str) else f"{len(values)} values"
            raise ValueError(
                f"column {name!r} holds {size}; a column needs one value per completion ({n})"
            )
        kwargs[name] = list(values)
    for name, value in (extra_kwargs or {}).items():
        if name in kwargs or name in _RESERVED:
            raise ValueError(f"extra_kwargs repeats the argument {name!r}; pass it once")
        kwargs[name] = value
    return kwargs


def _as_scores(reward: Reward, values: Any, n: int) -> list[float]:
    """``values`` as floats (``None`` as NaN), checked; raises :class:`RewardError` naming it."""
    if isinstance(values, str | bytes):
        raise RewardError(f"reward {reward.name!r} returned non-numeric scores: {values!r:.80}")
    try:
        raw = list(values)
        if any(isinstance(v, str | bytes) for v in raw):
            raise TypeError(f"strings are not scores: {raw!r:.80}")
        scores = [math.nan if v is None else float(v) for v in raw]
    except (TypeError, ValueError) as exc:
        raise RewardError(f"reward {reward.name!r} returned non-numeric scores: {exc}") from exc
    if len(scores) != n:
        raise RewardError(
            f"reward {reward.name!r} returned {len(scores)} scores for {n} completions"
        )
    bad = [i for i, (v, s) in enumerate(zip(raw, scores)) if v is not None and not math.isfinite(s)]
    if bad:
        raise NonFiniteRewardError(
            f"reward {reward.name!r} returned non-finite scores at positions {bad[:5]} "
            f"(e.g. {scores[bad[0]]}); return None for a sample it cannot score"
        )
    return scores


def score_all(
    rewards: Sequence[Reward | RewardFn],
    prompts: Sequence[Prompt],
    completions: Sequence[Completion],
    columns: Mapping[str, Sequence[Any]] | None = None,
    completion_ids: Sequence[Sequence[int]] | None = None,
    *,
    extra_kwargs: Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """Scores ``[k, batch]`` (float32) of every reward (plain functions are wrapped by
    :func:`as_reward`), called the TRL way.

    Each reward gets ``prompts``, ``completions``, ``completion_ids`` (when given) and each of
    ``columns`` (per-sample lists, e.g. from :func:`~mogradient_llm.inputs.prompts.reward_columns`)
    as keyword arguments, plus ``extra_kwargs`` unchanged (not per sample; TRL passes
    ``trainer_state``, ``log_extra`` and ``log_metric`` this way). The synchronous rewards run in
    order; then the ``async def`` ones are awaited together (``asyncio.gather``, as TRL). NaN in the
    result means "no score": the reward returned ``None`` for that sample; a reward that scores no
    sample of the batch is warned about, once per :class:`Reward` object (plain functions are
    wrapped anew at each call: pass :class:`Reward` objects to warn once). A NaN or infinite float
    returned raises :class:`NonFiniteRewardError`; a reward that raises, or returns the wrong number
    of scores or non-numbers, raises :class:`RewardError` naming it; a reward needing an argument
    that nothing provides raises :class:`RewardArgumentError`."""
    n = len(completions)
    if len(prompts) != n:
        raise ValueError(f"got {len(prompts)} prompts for {n} completions; pass one per completion")
    kwargs = _reward_kwargs(n, columns, completion_ids, extra_kwargs)
    wrapped = [as_reward(r) for r in rewards]
    outputs: dict[int, Any] = {}
    pending: dict[int, Any] = {}  # the async rewards' coroutines, awaited together below
    for i, reward in enumerate(wrapped):
        try:
            values = reward(prompts, completions, **kwargs)
        except Exception as exc:
            for coroutine in pending.values():  # never awaited: closed without a warning
                if inspect.iscoroutine(coroutine):
                    coroutine.close()
            if isinstance(exc, RewardError):
                raise
            raise RewardError(f"reward {reward.name!r} raised {type(exc).__name__}: {exc}") from exc
        (pending if inspect.isawaitable(values) else outputs)[i] = values
    if pending:
        results = await_all(list(pending.values()))
        for (i, reward), result in zip(((i, wrapped[i]) for i in pending), results):
            if isinstance(result, BaseException):
                if isinstance(result, RewardError):
                    raise result
                raise RewardError(
                    f"reward {reward.name!r} raised {type(result).__name__}: {result}"
                ) from result
            outputs[i] = result
    rows = [_as_scores(reward, outputs[i], n) for i, reward in enumerate(wrapped)]
    for reward, row in zip(wrapped, rows):
        if n and not reward._warned_unscored and all(math.isnan(v) for v in row):
            reward._warned_unscored = True
            warnings.warn(
                f"reward {reward.name!r} returned None for every sample of a batch ({n} "
                "completions): it gives no signal there. Check its inputs (dataset columns, "
                "completion format); this warning is shown once per reward",
                UserWarning,
                stacklevel=2,
            )
    return torch.tensor(rows, dtype=torch.float32).reshape(len(rewards), n)
