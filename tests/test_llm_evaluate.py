"""``evaluate_policy`` calls rewards as training does: plain functions, dataset columns,
``None`` scores (means over the scored samples, with counts), TRL's extra arguments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mogradient_llm.inputs.builtin_rewards import LengthReward
from mogradient_llm.policy.evaluation import evaluate_policy
from tests.llm_fixtures import load_tiny_lm

GENERATION = {"max_new_tokens": 6, "do_sample": True, "top_k": 0, "top_p": 1.0}
ROWS = [{"prompt": f"the movie {i} was", "topic": "ab"[i % 3 == 0]} for i in range(7)]


def by_topic(completions, topic, **kwargs):
    """A plain function scoring only the rows of topic "a" (a dataset column)."""
    return [float(len(c)) if t == "a" else None for c, t in zip(completions, topic)]


def test_plain_functions_columns_and_none_scores(tmp_path) -> None:
    model, tokenizer = load_tiny_lm()
    seen: dict = {}

    def spy(completions, trainer_state, completion_ids, log_extra, log_metric, **kwargs):
        seen.update(kwargs, state=trainer_state, ids=completion_ids)
        log_extra("chars", [len(c) for c in completions])
        log_metric("spy/batch", float(len(completions)))
        return [0.0] * len(completions)

    length = LengthReward(scale=10.0, low=0.0, high=2.0)
    ref = [0.0, 0.0, -1.0]
    result = evaluate_policy(
        model.eval(), tokenizer, [by_topic, length, spy], ROWS, GENERATION, None, ref, 3
    )
    samples = result["samples"]
    assert len(samples) == len(ROWS) and seen["topic"] == ["b"]  # the last batch: row 6
    assert seen["state"].global_step == 0 and len(seen["ids"]) == 1
    scored = [s["by_topic"] for s in samples if s["by_topic"] is not None]
    assert len(scored) == sum(r["topic"] == "a" for r in ROWS) == 4
    assert all(s["by_topic"] is None for s, r in zip(samples, ROWS) if r["topic"] == "b")
    assert result["eval/scored/by_topic"] == 4 and result["eval/scored/length"] == 7
    assert result["eval/scores/by_topic"] == pytest.approx(np.mean(scored))
    assert result["eval/scores/length"] == pytest.approx(np.mean([s["length"] for s in samples]))
    assert all(s["chars"] == len(s["completion"]) for s in samples)
    assert result["eval/spy/batch"] == pytest.approx(7 / 3)  # batches of 3, 3 and 1
    # one point: its hypervolume is the box between it and the reference point
    means = [result[f"eval/scores/{n}"] for n in ("by_topic", "length", "spy")]
    expected = math.prod(max(m - r, 0.0) for m, r in zip(means, ref))
    assert expected > 0 and result["eval/hypervolume"] == pytest.approx(expected)


def test_a_reward_that_scores_nothing_gives_a_nan_mean_and_no_hypervolume() -> None:
    model, tokenizer = load_tiny_lm()

    def never(completions, **kwargs):
        return [None] * len(completions)

    with pytest.warns(UserWarning, match="reward 'never' returned None for every sample"):
        result = evaluate_policy(
            model.eval(), tokenizer, [never, LengthReward()], ["a film", "the movie"],
            GENERATION, ref_point=[0.0, 0.5],
        )  # fmt: skip
    assert result["eval/scored/never"] == 0 and math.isnan(result["eval/scores/never"])
    assert math.isnan(result["eval/hypervolume"])
    assert result["eval/scored/length"] == 2
