"""The IMDb benchmark's reward model learns a verdict at the end of long reviews, and is
scored through ``mogradient_llm.inputs.builtin_rewards.classifier`` exactly as it was
evaluated: its own context length and left truncation travel with the saved tokenizer."""

from __future__ import annotations

import random

import pytest
from transformers import AutoTokenizer

from benchmarks.rlhf_imdb.data import Split
from benchmarks.rlhf_imdb.policies import build_tokenizer
from benchmarks.rlhf_imdb.reward_model import (
    ARCHITECTURE,
    classifier_key,
    review_batches,
    train_reward_model,
)
from mogradient_llm.inputs.builtin_rewards import classifier
from mogradient_llm.policy.models import synthetic_reviews


def split(n: int, seed: int) -> Split:
    """Generated reviews of mixed sentiment whose label is only in a last sentence."""
    rng = random.Random(seed)
    labels = [rng.randint(0, 1) for _ in range(n)]
    texts = [
        text + (" Loved it." if label else " Hated it.")
        for text, label in zip(synthetic_reviews(n, seed=seed), labels)
    ]
    return Split(texts, labels)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("reward")
    train, test = split(400, seed=0), split(100, seed=1)
    build_tokenizer(root / "tokenizer", texts=train.texts, vocab_size=300)
    info = train_reward_model(
        root / "model", root / "tokenizer", train, test, steps=60, seed=0, n_embd=32,
        batch_size=16, max_length=24,
    )  # fmt: skip
    return root / "model", info


def test_learns_the_verdict_beyond_the_context(trained):
    """Most reviews are longer than the 24-token context: only the left truncation keeps the
    verdict, so a right-truncating model would stay near chance on those."""
    directory, info = trained
    tokenizer = AutoTokenizer.from_pretrained(directory)
    assert tokenizer.truncation_side == "left" and tokenizer.model_max_length == 24
    lengths = [len(ids) for ids in tokenizer(split(100, seed=1).texts)["input_ids"]]
    assert sum(n > 24 for n in lengths) > 50
    assert info["test_reviews"] == 100 and info["max_length"] == 24 and info["train_seconds"] > 0
    assert info["test_accuracy"] >= 0.95 and 0.0 <= info["short_window_accuracy"] <= 1.0


def test_classifier_reward_keeps_the_last_max_length_tokens(trained):
    """A text longer than the context scores like its last 24 tokens, and no position past
    the model's embeddings is ever used."""
    directory, _ = trained
    tokenizer = AutoTokenizer.from_pretrained(directory)
    text = " ".join(synthetic_reviews(30, seed=2))
    ids = tokenizer(text, truncation=False)["input_ids"]
    assert len(ids) > 24
    tail, head = tokenizer.decode(ids[-24:]), tokenizer.decode(ids[:24])
    long, last, first = classifier(str(directory))([""] * 3, [text, tail, head])
    assert long == pytest.approx(last, abs=1e-5) and long != pytest.approx(first, abs=1e-5)


def test_review_batches_are_disjoint_in_an_epoch_and_runs_in_length_order():
    rng = random.Random(0)
    lengths = [rng.randint(1, 100) for _ in range(50)]
    batches = review_batches(lengths, 8, rng)
    epoch = [next(batches) for _ in range(5)]  # every epoch of 50 has at least 5 batches of 8
    assert all(len(batch) == 8 for batch in epoch)
    assert len({i for batch in epoch for i in batch}) == 40
    ordered = sorted(lengths)
    for batch in epoch:
        values = sorted(lengths[i] for i in batch)
        assert any(ordered[k : k + 8] == values for k in range(len(ordered) - 7))
    assert next(review_batches([3, 1], 8, rng)) == [1, 0]  # fewer reviews than a batch


def test_a_score_does_not_depend_on_the_batch_padding(trained):
    """The classifier averages over the non-padding tokens only: a short text scores the same
    alone and padded in a batch beside a long one (the policy's completions differ in length)."""
    directory, _ = trained
    reward = classifier(str(directory))
    short, long = "Loved it.", " ".join(synthetic_reviews(3, seed=3))
    alone = reward([""], [short])[0]
    padded = reward(["", ""], [short, long])[0]
    assert padded == pytest.approx(alone, abs=1e-5)


def test_the_cache_key_names_the_architecture_and_every_default():
    key = classifier_key()
    assert key["architecture"] == ARCHITECTURE
    assert {"n_layer", "n_embd", "learning_rate", "max_length", "short_fraction"} <= set(key)
