"""What every benchmark writes next to its printed table: the rows as a CSV file."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def write_csv(
    rows: Sequence[dict[str, Any]], path: str | Path, fields: Sequence[str] | None = None
) -> None:
    """``rows`` as a CSV file. The columns are ``fields`` (other keys left out), by default
    every key in the order first seen; a row without one leaves its cell empty."""
    if fields is None:
        fields = list({key: None for row in rows for key in row})
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a CSV written by :func:`write_csv`, with numbers parsed back (``int`` where
    the cell is an integer, ``float`` where it is another number), empty cells as ``None`` and
    other cells as text: what the benchmarks' formatters receive when a table is regenerated
    from its committed CSV."""
    with open(path, newline="") as f:
        return [{key: _parse(value) for key, value in row.items()} for row in csv.DictReader(f)]


def _parse(cell: str) -> Any:
    if cell == "":
        return None
    for kind in (int, float):
        try:
            return kind(cell)
        except ValueError:
            pass
    return cell
