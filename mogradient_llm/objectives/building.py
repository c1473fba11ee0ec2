"""An aggregator instance from what a user writes: a registered name or an instance, its
keyword arguments, and a preference (TRL's ``reward_weights``, our ``--reward-weights``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mogradient import Aggregator, get_aggregator, registered
from mogradient.aggregation.registry import aggregator_class


def aggregator_from(
    aggregator: str | Aggregator,
    kwargs: Mapping[str, Any] | None = None,
    preference: Sequence[float] | None = None,
    *,
    preference_name: str = "preference",
) -> Aggregator:
    """The aggregator ``aggregator`` names, built with ``kwargs`` and ``preference``; an
    instance is returned as it is (then ``kwargs`` and ``preference`` must be empty).

    A preference for a method that takes none is refused naming the methods that take one;
    ``preference_name`` is what the caller calls it (``reward_weights`` in a config).
    """
    kwargs = dict(kwargs or {})
    if isinstance(aggregator, Aggregator):
        if kwargs or preference is not None:
            raise ValueError(
                f"aggregator is the instance {aggregator!r}: give its settings to its "
                f"constructor, not aggregator_kwargs={kwargs} / {preference_name}={preference}"
            )
        return aggregator
    cls = aggregator_class(aggregator)  # aliases too: "morlhf" is linear
    if preference is not None and cls is not None:
        if not cls.preference_aware:
            aware = sorted(name for name, c in registered().items() if c.preference_aware)
            raise TypeError(
                f"{preference_name}={list(preference)} are the preference of a "
                f"preference-aware aggregator ({', '.join(aware)}), and {aggregator!r} "
                f"takes none; drop {preference_name} or pick such an aggregator"
            )
        kwargs["preference"] = list(preference)
    return get_aggregator(aggregator, **kwargs)
