"""Prompt datasets from local files (hub names go through the same ``load_dataset`` call)."""

from __future__ import annotations

import csv
import gzip
import json
import warnings

import pytest
from transformers import AutoTokenizer

from mogradient_llm.inputs.prompts import (
    as_prompt_rows,
    clean_review,
    completion_for_reward,
    completion_text,
    conversation_text,
    imdb_prompts,
    is_conversational,
    load_prompt_dataset,
    load_prompts,
    prompt_text,
    resolve_data_file,
    reward_columns,
)
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
    with pytest.warns(UserWarning, match="dropped 1 of 3"):  # the short review is dropped
        prompts = imdb_prompts(REVIEWS, tokenizer, min_tokens=2, max_tokens=4, min_chars=50)
    assert len(prompts) == 2
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
    with pytest.warns(UserWarning, match="dropped 1 of 3"):
        from_dir = load_prompts(tmp_path, tokenizer, split="train", min_chars=50)
    with pytest.warns(UserWarning, match="dropped 1 of 3"):
        from_file = load_prompts(tmp_path / "train.jsonl.gz", tokenizer, min_chars=50)
    assert from_dir == from_file and len(from_dir) == 2
    with open(tmp_path / "reviews.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "label"])
        writer.writerows([[text, 1] for text in REVIEWS])
    with pytest.warns(UserWarning, match="dropped 1 of 3"):
        from_csv = load_prompts(
            tmp_path / "reviews.csv", tokenizer, text_field="review", min_chars=50
        )
    assert len(from_csv) == 2
    with pytest.raises(ValueError, match="no column"):
        load_prompts(tmp_path / "reviews.csv", tokenizer, text_field="text")
    with pytest.raises(FileNotFoundError):
        load_prompts(tmp_path, tokenizer, split="validation")


def test_a_filter_says_what_it_dropped_and_refuses_to_drop_everything(tokenizer) -> None:
    short = ["Great.", "Awful film.", "Fine.", "A long enough review to keep as a prompt here."]
    with pytest.warns(UserWarning) as record:
        kept = imdb_prompts(short, tokenizer, min_chars=20)
    assert len(kept) == 1 and len(record) == 1
    assert str(record[0].message) == (
        "dropped 3 of 4 texts of <= 20 characters (min_chars); pass min_chars=0 to keep them"
    )
    with pytest.raises(ValueError, match="all 3 texts are <= 200 characters.*min_chars=0"):
        imdb_prompts(short[:3], tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing dropped, nothing to say
        assert len(imdb_prompts(short, tokenizer, min_chars=0)) == 4


CHAT = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]


def test_prompt_rows_from_strings_conversations_and_dicts() -> None:
    assert as_prompt_rows(("a", "b")) == [{"prompt": "a"}, {"prompt": "b"}]
    assert as_prompt_rows([CHAT, CHAT[1:]]) == [{"prompt": CHAT}, {"prompt": CHAT[1:]}]
    rows = [{"prompt": "a", "answer": 1}, {"prompt": "b", "answer": 2}]
    assert as_prompt_rows(rows) == rows and as_prompt_rows(rows)[0] is not rows[0]
    assert reward_columns(rows) == {"answer": [1, 2]}
    assert is_conversational(CHAT) and not is_conversational("Hi") and not is_conversational([])


@pytest.mark.parametrize(
    ("prompts", "error", "message"),
    [
        ("one prompt", TypeError, "wrap a single prompt in a list"),
        ({"prompt": ["a"]}, TypeError, r"Dataset.from_dict"),
        ([], ValueError, "empty"),
        ([{"text": "a"}], ValueError, "row 0 has no 'prompt' key; its keys are \\['text'\\]"),
        ([{"prompt": "a"}, {"prompt": "b", "x": 1}], ValueError, "row 1 has keys"),
        (["a", CHAT], ValueError, "row 1 is a conversation but row 0 is a string"),
        ([3], TypeError, "row 0: a prompt must be a string"),
        ([[{"role": "user"}]], TypeError, "needs 'role' and 'content'"),
    ],
)
def test_bad_prompt_datasets_are_refused(prompts, error, message) -> None:
    with pytest.raises(error, match=message):
        as_prompt_rows(prompts)


def test_prompt_rows_from_a_dataset_keep_the_other_columns() -> None:
    import datasets

    dataset = datasets.Dataset.from_list(
        [
            {"prompt": CHAT, "solution": "42", "level": 3},
            {"prompt": CHAT, "solution": "7", "level": 1},
        ]
    )
    rows = as_prompt_rows(dataset)
    assert [row["prompt"][1]["content"] for row in rows] == ["Hi", "Hi"]
    assert reward_columns(rows) == {"solution": ["42", "7"], "level": [3, 1]}
    with pytest.raises(
        ValueError, match=r"columns \['query'\].*rename_column\('query', 'prompt'\)"
    ):
        as_prompt_rows(datasets.Dataset.from_dict({"query": ["x"]}))


def test_conversational_prompts_go_through_the_chat_template(tokenizer) -> None:
    assert prompt_text("The movie", tokenizer) == "The movie"
    with pytest.raises(ValueError, match="set tokenizer.chat_template"):
        prompt_text(CHAT, tokenizer)
    tokenizer.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    assert prompt_text(CHAT, tokenizer) == "<system>Be kind.\n<user>Hi\n<assistant>"


def test_completions_take_the_prompts_format() -> None:
    assert completion_for_reward("The movie", " was fun") == " was fun"
    chat_completion = completion_for_reward(CHAT, "Hello!")
    assert chat_completion == [{"role": "assistant", "content": "Hello!"}]
    assert completion_text(chat_completion) == "Hello!" and completion_text("x") == "x"
    assert conversation_text(CHAT) == "system: Be kind.\nuser: Hi\n"


def test_load_prompt_dataset_uses_the_column_as_it_is(tmp_path) -> None:
    with open(tmp_path / "train.jsonl", "w") as f:
        for i in range(5):
            f.write(json.dumps({"question": [{"role": "user", "content": f"q{i}"}], "answer": i}))
            f.write("\n")
    rows = load_prompt_dataset(tmp_path, prompt_column="question", limit=3)
    assert [r["prompt"] for r in rows] == [[{"role": "user", "content": f"q{i}"}] for i in range(3)]
    assert reward_columns(rows) == {"answer": [0, 1, 2]}
    with pytest.raises(ValueError, match=r"no column 'prompt'.*\['question', 'answer'\]"):
        load_prompt_dataset(tmp_path)
    with pytest.raises(ValueError, match="limit"):
        load_prompt_dataset(tmp_path, prompt_column="question", limit=0)
    with open(tmp_path / "both.csv", "w", newline="") as f:
        csv.writer(f).writerows([["prompt", "query"], ["Short prompt", "q"]])
    assert load_prompt_dataset(tmp_path / "both.csv") == [{"prompt": "Short prompt", "query": "q"}]
    with pytest.raises(ValueError, match="both a 'prompt' column and prompt_column='query'"):
        load_prompt_dataset(tmp_path / "both.csv", prompt_column="query")
