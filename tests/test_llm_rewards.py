"""Reward functions: built-ins, the classifier path through from_pretrained, and error checks."""

from __future__ import annotations

import math

import pytest
import torch

from mogradient_llm.inputs.builtin_rewards import (
    ClassifierReward,
    LengthReward,
    VaderReward,
    distinct,
)
from mogradient_llm.inputs.reward_specs import build_reward
from mogradient_llm.inputs.rewards import Reward, RewardError, as_reward, score_all
from tests.llm_fixtures import tiny_lm_dir


def test_length_reward_is_the_clipped_ratio_in_each_unit() -> None:
    completions = ["a" * 70, "a" * 140, "a" * 400, "one two three four"]
    assert LengthReward()([""] * 4, completions) == pytest.approx([0.5, 1.0, 1.5, 0.5])
    words = LengthReward(unit="words", scale=2, low=0, high=10)
    assert words([""], ["one two three"]) == [1.5]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm_dir())
    tokens = LengthReward(unit="tokens", scale=1, low=0, high=1000, tokenizer=tok)
    n = len(tok("great movie", add_special_tokens=False)["input_ids"])
    assert tokens([""], ["great movie"]) == [float(n)]
    with pytest.raises(ValueError, match="unit"):
        LengthReward(unit="bytes")


def test_vader_scores_sentiment_of_the_completion() -> None:
    vader = VaderReward()
    pos, neg = vader(["x", "x"], ["a wonderful, great film", "an awful, terrible film"])
    assert pos > 0.5 and neg < -0.5
    assert as_reward(vader).name == "vader" and as_reward(vader).hv_reference == -1.0


def test_classifier_reward_is_the_positive_logit(tmp_path) -> None:
    from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

    tok = AutoTokenizer.from_pretrained(tiny_lm_dir())
    config = GPT2Config(
        vocab_size=len(tok),
        n_layer=1,
        n_embd=16,
        n_head=2,
        n_positions=64,
        num_labels=2,
        pad_token_id=tok.pad_token_id,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    torch.manual_seed(0)
    GPT2ForSequenceClassification(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    reward = build_reward(f"classifier:{tmp_path}")
    prompts, completions = ["The movie", "It"], [" was great.", " was a long and dull film."]
    scores = reward(prompts, completions)
    model = GPT2ForSequenceClassification.from_pretrained(tmp_path).eval()
    for p, c, s in zip(prompts, completions, scores):
        with torch.no_grad():
            logits = model(**tok([p + c], return_tensors="pt")).logits[0]
        assert s == pytest.approx(float(logits[1]), abs=1e-4)
    negative = build_reward(f"classifier:{tmp_path}@NEGATIVE")
    assert negative.fn.label == 0
    with pytest.raises(ValueError, match="not in the classifier's labels"):
        ClassifierReward(str(tmp_path), label="neutral")


def test_factories_name_their_rewards() -> None:
    from mogradient_llm.inputs.builtin_rewards import length, vader

    assert length().name == "length" and length().hv_reference == 0.5
    assert length(unit="words", low=0.2).fn.low == 0.2
    assert vader().name == "vader"


def test_build_reward_specs_and_unknown_names() -> None:
    assert build_reward("length").name == "length"
    assert build_reward("length:words").fn.unit == "words"
    assert build_reward("vader").name == "vader"
    assert build_reward("distinct:2").fn.n == 2
    with pytest.raises(ValueError, match="unknown reward"):
        build_reward("humour")
    with pytest.raises(ValueError, match="positive integer"):
        build_reward("distinct:0")


def test_distinct_counts_unique_word_ngrams() -> None:
    # distinct-1: 3 unique of 4 words; distinct-2: bigrams (a b) (b a) (a b) -> 2 of 3
    assert distinct()([""], ["a b a c"]) == [0.75]
    assert distinct(2)([""], ["A b a B"]) == [pytest.approx(2 / 3)]
    assert distinct(2)(["p", "p"], ["one", ""]) == [0.0, 0.0]  # fewer words than n
    assert distinct().name == "diversity" and distinct().hv_reference == 0.0
    with pytest.raises(ValueError, match="at least 1"):
        distinct(0)


def test_plain_callables_are_named_after_their_function() -> None:
    def politeness(prompts, completions):
        return [1.0] * len(completions)

    assert as_reward(politeness).name == "politeness"
    assert as_reward(politeness, name="polite").name == "polite"
    with pytest.raises(ValueError, match="name"):
        Reward(lambda p, c: [0.0] * len(c))


def test_score_all_stacks_rewards() -> None:
    rewards = [as_reward(LengthReward(scale=1, low=0, high=100)), as_reward(VaderReward())]
    scores = score_all(rewards, ["", ""], ["abc", "abcdef"])
    assert scores.shape == (2, 2)
    assert scores[0].tolist() == [3.0, 6.0]


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (lambda p, c: 1 / 0, "raised ZeroDivisionError"),
        (lambda p, c: [1.0], "returned 1 scores for 2 completions"),
        (lambda p, c: [1.0, math.nan], "non-finite"),
        (lambda p, c: [1.0, math.inf], "non-finite"),
        (lambda p, c: ["good", 1.0], "non-numeric"),
    ],
)
def test_score_all_names_the_faulty_reward(fn, message) -> None:
    rewards = [as_reward(VaderReward()), Reward(fn, name="broken")]
    with pytest.raises(RewardError, match=f"reward 'broken'.*{message}"):
        score_all(rewards, ["a", "b"], ["c", "d"])
