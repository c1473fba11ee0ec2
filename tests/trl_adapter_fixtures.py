"""Shared helpers for the TRL adapter's tests: TRL's trainers and ours on the tiny policy, with
TRL-style reward functions, offline."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from tests.llm_fixtures import load_tiny_lm, tiny_lm_dir

G = 4
#: A minimal chat template for conversational prompts (the tiny tokenizer has none).
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)
PROMPTS = ["the movie was", "the actors", "it was a", "a film that", "i think", "the plot"]


def length_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    """Longer completions score higher (a TRL reward: ``completions`` plus ``**kwargs``)."""
    return [len(_text(c)) / 10.0 for c in completions]


def vowel_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    """The number of vowels (conflicts in part with the length)."""
    return [float(sum(ch in "aeiou" for ch in _text(c))) for c in completions]


def _text(completion: Any) -> str:
    """A completion's text, plain or conversational (``[{"role": ..., "content": ...}]``)."""
    if isinstance(completion, list):
        return "".join(m["content"] for m in completion)
    return completion


def trl_args(config_class: type, **overrides: Any) -> Any:
    """A TRL (or MO) config for the tiny policy on CPU: 2 prompts × G completions per step."""
    args = {
        "output_dir": tempfile.mkdtemp(prefix="trl-adapter-"),
        "use_cpu": True,
        "bf16": False,
        "report_to": "none",
        "per_device_train_batch_size": 2 * G,
        "num_generations": G,
        "max_completion_length": 6,
        "max_steps": 3,
        "save_strategy": "no",
        "logging_steps": 1,
        "learning_rate": 1e-3,
        "seed": 0,
        "disable_dropout": True,
        "dataloader_num_workers": 0,
        **overrides,
    }
    return config_class(**args)


def dataset(prompts: list[Any] | None = None, **columns: list[Any]) -> Any:
    from datasets import Dataset

    prompts = prompts or PROMPTS
    return Dataset.from_dict({"prompt": prompts, **columns})


def trainer(
    trainer_class: type,
    args: Any,
    reward_funcs: list[Any] | None = None,
    train_dataset: Any = None,
    lm_dir: Path | None = None,
    **kwargs: Any,
) -> Any:
    """``trainer_class`` on the saved tiny policy (``lm_dir``: saved by another process; TRL
    builds the reference from the path)."""
    lm_dir = lm_dir or tiny_lm_dir()
    _, tokenizer = load_tiny_lm(lm_dir)
    tokenizer.chat_template = CHAT_TEMPLATE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return trainer_class(
            model=str(lm_dir),
            processing_class=tokenizer,
            reward_funcs=reward_funcs or [length_reward, vowel_reward],
            args=args,
            train_dataset=train_dataset if train_dataset is not None else dataset(),
            **kwargs,
        )


def train(t: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        t.train()
    return t


def parameters(t: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in t.model.named_parameters()}
