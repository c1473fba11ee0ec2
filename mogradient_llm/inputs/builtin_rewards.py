"""Built-in rewards: :class:`LengthReward` (the PAMA paper's ``clip(l / 140, 0.5, 1.5)``, ``l``
counted in characters by default), :class:`DistinctReward` (distinct n-grams),
:class:`VaderReward` (vaderSentiment compound score) and :class:`ClassifierReward` (a logit of an
``AutoModelForSequenceClassification``), each also as a factory (``length()``, ``distinct()``,
``vader()``, ``classifier()``) returning a named :class:`~mogradient_llm.inputs.rewards.Reward`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, cast

import torch

from mogradient_llm.inputs.prompts import Completion, Prompt, completion_text, conversation_text
from mogradient_llm.inputs.rewards import Reward, as_reward

#: What :class:`LengthReward` counts.
LengthUnit = Literal["chars", "words", "tokens"]


def _texts(
    prompts: Sequence[Prompt], completions: Sequence[Completion], include_prompt: bool
) -> list[str]:
    """What a built-in scores: each completion's text, after a readable text of its prompt when
    ``include_prompt`` (a conversation as ``role: content`` lines)."""
    if include_prompt:
        return [conversation_text(p) + completion_text(c) for p, c in zip(prompts, completions)]
    return [completion_text(c) for c in completions]


class LengthReward:
    """``clip(l / scale, low, high)`` with ``l`` the completion length in ``unit``.

    ``unit`` is ``"chars"`` (default), ``"words"`` (whitespace-separated) or ``"tokens"``
    (needs ``tokenizer``). The paper uses ``scale=140``, ``low=0.5``, ``high=1.5``.
    """

    def __init__(
        self,
        unit: LengthUnit = "chars",
        scale: float = 140.0,
        low: float = 0.5,
        high: float = 1.5,
        tokenizer: object | None = None,
    ):
        if unit not in ("chars", "words", "tokens"):
            raise ValueError(f"unit must be 'chars', 'words' or 'tokens', got {unit!r}")
        if unit == "tokens" and tokenizer is None:
            raise ValueError("unit='tokens' needs a tokenizer")
        if scale <= 0 or low > high:
            raise ValueError(f"need scale > 0 and low <= high, got {scale}, {low}, {high}")
        self.unit, self.scale, self.low, self.high = unit, scale, low, high
        self.tokenizer = tokenizer
        self.name = "length"
        self.hv_reference = low

    def _length(self, text: str) -> int:
        if self.unit == "chars":
            return len(text)
        if self.unit == "words":
            return len(text.split())
        tokenizer = cast(Callable[..., Any], self.tokenizer)  # unit "tokens": __init__ checked it
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    def __call__(
        self, prompts: Sequence[Prompt], completions: Sequence[Completion], **kwargs: Any
    ) -> list[float]:
        """Scores of the completions (assistant content if conversational); ignores ``kwargs``."""
        return [
            min(max(self._length(completion_text(c)) / self.scale, self.low), self.high)
            for c in completions
        ]

    def __repr__(self) -> str:
        return (
            f"LengthReward(unit={self.unit!r}, scale={self.scale}, low={self.low}, "
            f"high={self.high})"
        )


class DistinctReward:
    """Distinct-n of the completion: unique word n-grams / word n-grams (Li et al. 2016), in
    ``[0, 1]``; a completion with fewer than ``n`` words scores 0.

    An offline diversity score that needs no model: 1 for text that never repeats itself,
    low for the loops a policy falls into when pushed for length."""

    def __init__(self, n: int = 1):
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        self.n = n
        self.name = "diversity"
        self.hv_reference = 0.0

    def _distinct(self, text: str) -> float:
        words = text.lower().split()
        grams = [tuple(words[i : i + self.n]) for i in range(len(words) - self.n + 1)]
        return len(set(grams)) / len(grams) if grams else 0.0

    def __call__(
        self, prompts: Sequence[Prompt], completions: Sequence[Completion], **kwargs: Any
    ) -> list[float]:
        """Scores of the completions (assistant content if conversational); ignores ``kwargs``."""
        return [self._distinct(completion_text(c)) for c in completions]

    def __repr__(self) -> str:
        return f"DistinctReward(n={self.n})"


class VaderReward:
    """vaderSentiment compound score in ``[-1, 1]`` of the completion (or prompt + completion)."""

    def __init__(self, include_prompt: bool = False):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.analyzer = SentimentIntensityAnalyzer()
        self.include_prompt = include_prompt
        self.name = "vader"
        self.hv_reference = -1.0

    def __call__(
        self, prompts: Sequence[Prompt], completions: Sequence[Completion], **kwargs: Any
    ) -> list[float]:
        """Scores of the completions (assistant content if conversational); ignores ``kwargs``."""
        texts = _texts(prompts, completions, self.include_prompt)
        return [self.analyzer.polarity_scores(t)["compound"] for t in texts]

    def __repr__(self) -> str:
        return f"VaderReward(include_prompt={self.include_prompt})"


class ClassifierReward:
    """The logit of class ``label`` of a sequence classifier on prompt + completion.

    ``label`` is a class index or a name in ``config.label2id``; by default the class named
    positive (``POSITIVE``, ``pos``, ...) if there is one, else class 1 (class 0 for one logit).
    """

    def __init__(
        self,
        name_or_path: str,
        label: int | str | None = None,
        batch_size: int = 32,
        device: str | torch.device | None = None,
        include_prompt: bool = True,
    ):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        self.model = AutoModelForSequenceClassification.from_pretrained(name_or_path).eval()
        self.model.requires_grad_(False)
        if device is not None:
            self.model.to(device)
        self.label = self._resolve_label(label)
        self.batch_size = batch_size
        self.include_prompt = include_prompt
        self.name = "classifier"
        self.hv_reference = None
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def _resolve_label(self, label: int | str | None) -> int:
        config = self.model.config
        n = config.num_labels
        if label is None:
            names = {str(v).lower(): int(k) for k, v in config.id2label.items()}
            for key in ("positive", "pos", "label_positive"):
                if key in names:
                    return names[key]
            return 1 if n > 1 else 0
        if isinstance(label, str) and not label.isdigit():
            if label not in config.label2id:
                raise ValueError(
                    f"label {label!r} not in the classifier's labels {config.label2id}"
                )
            return int(config.label2id[label])
        index = int(label)
        if not 0 <= index < n:
            raise ValueError(f"label index {index} out of range for {n} classes")
        return index

    @torch.no_grad()
    def __call__(
        self, prompts: Sequence[Prompt], completions: Sequence[Completion], **kwargs: Any
    ) -> list[float]:
        """Logits for the completions (assistant content if conversational); ignores ``kwargs``."""
        texts = _texts(prompts, completions, self.include_prompt)
        device = next(self.model.parameters()).device
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                return_tensors="pt",
                padding=True,
                truncation=True,
            ).to(device)
            scores.extend(self.model(**enc).logits[:, self.label].float().tolist())
        return scores

    def __repr__(self) -> str:
        return f"ClassifierReward(label={self.label})"


def length(
    unit: LengthUnit = "chars",
    scale: float = 140.0,
    low: float = 0.5,
    high: float = 1.5,
    tokenizer: object | None = None,
) -> Reward:
    """The paper's length reward ``clip(l / 140, 0.5, 1.5)``, ``l`` in characters by default."""
    return as_reward(LengthReward(unit, scale, low, high, tokenizer))


def distinct(n: int = 1) -> Reward:
    """Distinct-n diversity of the completion's words in ``[0, 1]`` (``name="diversity"``)."""
    return as_reward(DistinctReward(n))


def vader(include_prompt: bool = False) -> Reward:
    """VADER compound sentiment in ``[-1, 1]``."""
    return as_reward(VaderReward(include_prompt))


def classifier(name_or_path: str, label: int | str | None = None, **kwargs: Any) -> Reward:
    """The logit of ``label`` (default: the positive class) of a sequence classifier."""
    return as_reward(ClassifierReward(name_or_path, label=label, **kwargs))
