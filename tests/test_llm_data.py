"""Prompt datasets from local files (hub names go through the same ``load_dataset`` call)."""

from __future__ import annotations

import csv
import gzip
import json

import pytest
from transformers import AutoTokenizer

from mogradient_llm.data import clean_review, imdb_prompts, load_prompts, resolve_data_file
from tests.llm_fixtures import tiny_lm_dir

REVIEWS = [
    "This movie was great and the acting was wonderful from start to finish. " * 4,
    "The film felt boring.<br /><br />The cast seemed awful and the plot was weak. " * 4,
    "Too short.",
]


@pytest.fixture
def tokenizer():
    return AutoTokenizer.from_pretrained(tiny_lm_dir())


def _write_jsonl_gz(path, texts):
    with gzip.open(path, "wt") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"text": text, "label": i % 2}) + "\n")


def test_imdb_prompts_take_the_first_few_tokens(tokenizer) -> None:
    prompts = imdb_prompts(REVIEWS, tokenizer, min_tokens=2, max_tokens=4, min_chars=50, seed=0)
    assert len(prompts) == 2  # the short review is dropped
    for prompt, review in zip(prompts, REVIEWS):
        n = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        assert 2 <= n <= 4
        assert clean_review(review).startswith(prompt)
    assert "<br />" not in "".join(imdb_prompts(REVIEWS[1:2], tokenizer, 8, 8, 0))
    with pytest.raises(ValueError):
        imdb_prompts(REVIEWS, tokenizer, min_tokens=5, max_tokens=2)


def test_load_prompts_from_jsonl_gz_directory_and_csv(tmp_path, tokenizer) -> None:
    _write_jsonl_gz(tmp_path / "train.jsonl.gz", REVIEWS)
    assert resolve_data_file(tmp_path, "train") == tmp_path / "train.jsonl.gz"
    from_dir = load_prompts(tmp_path, tokenizer, split="train", min_chars=50)
    from_file = load_prompts(tmp_path / "train.jsonl.gz", tokenizer, min_chars=50)
    assert from_dir == from_file and len(from_dir) == 2
    with open(tmp_path / "reviews.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "label"])
        writer.writerows([[text, 1] for text in REVIEWS])
    from_csv = load_prompts(tmp_path / "reviews.csv", tokenizer, text_field="review", min_chars=50)
    assert len(from_csv) == 2
    with pytest.raises(ValueError, match="no column"):
        load_prompts(tmp_path / "reviews.csv", tokenizer, text_field="text")
    with pytest.raises(FileNotFoundError):
        load_prompts(tmp_path, tokenizer, split="validation")


def test_prompt_datasets_may_be_strings_or_a_datasets_dataset() -> None:
    import datasets

    from mogradient_llm.data import as_prompt_list

    assert as_prompt_list(("a", "b")) == ["a", "b"]
    assert as_prompt_list(datasets.Dataset.from_dict({"query": ["x", "y"]})) == ["x", "y"]
    with pytest.raises(ValueError, match="column"):
        as_prompt_list(datasets.Dataset.from_dict({"review": ["x"]}))
    with pytest.raises(TypeError):
        as_prompt_list([{"prompt": "x"}])
