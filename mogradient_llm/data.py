"""Prompt datasets: hub names or local ``.jsonl``/``.json``/``.csv`` files (optionally ``.gz``).

IMDb-style prompts follow TRL's IMDb example: the first ``n`` tokens of each review, with ``n``
drawn uniformly from ``[min_tokens, max_tokens]``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv"}


def _local_format(path: Path) -> str | None:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    return _LOCAL_FORMATS.get(suffixes[-1]) if suffixes else None


def resolve_data_file(source: str | Path, split: str) -> Path | None:
    """The local file for ``source``: the file itself, or ``source/{split}.{jsonl,json,csv}[.gz]``
    for a directory; ``None`` when ``source`` is not a local path (a hub name)."""
    path = Path(source)
    if path.is_file():
        return path
    if path.is_dir():
        for ext in (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".csv", ".csv.gz"):
            candidate = path / f"{split}{ext}"
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"no {split}.jsonl/.json/.csv(.gz) in {path}")
    return None


def load_text_dataset(source: str | Path, split: str = "train") -> Any:
    """A ``datasets.Dataset`` from a local file or directory, or ``load_dataset(source)``."""
    import datasets

    path = resolve_data_file(source, split)
    if path is None:
        return datasets.load_dataset(str(source), split=split)
    fmt = _local_format(path)
    if fmt is None:
        raise ValueError(f"unsupported file {path}; use .jsonl, .json or .csv (optionally .gz)")
    return datasets.load_dataset(fmt, data_files=str(path), split="train")


def clean_review(text: str) -> str:
    """Replace IMDb's HTML line breaks and collapse whitespace."""
    return re.sub(r"\s+", " ", text.replace("<br />", " ")).strip()


def imdb_prompts(
    texts: Sequence[str],
    tokenizer: Any,
    min_tokens: int = 2,
    max_tokens: int = 8,
    min_chars: int = 200,
    seed: int = 0,
) -> list[str]:
    """The first ``n ~ U[min_tokens, max_tokens]`` tokens of each text longer than ``min_chars``."""
    if not 1 <= min_tokens <= max_tokens:
        raise ValueError(f"need 1 <= min_tokens <= max_tokens, got {min_tokens}, {max_tokens}")
    rng = random.Random(seed)
    prompts = []
    for text in texts:
        text = clean_review(text)
        if len(text) <= min_chars:
            continue
        ids = tokenizer(text[: 20 * max_tokens], add_special_tokens=False)["input_ids"]
        n = rng.randint(min_tokens, max_tokens)
        prompts.append(tokenizer.decode(ids[:n]))
    return prompts


def load_prompts(
    source: str | Path,
    tokenizer: Any,
    split: str = "train",
    text_field: str = "text",
    limit: int | None = None,
    min_tokens: int = 2,
    max_tokens: int = 8,
    min_chars: int = 200,
    seed: int = 0,
) -> list[str]:
    """IMDb-style prompts from a hub dataset or a local file (see :func:`imdb_prompts`)."""
    dataset = load_text_dataset(source, split)
    if text_field not in dataset.column_names:
        raise ValueError(f"no column {text_field!r} in {source}; columns: {dataset.column_names}")
    texts = dataset[text_field]
    if limit is not None:
        texts = texts[:limit]
    return imdb_prompts(texts, tokenizer, min_tokens, max_tokens, min_chars, seed)


def as_prompt_list(prompts: Any) -> list[str]:
    """Prompts as strings: a sequence of strings, or a ``datasets.Dataset`` with a ``prompt``,
    ``query`` or ``text`` column."""
    if hasattr(prompts, "column_names"):
        for column in ("prompt", "query", "text"):
            if column in prompts.column_names:
                return list(prompts[column])
        raise ValueError(
            f"a prompt dataset needs a 'prompt', 'query' or 'text' column, got "
            f"{prompts.column_names}"
        )
    prompts = list(prompts)
    if not all(isinstance(p, str) for p in prompts):
        raise TypeError("prompts must be strings (or a datasets.Dataset with a prompt column)")
    return prompts
