"""Prompt datasets: prompts as TRL users have them, and IMDb-style prompts cut from reviews.

A prompt is *standard* (a string, used as it is) or *conversational* (a list of
``{"role", "content"}`` messages, rendered through the tokenizer's chat template). A prompt
dataset is a list of rows, each a dict with a ``prompt`` key; the other keys are columns that
reach reward functions as keyword arguments (see :func:`reward_columns`).

Sources: hub names or local ``.jsonl``/``.json``/``.csv`` files (optionally ``.gz``). IMDb-style
prompts follow TRL's IMDb example: the first ``n`` tokens of each review, with ``n`` drawn
uniformly from ``[min_tokens, max_tokens]``.
"""

from __future__ import annotations

import gzip
import random
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: A chat message list, e.g. ``[{"role": "user", "content": "Hi"}]``.
Conversation = list[dict[str, Any]]
#: A standard (string) or conversational prompt.
Prompt = str | Conversation
#: A completion as reward functions get it: a string, or ``[{"role": "assistant", ...}]``.
Completion = str | Conversation

#: Row keys that never become reward columns: the prompt itself, and the names TRL reserves for
#: what the trainer generates.
_NOT_COLUMNS = ("prompt", "completion", "completion_ids")

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
    empty = ValueError(f"the dataset file {path} holds no rows; pass a file with data")
    if _blank(path):
        raise empty
    try:
        dataset = datasets.load_dataset(fmt, data_files=str(path), split="train")
    except ValueError as exc:  # a CSV header without rows
        if "corresponds to no data" in str(exc):
            raise empty from None
        raise
    if len(dataset) == 0:
        raise empty
    return dataset


def _blank(path: Path) -> bool:
    """Whether the (possibly gzipped) file holds nothing but whitespace."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        while chunk := f.read(1 << 16):
            if chunk.strip():
                return False
    return True


def is_conversational(prompt: Any) -> bool:
    """Whether ``prompt`` is a list of chat messages (dicts with a ``role``), as TRL decides it."""
    return (
        isinstance(prompt, list)
        and len(prompt) > 0
        and isinstance(prompt[0], Mapping)
        and "role" in prompt[0]
    )


def _check_prompt(prompt: Any, where: str) -> None:
    """Raise ``TypeError`` unless ``prompt`` is a string or a list of role/content messages."""
    if isinstance(prompt, str):
        return
    if is_conversational(prompt):
        for i, message in enumerate(prompt):
            if not isinstance(message, Mapping) or not {"role", "content"} <= message.keys():
                raise TypeError(
                    f"{where}: message {i} of the conversation is {message!r}; every message "
                    "needs 'role' and 'content' keys"
                )
        return
    raise TypeError(
        f"{where}: a prompt must be a string or a list of {{'role', 'content'}} messages, got "
        f"{type(prompt).__name__} {prompt!r:.80}"
    )


def as_prompt_rows(prompts: Any) -> list[dict[str, Any]]:
    """Prompt rows (dicts with a ``prompt`` key) from what TRL users pass as a prompt dataset.

    Accepts a list of strings, a list of conversations, a list of dicts with a ``prompt`` key, or
    a ``datasets.Dataset`` with a ``prompt`` column. Other keys or columns are kept: they reach
    reward functions as keyword arguments. Only the ``prompt`` name is accepted (as in TRL), not
    ``query`` or ``text``: a ``text`` column is often a whole document rather than a prompt, and
    using it silently would train on the wrong input; rename the column instead. All rows must
    share the same keys and the same format (all standard or all conversational).
    """
    column_names = getattr(prompts, "column_names", None)
    if column_names is not None:
        if "prompt" not in column_names:
            example = column_names[0] if column_names else "NAME"
            raise ValueError(
                f"a prompt dataset needs a 'prompt' column, got columns {list(column_names)}; "
                f"rename the one that holds the prompts, e.g. "
                f"dataset.rename_column({example!r}, 'prompt')"
            )
        rows = [dict(row) for row in prompts]
    elif isinstance(prompts, str | Mapping):
        raise TypeError(
            f"prompts must be a list (of strings, conversations or rows), got one "
            f"{type(prompts).__name__}; wrap a single prompt in a list, and turn a dict of columns "
            "into a dataset with datasets.Dataset.from_dict(...)"
        )
    else:
        rows = [
            dict(p) if isinstance(p, Mapping) else {"prompt": p}
            for p in prompts  # a conversation is a list, so it stays one prompt
        ]
    if not rows:
        raise ValueError("no prompts: the prompt dataset is empty")
    keys = rows[0].keys()
    conversational = is_conversational(rows[0].get("prompt"))
    for i, row in enumerate(rows):
        if "prompt" not in row:
            raise ValueError(f"prompt row {i} has no 'prompt' key; its keys are {sorted(row)}")
        if row.keys() != keys:
            raise ValueError(
                f"prompt row {i} has keys {sorted(row)} but row 0 has {sorted(keys)}; every row "
                "needs the same keys (they become reward keyword arguments)"
            )
        _check_prompt(row["prompt"], f"prompt row {i}")
        if is_conversational(row["prompt"]) != conversational:
            formats = ("a string", "a conversation")
            raise ValueError(
                f"prompt row {i} is {formats[not conversational]} but row 0 is "
                f"{formats[conversational]}; use one format for the whole dataset"
            )
    return rows


def reward_columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Every key of the rows except ``prompt`` (and TRL's ``completion``, ``completion_ids``), as
    lists aligned with ``rows``: the ``columns`` that
    :func:`~mogradient_llm.inputs.rewards.score_all` passes to reward functions."""
    if not rows:
        return {}
    return {key: [row[key] for row in rows] for key in rows[0] if key not in _NOT_COLUMNS}


def prompt_text(prompt: Prompt, tokenizer: Any) -> str:
    """The text to generate from: a standard prompt as it is, a conversational one rendered by
    ``tokenizer.apply_chat_template`` with the assistant's generation prompt appended."""
    if isinstance(prompt, str):
        return prompt
    _check_prompt(prompt, "prompt_text")
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(
            f"conversational prompts need a chat template, and the tokenizer "
            f"{type(tokenizer).__name__} has none; set tokenizer.chat_template to a Jinja "
            "template (or use a chat model's tokenizer), or pass plain-string prompts"
        )
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    if not isinstance(text, str):
        raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected a string")
    return text


def completion_for_reward(prompt: Prompt, text: str) -> Completion:
    """The completion as TRL hands it to reward functions: ``text`` for a standard prompt,
    ``[{"role": "assistant", "content": text}]`` for a conversational one."""
    return [{"role": "assistant", "content": text}] if is_conversational(prompt) else text


def _message_content(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if not isinstance(content, str):
        raise TypeError(
            f"message content must be a string, got {type(content).__name__} in {message!r:.80}"
        )
    return content


def completion_text(completion: Completion) -> str:
    """The text of a completion: the string, or the content of its assistant messages."""
    if isinstance(completion, str):
        return completion
    return "".join(_message_content(m) for m in completion if m.get("role") == "assistant")


def conversation_text(prompt: Prompt) -> str:
    """A readable text of a prompt: the string, or one ``role: content`` line per message
    (for rewards that score prompt and completion together without a chat template)."""
    if isinstance(prompt, str):
        return prompt
    return "".join(f"{m['role']}: {_message_content(m)}\n" for m in prompt)


def load_prompt_dataset(
    source: str | Path,
    split: str = "train",
    prompt_column: str = "prompt",
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Prompt rows from a hub dataset or a local file, with ``prompt_column`` used as it is.

    The column is renamed ``prompt`` in the rows; every other column is kept (see
    :func:`as_prompt_rows`). ``limit`` keeps the first rows. For IMDb-style prompts cut from
    reviews, use :func:`load_prompts`.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of rows or None, got {limit}")
    dataset = load_text_dataset(source, split)
    columns = dataset.column_names
    if prompt_column not in columns:
        raise ValueError(
            f"no column {prompt_column!r} in {source}; columns: {columns}. Pass "
            "prompt_column=... naming the column that holds the prompts"
        )
    if prompt_column != "prompt":
        if "prompt" in columns:
            raise ValueError(
                f"{source} has both a 'prompt' column and prompt_column={prompt_column!r}; "
                "drop or rename one of them"
            )
        dataset = dataset.rename_column(prompt_column, "prompt")
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    return as_prompt_rows(dataset)


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
    """The first ``n ~ U[min_tokens, max_tokens]`` tokens of each text longer than ``min_chars``.

    Texts of ``<= min_chars`` characters (after cleaning) are dropped with a warning that says
    how many; if that drops every text, raises ``ValueError``.
    """
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
    dropped = len(texts) - len(prompts)
    if dropped and not prompts:
        raise ValueError(
            f"all {dropped} texts are <= {min_chars} characters (min_chars), so no prompt is "
            "left; pass min_chars=0 to keep them"
        )
    if dropped:
        warnings.warn(
            f"dropped {dropped} of {len(texts)} texts of <= {min_chars} characters (min_chars); "
            "pass min_chars=0 to keep them",
            stacklevel=2,
        )
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
    """IMDb-style prompts from a hub dataset or a local file (see :func:`imdb_prompts`); for a
    dataset whose column already holds prompts, use :func:`load_prompt_dataset`."""
    dataset = load_text_dataset(source, split)
    if text_field not in dataset.column_names:
        raise ValueError(f"no column {text_field!r} in {source}; columns: {dataset.column_names}")
    texts = dataset[text_field]
    if limit is not None:
        texts = texts[:limit]
    return imdb_prompts(texts, tokenizer, min_tokens, max_tokens, min_chars, seed)
