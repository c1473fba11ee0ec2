"""The cold-start benchmark's report: the docs table is the committed CSV's, for every method.

No subprocess is spawned here (a cold compile takes seconds to tens of seconds); the
measurement itself is ``python -m benchmarks.cold_start``.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.cold_start import docs_table, gramian_methods, markdown, read_rows
from benchmarks.docs_tables import render
from mogradient.aggregators.base import GramianWeighting
from mogradient.aggregators.registry import registered


def _row(cache: str, method: str, wall: str) -> dict[str, str]:
    return {
        "cache": cache,
        "scope": "all" if method == "all" else "one",
        "method": method,
        "import_s": "1.00",
        "torch_s": wall,
        "torch_cpu_s": "0.50",
        "numpy_s": "0.00",
        "load_1min": "0.3",
    }


DOCS_PAGE = Path("docs/cold-start.md")
DOCS_CSV = Path("docs/results/cold_start/cold_start.csv")


def test_docs_table_is_generated_from_the_csv() -> None:
    """The table in docs/cold-start.md is exactly what the report code renders from the CSV
    (regenerate with ``python -m benchmarks.docs_tables``)."""
    page = DOCS_PAGE.read_text()
    assert "<!-- table: cold_start/cold_start " in page
    assert render(page) == page
    assert docs_table(DOCS_CSV.parent, "cold_start") + "\n" == markdown(read_rows(DOCS_CSV))


def test_csv_covers_every_gramian_method_of_the_registry() -> None:
    """A newly registered Gramian method makes the committed results stale: measure again."""
    expected = sorted(
        name for name, cls in registered().items() if issubclass(cls, GramianWeighting)
    )
    assert gramian_methods() == expected
    rows = read_rows(DOCS_CSV)
    for cache in ("cold", "warm"):
        one = sorted(r["method"] for r in rows if r["cache"] == cache and r["scope"] == "one")
        assert one == expected, cache
        scope_all = [r["method"] for r in rows if r["cache"] == cache and r["scope"] == "all"]
        assert scope_all == ["all"]


def test_markdown_has_one_line_per_method_and_the_all_line() -> None:
    rows = [
        _row("cold", "mgda", "9.50"),
        _row("cold", "all", "30.00"),
        _row("warm", "mgda", "0.40"),
        _row("warm", "all", "0.90"),
    ]
    lines = markdown(rows).splitlines()
    assert lines[2] == "| `mgda` | 9.50 | 0.50 | 0.40 | 1.00 | 1.00 |"
    assert lines[3] == "| **all, in one process** | 30.00 | 0.50 | 0.90 | 1.00 | 1.00 |"
    assert lines[-1] == "Load average (1 min) before each cell: 0.3 to 0.3."
