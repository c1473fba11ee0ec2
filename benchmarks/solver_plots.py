"""PNGs for the solver benchmark: median µs against n per method and Gramian kind, and the
min-norm speed-up over quadprog at every n."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib import ticker  # noqa: E402


def plot_timings(groups: dict[str, list[dict]], path: Path) -> None:
    """Log-log panels, one per (experiment, Gramian kind): median µs per call against n."""
    panels = list(
        dict.fromkeys((r["experiment"], r["gramians"]) for rs in groups.values() for r in rs)
    )
    n_cols = min(3, len(panels))
    n_rows = -(-len(panels) // n_cols)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(3.4 * n_cols, 3.0 * n_rows), dpi=80, squeeze=False
    )
    for ax, (experiment, kind) in zip(axes.flat, panels):
        rows = [
            r
            for rs in groups.values()
            for r in rs
            if r["experiment"] == experiment and r["gramians"] == kind
        ]
        for method in dict.fromkeys(r["method"] for r in rows):
            points = sorted((r["n"], r["median_us"]) for r in rows if r["method"] == method)
            ax.plot(*zip(*points), marker="o", label=method)
        ax.set(xscale="log", yscale="log", xlabel="objectives n", title=f"{experiment}, {kind}")
        sizes = sorted({r["n"] for r in rows})
        ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.set_xticks(sizes)
        ax.tick_params(axis="x", labelsize=6)
        ax.title.set_fontsize(8)
        ax.legend(fontsize=6)
    for ax in axes[:, 0]:
        ax.set_ylabel("median µs per call")
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_sweep(rows: list[dict], path: Path) -> None:
    """Speed-up of our min-norm over quadprog at every n, one line per Gramian family, with the
    2× target."""
    fig, ax = plt.subplots(figsize=(6.0, 3.2), dpi=80)
    for kind in dict.fromkeys(r["gramians"] for r in rows):
        points = sorted(
            (r["n"], r["speedup"]) for r in rows if r["gramians"] == kind and r["method"] == "ours"
        )
        ax.plot(*zip(*points), marker=".", label=kind)
    ax.axhline(2.0, color="k", linestyle="--", linewidth=1, label="target 2×")
    ax.set(yscale="log", xlabel="objectives n", ylabel="quadprog µs / our µs (median)")
    ax.set_title("min-norm weights: speed-up over quadprog at every n", fontsize=9)
    ax.yaxis.set_major_formatter(ticker.ScalarFormatter())
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
