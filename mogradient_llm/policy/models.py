"""Tiny offline policies: a byte-level BPE tokenizer trained locally and a small GPT-2,
pre-trained briefly on local text (the IMDb subset, or reviews generated here)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch

from mogradient_llm.inputs.prompts import clean_review

EOS = "<|endoftext|>"

_OPENERS = [
    "This movie",
    "The film",
    "I think this film",
    "Honestly, the story",
    "The acting",
    "This picture",
    "The director",
    "Overall the plot",
    "The cast",
    "My friends and I",
]
_VERBS = ["was", "felt", "seemed", "turned out to be", "is", "looked"]
_ADJECTIVES = [
    "great",
    "terrible",
    "wonderful",
    "boring",
    "beautiful",
    "awful",
    "funny",
    "dull",
    "brilliant",
    "bad",
    "amazing",
    "horrible",
    "good",
    "weak",
    "excellent",
    "poor",
    "fine",
    "long",
    "short",
    "slow",
]
_TAILS = [
    "and I would watch it again",
    "from start to finish",
    "in every scene",
    "but the ending was a surprise",
    "and the music fit the mood",
    "for a summer movie",
    "compared to the book",
    "even with a small budget",
    "and the dialogue was sharp",
    "although some parts dragged on",
    "with a cast that really cared",
]


def synthetic_reviews(n: int, seed: int = 0) -> list[str]:
    """``n`` short review-like texts generated from templates (mixed sentiment and length)."""
    rng = random.Random(seed)
    reviews = []
    for _ in range(n):
        sentences = []
        for _ in range(rng.randint(1, 4)):
            tail = f" {rng.choice(_TAILS)}" if rng.random() < 0.6 else ""
            sentences.append(
                f"{rng.choice(_OPENERS)} {rng.choice(_VERBS)} {rng.choice(_ADJECTIVES)}{tail}."
            )
        reviews.append(" ".join(sentences))
    return reviews


def train_tokenizer(texts: Sequence[str], vocab_size: int = 2000) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``texts`` (EOS = pad = BOS)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=EOS, unk_token=EOS
    )


def tiny_gpt2(
    tokenizer: Any,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 2,
    n_positions: int = 128,
    seed: int = 0,
) -> Any:
    """A randomly initialised ``GPT2LMHeadModel`` sized for CPU tests and demos."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    return GPT2LMHeadModel(config)


def lm_samples(texts: Sequence[str], max_chars: int = 300, seed: int = 0) -> list[str]:
    """Pre-training samples: the first one to three sentences of each text, ending in EOS,
    so the model learns to stop after a sentence or two (length has room to grow)."""
    rng = random.Random(seed)
    samples = []
    for text in texts:
        sentences = [s.strip() for s in clean_review(text).split(". ") if s.strip()]
        if sentences:
            chunk = ". ".join(sentences[: rng.randint(1, 3)])[:max_chars]
            samples.append(chunk.rstrip(".") + "." + EOS)
    return samples


def pretrain(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    steps: int,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    max_length: int = 64,
    seed: int = 0,
    warmup_ratio: float | None = None,
) -> list[float]:
    """A few steps of next-token training on ``lm_samples(texts)``; returns the losses.

    ``warmup_ratio``: ``None`` keeps the learning rate constant; a fraction of ``steps`` warms
    it up linearly and then decays it to zero on a cosine (transformers'
    ``get_cosine_schedule_with_warmup``), which lets wider models use a higher peak rate and
    end lower than a constant rate at the same step budget."""
    from transformers import get_cosine_schedule_with_warmup

    samples = lm_samples(texts, seed=seed)
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    scheduler = None
    if warmup_ratio is not None:
        scheduler = get_cosine_schedule_with_warmup(
            optimizer, int(warmup_ratio * steps), max(steps, 1)
        )
    tokenizer.padding_side = "right"
    model.train()
    losses = []
    for _ in range(steps):
        batch = rng.sample(samples, min(batch_size, len(samples)))
        enc = tokenizer(
            batch, return_tensors="pt", padding=True, truncation=True, max_length=max_length
        )
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        loss = model(**enc, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if scheduler is not None:
            scheduler.step()
        losses.append(loss.item())
    model.eval()
    return losses


def build_tiny_policy(
    texts: Sequence[str] | None = None,
    pretrain_steps: int = 200,
    vocab_size: int = 2000,
    seed: int = 0,
    **model_kwargs: Any,
) -> tuple[Any, Any]:
    """Tokenizer + tiny GPT-2 pre-trained on ``texts`` (default: :func:`synthetic_reviews`)."""
    texts = list(texts) if texts is not None else synthetic_reviews(2000, seed)
    tokenizer = train_tokenizer([clean_review(t) for t in texts], vocab_size)
    model = tiny_gpt2(tokenizer, seed=seed, **model_kwargs)
    if pretrain_steps:
        pretrain(model, tokenizer, texts, pretrain_steps, seed=seed)
    return model, tokenizer
