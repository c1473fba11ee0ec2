"""The sweep's front plot: what it draws (labels, limits, the start policy), on fronts whose
points lie close together, far from the reference point."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from mogradient_llm.pareto.front import (
    PolicyPoint,
    front_figure,
    front_metrics,
    plot_front,
    preference_labels,
)

NAMES = ["length", "vader"]
REF = [0.5, -1.0]
PREFS = [(0.0, 1.0), (0.25, 0.75), (0.5, 0.5), (0.75, 0.25), (1.0, 0.0)]
SCORES = [(0.520, 0.140), (0.531, 0.132), (0.540, 0.128), (0.552, 0.119), (0.561, 0.101)]
POINTS = [
    PolicyPoint("_".join(f"{w:g}" for w in p), p, 10, "final", s, 1.0)
    for p, s in zip(PREFS, SCORES)
]
START = PolicyPoint("initial", (), 0, "initial", (0.515, 0.090), 0.0)


@pytest.fixture
def figure():
    labels, caption = preference_labels(POINTS, NAMES)
    flags = front_metrics(POINTS, REF)["non_dominated"]
    fig = front_figure(POINTS, flags, NAMES, REF, start=START, labels=labels, caption=caption)
    fig.canvas.draw()
    yield fig
    plt.close(fig)


def test_the_labels_say_which_objective_each_weight_is_on(figure) -> None:
    assert "preference weights on length / vader" in figure._suptitle.get_text()
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.texts] == ["0/1", "0.25/0.75", "0.5/0.5", "0.75/0.25", "1/0"]


def test_no_label_is_cut_off(figure) -> None:
    ax = figure.axes[0]
    box = ax.get_window_extent()
    for text in ax.texts:
        extent = text.get_window_extent()
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1, text.get_text()
        assert box.y0 <= extent.y0 and extent.y1 <= box.y1, text.get_text()


def test_the_axes_fit_the_points_not_the_reference_point(figure) -> None:
    """The points span 0.039 in vader; stretched to the reference -1 they would fill 3 % of
    the axis. Every drawn point (start included) lies inside the limits."""
    ax = figure.axes[0]
    low, high = ax.get_ylim()
    vader = [s[1] for s in SCORES] + [START.scores[1]]
    assert low > REF[1] and (max(vader) - min(vader)) / (high - low) > 0.7
    assert low < min(vader) and max(vader) < high
    left, right = ax.get_xlim()
    length = [s[0] for s in SCORES] + [START.scores[0]]
    assert left < min(length) and max(length) < right


def test_the_start_policy_is_drawn(figure) -> None:
    ax = figure.axes[0]
    starts = [c for c in ax.collections if c.get_label() == "start policy (step 0)"]
    assert len(starts) == 1
    assert starts[0].get_offsets().tolist() == [list(START.scores)]
    assert "start policy (step 0)" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_three_objectives_draw_every_pair_with_the_start(tmp_path) -> None:
    points = [PolicyPoint(p.run, (*p.preference, 0.0), 1, "final", (*p.scores, 2.0), 0.0)
              for p in POINTS]  # fmt: skip
    start = PolicyPoint("initial", (), 0, "initial", (*START.scores, 1.5), 0.0)
    flags = front_metrics(points, [*REF, 0.0])["non_dominated"]
    path = tmp_path / "front.png"
    plot_front(path, points, flags, [*NAMES, "third"], [*REF, 0.0], start=start)
    assert path.stat().st_size > 0
    fig = front_figure(points, flags, [*NAMES, "third"], [*REF, 0.0], start=start)
    assert len(fig.axes) == 3
    for ax in fig.axes:
        assert sum(c.get_label() == "start policy (step 0)" for c in ax.collections) == 1
    plt.close(fig)


def test_points_at_one_place_share_one_label_and_readable_limits() -> None:
    """A front that has not moved: every run at the start policy's scores."""
    same = (0.5, 0.0385)
    points = [PolicyPoint(p.run, p.preference, 3, "final", same, 0.0) for p in POINTS]
    start = PolicyPoint("initial", (), 0, "initial", same, 0.0)
    labels, caption = preference_labels(points, NAMES)
    flags = front_metrics(points, REF)["non_dominated"]
    fig = front_figure(points, flags, NAMES, REF, start=start, labels=labels, caption=caption)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["0/1, 0.25/0.75, 0.5/0.5, 0.75/0.25, 1/0"]
    box, extent = ax.get_window_extent(), ax.texts[0].get_window_extent()
    assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and extent.y1 <= box.y1
    left, right = ax.get_xlim()
    assert left < same[0] < right and right - left >= 0.02 * same[0]  # not a 1e-6 wide axis
    plt.close(fig)
