"""String registry: ``get_aggregator("cagrad", c=0.4)``.

Every public module of :mod:`mogradient.aggregators` is imported by :func:`discover`, so a
method registered with ``@register`` in a new module is found with no other edit. Names are
case-insensitive and ``_``/``-`` are interchangeable. Unknown names and bad keyword arguments
raise errors that list what is valid.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import pkgutil
from collections.abc import Callable

from mogradient.aggregation.kinds import Aggregator

_REGISTRY: dict[str, type[Aggregator]] = {}
_ALIASES: dict[str, str] = {}


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def register(name: str, *aliases: str) -> Callable[[type[Aggregator]], type[Aggregator]]:
    """Class decorator that makes an aggregator reachable by ``name`` (and ``aliases``)."""

    def decorate(cls: type[Aggregator]) -> type[Aggregator]:
        key = _normalise(name)
        if key in _REGISTRY or key in _ALIASES:
            raise ValueError(f"aggregator name {name!r} is already registered")
        _REGISTRY[key] = cls
        for alias in aliases:
            _ALIASES[_normalise(alias)] = key
        return cls

    return decorate


#: Modules of :mod:`mogradient.aggregators` that only re-export the framework (former paths).
_NOT_METHODS = frozenset({"base", "dispatch", "preference", "registry"})


def discover() -> None:
    """Import every method module of :mod:`mogradient.aggregators` (idempotent)."""
    package = importlib.import_module("mogradient.aggregators")
    for module in pkgutil.iter_modules(package.__path__):
        if module.name.startswith("_") or module.name in _NOT_METHODS:
            continue
        importlib.import_module(f"mogradient.aggregators.{module.name}")


def registered() -> dict[str, type[Aggregator]]:
    """Canonical name → class of every registered method (aliases left out)."""
    return dict(sorted(_REGISTRY.items()))


def aggregator_class(name: str) -> type[Aggregator] | None:
    """The class :func:`get_aggregator` builds for ``name`` (an alias, any case, ``_`` or
    ``-``), or ``None`` for an unknown name."""
    key = _normalise(name)
    return _REGISTRY.get(_ALIASES.get(key, key))


def aliases_of(name: str) -> list[str]:
    """The aliases registered for the canonical ``name``."""
    return sorted(alias for alias, target in _ALIASES.items() if target == name)


def available_aggregators() -> list[str]:
    """Sorted names accepted by :func:`get_aggregator` (aliases included)."""
    return sorted([*_REGISTRY, *_ALIASES])


def get_aggregator(name: str | Aggregator, **kwargs: object) -> Aggregator:
    """Build the aggregator registered as ``name`` with hyper-parameters ``kwargs``.

    An :class:`Aggregator` instance is returned as it is (then ``kwargs`` must be empty).
    """
    if isinstance(name, Aggregator):
        if kwargs:
            raise TypeError(
                f"got an aggregator instance {name!r} and keyword arguments {sorted(kwargs)}; "
                "set hyper-parameters when constructing the instance instead"
            )
        return name
    if not isinstance(name, str):
        raise TypeError(
            f"aggregator must be a name or an Aggregator instance, got {type(name).__name__}"
        )
    key = _normalise(name)
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        valid = available_aggregators()
        close = difflib.get_close_matches(_normalise(name), valid, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown aggregator {name!r}.{hint} Valid names: {', '.join(valid)}")
    cls = _REGISTRY[key]
    params = [p for p in inspect.signature(cls).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        accepted = ", ".join(params) if params else "none"
        raise TypeError(
            f"aggregator {key!r} got unexpected hyper-parameter(s) {unknown}; "
            f"it accepts: {accepted}"
        )
    return cls(**kwargs)
