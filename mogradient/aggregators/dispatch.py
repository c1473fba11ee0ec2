"""Former import path of :func:`mogradient.aggregation.dispatch.dispatch`; re-exported so that
existing imports keep working."""

from mogradient.aggregation.dispatch import dispatch

__all__ = ["dispatch"]
