"""Every method TorchJD 0.18 exports has a registered counterpart, listed in docs/torchjd.md."""

import re
from pathlib import Path

import pytest

from mogradient import get_aggregator

aggregation = pytest.importorskip("torchjd.aggregation")
scalarization = pytest.importorskip("torchjd.scalarization")

DOC = Path(__file__).resolve().parents[1] / "docs" / "torchjd.md"
BASES = {"Aggregator", "Weighting", "WeightedAggregator", "GramianWeightedAggregator", "Scalarizer"}


def _rows() -> dict[str, str]:
    """TorchJD name → our registered name, from the doc's table."""
    rows: dict[str, str] = {}
    for line in DOC.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[1].startswith("`"):
            continue
        ours = cells[1].strip("`")
        for name in re.findall(r"`([A-Za-z]+)`", cells[0]):
            rows[name] = ours
    return rows


def test_every_torchjd_method_is_listed_and_registered() -> None:
    exported = (set(aggregation.__all__) | set(scalarization.__all__)) - BASES
    rows = _rows()
    missing = sorted(exported - set(rows))
    assert not missing, f"docs/torchjd.md lacks a row for TorchJD's {missing}"
    for theirs, ours in rows.items():
        assert theirs in exported, f"docs/torchjd.md lists {theirs}, which TorchJD does not export"
        get_aggregator(ours)  # raises on a name that is not registered
