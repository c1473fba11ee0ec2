"""IMDb reviews and labels from a local directory/file or a hub name, and a fingerprint of
the source for the stage cache (the files' SHA-256; the name for a hub dataset)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from mogradient_llm.inputs.prompts import load_text_dataset, resolve_data_file


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
    """What identifies the data for the cache: per split, the SHA-256 of the file's bytes (a
    copy or a fresh checkout of the same data keeps its cache; a hub dataset: its name)."""
    result: dict[str, object] = {}
    for split in ("train", "test"):
        path = resolve_data_file(source, split)
        if path is None:
            result[split] = str(source)
        else:
            with path.open("rb") as handle:
                result[split] = hashlib.file_digest(handle, "sha256").hexdigest()
    return result
