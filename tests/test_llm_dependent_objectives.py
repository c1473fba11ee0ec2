"""Dependent objectives train with every Gramian method (at the default level; MGDA, Nash-MTL
and UPGrad at every Gramian level).

Rank-deficient Gramians are normal in GRPO: the per-objective gradients live in at most
``B − prompts`` dimensions, and rewards often coincide on a batch. Float32 rounding then makes
the singular Gramian slightly indefinite; it must be projected within its rounding bound, not
refused as "not positive semi-definite" (which stopped MGDA, UPGrad and Nash-MTL after 1–12
steps). Two reward sets, 20 GRPO steps each, on a one-layer policy with 2-token completions:

* ``duplicated``: two rewards equal up to scale, with ``scale_rewards="none"`` so that the
  objectives' gradients are exactly parallel (a rank-1 Gramian);
* ``nine``: 9 objectives on a batch of 8 (2 prompts × 4), so at most 6 dimensions, among them a
  duplicate, scaled copies and a nearly dependent reward (1e-3 of another added).
"""

from __future__ import annotations

import functools
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch

import mogradient
from mogradient import GramianWeighting
from mogradient_llm.inputs.rewards import Reward
from mogradient_llm.policy.models import synthetic_reviews, tiny_gpt2, train_tokenizer
from tests.llm_fixtures import make_trainer

#: The RL loss refuses the methods that need two batches (tests/test_llm_every_method.py).
GRAMIAN_METHODS = sorted(
    name
    for name, cls in mogradient.registered().items()
    if issubclass(cls, GramianWeighting) and not cls.needs_two_batches
)
LEVELS = {
    "layers": {"gramian_level": "parameters", "parameter_gramian": "layers"},
    "jacobian": {"gramian_level": "parameters", "parameter_gramian": "jacobian"},
    "features": {"gramian_level": "features"},
}


@functools.lru_cache(maxsize=1)
def _one_layer_lm() -> Path:
    """A saved one-layer GPT-2 (16 wide) and its tokenizer: the fastest policy that has every
    kind of layer the recorder handles (embeddings, attention, MLP, norms, tied head)."""
    path = Path(tempfile.mkdtemp(prefix="mogradient-llm-1layer-"))
    tokenizer = train_tokenizer(synthetic_reviews(300, seed=0), vocab_size=400)
    tiny_gpt2(tokenizer, n_layer=1, n_embd=16, n_head=2, n_positions=32, seed=0).save_pretrained(
        path
    )
    tokenizer.save_pretrained(path)
    return path


def _chars(c: str) -> float:
    return float(len(c) % 7)


def _words(c: str) -> float:
    return float(len(c.split()) % 3)


def _vowels(c: str) -> float:
    return float(sum(ch in "aeiou" for ch in c) % 4)


def _reward(fn: Any, name: str) -> Reward:
    """Scores shifted by −20 to stay negative (every fn is below 20: losses positive, as EPO
    needs); the shift leaves GRPO's advantages as they are."""
    return Reward(lambda prompts, completions: [fn(c) - 20.0 for c in completions], name=name)


REWARD_SETS = {
    "duplicated": [_reward(_chars, "chars"), _reward(lambda c: 3 * _chars(c), "chars3")],
    "nine": [
        _reward(_chars, "chars"),
        _reward(_chars, "chars_again"),
        _reward(lambda c: 3 * _chars(c), "chars3"),
        _reward(lambda c: _chars(c) + 1e-3 * _words(c), "chars_near"),
        _reward(_words, "words"),
        _reward(lambda c: _words(c) + _chars(c), "sum"),
        _reward(_vowels, "vowels"),
        _reward(lambda c: -_vowels(c) + 2 * _words(c), "mixed"),
        _reward(lambda c: float(c.count(" ") % 2), "spaces"),
    ],
}


#: Methods run at every level: the ones these Gramians stopped (the levels differ in how the
#: Gramian is formed, which every method then reads alike).
EVERY_LEVEL = ("mgda", "nash-mtl", "upgrad")
#: Every Gramian method at the default level (layer by layer), the three above at all levels.
CASES = [(m, "layers") for m in GRAMIAN_METHODS] + [
    (m, level) for m in EVERY_LEVEL for level in sorted(LEVELS) if level != "layers"
]


@pytest.mark.parametrize("rewards", sorted(REWARD_SETS))
@pytest.mark.parametrize(("method", "level"), CASES)
def test_dependent_rewards_train_twenty_steps(method: str, level: str, rewards: str) -> None:
    trainer = make_trainer(
        REWARD_SETS[rewards],
        lm_dir=_one_layer_lm(),
        algorithm="grpo",
        aggregator=method,
        mini_batch_size=8,
        scale_rewards="none" if rewards == "duplicated" else "group",
        generation_kwargs={"max_new_tokens": 2, "do_sample": True, "top_k": 0, "top_p": 1.0},
        **LEVELS[level],
    )
    names = [r.name for r in REWARD_SETS[rewards]]
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    for _ in range(20):
        stats = trainer.step()
        weights = [stats[f"agg/weight/{n}"] for n in names]
        assert all(math.isfinite(w) for w in weights), (method, stats)
    moved = any(not torch.equal(a, b) for a, b in zip(before, trainer.policy.parameters()))
    assert moved, "20 steps changed no parameter"
