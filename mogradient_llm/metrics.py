"""Metrics and samples written to ``metrics.jsonl``, ``metrics.csv`` and ``samples.jsonl``."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any


class MetricsWriter:
    """Appends one row of metrics per step to JSONL and CSV files in ``output_dir``."""

    def __init__(self, output_dir: str | Path):
        self.dir = Path(output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.dir / "metrics.jsonl"
        self.csv = self.dir / "metrics.csv"
        self.samples = self.dir / "samples.jsonl"
        for path in (self.jsonl, self.csv, self.samples):
            path.unlink(missing_ok=True)
        self.rows: list[dict[str, Any]] = []
        self.fields: list[str] = []

    def log(self, step: int, stats: dict[str, float]) -> None:
        """Write one row (``step`` first, then the stats)."""
        row = {"step": step, **stats}
        self.rows.append(row)
        with self.jsonl.open("a") as f:
            f.write(json.dumps(row) + "\n")
        new_fields = [k for k in row if k not in self.fields]
        if new_fields:  # a column appeared: rewrite the CSV with the union of the columns
            self.fields += new_fields
            with self.csv.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.fields)
                writer.writeheader()
                writer.writerows(self.rows)
        else:
            with self.csv.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.fields).writerow(row)

    def log_samples(self, step: int, samples: list[dict[str, Any]]) -> None:
        """Write sample completions with their per-objective scores."""
        with self.samples.open("a") as f:
            for sample in samples:
                f.write(json.dumps({"step": step, **sample}) + "\n")
