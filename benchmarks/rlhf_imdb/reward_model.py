"""Sentiment reward-model stage: a small GPT-2 sequence classifier (config only, the shared
tokenizer) trained on the IMDb labels and saved with ``save_pretrained``, so the benchmark
scores through ``mogradient_llm.rewards.classifier`` exactly as with a hub classifier."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from benchmarks.rlhf_imdb.data import Split
from mogradient_llm.data import clean_review

LABELS = {0: "NEGATIVE", 1: "POSITIVE"}


def classifier_model(tokenizer: Any, n_layer: int, n_embd: int, seed: int) -> Any:
    """A randomly initialised two-class ``GPT2ForSequenceClassification``."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=tokenizer.model_max_length,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=4,
        num_labels=2,
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    return GPT2ForSequenceClassification(config)


@torch.no_grad()
def accuracy(model: Any, tokenizer: Any, split: Split, batch_size: int = 64) -> float:
    """Fraction of ``split`` whose argmax class equals the label."""
    model.eval()
    correct = 0
    for start in range(0, len(split.texts), batch_size):
        texts = [clean_review(t) for t in split.texts[start : start + batch_size]]
        enc = tokenizer(texts, return_tensors="pt", padding=True, truncation=True)
        predicted = model(**enc).logits.argmax(-1)
        correct += int((predicted == torch.tensor(split.labels[start : start + batch_size])).sum())
    return correct / max(len(split.texts), 1)


def train_reward_model(
    directory: Path,
    tokenizer_dir: Path,
    train: Split,
    test: Split,
    steps: int,
    seed: int,
    n_layer: int = 2,
    n_embd: int = 64,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
) -> dict[str, Any]:
    """Train the classifier for ``steps`` steps (random windows of the reviews, so it also sees
    short texts like the policy's completions); save it; return its test accuracy."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.padding_side = "right"
    model = classifier_model(tokenizer, n_layer, n_embd, seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    rng = random.Random(seed)
    rows = list(zip(train.texts, train.labels))
    model.train()
    for _ in range(steps):
        batch = rng.sample(rows, min(batch_size, len(rows)))
        texts = []
        for text, _ in batch:
            text = clean_review(text)
            texts.append(text[: rng.randint(40, 600)])
        enc = tokenizer(texts, return_tensors="pt", padding=True, truncation=True)
        loss = model(**enc, labels=torch.tensor([label for _, label in batch])).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return {"test_accuracy": accuracy(model, tokenizer, test), "test_reviews": len(test.texts)}
