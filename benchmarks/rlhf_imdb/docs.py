"""The IMDb benchmark's tables in the docs, rebuilt from a results folder's CSVs with the
report's own formatters (``report.format_table``, ``report.format_best``), so that a page
shows exactly what ``summary.csv``, ``starts.csv`` and ``best.csv`` hold.

Table names (the part after the folder in a docs marker, e.g. ``rlhf_imdb_v2/2-ppo``):
``K-ALGORITHM`` (the K-objective rows of one algorithm), ``K`` (every algorithm), ``best``,
``policies`` (the pre-trained policies of ``policies.csv``), ``fronts`` (the sweep, Rewarded
Soups and conditioned policies of ``fronts.csv``, :mod:`benchmarks.rlhf_imdb.compare`), ``v1``
(the earlier benchmark's one-table format, kept for the archive page) and the constrained
benchmark's ``constrained``, ``constrained-seeds`` and ``constrained-sweep``
(:func:`benchmarks.rlhf_imdb.constrained.docs_table`).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.rlhf_imdb import constrained
from benchmarks.rlhf_imdb.compare import CSV as FRONTS_CSV
from benchmarks.rlhf_imdb.compare import format_fronts
from benchmarks.rlhf_imdb.report import format_best, format_table, plot_kl_curves
from benchmarks.rlhf_imdb.runs import OBJECTIVES
from benchmarks.tables import read_csv


def budgets_of(summary: Sequence[dict[str, Any]]) -> list[float]:
    """The KL budgets of a summary, read from its ``test_hv@B_mean`` columns."""
    pattern = re.compile(r"test_hv@([0-9.]+)_mean")
    return [float(m.group(1)) for key in summary[0] if (m := pattern.fullmatch(key))]


def docs_table(results: Path, name: str) -> str:
    """The Markdown table ``name`` (see the module docstring) of the results in ``results``."""
    if name == "v1":
        return format_v1(read_csv(results / "summary.csv"))
    if name == "best":
        return format_best(read_csv(results / "best.csv"))
    if name == "policies":
        return format_policies(read_csv(results / "policies.csv"))
    if name == "fronts":
        return format_fronts(read_csv(results / FRONTS_CSV))
    if name.startswith("constrained"):
        return constrained.docs_table(results, name)
    k, _, algorithm = name.partition("-")
    if not k.isdigit():
        raise ValueError(
            f"unknown IMDb table {name!r}: use K, K-ALGORITHM, best, policies, fronts, v1 or "
            "constrained[-seeds|-sweep]"
        )
    summary = read_csv(results / "summary.csv")
    starts = {(r["objectives"], r["size"]): r for r in read_csv(results / "starts.csv")}
    table = format_table(summary, budgets_of(summary), int(k), starts, algorithm or None)
    if table.count("\n") < 2:
        raise ValueError(f"{results / 'summary.csv'} has no rows for table {name!r}")
    return table


def format_v1(summary: Sequence[dict[str, Any]]) -> str:
    """The v1 benchmark's table (PPO at equal steps, 2 decimals, ± std over seeds), as its
    report printed it: size, aggregator, seeds, sentiment, length, hypervolume, KL, s/step."""
    lines = [
        "| size | aggregator | seeds | sentiment | length | hypervolume | KL | s/step |",
        "|" + "---|" * 8,
    ]
    for row in summary:
        start = row["aggregator"] == "start"
        cells = [row["size"], row["aggregator"], str(row["seeds"])]
        for metric in ("sentiment", "length", "hypervolume", "kl", "seconds_per_step"):
            mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
            if start:
                cells.append({"kl": "0", "seconds_per_step": "–"}.get(metric, f"{mean:.2f}"))
            else:
                cells.append(f"{mean:.2f} ± {std:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_policies(policies: Sequence[dict[str, Any]]) -> str:
    """The pre-trained policies (``policies.csv``): size, parameters, held-out perplexity."""
    lines = ["| policy | parameters | held-out perplexity |", "|---|---|---|"]
    for row in policies:
        lines.append(
            f"| `{row['size']}` | {row['parameters'] / 1e6:.2f}M | {row['perplexity']:.1f} |"
        )
    return "\n".join(lines)


def kl_curves_inputs(results: Path) -> tuple[list[dict[str, Any]], dict, list[float], dict]:
    """``(runs, starts, budgets, refs)`` of :func:`report.plot_kl_curves`, read back from
    ``curves.json``, ``starts.csv`` and ``setup.json`` of a finished run."""
    runs = json.loads((results / "curves.json").read_text())
    setup = json.loads((results / "setup.json").read_text())
    budgets = [float(b) for b in setup["arguments"]["kl_budgets"]]
    refs = {int(key.split()[0]): ref for key, ref in setup["hypervolume_reference"].items()}
    starts = {}
    for row in read_csv(results / "starts.csv"):
        k = row["objectives"]
        test = {n: row[n] for n in OBJECTIVES[:k]} | {"kl": 0.0}
        starts[(k, row["size"])] = {"curve": [{"step": 0, "test": test, "train": test}]}
    return runs, starts, budgets, refs


def redraw_kl_curves(results: Path) -> Path:
    """Draw ``kl_curves.png`` again from a finished run's files (no stage is run), so that the
    plot of a committed result follows the plotting code."""
    path = results / "kl_curves.png"
    plot_kl_curves(*kl_curves_inputs(results), path)
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="redraw kl_curves.png of a results folder")
    parser.add_argument("results", type=Path, nargs="+")
    for folder in parser.parse_args().results:
        print(f"wrote {redraw_kl_curves(folder)}")
