"""Report of the fronts compared with the MORLHF preference sweep (``fronts.csv``, a plot per
algorithm and size): the sweep (one run per preference), Rewarded Soups (two one-hot runs,
interpolated) and each conditioned policy (one run), all on the same preference lattice.

Every front is compared the way the sweep's row of the main table is: at each KL budget,
each lattice point is its last evaluation within the budget
(:func:`~mogradient_llm.pareto.front.select_at_kl_budget`; step 0, KL 0, always is), and the
front's hypervolume is that of those points. For the conditioned policy a point is one
preference read by one checkpoint, so its points at a budget may come from different
checkpoints of the one run: each point is held to the budget, as each sweep run is.

Each row also states the training compute (runs, steps, seconds of the training steps alone)
and the controllability of the final points (:func:`~mogradient_llm.pareto.conditioned.
controllability`: per objective, Spearman's ρ between weight and reward and the fraction of
ordered pairs); for the sweep and the soups it says whether their points are ordered by their
preferences too. Conditioned rows are mean ± std over seeds.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.rlhf_imdb.fronts import point_label
from benchmarks.rlhf_imdb.report import SWEEP, curve
from benchmarks.rlhf_imdb.runs import OBJECTIVES
from benchmarks.tables import write_csv
from mogradient_llm.pareto.conditioned import controllability
from mogradient_llm.pareto.front import PolicyPoint, front_metrics, select_at_kl_budget

NAMES = OBJECTIVES[:2]
CSV = "fronts.csv"
SOUPS = "rewarded soups"


def stage_curves(
    result: dict[str, Any], start: dict[str, Any] | None = None
) -> dict[str, list[PolicyPoint]]:
    """A front stage's curves (:mod:`benchmarks.rlhf_imdb.fronts`) as points per lattice
    preference; ``start``'s step 0 is prepended where the stage has none (the soups)."""
    head = start["curve"][:1] if start is not None else []
    out = {}
    for preference in result["preferences"]:
        label = point_label(preference)
        out[label] = [
            PolicyPoint(label, tuple(preference), c["step"], f"step-{c['step']}",
                        tuple(c["test"][n] for n in NAMES), c["test"]["kl"])
            for c in [*head, *result["curves"][label]]
        ]  # fmt: skip
    return out


def sweep_curves(
    runs: Sequence[dict[str, Any]], start: dict[str, Any], algorithm: str, size: str
) -> tuple[dict[str, list[PolicyPoint]], list[dict[str, Any]]]:
    """The sweep's curves (its runs and the equal-weights ``morlhf`` run of its seed, the
    main table's sweep row) and those runs; the ``morlhf`` run's preference is (0.5, 0.5)."""
    members = [
        r for r in runs if r["objectives"] == 2 and (r["algorithm"], r["size"]) == (algorithm, size)
    ]
    sweep = [r for r in members if r["method"] == SWEEP]
    if not sweep:
        return {}, []
    seed = sweep[0]["seed"]
    sweep += [r for r in members if r["method"] == "morlhf" and r["seed"] == seed]
    curves = {}
    for run in sweep:
        preference = tuple(run.get("preference") or (0.5, 0.5))
        points = curve({**run, "method": SWEEP, "preference": preference}, start, "test")
        curves[f"w={preference[0]:g}"] = points
    return curves, sweep


def front_numbers(
    curves: Mapping[str, Sequence[PolicyPoint]], budgets: Sequence[float], ref: Sequence[float]
) -> dict[str, float]:
    """One front's hypervolume at each budget (``hv@B``) and at the end (``hv_final``), the
    largest KL of its final points, and the controllability of its final points."""
    row: dict[str, float] = {}
    for budget in budgets:
        chosen = [select_at_kl_budget(c, budget) for c in curves.values()]
        row[f"hv@{budget:g}"] = front_metrics([p for p in chosen if p], ref)["hypervolume"]
    final = [c[-1] for c in curves.values()]
    row["hv_final"] = front_metrics(final, ref)["hypervolume"]
    row["kl_final_max"] = max(p.kl for p in final)
    control = controllability([p.preference for p in final], [p.scores for p in final], NAMES)
    for name in NAMES:
        row[f"spearman_{name}"] = control[name]["spearman"]
        row[f"ordered_{name}"] = control[name]["pairs_ordered"]
    return row


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if any(math.isnan(v) for v in values):
        return math.nan, math.nan
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def front_row(
    label: dict[str, Any], per_seed: Sequence[dict[str, float]], compute: dict[str, float]
) -> dict[str, Any]:
    """A CSV row: ``label``, the compute, and each number's mean and std over the seeds."""
    row = {**label, "seeds": len(per_seed), **compute}
    for key in per_seed[0]:
        row[f"{key}_mean"], row[f"{key}_std"] = _mean_std([s[key] for s in per_seed])
    return row


def fronts_summary(
    runs: Sequence[dict[str, Any]],
    starts: Mapping[tuple[int, str], dict[str, Any]],
    fronts: Sequence[tuple[dict[str, Any], dict[str, Any]]],
    budgets: Sequence[float],
    ref: Sequence[float],
) -> list[dict[str, Any]]:
    """Per (algorithm, size) with a sweep: its row, the soups' row and one row per conditioned
    step budget (seeds pooled), each with ``sweep_share``: its hypervolume at the largest
    budget over the sweep's."""
    rows = []
    for algorithm, size in dict.fromkeys((f["algorithm"], f["size"]) for f, _ in fronts):
        start = starts[(2, size)]
        curves, members = sweep_curves(runs, start, algorithm, size)
        if not members:
            continue
        steps = [m["curve"][-1]["step"] for m in members]
        compute = {
            "runs": len(members),
            "train_steps": sum(steps),
            "train_seconds": sum(m["seconds_per_step"] * s for m, s in zip(members, steps)),
        }
        block = [front_row({"algorithm": algorithm, "size": size, "front": "morlhf sweep"},
                           [front_numbers(curves, budgets, ref)], compute)]  # fmt: skip
        groups: dict[str, list[dict[str, Any]]] = {}
        for label, result in fronts:
            if (label["algorithm"], label["size"]) == (algorithm, size):
                groups.setdefault(front_name(label), []).append(result)
        for name, results in groups.items():
            soups = name == SOUPS
            per_seed = [
                front_numbers(stage_curves(r, start if soups else None), budgets, ref)
                for r in results
            ]
            compute = {
                "runs": 2 if soups else 1,
                "train_steps": results[0]["train_steps"],
                "train_seconds": statistics.mean(r["train_seconds"] for r in results),
            }
            block.append(front_row({"algorithm": algorithm, "size": size, "front": name},
                                   per_seed, compute))  # fmt: skip
        top = f"hv@{budgets[-1]:g}_mean"
        for row in block:
            row["sweep_share"] = row[top] / block[0][top] if block[0][top] else math.nan
        rows += block
    return rows


def front_name(label: dict[str, Any]) -> str:
    """A front's row name: ``rewarded soups``, or the conditioned policy's steps and
    Dirichlet concentration (``conditioned, 80 steps, α = 1``)."""
    if label["front"] == "soups":
        return SOUPS
    return f"conditioned, {label['steps']} steps, α = {label['concentration']:g}"


def budgets_of(rows: Sequence[dict[str, Any]]) -> list[float]:
    """The KL budgets of ``fronts.csv``'s rows, read from their ``hv@B_mean`` columns."""
    pattern = re.compile(r"hv@([0-9.]+)_mean")
    return [float(m.group(1)) for key in rows[0] if (m := pattern.fullmatch(key))]


def _cell(row: dict[str, Any], key: str, digits: int = 3) -> str:
    mean, std = row[f"{key}_mean"], row[f"{key}_std"]
    if mean is None or math.isnan(mean):
        return "n/a"
    if row["seeds"] > 1:
        return f"{mean:.{digits}f} ± {std:.{digits}f}"
    return f"{mean:.{digits}f}"


def format_fronts(rows: Sequence[dict[str, Any]]) -> str:
    """``fronts.csv`` as a Markdown table."""
    budgets = budgets_of(rows)
    header = ["algorithm", "size", "front", "runs", "seeds", "train steps", "train s"]
    header += [f"HV, KL ≤ {b:g}" for b in budgets]
    header += [f"share of sweep HV, KL ≤ {budgets[-1]:g}", "final HV", "max final KL"]
    header += [f"ρ {n}" for n in NAMES] + [f"ordered pairs {n}" for n in NAMES]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["algorithm"], row["size"], row["front"], str(row["runs"]), str(row["seeds"])]
        cells += [str(row["train_steps"]), f"{row['train_seconds']:.0f}"]
        cells += [_cell(row, f"hv@{b:g}") for b in budgets]
        share = row["sweep_share"]
        cells += ["n/a" if share is None or math.isnan(share) else f"{100 * share:.0f} %"]
        cells += [_cell(row, "hv_final"), _cell(row, "kl_final_max", 2)]
        cells += [_cell(row, f"spearman_{n}", 2) for n in NAMES]
        cells += [_cell(row, f"ordered_{n}", 2) for n in NAMES]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_fronts(
    runs: Sequence[dict[str, Any]],
    starts: Mapping[tuple[int, str], dict[str, Any]],
    fronts: Sequence[tuple[dict[str, Any], dict[str, Any]]],
    budget: float,
    out: Path,
) -> list[Path]:
    """Per (algorithm, size): each front's points at ``budget`` (the first seed of each
    conditioned step budget), joined in the order of their sentiment weight."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for algorithm, size in dict.fromkeys((f["algorithm"], f["size"]) for f, _ in fronts):
        start = starts[(2, size)]
        sweep, _ = sweep_curves(runs, start, algorithm, size)
        drawn = {"morlhf sweep": sweep}
        for label, result in fronts:
            if (label["algorithm"], label["size"]) != (algorithm, size):
                continue
            soups = label["front"] == "soups"
            drawn.setdefault(front_name(label), stage_curves(result, start if soups else None))
        fig, ax = plt.subplots(figsize=(6.4, 4.8))
        for i, (name, curves) in enumerate(drawn.items()):
            points = [select_at_kl_budget(c, budget) for c in curves.values()]
            kept = sorted((p for p in points if p), key=lambda p: p.preference[0])
            xs, ys = [p.scores[0] for p in kept], [p.scores[1] for p in kept]
            ax.plot(xs, ys, marker="o", color=f"C{i}", label=name)
            for p in kept:
                ax.annotate(f"{p.preference[0]:g}", (p.scores[0], p.scores[1]), fontsize=6,
                            color=f"C{i}", xytext=(3, 3), textcoords="offset points")  # fmt: skip
        ax.scatter([start["sentiment"]], [start["length"]], color="black", marker="x",
                   label="start")  # fmt: skip
        ax.set_xlabel("held-out sentiment (classifier logit)")
        ax.set_ylabel("held-out length reward")
        ax.set_title(
            f"{algorithm}, {size}: fronts at KL ≤ {budget:g} (labels: sentiment weight)",
            fontsize=9,
        )
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"fronts_{algorithm}_{size}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def write_fronts_report(
    runs: Sequence[dict[str, Any]],
    starts: Mapping[tuple[int, str], dict[str, Any]],
    fronts: Sequence[tuple[dict[str, Any], dict[str, Any]]],
    budgets: Sequence[float],
    ref: Sequence[float],
    out: Path,
) -> list[dict[str, Any]]:
    """Write ``fronts.csv`` and the plots, print the table; returns the rows."""
    rows = fronts_summary(runs, starts, fronts, budgets, ref)
    if not rows:
        return rows
    write_csv(rows, out / CSV)
    paths = plot_fronts(runs, starts, fronts, budgets[-1], out)
    print("\nfronts on the sweep's preference lattice at matched KL, with training compute:")
    print(format_fronts(rows))
    print(f"wrote {out / CSV}, {', '.join(p.name for p in paths)}")
    return rows
