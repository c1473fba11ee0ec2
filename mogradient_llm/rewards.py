"""Reward functions: any callable ``(prompts, completions) -> list[float]``, plus built-ins.

Built-ins: :class:`LengthReward` (the paper's ``clip(l / 140, 0.5, 1.5)``, ``l`` counted in
characters by default), :class:`VaderReward` (vaderSentiment compound score) and
:class:`ClassifierReward` (a logit of an ``AutoModelForSequenceClassification``).
:func:`score_all` calls them and checks their output, naming the reward that misbehaved.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, cast

import torch

RewardFn = Callable[[Sequence[str], Sequence[str]], Sequence[float]]
#: What :class:`LengthReward` counts.
LengthUnit = Literal["chars", "words", "tokens"]


class RewardError(RuntimeError):
    """A reward function raised, or returned the wrong number of scores or non-finite scores."""


class NonFiniteRewardError(RewardError):
    """A reward function returned NaN or an infinite score."""


class Reward:
    """A named reward function; ``hv_reference`` is its worst value (hypervolume reference)."""

    def __init__(self, fn: RewardFn, name: str | None = None, hv_reference: float | None = None):
        if not callable(fn):
            raise TypeError(f"a reward must be callable, got {type(fn).__name__}")
        self.fn = fn
        name = name or getattr(fn, "name", None) or getattr(fn, "__name__", None)
        if not name or name == "<lambda>":
            raise ValueError("give the reward a name: Reward(fn, name=...)")
        self.name: str = name
        if hv_reference is None:
            hv_reference = getattr(fn, "hv_reference", None)
        self.hv_reference = hv_reference

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> Sequence[float]:
        return self.fn(prompts, completions)

    def __repr__(self) -> str:
        return f"Reward({self.name!r}, {self.fn!r})"


def as_reward(fn: RewardFn | Reward, name: str | None = None) -> Reward:
    """Wrap a callable as a :class:`Reward` (a :class:`Reward` passes through unless renamed)."""
    if isinstance(fn, Reward) and name is None:
        return fn
    if isinstance(fn, Reward):
        return Reward(fn.fn, name, fn.hv_reference)
    return Reward(fn, name)


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

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        return [min(max(self._length(c) / self.scale, self.low), self.high) for c in completions]

    def __repr__(self) -> str:
        return (
            f"LengthReward(unit={self.unit!r}, scale={self.scale}, low={self.low}, "
            f"high={self.high})"
        )


class VaderReward:
    """vaderSentiment compound score in ``[-1, 1]`` of the completion (or prompt + completion)."""

    def __init__(self, include_prompt: bool = False):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.analyzer = SentimentIntensityAnalyzer()
        self.include_prompt = include_prompt
        self.name = "vader"
        self.hv_reference = -1.0

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        texts = (
            [p + c for p, c in zip(prompts, completions)] if self.include_prompt else completions
        )
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
    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        texts = (
            [p + c for p, c in zip(prompts, completions)] if self.include_prompt else completions
        )
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


def vader(include_prompt: bool = False) -> Reward:
    """VADER compound sentiment in ``[-1, 1]``."""
    return as_reward(VaderReward(include_prompt))


def classifier(name_or_path: str, label: int | str | None = None, **kwargs: Any) -> Reward:
    """The logit of ``label`` (default: the positive class) of a sequence classifier."""
    return as_reward(ClassifierReward(name_or_path, label=label, **kwargs))


def build_reward(spec: str, tokenizer: object | None = None) -> Reward:
    """A built-in reward from a CLI spec.

    ``length`` / ``length:words`` / ``length:tokens`` / ``vader`` / ``classifier:PATH`` /
    ``classifier:PATH@LABEL``.
    """
    kind, arg = parse_reward_spec(spec)
    if kind == "length":
        # LengthReward refuses any other unit.
        return length(unit=cast(LengthUnit, arg or "chars"), tokenizer=tokenizer)
    if kind == "vader":
        if arg:
            raise ValueError(f"the vader reward takes no argument, got {spec!r}")
        return vader()
    if kind == "classifier":
        if not arg:
            raise ValueError("use classifier:PATH or classifier:PATH@LABEL")
        path, _, label = arg.partition("@")
        return classifier(path, label=label or None)
    raise AssertionError(kind)  # parse_reward_spec accepts only the kinds above


def parse_reward_spec(spec: str) -> tuple[str, str]:
    """``(kind, argument)`` of a CLI reward spec; raises on an unknown kind, loading nothing."""
    kind, _, arg = spec.partition(":")
    if kind not in ("length", "vader", "classifier"):
        raise ValueError(
            f"unknown reward {spec!r}; valid: length[:chars|words|tokens], vader, "
            "classifier:PATH[@LABEL]"
        )
    return kind, arg


def score_all(
    rewards: Sequence[Reward], prompts: Sequence[str], completions: Sequence[str]
) -> torch.Tensor:
    """Scores ``[k, batch]`` (float32) of every reward; raises :class:`RewardError` naming it."""
    rows = []
    for reward in rewards:
        try:
            values = reward(prompts, completions)
        except Exception as exc:
            raise RewardError(f"reward {reward.name!r} raised {type(exc).__name__}: {exc}") from exc
        try:
            values = [float(v) for v in values]
        except (TypeError, ValueError) as exc:
            raise RewardError(f"reward {reward.name!r} returned non-numeric scores: {exc}") from exc
        if len(values) != len(completions):
            raise RewardError(
                f"reward {reward.name!r} returned {len(values)} scores for "
                f"{len(completions)} completions"
            )
        bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
        if bad:
            raise NonFiniteRewardError(
                f"reward {reward.name!r} returned non-finite scores at positions {bad[:5]} "
                f"(e.g. {values[bad[0]]})"
            )
        rows.append(values)
    return torch.tensor(rows, dtype=torch.float32)
