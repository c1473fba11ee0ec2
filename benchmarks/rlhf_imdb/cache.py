"""On-disk stage cache: a stage's directory is named by a hash of its inputs and is reused
when ``result.json`` exists there (so a changed config or data file recomputes the stage)."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def stage_key(config: dict[str, Any]) -> str:
    """A short stable hash of a JSON-serialisable stage config."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cached_stage(
    cache_dir: Path,
    stage: str,
    config: dict[str, Any],
    compute: Callable[[Path], dict[str, Any]],
) -> tuple[Path, dict[str, Any]]:
    """``(directory, result)`` of ``stage`` for ``config``: read from the cache, or computed by
    ``compute(directory)`` (which writes its artefacts there) and then stored, with the
    seconds it took."""
    directory = cache_dir / stage / stage_key(config)
    done = directory / "result.json"
    if done.is_file():
        print(f"[{stage}] cached: {directory}", flush=True)
        return directory, json.loads(done.read_text())["result"]
    if directory.exists():
        shutil.rmtree(directory)  # an interrupted earlier attempt
    directory.mkdir(parents=True)
    print(f"[{stage}] computing: {directory}", flush=True)
    start = time.perf_counter()
    result = compute(directory)
    seconds = round(time.perf_counter() - start, 1)
    record = {"config": config, "result": result, "seconds": seconds}
    done.write_text(json.dumps(record, indent=1, default=str))
    return directory, result
