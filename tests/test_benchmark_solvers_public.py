"""The public-path solver benchmark: hot and cold timings of every Gramian method TorchJD also
has, with torch inputs, written as rows and a Markdown table (tiny sizes, a few calls)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torchjd")

from benchmarks.solvers_public import GOAL, format_public, methods, public_rows  # noqa: E402

SHARED = {"upgrad", "dualproj", "mgda", "cagrad", "imtl-g", "aligned-mtl", "pcgrad"}


def test_every_shared_gramian_method_has_hot_and_cold_rows() -> None:
    assert SHARED <= set(methods())
    rows = public_rows((2,), 3, np.random.default_rng(0))
    assert {r["method"] for r in rows} == set(methods())
    for r in rows:
        for key in ("ours_hot_us", "torchjd_hot_us", "ours_cold_us", "torchjd_cold_us"):
            assert r[key] > 0
        assert r["cold_ratio"] == pytest.approx(r["torchjd_cold_us"] / r["ours_cold_us"], rel=0.01)
    table = format_public(rows)
    assert table.count("\n") == len(rows) + 1
    assert "× cold" in table


def test_the_table_marks_a_cold_ratio_below_the_goal() -> None:
    row = {
        "method": "upgrad", "n": 2, "ours_hot_us": 10.0, "torchjd_hot_us": 200.0,
        "hot_ratio": 20.0, "ours_cold_us": 40.0, "torchjd_cold_us": 200.0, "cold_ratio": 5.0,
    }  # fmt: skip
    assert f"(< {GOAL:g})" in format_public([row])
    assert "(<" not in format_public([{**row, "cold_ratio": GOAL}])


def test_weights_with_a_torch_gramian_equal_the_numpy_path() -> None:
    """The torch path returns a float64 CPU tensor equal bit for bit to the numpy path's
    weights (both run the same solve; only the conversion differs)."""
    import torch

    rng = np.random.default_rng(1)
    j = rng.normal(size=(4, 50))
    g = j @ j.T
    for name, (weigh, _) in methods().items():
        if name == "gradvac":  # stateful (its EMA moves between calls)
            continue
        out = weigh(torch.as_tensor(g))
        assert out.dtype == torch.float64 and out.device.type == "cpu"
        owner = weigh.__self__  # type: ignore[attr-defined]
        np.testing.assert_array_equal(out.numpy(), owner.weights(g))
