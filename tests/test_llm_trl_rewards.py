"""Reward functions written as TRL users write them run unchanged through ``score_all``."""

from __future__ import annotations

import asyncio
import functools
import math
import warnings

import datasets
import pytest
import torch

from mogradient_llm.inputs.builtin_rewards import LengthReward, VaderReward
from mogradient_llm.inputs.prompts import as_prompt_rows, completion_for_reward, reward_columns
from mogradient_llm.inputs.reward_context import RewardLog
from mogradient_llm.inputs.rewards import (
    NonFiniteRewardError,
    Reward,
    RewardArgumentError,
    RewardError,
    as_reward,
    score_all,
)

CHAT = [
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Sky colour?"}],
    [{"role": "user", "content": "Two plus two?"}],
]


def reward_len(completions, **kwargs):
    return [-abs(20 - len(c)) for c in completions]


def test_a_trl_style_reward_runs_unchanged() -> None:
    completions = ["x" * 20, "x" * 5, "x" * 26]
    scores = score_all([reward_len], ["a", "b", "c"], completions)
    assert scores.dtype == torch.float32
    assert scores.tolist() == [[0.0, -15.0, -6.0]]
    assert as_reward(reward_len).name == "reward_len"


def test_a_conversational_reward_reads_the_assistant_message() -> None:
    def format_reward(completions, **kwargs):
        return [1.0 if c[0]["content"].startswith("<think>") else 0.0 for c in completions]

    completions = [
        completion_for_reward(p, t) for p, t in zip(CHAT, ["<think>blue</think>", "four"])
    ]
    assert completions[1] == [{"role": "assistant", "content": "four"}]
    assert score_all([format_reward], CHAT, completions).tolist() == [[1.0, 0.0]]


def test_dataset_columns_become_keyword_arguments() -> None:
    seen: dict = {}

    def correct(completions, ground_truth, **kwargs):
        seen.update(kwargs)
        return [1.0 if c == g else 0.0 for c, g in zip(completions, ground_truth)]

    dataset = datasets.Dataset.from_dict(
        {"prompt": ["2+2=", "3+3="], "ground_truth": ["4", "6"], "level": [1, 2]}
    )
    rows = as_prompt_rows(dataset)
    scores = score_all(
        [correct],
        [r["prompt"] for r in rows],
        ["4", "5"],
        columns=reward_columns(rows),
        completion_ids=[[7], [8, 9]],
    )
    assert scores.tolist() == [[1.0, 0.0]]
    assert seen["prompts"] == ["2+2=", "3+3="] and seen["level"] == [1, 2]
    assert seen["completion_ids"] == [[7], [8, 9]]


def test_none_means_no_score_and_becomes_nan() -> None:
    def only_math(completions, task, **kwargs):
        return [float(len(c)) if t == "math" else None for c, t in zip(completions, task)]

    scores = score_all(
        [only_math, reward_len], ["p", "q"], ["ab", "abc"], columns={"task": ["math", "poem"]}
    )
    assert scores[0, 0] == 2.0 and math.isnan(scores[0, 1])
    assert scores[1].tolist() == [-18.0, -17.0]


def test_a_real_nan_still_raises() -> None:
    def broken(completions, **kwargs):
        return [None, math.nan]

    with pytest.raises(NonFiniteRewardError, match=r"reward 'broken'.*positions \[1\].*None"):
        score_all([broken], ["p", "q"], ["a", "b"])


def test_older_functions_get_only_prompts_and_completions() -> None:
    def politeness(prompts, completions):
        return [float(p == "hi") + len(c) for p, c in zip(prompts, completions)]

    columns = {"ground_truth": ["x", "y"]}
    positional = Reward(lambda p, c: [0.5] * len(c), name="constant")
    scores = score_all([politeness, positional], ["hi", "yo"], ["a", "bb"], columns=columns)
    assert scores.tolist() == [[2.0, 2.0], [0.5, 0.5]]


def test_a_function_gets_only_the_arguments_it_names() -> None:
    def by_ids(completion_ids, completions):
        return [float(len(ids)) for ids in completion_ids]

    scores = score_all([by_ids], ["p"], ["c"], columns={"other": [1]}, completion_ids=[[1, 2]])
    assert scores.tolist() == [[2.0]]
    with pytest.raises(RewardArgumentError, match="'by_ids' needs.*'completion_ids'"):
        score_all([by_ids], ["p"], ["c"])


def test_a_missing_column_names_the_reward_the_parameter_and_the_columns() -> None:
    def correct(completions, ground_truth, **kwargs):
        return [0.0] * len(completions)

    with pytest.raises(RewardArgumentError) as info:
        score_all([correct], ["p"], ["c"], columns={"answer": ["4"]})
    message = str(info.value)
    assert "'correct'" in message and "'ground_truth'" in message
    assert "['answer', 'completions', 'prompts']" in message
    assert isinstance(info.value, ValueError)  # a configuration mistake, not a failing scorer


def test_extra_kwargs_reach_every_reward_unchanged() -> None:
    def warmup(completions, trainer_state, **kwargs):
        return [min(trainer_state["step"] / 10, 1.0)] * len(completions)

    state = {"step": 5}
    scores = score_all([warmup, reward_len], ["p"], ["c"], extra_kwargs={"trainer_state": state})
    assert scores.tolist() == [[0.5], [-19.0]]
    with pytest.raises(RewardArgumentError, match="trainer_state"):
        score_all([warmup], ["p"], ["c"])


def test_builtins_score_the_assistant_content_and_ignore_columns() -> None:
    completions = [completion_for_reward(p, "x" * 30) for p in CHAT]
    length = LengthReward(scale=10, low=0, high=100)
    assert length(CHAT, completions, ground_truth=["a", "b"]) == [3.0, 3.0]
    positive = [{"role": "user", "content": "What a wonderful, great, lovely day!"}]
    with_prompt = VaderReward(include_prompt=True)
    (score,) = with_prompt([positive], [[{"role": "assistant", "content": "the table"}]], level=[1])
    assert score > 0.5
    assert VaderReward()([positive], [[{"role": "assistant", "content": "the table"}]]) == [0.0]


@pytest.mark.parametrize(
    ("columns", "ids", "message"),
    [
        ({"answer": ["1"]}, None, "column 'answer' holds 1 values"),
        ({"answer": "12"}, None, "column 'answer' holds a string"),
        ({"completions": ["a", "b"]}, None, "may not be named 'completions'"),
        (None, [[1]], "1 completion_ids for 2"),
    ],
)
def test_bad_columns_are_refused(columns, ids, message) -> None:
    with pytest.raises(ValueError, match=message):
        score_all([reward_len], ["p", "q"], ["a", "b"], columns=columns, completion_ids=ids)


def test_score_all_checks_the_prompts_and_keeps_the_shape() -> None:
    with pytest.raises(ValueError, match="1 prompts for 2 completions"):
        score_all([reward_len], ["p"], ["a", "b"])
    assert score_all([], ["p", "q"], ["a", "b"]).shape == (0, 2)


def test_a_reward_that_takes_neither_convention_is_refused_early() -> None:
    def one_argument(texts):
        return [0.0] * len(texts)

    with pytest.raises(TypeError, match=r"'one_argument'.*fn\(completions, \*\*kwargs\)"):
        Reward(one_argument)


def test_a_string_is_not_a_list_of_scores() -> None:
    def wordy(completions, **kwargs):
        return "1.0"

    with pytest.raises(RewardError, match="'wordy' returned non-numeric"):
        score_all([wordy], ["p"], ["c"])


# ---------------------------------------------------------------- async rewards, TRL's way


def test_async_rewards_are_awaited_together_in_their_places() -> None:
    """Each of the two async rewards waits for the other to have started: run one after the
    other, the first would time out; TRL gathers them, and so must we."""
    started = {"ping": asyncio.Event(), "pong": asyncio.Event()}

    async def ping(completions, **kwargs):
        started["ping"].set()
        await asyncio.wait_for(started["pong"].wait(), timeout=10)
        return [1.0] * len(completions)

    async def pong(completions, **kwargs):
        started["pong"].set()
        await asyncio.wait_for(started["ping"].wait(), timeout=10)
        return [2.0, None]

    scores = score_all([ping, reward_len, pong], ["a", "b"], ["x" * 20, "x" * 18])
    assert scores[0].tolist() == [1.0, 1.0] and scores[1].tolist() == [0.0, -2.0]
    assert scores[2, 0] == 2.0 and math.isnan(scores[2, 1])


class AsyncJudge:
    """An async callable class, as an LLM judge is written."""

    name = "judge"

    async def __call__(self, completions, **kwargs):
        await asyncio.sleep(0)
        return [float(len(c)) for c in completions]


async def _scaled(completions, factor, **kwargs):
    return [factor * len(c) for c in completions]


def test_async_forms_are_recognised_as_trl_recognises_them() -> None:
    from trl.trainer.utils import is_async_callable as trl_is_async

    from mogradient_llm.inputs.rewards import is_async_callable

    partial = functools.partial(_scaled, factor=2.0)
    for fn in (AsyncJudge(), partial, _scaled, reward_len, LengthReward(), len):
        assert is_async_callable(fn) == trl_is_async(fn), fn
    scores = score_all([AsyncJudge(), Reward(partial, name="scaled")], ["a"], ["xyz"])
    assert scores.tolist() == [[3.0], [6.0]]


def test_an_async_reward_that_raises_is_named() -> None:
    async def broken(completions, **kwargs):
        raise KeyError("answer")

    with pytest.raises(RewardError, match=r"reward 'broken' raised KeyError: 'answer'"):
        score_all([AsyncJudge(), broken], ["a"], ["b"])


# ---------------------------------------------------------------- a reward that scores nothing


def test_a_reward_that_scores_no_sample_of_a_batch_warns_once_naming_it() -> None:
    nothing = Reward(lambda completions, **kwargs: [None] * len(completions), name="nothing")
    partly = Reward(lambda completions, **kwargs: [None, 1.0], name="partly")
    with pytest.warns(UserWarning, match="reward 'nothing' returned None for every sample") as got:
        score_all([nothing, partly], ["a", "b"], ["c", "d"])
    assert len(got) == 1  # not for 'partly'
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        score_all([nothing, partly], ["a", "b"], ["c", "d"])  # once per reward


# ---------------------------------------------------------------- log_extra / log_metric


def test_log_extra_and_log_metric_collect_as_trl_does() -> None:
    log = RewardLog(2)

    def logging_reward(completions, log_extra, log_metric, **kwargs):
        log_extra("why", [f"len {len(c)}" for c in completions])
        log_metric("judge/calls", 1.0)
        log_metric("judge/calls", 3.0)
        return [0.0] * len(completions)

    score_all([logging_reward], ["a", "b"], ["x", "yy"], extra_kwargs=log.kwargs())
    assert log.extra == {"why": ["len 1", "len 2"]}
    assert log.metrics() == {"judge/calls": 2.0}

    def short(completions, log_extra, **kwargs):
        log_extra("why", ["only one"])
        return [0.0] * len(completions)

    with pytest.raises(RewardError, match=r"reward 'short' raised ValueError: log_extra.*\(2\)"):
        score_all([short], ["a", "b"], ["x", "yy"], extra_kwargs=RewardLog(2).kwargs())


def test_log_metric_averages_over_every_process_as_trl() -> None:
    """TRL: Σ values / count over all ranks (not a mean of the ranks' means). Two ranks are
    simulated: this one logged 1 and 3, the other 5 (and a metric this rank never logged)."""
    log = RewardLog(1)
    log.log_metric("m", 1.0)
    log.log_metric("m", 3.0)
    other = {"m": (5.0, 1.0), "only_there": (4.0, 2.0)}

    def gather_names(names: list[str]) -> list[str]:
        return names + list(other)

    def reduce_sum(totals: torch.Tensor) -> torch.Tensor:
        names = sorted({"m", *other})
        return totals + torch.tensor([other.get(n, (0.0, 0.0)) for n in names], dtype=totals.dtype)

    assert log.metrics(gather_names, reduce_sum) == {"m": 3.0, "only_there": 2.0}
