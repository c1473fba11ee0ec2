"""The two plots redrawn from committed CSVs read right (colours match the legend, no empty
panel, coinciding methods named, budgets labelled), and stale statements in the README and
the IMDb CLI's help stay fixed."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from benchmarks import backward_step  # noqa: E402
from benchmarks.rlhf_imdb import cli  # noqa: E402
from benchmarks.rlhf_imdb.docs import kl_curves_inputs  # noqa: E402
from benchmarks.rlhf_imdb.report import kl_curves_figure  # noqa: E402
from benchmarks.tables import read_csv  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"


def test_backward_step_lines_have_their_legend_colour_in_every_panel() -> None:
    rows = read_csv(RESULTS / "backward_step" / "backward_step.csv")
    fig = backward_step.figure(rows)
    legend = {
        text.get_text().split(" (")[0]: handle.get_color()
        for text, handle in zip(fig.legends[0].get_texts(), fig.legends[0].legend_handles)
    }
    assert set(legend) == set(backward_step.METHODS)
    gpt2 = next(ax for ax in fig.axes if ax.get_title() == "gpt2")
    seen = {line.get_gid(): line.get_color() for line in gpt2.get_lines()}
    assert "mg_features" in seen and "tjd_autogram" not in seen  # autogram fails on GPT-2
    for ax in fig.axes:
        for line in ax.get_lines():
            assert line.get_color() == legend[line.get_gid()], (ax.get_title(), line.get_gid())
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "tjd_autogram (n/a: gpt2)" in labels


def test_kl_curves_have_no_empty_panel_name_coinciding_methods_and_label_budgets() -> None:
    runs, starts, budgets, refs = kl_curves_inputs(RESULTS / "rlhf_imdb_v2")
    fig = kl_curves_figure(runs, starts, budgets, refs)
    panels = {(r["objectives"], r["algorithm"], r["size"]) for r in runs}
    assert len(fig.axes) == len(panels)
    for ax in fig.axes:
        assert ax.get_lines(), ax.get_title()
        texts = {t.get_text().strip() for t in ax.texts}
        assert {f"≤ {b:g}" for b in budgets} <= texts
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        if "2 objectives" in ax.get_title():
            # UPGrad and PCGrad give identical runs for two objectives: drawn once, named both
            assert "upgrad = pcgrad" in labels, ax.get_title()
    colours = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_label().startswith("_"):
                continue
            first = line.get_label().split(" = ")[0]
            assert colours.setdefault(first, line.get_color()) == line.get_color()


def test_quick_help_states_the_quick_budget() -> None:
    seeds = len(str(cli.QUICK["seeds"]).split(","))
    text = cli.quick_help()
    assert f"{seeds} seed" in text and f"{cli.QUICK['steps']} steps" in text
    assert "2 seeds" not in text or seeds == 2


def test_readme_times_and_link_text_match_the_docs() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "six aggregators" not in readme
    solvers = (ROOT / "docs" / "solvers.md").read_text()
    seconds = re.search(r"The run took (\d+) s\.", solvers)
    assert seconds is not None
    assert re.search(rf"benchmarks\.solvers .*\({seconds.group(1)} s\)", readme)
    llm = (ROOT / "docs" / "llm.md").read_text()
    demo = re.search(r"took (\d+) s of wall time in total", llm)
    assert demo is not None and int(demo.group(1)) > 360  # the README says about 7 min
    assert re.search(r"mogradient-llm demo +# the offline RLHF demo \(about 7 min", readme)
