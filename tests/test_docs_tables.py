"""Every results table marked as generated in the docs is what the benchmark's report code
writes from the committed CSV (``python -m benchmarks.docs_tables`` regenerates them), and
the check notices a cell edited by hand."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks import docs_tables
from benchmarks.rlhf_imdb.report import format_table
from benchmarks.tables import read_csv

RESULTS = docs_tables.RESULTS


def _marked(page: Path) -> list[str]:
    return [m.group("id") for m in docs_tables.MARKER.finditer(page.read_text())]


def test_every_generated_table_matches_its_csv() -> None:
    stale = {
        str(page.relative_to(docs_tables.ROOT)): docs_tables.differing(page.read_text())
        for page in docs_tables.pages()
    }
    assert {page: ids for page, ids in stale.items() if ids} == {}, (
        "run python -m benchmarks.docs_tables"
    )


def test_a_cell_edited_by_hand_is_caught() -> None:
    page = docs_tables.ROOT / "docs" / "benchmarks.md"
    text = page.read_text()
    match = next(m for m in docs_tables.MARKER.finditer(text) if m.group("id").endswith("2-ppo"))
    body = match.group("body")
    row = next(line for line in body.splitlines() if "| pama |" in line)
    edited_row = re.sub(r"\d\.\d{3}", "9.999", row, count=1)
    edited = text.replace(row, edited_row, 1)
    assert edited != text
    assert docs_tables.differing(edited) == ["rlhf_imdb_v2/2-ppo"]
    assert docs_tables.MARKER.search(docs_tables.render(edited)) is not None
    assert docs_tables.render(edited) == docs_tables.render(text)


def test_imdb_tables_hold_their_algorithm_and_the_summary_rows() -> None:
    """The two-objective tables under "PPO" and "GRPO" hold exactly that algorithm's rows of
    ``summary.csv`` (the table headed PPO once held GRPO rows)."""
    text = (docs_tables.ROOT / "docs" / "benchmarks.md").read_text()
    summary = read_csv(RESULTS / "rlhf_imdb_v2" / "summary.csv")
    for algorithm in ("ppo", "grpo"):
        heading = text.index(f"\n**{algorithm.upper()}**\n")
        match = docs_tables.MARKER.search(text, heading)
        assert match is not None and match.group("id") == f"rlhf_imdb_v2/2-{algorithm}"
        rows = [line.split(" | ") for line in match.group("body").splitlines()[2:]]
        assert {r[0].strip("| ") for r in rows} == {algorithm}
        expected = {
            (r["size"], r["method"])
            for r in summary
            if r["objectives"] == 2 and r["algorithm"] == algorithm
        }
        assert {(r[1], r[2]) for r in rows if r[2] != "start"} == expected


def test_imdb_pages_mark_their_tables() -> None:
    """The IMDb results on the benchmark and archive pages are generated, not pasted."""
    assert {"rlhf_imdb_v2/2-ppo", "rlhf_imdb_v2/2-grpo", "rlhf_imdb_v2/3"} <= set(
        _marked(docs_tables.ROOT / "docs" / "benchmarks.md")
    )
    assert len(_marked(docs_tables.ROOT / "docs" / "archive.md")) >= 4


def test_unknown_table_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="GENERATORS"):
        docs_tables.generate("nowhere/table")
    with pytest.raises(ValueError, match="K-ALGORITHM"):
        docs_tables.generate("rlhf_imdb_v2/nonsense")


def test_read_csv_parses_numbers_back(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b,c,d\n3,0.5,,x\n")
    assert read_csv(path) == [{"a": 3, "b": 0.5, "c": None, "d": "x"}]


def test_format_table_filters_one_algorithm() -> None:
    summary = read_csv(RESULTS / "rlhf_imdb_v2" / "summary.csv")
    starts = {
        (r["objectives"], r["size"]): r for r in read_csv(RESULTS / "rlhf_imdb_v2" / "starts.csv")
    }
    table = format_table(summary, [2, 4, 8, 16], 2, starts, "ppo")
    assert "| grpo |" not in table and "| ppo | tiny | pama |" in table


def _measured(cell: str) -> bool:
    """A cell that reads as a measurement: ``mean ± std`` or a number with 2+ decimals."""
    return bool(
        re.search(r"± ?\d", cell) or re.fullmatch(r"\**-?\d[\d,]*\.\d{2,}\**(×|x| s| %)?", cell)
    )


def test_every_results_table_in_the_docs_is_generated() -> None:
    """No table of measured numbers sits outside generated markers (pasted tables go stale)."""
    pasted = []
    for page in docs_tables.pages():
        lines = docs_tables.MARKER.sub("", page.read_text()).split("\n")
        i = 0
        while i < len(lines):
            if not lines[i].startswith("|"):
                i += 1
                continue
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            cells = [c.strip() for line in lines[i + 2 : j] for c in line.strip("|").split("|")]
            if any(_measured(c) for c in cells):
                pasted.append(f"{page.name}: {lines[i][:60]}")
            i = j
    assert pasted == []


def test_start_rows_hold_what_the_start_rows_of_the_tables_print() -> None:
    from benchmarks.rlhf_imdb.report import start_rows

    starts = {
        (2, "tiny"): {"sentiment": 0.25, "length": 1.0, "hypervolume": 1.625, "curve": []},
        (3, "tiny"): {"sentiment": 0.25, "length": 1.0, "diversity": 0.9, "hypervolume": 1.4},
    }
    assert start_rows(starts) == [
        {"objectives": 2, "size": "tiny", "sentiment": 0.25, "length": 1.0, "hypervolume": 1.625},
        {
            "objectives": 3,
            "size": "tiny",
            "sentiment": 0.25,
            "length": 1.0,
            "diversity": 0.9,
            "hypervolume": 1.4,
        },
    ]
