"""Policy stage: the shared tokenizer and GPT-2 policies of several sizes pre-trained on the
IMDb training reviews (held-out perplexity reported), or hub models loaded as they are."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mogradient_llm.inputs.prompts import clean_review
from mogradient_llm.policy.models import lm_samples, pretrain, tiny_gpt2, train_tokenizer

# name -> GPT2Config shape; the parameter counts assume the default 8000-token vocabulary.
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"n_layer": 1, "n_embd": 32, "n_head": 2},
    "demo": {"n_layer": 2, "n_embd": 64, "n_head": 4},  # mogradient_llm.demo's policy
    "1m": {"n_layer": 2, "n_embd": 96, "n_head": 4},
    "4m": {"n_layer": 4, "n_embd": 192, "n_head": 4},
    "16m": {"n_layer": 6, "n_embd": 384, "n_head": 6},
}
# Peak pre-training learning rate per size: smaller for the wider models.
PRETRAIN_LR: dict[str, float] = {"tiny": 3e-3, "demo": 3e-3, "1m": 3e-3, "4m": 2e-3, "16m": 1e-3}
# Warm-up fraction of the cosine schedule: with a constant rate, the step budget rather than
# the capacity limited every size (1m, 4m and 16m ended at perplexity 255, 266 and 279).
PRETRAIN_WARMUP = 0.05
N_POSITIONS = 128


def build_tokenizer(directory: Path, texts: Sequence[str], vocab_size: int) -> dict[str, Any]:
    """Train the byte-level BPE tokenizer shared by all local policies and the reward model."""
    tokenizer = train_tokenizer([clean_review(t) for t in texts], vocab_size)
    tokenizer.model_max_length = N_POSITIONS
    tokenizer.save_pretrained(directory)
    return {"vocab_size": len(tokenizer)}


@torch.no_grad()
def perplexity(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 32) -> float:
    """exp(mean next-token loss) on the pre-training samples made from ``texts``."""
    samples = lm_samples(texts)
    tokenizer.padding_side = "right"
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(samples), batch_size):
        enc = tokenizer(
            samples[start : start + batch_size],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=64,
        )
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        n = int((labels[:, 1:] != -100).sum())
        total += float(model(**enc, labels=labels).loss) * n
        count += n
    return math.exp(total / max(count, 1))


def build_policy(
    directory: Path,
    tokenizer_dir: Path,
    size: str,
    train_texts: Sequence[str],
    test_texts: Sequence[str],
    steps: int,
    seed: int,
) -> dict[str, Any]:
    """Pre-train a ``SIZES[size]`` GPT-2 for ``steps`` steps (warm-up, then cosine decay); save
    it with its tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = tiny_gpt2(tokenizer, n_positions=N_POSITIONS, seed=seed, **SIZES[size])
    losses = pretrain(
        model,
        tokenizer,
        train_texts,
        steps,
        learning_rate=PRETRAIN_LR[size],
        seed=seed,
        warmup_ratio=PRETRAIN_WARMUP,
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "final_train_loss": losses[-1] if losses else None,
        "perplexity": perplexity(model, tokenizer, test_texts),
    }


def hub_policy_info(name_or_path: str, test_texts: Sequence[str]) -> dict[str, Any]:
    """Parameter count and held-out perplexity of a hub (or local) model, not pre-trained here."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "perplexity": perplexity(model, tokenizer, test_texts),
    }
