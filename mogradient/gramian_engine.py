"""Former import path of the per-layer Gramian engine, now in :mod:`mogradient.gramian`
(:mod:`~mogradient.gramian.recorder`, with its taps, rules and replay beside it); re-exported
so that existing imports keep working. New code imports :mod:`mogradient.gramian.recorder`."""

from mogradient.gramian.recorder import GramianRecorder, module_gramian

__all__ = ["GramianRecorder", "module_gramian"]
