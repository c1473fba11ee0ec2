"""``benchmarks.backward_paths``: one short paired-rounds cell gives a row per path, timed
against the loop of the same rounds, and the table and the rule's memory factor read them."""

from __future__ import annotations

import pytest

from benchmarks import backward_paths


def test_a_cell_times_both_paths_against_the_loop_of_the_same_rounds() -> None:
    rows = backward_paths.time_cell("gpt2", 2, rounds=2, warmup=0)
    assert [r["path"] for r in rows] == list(backward_paths.PATHS)
    loop, layers = rows
    assert loop["ratio"] == 1.0  # the loop over itself, round by round
    assert layers["ratio"] > 0 and layers["vs_plain"] > 0
    assert loop["jacobian_mb"] == 2 * loop["n_params"] * 4 / 2**20
    for row in rows:
        row["extra_mb"] = 1.0
    table = backward_paths.table(rows)
    assert table.count("\n") == 2 and "| gpt2 | 136,960 | 2 |" in table


def test_the_memory_factor_reads_only_loop_cells_with_a_large_jacobian() -> None:
    rows = [
        {"path": "loop", "jacobian_mb": 20.0, "extra_mb": 50.0},
        {"path": "loop", "jacobian_mb": 1.0, "extra_mb": 9.0},  # allocator noise: left out
        {"path": "layers", "jacobian_mb": 20.0, "extra_mb": 90.0},
    ]
    assert backward_paths.loop_memory_factor(rows) == 2.5
    with pytest.raises(ValueError, match="no loop cell"):
        backward_paths.loop_memory_factor(rows[1:])
