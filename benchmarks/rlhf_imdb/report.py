"""Report stage: hypervolume at matched KL budgets per (objectives, algorithm, size, method)
(mean ± std over seeds), the best configuration chosen on the training split, the preference
sweep's front, CSVs and plots.

Every run is evaluated every few steps on the test prompts and on training-split prompts; a
run's point at a KL budget is its last evaluation whose KL to the reference is within the
budget (``mogradient_llm.pareto.front.select_at_kl_budget``; step 0, KL 0, always is), so a method
that drifts further is compared at the same distance from the reference as the others.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.rlhf_imdb.runs import OBJECTIVES
from benchmarks.tables import write_csv
from mogradient.pareto import hypervolume
from mogradient_llm.pareto.front import PolicyPoint, front_metrics, plot_front, select_at_kl_budget

SWEEP = "morlhf-sweep"
FINAL = ("hypervolume", "kl", "seconds_per_step")


def group_key(run: dict[str, Any]) -> tuple[int, str, str]:
    """``(objectives, algorithm, size)``: the runs that share a start and a table block."""
    return run["objectives"], run["algorithm"], run["size"]


def curve(run: dict[str, Any], start: dict[str, Any], split: str) -> list[PolicyPoint]:
    """The run's evaluations on ``split`` (``"test"`` or ``"train"``) from step 0 (the start
    policy) on, as points of its ``k`` objectives and KL."""
    names = OBJECTIVES[: run["objectives"]]
    return [
        PolicyPoint(
            run=run_label(run),
            preference=tuple(run.get("preference") or ()),
            step=c["step"],
            checkpoint=f"step-{c['step']}",
            scores=tuple(c[split][n] for n in names),
            kl=c[split]["kl"],
        )
        for c in [*start["curve"], *run["curve"]]
    ]


def run_label(run: dict[str, Any]) -> str:
    """``method`` or, for a sweep run, its preference's first weight (``w=0.25``)."""
    if run["method"] == SWEEP:
        return f"w={run['preference'][0]:.2g}"
    return run["method"]


def hv_at(
    run: dict[str, Any], start: dict[str, Any], split: str, budget: float, ref: Sequence[float]
) -> float:
    """Hypervolume of the run's point (mean rewards) at ``budget`` on ``split``."""
    point = select_at_kl_budget(curve(run, start, split), budget)
    assert point is not None  # step 0 has KL 0
    return hypervolume([point.scores], ref, maximize=True)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(
    runs: Sequence[dict[str, Any]],
    starts: dict[tuple[int, str], dict[str, Any]],
    budgets: Sequence[float],
    refs: Mapping[int, Sequence[float]],
) -> list[dict[str, Any]]:
    """One row per (objectives, algorithm, size, method) of the single runs: seeds, test
    hypervolume at each KL budget and training-split hypervolume at each (mean ± std), and
    the final objectives, hypervolume, KL and seconds per step. A preference sweep adds one
    row: the hypervolume of its points' front at each budget, the equal-weights ``morlhf`` run
    of the same seed included as its middle point."""
    groups: dict[tuple[int, str, str, str], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((*group_key(run), run["method"]), []).append(run)
    for (k, algorithm, size, method), members in groups.items():
        if method == SWEEP:
            seed = members[0]["seed"]
            members += [
                m for m in groups.get((k, algorithm, size, "morlhf"), []) if m["seed"] == seed
            ]
    rows = []
    for (k, algorithm, size, method), members in groups.items():
        start, ref = starts[(k, size)], refs[k]
        row: dict[str, Any] = {
            "objectives": k,
            "algorithm": algorithm,
            "size": size,
            "method": method,
            "seeds": len({m["seed"] for m in members}),
        }
        for budget in budgets:
            for split in ("test", "train"):
                name = f"{split}_hv@{budget:g}"
                if method == SWEEP:
                    points = [select_at_kl_budget(curve(m, start, split), budget) for m in members]
                    front = front_metrics([p for p in points if p], ref)["hypervolume"]
                    row[f"{name}_mean"], row[f"{name}_std"] = front, 0.0
                else:
                    values = [hv_at(m, start, split, budget, ref) for m in members]
                    row[f"{name}_mean"], row[f"{name}_std"] = mean_std(values)
        for metric in (*OBJECTIVES[:k], *FINAL):
            row[f"{metric}_mean"], row[f"{metric}_std"] = mean_std([m[metric] for m in members])
        rows.append(row)
    return rows


def best_configurations(summary: Sequence[dict[str, Any]], budget: float) -> list[dict[str, Any]]:
    """Per (objectives, size): the (algorithm, method) with the highest training-split
    hypervolume at ``budget`` (sweeps excluded: one run per preference), with its test value
    and the test ranking's best for comparison. The test prompts play no part in the choice."""
    best = []
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for row in summary:
        if row["method"] != SWEEP:
            groups.setdefault((row["objectives"], row["size"]), []).append(row)
    key = f"hv@{budget:g}_mean"
    for (k, size), rows in groups.items():
        chosen = max(rows, key=lambda r: r[f"train_{key}"])
        on_test = max(rows, key=lambda r: r[f"test_{key}"])
        best.append(
            {
                "objectives": k,
                "size": size,
                "kl_budget": budget,
                "chosen": f"{chosen['algorithm']} {chosen['method']}",
                "train_hv": chosen[f"train_{key}"],
                "test_hv": chosen[f"test_{key}"],
                "test_best": f"{on_test['algorithm']} {on_test['method']}",
                "test_best_hv": on_test[f"test_{key}"],
            }
        )
    return best


def format_table(
    summary: Sequence[dict[str, Any]],
    budgets: Sequence[float],
    k: int,
    starts: Mapping[tuple[int, str], dict[str, Any]],
    algorithm: str | None = None,
) -> str:
    """The ``k``-objective rows (of ``algorithm`` only, if given) as a Markdown table (mean ±
    std over seeds), each algorithm × size block led by its ``start`` row (the pre-trained
    policy, KL 0)."""
    names = OBJECTIVES[:k]
    header = ["algorithm", "size", "method", "seeds"]
    header += [f"HV, KL ≤ {b:g}" for b in budgets]
    header += ["final HV", "final KL", *names, "s/step"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    block = None
    rows = [r for r in summary if r["objectives"] == k]
    for row in (r for r in rows if algorithm in (None, r["algorithm"])):
        if (row["algorithm"], row["size"]) != block:
            block = row["algorithm"], row["size"]
            start = starts[(k, row["size"])]
            cells = [*block, "start", "–", *[f"{start['hypervolume']:.3f}"] * (len(budgets) + 1)]
            cells += ["0", *(f"{start[n]:.3f}" for n in names), "–"]
            lines.append("| " + " | ".join(cells) + " |")
        cells = [row["algorithm"], row["size"], row["method"], str(row["seeds"])]
        cells += [_pm(row, f"test_hv@{b:g}") for b in budgets]
        if row["method"] == SWEEP:
            cells += ["–"] * (3 + len(names))
        else:
            cells += [_pm(row, m) for m in ("hypervolume", "kl", *names, "seconds_per_step")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pm(row: dict[str, Any], metric: str) -> str:
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    if row["seeds"] == 1 or row["method"] == SWEEP:
        return f"{mean:.3f}"
    return f"{mean:.3f} ± {std:.3f}"


def start_rows(starts: Mapping[tuple[int, str], dict[str, Any]]) -> list[dict[str, Any]]:
    """The start policies' test evaluations (``starts.csv``): one row per (objectives, size),
    what the tables' ``start`` rows print."""
    return [
        {
            "objectives": k,
            "size": size,
            **{n: start[n] for n in OBJECTIVES[:k]},
            "hypervolume": start["hypervolume"],
        }
        for (k, size), start in starts.items()
    ]


def format_best(best: Sequence[dict[str, Any]]) -> str:
    """The configurations chosen on the training split as a Markdown table."""
    lines = [
        "| objectives | size | KL budget | chosen on train | its train HV | its test HV "
        "| best on test | its test HV |",
        "|" + "---|" * 8,
    ]
    for b in best:
        lines.append(
            f"| {b['objectives']} | {b['size']} | {b['kl_budget']:g} | {b['chosen']} | "
            f"{b['train_hv']:.3f} | {b['test_hv']:.3f} | {b['test_best']} | "
            f"{b['test_best_hv']:.3f} |"
        )
    return "\n".join(lines)


def plot_kl_curves(
    runs: Sequence[dict[str, Any]],
    starts: Mapping[tuple[int, str], dict[str, Any]],
    budgets: Sequence[float],
    refs: Mapping[int, Sequence[float]],
    path: Path,
) -> None:
    """Write :func:`kl_curves_figure` to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = kl_curves_figure(runs, starts, budgets, refs)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def kl_curves_figure(
    runs: Sequence[dict[str, Any]],
    starts: Mapping[tuple[int, str], dict[str, Any]],
    budgets: Sequence[float],
    refs: Mapping[int, Sequence[float]],
) -> Any:
    """Test hypervolume against test KL along training (means over seeds at each evaluation),
    one panel per (objectives, algorithm, size) packed into a grid without empty cells where
    the count allows, the KL budgets dashed and labelled. A method keeps its colour in every
    panel; methods whose mean curves coincide in a panel are drawn once, labelled together
    (``upgrad = pcgrad``)."""
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys(group_key(r) for r in runs if r["method"] != SWEEP))
    methods = list(dict.fromkeys(r["method"] for r in runs if r["method"] != SWEEP))
    colour = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    columns = min((4, 3, 2, 1), key=lambda c: (-len(panels) % c, -c))
    columns = min(columns, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.9 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        fig.delaxes(ax)
    for ax, panel in zip(axes.flat, panels):
        k, algorithm, size = panel
        drawn: dict[tuple[tuple[float, ...], tuple[float, ...]], list[str]] = {}
        for method in methods:
            curves = [
                curve(r, starts[(k, size)], "test")
                for r in runs
                if group_key(r) == panel and r["method"] == method
            ]
            if not curves:
                continue
            length = min(len(c) for c in curves)
            kls = tuple(statistics.mean(c[i].kl for c in curves) for i in range(length))
            hvs = tuple(
                statistics.mean(hypervolume([c[i].scores], refs[k], maximize=True) for c in curves)
                for i in range(length)
            )
            drawn.setdefault((kls, hvs), []).append(method)
        for (kls, hvs), same in drawn.items():
            ax.plot(
                kls, hvs, marker="o", markersize=3, color=colour[same[0]], label=" = ".join(same)
            )
        for budget in budgets:
            ax.axvline(budget, color="gray", linestyle="--", linewidth=0.8)
            ax.text(
                budget, 1.01, f"≤ {budget:g}", transform=ax.get_xaxis_transform(),
                fontsize=7, color="gray", ha="center", va="bottom",
            )  # fmt: skip
        ax.set_title(f"{algorithm}, {size}, {k} objectives (KL budgets dashed)", fontsize=9, pad=14)
        ax.set_xlabel("held-out KL to the start policy (nats / completion)", fontsize=8)
        ax.set_ylabel("held-out hypervolume", fontsize=8)
        ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    return fig


def plot_sweep_fronts(
    runs: Sequence[dict[str, Any]],
    starts: dict[tuple[int, str], dict[str, Any]],
    budget: float,
    refs: Mapping[int, Sequence[float]],
    out: Path,
) -> list[Path]:
    """Per (algorithm, size) with a preference sweep: the sweep's points and every single
    run of the first seed at ``budget``, the non-dominated ones marked, the region shaded."""
    paths = []
    for panel in dict.fromkeys(group_key(r) for r in runs if r["method"] == SWEEP):
        k, algorithm, size = panel
        members = [r for r in runs if group_key(r) == panel]
        first_seed = min(r["seed"] for r in members if r["method"] != SWEEP)
        chosen = [r for r in members if r["method"] == SWEEP or r["seed"] == first_seed]
        points = [select_at_kl_budget(curve(r, starts[(k, size)], "test"), budget) for r in chosen]
        kept = [p for p in points if p is not None]
        metrics = front_metrics(kept, refs[k])
        path = out / f"front_{_slug(algorithm)}_{_slug(size)}.png"
        title = (
            f"{algorithm}, {size}: MORLHF preference sweep (w = sentiment weight)\nand single "
            f"runs (seed {first_seed}), last evaluation with KL ≤ {budget:g}"
        )
        names = OBJECTIVES[:k]
        plot_front(path, kept, metrics["non_dominated"], names, refs[k], title=title)
        paths.append(path)
    return paths


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def write_report(
    runs: Sequence[dict[str, Any]],
    starts: dict[tuple[int, str], dict[str, Any]],
    policies: Sequence[dict[str, Any]],
    out: Path,
    budgets: Sequence[float],
    refs: Mapping[int, Sequence[float]],
) -> list[dict[str, Any]]:
    """Write the CSVs, plots and samples under ``out``, print the tables; returns the summary."""
    summary = summarise(runs, starts, budgets, refs)
    selection_budget = budgets[len(budgets) // 2]
    best = best_configurations(summary, selection_budget)
    skip = ("history", "samples", "curve")
    write_csv([{k: v for k, v in r.items() if k not in skip} for r in runs], out / "runs.csv")
    write_csv(summary, out / "summary.csv")
    write_csv(best, out / "best.csv")
    write_csv(policies, out / "policies.csv")
    write_csv(start_rows(starts), out / "starts.csv")
    plot_kl_curves(runs, starts, budgets, refs, out / "kl_curves.png")
    fronts = plot_sweep_fronts(runs, starts, budgets[-1], refs, out)
    keys = ("objectives", "algorithm", "size", "method", "seed", "samples")
    (out / "samples.json").write_text(
        json.dumps([{k: r.get(k) for k in keys} for r in runs], indent=1)
    )
    curves = [
        {**{k: r.get(k) for k in keys[:-1]}, "preference": r.get("preference"), "curve": r["curve"]}
        for r in runs
    ]
    (out / "curves.json").write_text(json.dumps(curves, indent=1))
    for k in sorted(refs):
        if any(r["objectives"] == k for r in summary):
            print(
                f"\n{k} objectives ({', '.join(OBJECTIVES[:k])}): held-out hypervolume at matched"
                f" KL (nats / completion) and at the end; reference point {tuple(refs[k])}"
            )
            print(format_table(summary, budgets, k, starts))
    print(f"\nchosen on the training split at KL ≤ {selection_budget:g}:")
    print(format_best(best))
    names = ", ".join(p.name for p in fronts)
    print(f"wrote {out}/runs.csv, summary.csv, best.csv, curves.json, kl_curves.png {names}")
    return summary
