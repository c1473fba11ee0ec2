"""A sweep's front: the points (policies) with their held-out scores and KL, the choice of one
checkpoint per run at a KL budget (matched KL), the front's metrics, and its CSV, plots and
tables.

Scores are rewards (maximised); the metrics go through :mod:`mogradient.pareto` on their
negation, against the stated reference point.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mogradient.pareto import hypervolume, is_non_dominated, spacing


@dataclass(frozen=True)
class PolicyPoint:
    """One evaluated policy of a run: held-out mean rewards and KL at a training step.

    ``checkpoint`` is ``"initial"`` (step 0, the policy every run starts from),
    ``"checkpoint-N"`` or ``"final"``."""

    run: str
    preference: tuple[float, ...]
    step: int
    checkpoint: str
    scores: tuple[float, ...]
    kl: float


def select_at_kl_budget(curve: Sequence[PolicyPoint], budget: float) -> PolicyPoint | None:
    """The last point of a run's ``curve`` (the largest step) whose KL is at most ``budget``;
    ``None`` when every point exceeds it. Later checkpoints are preferred over lower KL: the
    question is how far training gets within the budget."""
    within = [p for p in curve if p.kl <= budget]
    return max(within, key=lambda p: p.step) if within else None


def front_at_kl_budget(
    curves: Mapping[str, Sequence[PolicyPoint]], budget: float
) -> list[PolicyPoint]:
    """One point per run (:func:`select_at_kl_budget`); runs with no point within the budget
    are left out."""
    chosen = (select_at_kl_budget(curve, budget) for curve in curves.values())
    return [p for p in chosen if p is not None]


def front_metrics(points: Sequence[PolicyPoint], ref_point: Sequence[float]) -> dict[str, Any]:
    """Hypervolume (maximised rewards above ``ref_point``), spacing (``None`` for fewer than
    two points) and the non-dominated mask of ``points``."""
    if not points:
        return {"hypervolume": 0.0, "spacing": None, "non_dominated": [], "n_points": 0}
    scores = np.array([p.scores for p in points], dtype=np.float64)
    mask = is_non_dominated(scores, maximize=True)
    return {
        "hypervolume": hypervolume(scores, ref_point, maximize=True),
        "spacing": spacing(scores) if len(points) > 1 else None,
        "non_dominated": [bool(m) for m in mask],
        "n_points": len(points),
    }


def write_front_csv(
    path: Path, points: Sequence[PolicyPoint], non_dominated: Sequence[bool], names: Sequence[str]
) -> None:
    """One row per run: its preference, held-out mean rewards, KL and non-dominated flag."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "run",
                *(f"preference/{n}" for n in names),
                "step",
                *(f"score/{n}" for n in names),
                "kl",
                "non_dominated",
            ]
        )
        for point, flag in zip(points, non_dominated):
            writer.writerow(
                [point.run, *point.preference, point.step, *point.scores, point.kl, int(flag)]
            )


def write_kl_curve_csv(
    path: Path, curves: Mapping[str, Sequence[PolicyPoint]], names: Sequence[str]
) -> None:
    """Every evaluated checkpoint of every run: held-out rewards against KL."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "step", "checkpoint", "kl", *(f"score/{n}" for n in names)])
        for curve in curves.values():
            for p in curve:
                writer.writerow([p.run, p.step, p.checkpoint, p.kl, *p.scores])


def _staircase(scores: np.ndarray, ref_point: Sequence[float]) -> np.ndarray:
    """The outline of the region that 2-D maximised ``scores`` dominate above ``ref_point``."""
    r0, r1 = ref_point
    inside = scores[(scores[:, 0] > r0) & (scores[:, 1] > r1)]
    inside = inside[np.argsort(-inside[:, 0])]
    vertices = [(r0, r1)]
    best_y = r1
    for x, y in inside:
        if y <= best_y:  # dominated: adds nothing to the region
            continue
        vertices += [(x, best_y), (x, y)]
        best_y = y
    vertices.append((r0, best_y))
    return np.array(vertices)


def preference_labels(points: Sequence[PolicyPoint], names: Sequence[str]) -> tuple[list[str], str]:
    """Short point labels ``0.25/0.75`` (each run's preference weights) and the caption that
    says which objective each weight is on: ``labels: preference weights on length / vader``."""
    labels = ["/".join(f"{w:g}" for w in p.preference) for p in points]
    return labels, "labels: preference weights on " + " / ".join(names)


def _limits(values: np.ndarray) -> tuple[float, float]:
    """Axis limits around ``values`` with a 10 % margin; points that (nearly) coincide get a
    span of 2 % of their magnitude, so that the ticks stay readable."""
    low, high = float(values.min()), float(values.max())
    span = max(high - low, 0.02 * max(abs(low), abs(high)), 1e-3)
    middle = (low + high) / 2
    low, high = min(low, middle - span / 2), max(high, middle + span / 2)
    return low - 0.1 * span, high + 0.1 * span


def _grouped_labels(labels: Sequence[str], xy: np.ndarray) -> list[tuple[str, tuple[float, float]]]:
    """One label per drawn position: the labels of points at the same place joined by ", "."""
    groups: dict[tuple[float, float], list[str]] = {}
    for label, (x, y) in zip(labels, xy):
        groups.setdefault((float(x), float(y)), []).append(label)
    return [(", ".join(names), position) for position, names in groups.items()]


def _fit_texts(fig: Any, ax: Any) -> None:
    """Widen the axes' upper limits until every label lies inside them (a label is placed in
    points from its point, so it takes less data room as the limits grow: two passes do)."""
    for _ in range(2):
        renderer = fig.canvas.get_renderer()
        to_data = ax.transData.inverted()
        (left, right), (bottom, top) = ax.get_xlim(), ax.get_ylim()
        for text in ax.texts:
            box = text.get_window_extent(renderer).transformed(to_data)
            right = max(right, box.x1 + 0.02 * (right - left))
            top = max(top, box.y1 + 0.02 * (top - bottom))
        ax.set_xlim(left, right)
        ax.set_ylim(bottom, top)


def front_figure(
    points: Sequence[PolicyPoint],
    non_dominated: Sequence[bool],
    names: Sequence[str],
    ref_point: Sequence[float],
    soups: Sequence[PolicyPoint] = (),
    title: str = "sweep front (final policies)",
    start: PolicyPoint | None = None,
    labels: Sequence[str] | None = None,
    caption: str | None = None,
) -> Any:
    """The matplotlib figure of :func:`plot_front` (one panel per pair of objectives).

    The axes fit the drawn points (the runs, ``soups``, the ``start`` policy), not the
    reference point, so that close points stay apart; the hypervolume region is shaded as far
    as it shows. Each point is labelled (``labels``, default its run; the labels of points at
    one place are joined), the limits widened until no label is cut; ``caption`` (e.g. what
    the labels mean) goes under the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    scores = np.array([p.scores for p in points], dtype=np.float64)
    flags = np.array(non_dominated, dtype=bool)
    drawn = [scores]
    if soups:
        drawn.append(np.array([p.scores for p in soups], dtype=np.float64))
    if start is not None:
        drawn.append(np.array([start.scores], dtype=np.float64))
    every = np.concatenate(drawn)
    labels = [p.run for p in points] if labels is None else list(labels)
    pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.5 * len(pairs), 4.8), squeeze=False)
    ref_text = "reference point (" + ", ".join(f"{r:g}" for r in ref_point) + ")"
    for ax, (i, j) in zip(axes[0], pairs):
        if len(names) == 2:
            outline = _staircase(scores, ref_point)
            ax.fill(
                outline[:, 0],
                outline[:, 1],
                color="tab:blue",
                alpha=0.15,
                label=f"hypervolume region, {ref_text}",
            )
        ax.scatter(scores[~flags, i], scores[~flags, j], color="tab:gray", label="dominated")
        ax.scatter(
            scores[flags, i],
            scores[flags, j],
            color="tab:red",
            marker="*",
            s=120,
            label="non-dominated",
        )
        if soups:
            mixes = np.array([p.scores for p in soups], dtype=np.float64)
            ax.plot(
                mixes[:, i],
                mixes[:, j],
                linestyle="--",
                marker="D",
                fillstyle="none",
                color="tab:green",
                label="Rewarded Soups (weights interpolated)",
            )
        if start is not None:
            ax.scatter(
                [start.scores[i]],
                [start.scores[j]],
                facecolors="none",
                edgecolors="black",
                marker="s",
                s=90,
                label="start policy (step 0)",
            )
        for label, (x, y) in _grouped_labels(labels, scores[:, [i, j]]):
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlim(*_limits(every[:, i]))
        ax.set_ylim(*_limits(every[:, j]))
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.yaxis.set_major_locator(MaxNLocator(6))
        ax.set_xlabel(f"held-out mean {names[i]}")
        ax.set_ylabel(f"held-out mean {names[j]}")
        # below the axes: dominated points gather low and left, where a legend would hide them
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    if len(names) > 2:
        title += f"; hypervolume over {len(names)} objectives, {ref_text}"
    if caption:
        title += f"\n{caption}"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    for ax in axes[0]:
        _fit_texts(fig, ax)
    return fig


def plot_front(
    path: Path,
    points: Sequence[PolicyPoint],
    non_dominated: Sequence[bool],
    names: Sequence[str],
    ref_point: Sequence[float],
    soups: Sequence[PolicyPoint] = (),
    title: str = "sweep front (final policies)",
    start: PolicyPoint | None = None,
    labels: Sequence[str] | None = None,
    caption: str | None = None,
) -> None:
    """Save :func:`front_figure` to ``path``: the runs' held-out rewards, the non-dominated
    ones marked; with two objectives the dominated (hypervolume) region is shaded, with more
    each pair of objectives is drawn. ``soups`` (Rewarded Soups' mixes) are a dashed line of
    open diamonds, ``start`` an open black square."""
    import matplotlib.pyplot as plt

    fig = front_figure(
        points, non_dominated, names, ref_point, soups, title, start, labels, caption
    )
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_kl_curves(
    path: Path,
    curves: Mapping[str, Sequence[PolicyPoint]],
    names: Sequence[str],
    kl_budgets: Sequence[float],
) -> None:
    """One panel per objective: held-out mean reward against held-out KL along each run, the
    KL budgets as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for i, (ax, name) in enumerate(zip(axes[0], names)):
        for label, curve in curves.items():
            ax.plot([p.kl for p in curve], [p.scores[i] for p in curve], marker="o", label=label)
        for budget in kl_budgets:
            ax.axvline(budget, color="gray", linestyle="--", linewidth=0.8)
        ax.set_xlabel("held-out KL to the reference (nats / sequence)")
        ax.set_ylabel(f"held-out mean {name}")
        ax.legend(fontsize=7, title="preference", title_fontsize=7)
    fig.suptitle("rewards against KL along training (dashed: KL budgets)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def format_tables(
    finals: Sequence[PolicyPoint], summary: Mapping[str, Any], names: Sequence[str]
) -> str:
    """The final front per run, then the hypervolume at each KL budget with the checkpoint
    each run contributes (``run@step``; a run with none within the budget is left out)."""
    header = ["preference", *names, "KL", "step", "non-dominated"]
    rows = [
        [p.run, *(f"{s:.4f}" for s in p.scores), f"{p.kl:.3f}", str(p.step), "*" if flag else ""]
        for p, flag in zip(finals, summary["final"]["non_dominated"])
    ]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in [header, *rows]]
    ref = ", ".join(f"{r:g}" for r in summary["ref_point"])
    final = summary["final"]
    lines.append(
        f"final front: hypervolume {_number(final['hypervolume'])}, spacing "
        f"{_number(final['spacing'])} (reference point {ref})"
    )
    if "rewarded_soups" in summary:
        soups = summary["rewarded_soups"]
        lines.append(
            f"Rewarded Soups ({soups['n_points']} mixes of the one-hot runs): hypervolume "
            f"{_number(soups['hypervolume'])}, spacing {_number(soups['spacing'])} (soups.csv)"
        )
    for entry in summary["kl_budgets"]:
        chosen = " ".join(f"{run}@{v['step']}" for run, v in entry["selected"].items())
        lines.append(
            f"KL <= {entry['kl_budget']:g}: hypervolume {_number(entry['hypervolume'])}, spacing "
            f"{_number(entry['spacing'])}; last checkpoint within the budget: {chosen or 'none'}"
        )
    return "\n".join(lines)
