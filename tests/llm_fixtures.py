"""Shared helpers for the ``test_llm_*`` files: tiny GPT-2 policies built from a config, saved
with ``save_pretrained`` and loaded back through ``from_pretrained``; tokenizers trained here."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

import torch

from mogradient_llm.config import MOConfig
from mogradient_llm.estimators import estimator_class
from mogradient_llm.inputs.prompts import imdb_prompts
from mogradient_llm.policy.models import synthetic_reviews, tiny_gpt2, train_tokenizer

# The tiny models are far faster on one thread, and the suite runs one worker per core.
torch.set_num_threads(1)


@functools.lru_cache(maxsize=1)
def tiny_lm_dir() -> Path:
    """A directory holding a saved tiny GPT-2 and its locally trained tokenizer (built once)."""
    path = Path(tempfile.mkdtemp(prefix="mogradient-llm-tiny-"))
    tokenizer = train_tokenizer(synthetic_reviews(300, seed=0), vocab_size=400)
    model = tiny_gpt2(tokenizer, n_layer=2, n_embd=32, n_head=2, n_positions=64, seed=0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@functools.lru_cache(maxsize=1)
def untied_lm_dir() -> Path:
    """A saved tiny Llama-style model (untied LM head, grouped-query attention) with the tiny
    tokenizer: the shape of Llama, Mistral or Qwen checkpoints."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    path = Path(tempfile.mkdtemp(prefix="mogradient-llm-untied-"))
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir())
    eos = tokenizer.eos_token_id
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def load_tiny_lm(path: Path | None = None) -> tuple[Any, Any]:
    """A fresh copy of the tiny policy and tokenizer, through the real loading path."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = path or tiny_lm_dir()
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def tiny_prompts(tokenizer: Any, n: int = 32) -> list[str]:
    return imdb_prompts(synthetic_reviews(n, seed=3), tokenizer, 2, 5, min_chars=0, seed=0)


def tiny_config(algorithm: str = "ppo", **overrides: Any) -> MOConfig:
    """A small config of ``algorithm``: 8 completions (GRPO/RLOO: 2 prompts × 4), minibatches
    of 4, one pass."""
    values: dict[str, Any] = {
        "batch_size": 8,
        "mini_batch_size": 4,
        "learning_rate": 1e-3,
        "generation_kwargs": {"max_new_tokens": 8, "do_sample": True, "top_k": 0, "top_p": 1.0},
    }
    config_class = estimator_class(algorithm).config_class
    return config_class(**{**values, **config_class.tiny_preset, **overrides})


def make_trainer(
    rewards: list[Any], accelerator: Any = None, lm_dir: Path | None = None, **overrides: Any
) -> Any:
    """A trainer on the tiny policy (``lm_dir``: a saved one) with a small config."""
    from mogradient_llm.loop.trainer import MOTrainer

    model, tokenizer = load_tiny_lm(lm_dir)
    config = tiny_config(**overrides)
    prompts = tiny_prompts(tokenizer)
    return MOTrainer(config, model, tokenizer, rewards, prompts, accelerator=accelerator)
