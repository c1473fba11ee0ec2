"""IMDb reviews and labels from a local directory/file or a hub name, and a fingerprint of
the source for the stage cache (file size and mtime; the name for a hub dataset)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mogradient_llm.data import load_text_dataset, resolve_data_file


@dataclass
class Split:
    """Texts and 0/1 sentiment labels of one split."""

    texts: list[str]
    labels: list[int]


def load_split(source: str | Path, split: str) -> Split:
    """The rows of ``split`` (fields ``text`` and ``label``)."""
    dataset = load_text_dataset(source, split)
    return Split(list(dataset["text"]), [int(x) for x in dataset["label"]])


def fingerprint(source: str | Path) -> dict[str, object]:
    """What identifies the data for the cache: per split, the file's path, size and mtime."""
    result: dict[str, object] = {}
    for split in ("train", "test"):
        path = resolve_data_file(source, split)
        if path is None:
            result[split] = str(source)
        else:
            stat = path.stat()
            result[split] = [str(path.resolve()), stat.st_size, stat.st_mtime_ns]
    return result
