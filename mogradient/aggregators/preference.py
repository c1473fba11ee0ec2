"""Former import path of :mod:`mogradient.aggregation.preference`; re-exported so that existing
imports keep working."""

from mogradient.aggregation.preference import (
    DRAWN_PREFERENCE,
    DRAWN_SPARSE_PREFERENCE,
    Preference,
    PreferenceAware,
)

__all__ = ["DRAWN_PREFERENCE", "DRAWN_SPARSE_PREFERENCE", "Preference", "PreferenceAware"]
