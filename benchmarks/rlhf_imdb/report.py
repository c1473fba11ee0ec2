"""Report stage: the mean ± std table per size x aggregator, per-run and summary CSVs, training
curves per objective and aggregator, and the final points per size with the Pareto set marked."""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.rlhf_imdb.runs import OBJECTIVES
from benchmarks.tables import write_csv
from mogradient.pareto import is_non_dominated

METRICS = (*OBJECTIVES, "hypervolume", "kl", "seconds_per_step")


def summarise(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (size, aggregator): mean and std over seeds of every metric."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["size"], run["aggregator"]), []).append(run)
    rows = []
    for (size, aggregator), members in groups.items():
        row: dict[str, Any] = {"size": size, "aggregator": aggregator, "seeds": len(members)}
        for metric in METRICS:
            values = [m[metric] for m in members]
            row[f"{metric}_mean"] = statistics.mean(values)
            row[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
    return rows


def format_table(summary: Sequence[dict[str, Any]]) -> str:
    """The summary as a Markdown table (mean ± std over seeds)."""
    header = "| size | aggregator | seeds | sentiment | length | hypervolume | KL | s/step |"
    lines = [header, "|" + "---|" * 8]
    for row in summary:
        cells = [f"{row[f'{m}_mean']:.3f} ± {row[f'{m}_std']:.3f}" for m in METRICS]
        lines.append(
            f"| {row['size']} | {row['aggregator']} | {row['seeds']} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def plot_curves(runs: Sequence[dict[str, Any]], size: str, path: Path) -> None:
    """Per objective, the training-batch mean reward per PPO step (mean over seeds) per
    aggregator, for one model size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(OBJECTIVES), figsize=(10, 3.5))
    trained = [r for r in runs if r["size"] == size and r["history"]]
    for aggregator in dict.fromkeys(r["aggregator"] for r in trained):
        histories = [r["history"] for r in trained if r["aggregator"] == aggregator]
        steps = min(len(h) for h in histories)
        for ax, name in zip(axes, OBJECTIVES):
            values = np.array([[h[i][name] for i in range(steps)] for h in histories]).mean(0)
            ax.plot(range(1, steps + 1), values, label=aggregator)
    for ax, name in zip(axes, OBJECTIVES):
        ax.set_xlabel("PPO step")
        ax.set_title(f"{name} (training batch mean, {size})")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_points(runs: Sequence[dict[str, Any]], sizes: Sequence[str], path: Path) -> None:
    """Final held-out (sentiment, length) of every run, one panel per size; the runs on the
    size's Pareto front (``mogradient.pareto.is_non_dominated``, both maximised) are circled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        members = [r for r in runs if r["size"] == size]
        points = np.array([[r["sentiment"], r["length"]] for r in members])
        front = is_non_dominated(points, maximize=True)
        for aggregator in dict.fromkeys(r["aggregator"] for r in members):
            chosen = [i for i, r in enumerate(members) if r["aggregator"] == aggregator]
            ax.scatter(points[chosen, 0], points[chosen, 1], label=aggregator)
        ax.scatter(
            points[front, 0],
            points[front, 1],
            s=160,
            facecolors="none",
            edgecolors="black",
            label="non-dominated",
        )
        ax.set_xlabel("sentiment (positive logit)")
        ax.set_ylabel("length reward")
        ax.set_title(f"final held-out means, {size}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(
    runs: Sequence[dict[str, Any]],
    policies: Sequence[dict[str, Any]],
    out: Path,
    ref_point: Sequence[float],
) -> list[dict[str, Any]]:
    """Write the CSVs, plots and samples under ``out``, print the table; returns the summary."""
    summary = summarise(runs)
    write_csv(
        [{k: v for k, v in r.items() if k not in ("history", "samples")} for r in runs],
        out / "runs.csv",
    )
    write_csv(summary, out / "summary.csv")
    write_csv(policies, out / "policies.csv")
    sizes = list(dict.fromkeys(r["size"] for r in runs))
    for size in sizes:
        plot_curves(runs, size, out / f"curves_{re.sub(r'[^A-Za-z0-9_.-]+', '_', size)}.png")
    plot_points(runs, sizes, out / "pareto.png")
    keys = ("size", "aggregator", "seed", "samples")
    (out / "samples.json").write_text(json.dumps([{k: r[k] for k in keys} for r in runs], indent=1))
    print(f"\nheld-out means over seeds; hypervolume reference (sentiment, length) = {ref_point}")
    print(format_table(summary))
    print(f"wrote {out}/runs.csv, summary.csv, policies.csv, pareto.png, curves_*.png")
    return summary
