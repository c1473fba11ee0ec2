"""The device check's smoke mode: the same code as on a GPU at tiny sizes on the CPU, so the
prepared check cannot rot before a GPU is at hand (``python -m benchmarks.device_check``)."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from benchmarks import device_check, docs_tables
from benchmarks.backward_models import MODELS
from benchmarks.device_sections import BACKWARD_METHODS, RL_CELLS, SMOKE, backward_rows
from benchmarks.tables import read_csv

pytest.importorskip("trl")
pytest.importorskip("torchjd")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke run with a budget no loaded machine exhausts (its default, 120 s, is a
    section's share on an idle CPU): these tests check that every section writes its rows, and
    the budget's cut is tested on its own below."""
    out = tmp_path_factory.mktemp("results") / "gpu"
    device_check.main(["--smoke", "--out", str(out), "--budget", "1800"])
    return out


def test_the_smoke_run_writes_every_sections_rows(smoke: Path) -> None:
    rows = read_csv(smoke / "device_check.csv")
    names = {(r["section"], r["name"]) for r in rows}
    assert ("setup", "machine") in names
    rl = {r["name"]: r for r in rows if r["section"] == "rl"}
    assert set(rl) == {"trl", *RL_CELLS}
    assert all(r["result"] == "ok" and r["reference"] == "trl" for r in rl.values())
    assert rl["trl"]["ratio"] == 1
    for model in MODELS:
        assert ("backward", f"{model}/plain") in names
        for method in BACKWARD_METHODS:
            assert ("backward", f"{model}/{method}") in names
    ours = [r for r in rows if r["section"] == "backward" and "/mg_" in r["name"]]
    assert ours and all(r["result"] == "ok" and r["ratio"] > 0 for r in ours)
    checks = {r["name"]: r["result"] for r in rows if r["section"] == "correctness"}
    assert checks == {
        "bf16 step-0 KL": "pass",
        "bf16 step-0 KL (LoRA)": "pass",
        "fp16 scaler gradients": "pass",
        "LoRA trains": "pass",
    }


def test_the_markdown_table_is_the_csvs_and_the_docs_generator_writes_it(smoke: Path) -> None:
    text = (smoke / "device_check.md").read_text().strip()
    assert text == device_check.docs_table(smoke, "device_check")
    assert text.count("\n") == len(read_csv(smoke / "device_check.csv")) + 1
    # a page's marker gpu/device_check is generated from docs/results/gpu/device_check.csv
    assert docs_tables.generate("gpu/device_check", results=smoke.parent) == text


def test_a_section_past_its_deadline_is_cut_short_and_says_so() -> None:
    rows = backward_rows(SMOKE, deadline=time.perf_counter())
    assert [(r["name"], r["result"]) for r in rows] == [("(budget)", "cut short")]
    assert "0 of 3" in rows[0]["note"]


def test_the_budget_shares_what_is_left_over_the_sections_left() -> None:
    budget = device_check.Budget(100.0, ["rl", "backward", "correctness"])
    start = time.perf_counter()
    assert budget.deadline("rl") - start == pytest.approx(45.0, abs=1.0)
    # nothing spent: backward gets 35/55 of the 100 s still left
    assert budget.deadline("backward") - start == pytest.approx(100 * 35 / 55, abs=1.0)
    assert budget.deadline("correctness") - start == pytest.approx(100.0, abs=1.0)


def test_the_sections_flag_runs_one_section(tmp_path: Path) -> None:
    device_check.main(
        ["--smoke", "--out", str(tmp_path), "--sections", "backward", "--budget", "0"]
    )
    rows = read_csv(tmp_path / "device_check.csv")
    assert {r["section"] for r in rows} == {"setup", "backward"}


def test_the_wheel_list_is_pinned_and_its_fetch_script_executable() -> None:
    requirements = device_check.wheel_requirements()
    assert {"trl==1.16.0", "torchjd==0.18.0"} <= set(requirements)
    assert all(r.count("==") == 1 for r in requirements)
    script = Path(device_check.__file__).with_name("fetch_device_wheels.sh")
    assert script.stat().st_mode & stat.S_IXUSR
    assert "device_wheels.txt" in script.read_text() and "--no-deps" in script.read_text()
    # everything listed imports here: nothing to install, no rows
    assert device_check.install_missing(Path("no-such-folder")) == []


def test_a_section_that_raises_is_an_error_row_and_the_csv_is_still_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks import device_sections

    def broken(sizes: object, deadline: float) -> list:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(device_sections, "backward_rows", broken)
    device_check.main(["--smoke", "--out", str(tmp_path), "--sections", "backward"])
    rows = read_csv(tmp_path / "device_check.csv")
    assert [(r["name"], r["result"]) for r in rows if r["section"] == "backward"] == [
        ("(error)", "error")
    ]
    assert "out of memory" in rows[-1]["note"]


def test_a_missing_package_skips_its_cells_with_a_row_naming_the_import(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from benchmarks import backward_models, device_sections

    monkeypatch.setattr(backward_models, "MODELS", ("mlp",))
    monkeypatch.setattr(
        device_sections,
        "missing",
        lambda module: "ModuleNotFoundError: torchjd" if module.startswith("torchjd") else None,
    )
    rows = backward_rows(SMOKE, deadline=time.perf_counter() + 600)
    skipped = {r["name"]: r["note"] for r in rows if r["result"] == "skipped"}
    assert set(skipped) == {"mlp/tjd_autojac", "mlp/tjd_autogram"}
    assert all("torchjd not importable" in note for note in skipped.values())
