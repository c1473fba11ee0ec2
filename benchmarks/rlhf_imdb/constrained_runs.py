"""The constrained benchmark's runs (:mod:`benchmarks.rlhf_imdb.constrained`): the sweep and the
Lagrangian runs of each size, then the chosen MORLHF weights at the other seeds."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor, Future
from typing import Any

from benchmarks.rlhf_imdb.constrained import (
    LENGTH_ONLY,
    THRESHOLDS,
    choices,
    constraint_of,
    evaluation_rows,
)
from benchmarks.rlhf_imdb.report import SWEEP
from benchmarks.rlhf_imdb.runs import CONSTRAINED
from benchmarks.rlhf_imdb.stages import RunProgress, RunStage, sweep_weights


def first_labels(stage: RunStage) -> list[dict[str, Any]]:
    """Per algorithm: the MORLHF sweep of the first seed (``--sweep`` weights and the
    length-only end), then one Lagrangian run per threshold and seed."""
    args, labels = stage.args, []
    seeds = [int(s) for s in args.seeds.split(",")]
    for algorithm in args.algorithms.split(","):
        for w in [LENGTH_ONLY, *sweep_weights(args.sweep)]:
            labels.append(stage.label(2, algorithm, SWEEP, seeds[0], (w, round(1 - w, 4))))
        for tau in THRESHOLDS:
            for seed in seeds:
                labels.append(
                    stage.label(2, algorithm, CONSTRAINED, seed, None, constraint_of(tau))
                )
    return labels


def chosen_labels(
    stage: RunStage, results: Sequence[dict[str, Any]], chosen: dict[tuple[str, str, float], Any]
) -> list[dict[str, Any]]:
    """The runs of each weight in ``chosen`` (for this stage's size) at the seeds after the
    first, once each."""
    seeds = [int(s) for s in stage.args.seeds.split(",")]
    weights = {
        (algorithm, w)
        for (size, algorithm, _), w in chosen.items()
        if size == stage.size and w is not None
    }
    done = {(r["algorithm"], r["preference"], r["seed"]) for r in results if r["method"] == SWEEP}
    labels = []
    for algorithm, w in sorted(weights):
        preference = (w, round(1 - w, 4))
        for seed in seeds[1:]:
            if (algorithm, preference, seed) not in done:
                labels.append(stage.label(2, algorithm, SWEEP, seed, preference))
    return labels


def run_all(
    pool: Executor, progress: RunProgress, stages: Sequence[RunStage]
) -> tuple[list[dict[str, Any]], dict[tuple[int, str], dict[str, Any]]]:
    """Every run of the benchmark on ``stages`` (prepared, one per size): ``(runs, starts)``,
    each run its label merged with its result."""
    starts: dict[Future, tuple[int, str]] = {}
    futures: dict[Future, dict[str, Any]] = {}
    for stage in stages:
        starts.update(stage.submit_starts(pool))
        futures.update(stage.submit_runs(pool, progress, first_labels(stage)))
    results = [{**label, **f.result()[1]} for f, label in futures.items()]
    chosen = choices(evaluation_rows(results))
    more: dict[Future, dict[str, Any]] = {}
    for stage in stages:
        more.update(stage.submit_runs(pool, progress, chosen_labels(stage, results, chosen)))
    results += [{**label, **f.result()[1]} for f, label in more.items()]
    return results, {label: f.result()[1] for f, label in starts.items()}
