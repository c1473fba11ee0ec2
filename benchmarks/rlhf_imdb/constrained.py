"""Constrained benchmark: maximise length subject to sentiment ≥ τ, the Lagrangian against the
best MORLHF weight of a preference sweep, at matched KL.

Runs (``python -m benchmarks.rlhf_imdb --constrained``): per size and algorithm, the MORLHF
sweep of the main benchmark (first seed, the same cache entries) with its length-only end
``w = 0``, and one Lagrangian run per threshold and seed (length the primary objective,
``sentiment>=τ`` the constraint). Then, per threshold, the sweep weight chosen on the
training-split prompts is run at the other seeds, and every run is read on the test prompts.

Definitions (every evaluation after step 0, i.e. after ``eval_every``, ``2·eval_every``, …
steps; the start policy is the same for all):

* **matched KL** of (size, algorithm, τ): the largest test KL of the Lagrangian's evaluations;
  MORLHF may spend as much, no more.
* **satisfied**: the share of a method's test evaluations (over seeds) with sentiment ≥ τ.
* **length at matched KL**: per seed, the largest test length among the evaluations that
  satisfy the constraint within the matched KL; averaged over the seeds that have one.
* **best MORLHF weight**: the sweep weight whose first-seed run has the largest training-split
  length among its training-split evaluations that satisfy the constraint within the matched KL
  (none when no weight does); the test prompts play no part in the choice.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.rlhf_imdb.report import SWEEP
from benchmarks.rlhf_imdb.runs import CONSTRAINED

#: The thresholds on the sentiment classifier's mean positive logit (the test evaluations'
#: mean), set from the ``--quick`` run's levels (``constrained_sweep.csv``): the start policies
#: score 0.56 (``tiny``) and 0.53 (``1m``), the length-only run (w = 0) ends at 0.53 / 0.64, and
#: the w = 0.25 and 0.5 runs at 0.81 and 0.92 / 1.12 and 1.00. 0.7 is violated by the length
#: maximiser and reachable; 0.9 is tighter: about the best of ``tiny``'s sweep.
THRESHOLDS = (0.7, 0.9)
#: The sweep's length-only end, added to ``sweep_weights``: the unconstrained length maximiser.
LENGTH_ONLY = 0.0
SPLITS = ("test", "train")


def constraint_of(threshold: float) -> str:
    """The ``--constraint`` text of ``threshold``."""
    return f"sentiment>={threshold:g}"


def threshold_of(constraint: str) -> float:
    """The threshold of a ``sentiment>=τ`` constraint."""
    return float(constraint.partition(">=")[2])


def evaluation_rows(runs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per evaluation after step 0 and split of every run (``runs``: labels merged
    with results): size, algorithm, method, threshold (Lagrangian) or weight (MORLHF), seed,
    step, split, sentiment, length, KL and the multiplier λ after that step (Lagrangian)."""
    rows = []
    for run in runs:
        lagrangian = run["method"] == CONSTRAINED
        for point in run["curve"]:
            step = point["step"]
            record = run["history"][step - 1] if lagrangian else {}
            for split in SPLITS:
                values = point[split]
                rows.append(
                    {
                        "size": run["size"],
                        "algorithm": run["algorithm"],
                        "method": run["method"],
                        "threshold": threshold_of(run["constraint"]) if lagrangian else None,
                        "weight": None if lagrangian else run["preference"][0],
                        "seed": run["seed"],
                        "step": step,
                        "split": split,
                        "sentiment": values["sentiment"],
                        "length": values["length"],
                        "kl": values["kl"],
                        "multiplier": record.get("constraint/sentiment/multiplier"),
                    }
                )
    return rows


def _of(rows: Iterable[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [r for r in rows if all(r[k] == v for k, v in match.items())]


def matched_kl(rows: Sequence[dict[str, Any]], size: str, algorithm: str, tau: float) -> float:
    """The largest test KL of the Lagrangian's evaluations at ``tau``."""
    kls = [
        r["kl"]
        for r in _of(rows, size=size, algorithm=algorithm, method=CONSTRAINED, split="test")
        if r["threshold"] == tau
    ]
    if not kls:
        raise ValueError(f"no Lagrangian evaluation of {size} {algorithm} at τ = {tau}")
    return max(kls)


def best_length(evaluations: Iterable[dict[str, Any]], tau: float, budget: float) -> float | None:
    """The largest length among ``evaluations`` with sentiment ≥ ``tau`` and KL ≤ ``budget``."""
    kept = [r["length"] for r in evaluations if r["sentiment"] >= tau and r["kl"] <= budget]
    return max(kept) if kept else None


def choose_weight(
    rows: Sequence[dict[str, Any]], size: str, algorithm: str, tau: float, budget: float
) -> tuple[float | None, float | None]:
    """``(weight, its training-split length)``: the sweep weight of the first seed whose
    training-split evaluations reach the largest length while satisfying ``tau`` within KL
    ``budget``; ``(None, None)`` when no weight satisfies it."""
    sweep = _of(rows, size=size, algorithm=algorithm, method=SWEEP, split="train")
    if not sweep:
        raise ValueError(f"no sweep evaluation of {size} {algorithm}")
    first = min(r["seed"] for r in sweep)
    best: tuple[float | None, float | None] = (None, None)
    for weight in sorted({r["weight"] for r in sweep}):
        length = best_length(_of(sweep, seed=first, weight=weight), tau, budget)
        if length is not None and (best[1] is None or length > best[1]):
            best = (weight, length)
    return best


def blocks(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str, float]]:
    """The (size, algorithm, τ) of the Lagrangian runs, in the order they appear."""
    keys = ((r["size"], r["algorithm"], r["threshold"]) for r in rows if r["method"] == CONSTRAINED)
    return list(dict.fromkeys(keys))


def choices(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str, float], float | None]:
    """The best MORLHF weight of each (size, algorithm, τ) (see :func:`choose_weight`)."""
    return {
        (size, algorithm, tau): choose_weight(
            rows, size, algorithm, tau, matched_kl(rows, size, algorithm, tau)
        )[0]
        for size, algorithm, tau in blocks(rows)
    }


def per_seed(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (size, algorithm, τ, method, seed) on the test prompts: the evaluations that satisfy
    the constraint, the final sentiment, length, KL and λ, and the length at matched KL; the
    method is the Lagrangian or the best MORLHF weight (none: no row)."""
    out = []
    chosen = choices(rows)
    for (size, algorithm, tau), weight in chosen.items():
        budget = matched_kl(rows, size, algorithm, tau)
        test = _of(rows, size=size, algorithm=algorithm, split="test")
        members = [("lagrangian", [r for r in test if r["threshold"] == tau])]
        if weight is not None:
            members.append((f"morlhf w={weight:g}", _of(test, method=SWEEP, weight=weight)))
        for method, evaluations in members:
            for seed in sorted({r["seed"] for r in evaluations}):
                mine = sorted(_of(evaluations, seed=seed), key=lambda r: r["step"])
                final = mine[-1]
                out.append(
                    {
                        "size": size,
                        "algorithm": algorithm,
                        "threshold": tau,
                        "method": method,
                        "seed": seed,
                        "matched_kl": budget,
                        "satisfied": sum(r["sentiment"] >= tau for r in mine),
                        "evaluations": len(mine),
                        "final_sentiment": final["sentiment"],
                        "final_length": final["length"],
                        "final_kl": final["kl"],
                        "final_multiplier": final["multiplier"],
                        "length_at_matched_kl": best_length(mine, tau, budget),
                    }
                )
    return out


def summary(seeds: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (size, algorithm, τ, method) of :func:`per_seed`'s rows: seeds, matched KL, share of
    evaluations satisfied, length at matched KL (mean ± std over the seeds that have one, and
    how many do), final sentiment, length, KL and λ (mean ± std)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for seed_row in seeds:
        key = tuple(seed_row[k] for k in ("size", "algorithm", "threshold", "method"))
        groups.setdefault(key, []).append(seed_row)
    out = []
    for (size, algorithm, tau, method), members in groups.items():
        lengths = [m["length_at_matched_kl"] for m in members]
        found = [v for v in lengths if v is not None]
        row: dict[str, Any] = {
            "size": size,
            "algorithm": algorithm,
            "threshold": tau,
            "method": method,
            "seeds": len(members),
            "matched_kl": members[0]["matched_kl"],
            "satisfied": sum(m["satisfied"] for m in members)
            / sum(m["evaluations"] for m in members),
            "seeds_with_length": len(found),
        }
        row["length_at_matched_kl_mean"], row["length_at_matched_kl_std"] = _mean_std(found)
        for metric in ("sentiment", "length", "kl", "multiplier"):
            values = [m[f"final_{metric}"] for m in members]
            known = [v for v in values if v is not None]
            row[f"final_{metric}_mean"], row[f"final_{metric}_std"] = _mean_std(known)
        out.append(row)
    return out


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def sweep_levels(
    rows: Sequence[dict[str, Any]], starts: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The levels the thresholds were set from: per size and algorithm, the start policy's test
    sentiment and length, then each sweep weight's (first seed) final test sentiment, length
    and KL."""
    out = []
    for size, algorithm in dict.fromkeys((r["size"], r["algorithm"]) for r in rows):
        start = next(s for s in starts if s["size"] == size and s["objectives"] == 2)
        out.append(
            {"size": size, "algorithm": algorithm, "weight": None, "sentiment": start["sentiment"]}
            | {"length": start["length"], "kl": 0.0}
        )
        sweep = _of(rows, size=size, algorithm=algorithm, method=SWEEP, split="test")
        first = min(r["seed"] for r in sweep)
        for weight in sorted({r["weight"] for r in sweep}):
            final = max(_of(sweep, seed=first, weight=weight), key=lambda r: r["step"])
            out.append(
                {"size": size, "algorithm": algorithm, "weight": weight}
                | {k: final[k] for k in ("sentiment", "length", "kl")}
            )
    return out


def _cell(mean: float | None, std: float | None, n: int) -> str:
    if mean is None:
        return "–"
    return f"{mean:.3f}" if n == 1 or std is None else f"{mean:.3f} ± {std:.3f}"


def format_summary(rows: Sequence[dict[str, Any]]) -> str:
    """:func:`summary`'s rows as a Markdown table."""
    header = [
        "size", "algorithm", "τ", "method", "seeds", "matched KL", "satisfied",
        "length at matched KL", "seeds with one", "final sentiment", "final length",
        "final KL", "final λ",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        n = r["seeds"]
        cells = [r["size"], r["algorithm"], f"{r['threshold']:g}", r["method"], str(n)]
        cells += [f"{r['matched_kl']:.2f}", f"{100 * r['satisfied']:.0f} %"]
        cells += [
            _cell(r["length_at_matched_kl_mean"], r["length_at_matched_kl_std"], n),
            f"{r['seeds_with_length']}/{n}",
        ]
        cells += [_cell(r[f"final_{m}_mean"], r[f"final_{m}_std"], n) for m in ("sentiment",)]
        cells += [_cell(r[f"final_{m}_mean"], r[f"final_{m}_std"], n) for m in ("length", "kl")]
        cells.append(_cell(r["final_multiplier_mean"], r["final_multiplier_std"], n))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_seeds(rows: Sequence[dict[str, Any]]) -> str:
    """:func:`per_seed`'s rows as a Markdown table."""
    header = [
        "size", "algorithm", "τ", "method", "seed", "satisfied evaluations",
        "final sentiment", "final λ", "length at matched KL",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["size"], r["algorithm"], f"{r['threshold']:g}", r["method"], str(r["seed"])]
        cells += [f"{r['satisfied']}/{r['evaluations']}", f"{r['final_sentiment']:.3f}"]
        for value in (r["final_multiplier"], r["length_at_matched_kl"]):
            cells.append("–" if value is None else f"{value:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_sweep(rows: Sequence[dict[str, Any]]) -> str:
    """:func:`sweep_levels`' rows as a Markdown table."""
    lines = [
        "| size | algorithm | run | final sentiment | final length | final KL |",
        "|" + "---|" * 6,
    ]
    for r in rows:
        run = "start" if r["weight"] is None else f"morlhf w={r['weight']:g}"
        cells = [r["size"], r["algorithm"], run]
        cells += [f"{r['sentiment']:.3f}", f"{r['length']:.3f}", f"{r['kl']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def docs_table(results: Path, name: str) -> str:
    """Table ``constrained`` (the summary), ``constrained-seeds`` or ``constrained-sweep`` of
    the results folder ``results``, from its CSVs."""
    from benchmarks.tables import read_csv

    formats = {
        "constrained": ("constrained.csv", format_summary),
        "constrained-seeds": ("constrained_seeds.csv", format_seeds),
        "constrained-sweep": ("constrained_sweep.csv", format_sweep),
    }
    if name not in formats:
        raise ValueError(f"unknown constrained table {name!r}: use one of {', '.join(formats)}")
    file, formatter = formats[name]
    return formatter(read_csv(results / file))


def plot(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Per (size, algorithm): the Lagrangian's multiplier λ along training (one line per τ and
    seed), and every test evaluation's length against its sentiment (Lagrangian per τ, the
    sweep's first seed in grey, the chosen MORLHF weights' other seeds), τ dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((r["size"], r["algorithm"]) for r in rows))
    taus = sorted({r["threshold"] for r in rows if r["method"] == CONSTRAINED})
    colour = {tau: f"C{i}" for i, tau in enumerate(taus)}
    fig, axes = plt.subplots(len(panels), 2, figsize=(10, 3.8 * len(panels)), squeeze=False)
    for (size, algorithm), (left, right) in zip(panels, axes):
        test = _of(rows, size=size, algorithm=algorithm, split="test")
        for tau in taus:
            lagrangian = [r for r in test if r["threshold"] == tau]
            for i, seed in enumerate(sorted({r["seed"] for r in lagrangian})):
                mine = sorted(_of(lagrangian, seed=seed), key=lambda r: r["step"])
                left.plot(
                    [0] + [r["step"] for r in mine],
                    [0.0] + [r["multiplier"] for r in mine],
                    marker="o", markersize=3, color=colour[tau],
                    label=f"τ = {tau:g} (one line per seed)" if i == 0 else None,
                )  # fmt: skip
            right.scatter(
                [r["sentiment"] for r in lagrangian], [r["length"] for r in lagrangian],
                color=colour[tau], s=14, label=f"Lagrangian, τ = {tau:g}",
            )  # fmt: skip
            right.axvline(tau, color=colour[tau], linestyle="--", linewidth=0.8)
        sweep = _of(test, method=SWEEP)
        right.scatter(
            [r["sentiment"] for r in sweep], [r["length"] for r in sweep],
            color="gray", marker="x", s=14, label="MORLHF (sweep, chosen weights' seeds)",
        )  # fmt: skip
        left.set_title(f"{algorithm}, {size}: the Lagrangian's multiplier λ", fontsize=9)
        left.set_xlabel("step", fontsize=8)
        left.set_ylabel("λ", fontsize=8)
        left.legend(fontsize=7)
        right.set_title(f"{algorithm}, {size}: test evaluations (τ dashed)", fontsize=9)
        right.set_xlabel("sentiment (positive logit)", fontsize=8)
        right.set_ylabel("length reward", fontsize=8)
        right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(
    runs: Sequence[dict[str, Any]], starts: Sequence[dict[str, Any]], out: Path
) -> list[dict[str, Any]]:
    """Write ``constrained.csv`` (the summary), ``constrained_seeds.csv``,
    ``constrained_sweep.csv``, ``constrained_evaluations.csv`` and ``constrained.png`` under
    ``out``, print the tables; returns the summary."""
    from benchmarks.tables import write_csv

    rows = evaluation_rows(runs)
    seeds = per_seed(rows)
    table = summary(seeds)
    levels = sweep_levels(rows, starts)
    write_csv(rows, out / "constrained_evaluations.csv")
    write_csv(seeds, out / "constrained_seeds.csv")
    write_csv(table, out / "constrained.csv")
    write_csv(levels, out / "constrained_sweep.csv")
    plot(rows, out / "constrained.png")
    print("\nstart and MORLHF sweep (first seed), final test evaluation:")
    print(format_sweep(levels))
    print("\nmaximise length subject to sentiment ≥ τ, test prompts:")
    print(format_summary(table))
    print(format_seeds(seeds))
    return table


if __name__ == "__main__":
    import argparse

    from benchmarks.tables import read_csv

    parser = argparse.ArgumentParser(description="redraw constrained.png of a results folder")
    parser.add_argument("results", type=Path)
    folder = parser.parse_args().results
    plot(read_csv(folder / "constrained_evaluations.csv"), folder / "constrained.png")
    print(f"wrote {folder / 'constrained.png'}")
