"""The multi-objective stats in TRL's logs (``self._metrics[mode]``, averaged by ``log()``).

TRL logs each objective's reward as ``rewards/{name}/mean|std``; the adapter adds, under
``mo/``, what :class:`~mogradient_llm.objectives.loss.MultiObjectiveLoss` returns: the
aggregator's weights (``mo/weight/{name}``, ``mo/weight_sum``), the gradient cosine of every
pair of objectives (``mo/grad_cos/{a}/{b}``) and the conflict rate (``mo/conflict_rate``) for
Gramian methods, the advantages' correlations for the others.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager

from mogradient_llm.objectives.loss import Stats

Metrics = MutableMapping[str, list[float]]
PREFIXES = ("agg/", "diag/")


def metric_name(key: str) -> str:
    """``agg/weight/x`` → ``mo/weight/x``; ``diag/grad_cos/a/b`` → ``mo/grad_cos/a/b``."""
    for prefix in PREFIXES:
        if key.startswith(prefix):
            return "mo/" + key[len(prefix) :]
    return "mo/" + key


def log_stats(metrics: Metrics, stats: Stats) -> None:
    """Appends every stat (the same on every rank: decided from global quantities)."""
    for key, value in stats.items():
        metrics[metric_name(key)].append(float(value))


@contextmanager
def metrics_discarded(metrics: MutableMapping[str, Metrics]) -> Iterator[None]:
    """Drops what TRL's ``_compute_loss`` appends to ``metrics`` (by mode) inside the block:
    the per-objective loss calls would log ``entropy``, ``kl`` and the clip ratios k times."""
    before = {mode: {k: len(v) for k, v in values.items()} for mode, values in metrics.items()}
    try:
        yield
    finally:
        for mode, values in metrics.items():
            kept = before.get(mode, {})
            for key in list(values):
                if key not in kept:
                    del values[key]
                else:
                    del values[key][kept[key] :]
