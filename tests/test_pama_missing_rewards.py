"""Rewards that return ``None``: PAMA combines over the objectives that scored each sample.

TRL's multi-task recipe (its GRPO docs, "multi-task reward functions"): a ``task`` column and one
reward per task, each returning ``None`` for the other task's rows. A ``None`` advantage is 0,
and Theorem 1 over all objectives projected 0 onto an interval that then always contains 0, so
every completion got s* = 0 and nothing was trained (``agg/used_token_frac`` = 0.0).

The unit tests compare with Theorem 1 written out by hand per sample: s* = the projection of 0
onto [min, max] of the advantages of the objectives that scored the sample (after the Noon clip:
their minimum); a sample none scored takes no part. Exact comparisons: the rule only selects
and clamps entries, so no rounding is involved.
"""

from __future__ import annotations

import datasets
import pytest
import torch

from mogradient import PAMA
from mogradient.aggregators.pama import pama_weights
from mogradient_llm.inputs.rewards import Reward
from tests.llm_fixtures import load_tiny_lm, tiny_config


def _theorem1(values: list[float]) -> float:
    """s* of Theorem 1 for one sample's scored advantages (0 when none scored)."""
    if not values:
        return 0.0
    return min(max(0.0, min(values)), max(values))


def _case(seed: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(shape, generator=gen, dtype=torch.float64).round(decimals=1)
    valid = torch.rand(shape, generator=gen) < 0.6
    a = torch.where(valid, a, torch.zeros_like(a))  # the estimators' 0 for a missing reward
    return a, valid


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("noon", [False, True])
def test_token_combine_follows_theorem_one_over_the_scored_objectives(
    seed: int, noon: bool
) -> None:
    a, valid = _case(seed, (3, 5, 4))
    if noon:
        a = a.clamp(min=0)
    mask = (torch.rand(5, 4, generator=torch.Generator().manual_seed(seed)) < 0.8).double()
    combined, weights, s_star = PAMA().combine(a, mask, valid=valid)
    for b in range(5):
        for t in range(4):
            scored = [float(a[i, b, t]) for i in range(3) if valid[i, b, t]]
            expected = _theorem1(scored)
            if noon and scored:
                assert expected == min(scored)  # after Noon: the smallest scored advantage
            assert float(s_star[b, t]) == expected
            assert float(combined[b, t]) == expected * float(mask[b, t])
            w = weights[:, b, t]
            assert all(float(w[i]) == 0.0 for i in range(3) if not valid[i, b, t])
            if scored:
                assert float(w.sum()) == pytest.approx(1.0, abs=1e-12)
                assert float((w * a[:, b, t]).sum()) == pytest.approx(expected, abs=1e-12)
            else:
                assert float(w.sum()) == 0.0  # takes no part


def test_one_scoring_objective_is_followed_exactly() -> None:
    """Each sample scored by one objective: s* is that objective's advantage (the old rule gave
    0 whenever the others' zero lay in [min, max], i.e. always)."""
    a = torch.tensor([[0.7, 0.0, -0.4], [0.0, -1.2, 0.0]])
    valid = torch.tensor([[True, False, True], [False, True, False]])
    combined, _, _ = PAMA().combine(a, valid=valid)
    assert combined.tolist() == pytest.approx([0.7, -1.2, -0.4])
    assert PAMA().combine(a).combined.tolist() == [0.0, 0.0, 0.0]  # without the mask


def test_batch_combine_takes_each_mean_over_the_scored_samples() -> None:
    """``granularity="batch"``: objective i's mean is over the masked samples it scored; the
    weights are Theorem 1's on those means; a missing advantage adds nothing."""
    a, valid = _case(3, (3, 6))
    valid[:, 0] = False  # a sample no objective scored
    a[:, 0] = 0.0
    mask = torch.ones(6, dtype=torch.float64)
    mask[5] = 0.0
    combined, weights, s_star = PAMA("batch").combine(a, mask, valid=valid)
    means = []
    for i in range(3):
        vals = [float(a[i, b]) for b in range(6) if valid[i, b] and mask[b] > 0]
        means.append(sum(vals) / len(vals))
    assert float(s_star) == pytest.approx(_theorem1(means), abs=1e-12)
    assert float(weights @ torch.tensor(means, dtype=weights.dtype)) == pytest.approx(
        _theorem1(means), abs=1e-12
    )
    for b in range(6):
        expected = sum(
            float(weights[i]) * float(a[i, b]) for i in range(3) if valid[i, b] and mask[b] > 0
        )
        assert float(combined[b]) == pytest.approx(expected, abs=1e-12)
    assert float(combined[0]) == 0.0


def test_pama_weights_refuses_a_valid_mask_of_another_shape() -> None:
    with pytest.raises(ValueError, match="valid has shape"):
        pama_weights(torch.zeros(2, 3), torch.ones(2, 4, dtype=torch.bool))


# -- TRL's multi-task recipe ---------------------------------------------------------------


def math_reward_func(prompts, completions, task, **kwargs):
    """Scores only the math rows (TRL's docs: ``None`` for the other task)."""
    return [float(len(c) % 5) if t == "math" else None for c, t in zip(completions, task)]


def coding_reward_func(prompts, completions, task, **kwargs):
    """Scores only the coding rows."""
    return [
        float(sum(ch in "aeiou" for ch in c) % 4) if t == "coding" else None
        for c, t in zip(completions, task)
    ]


@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_trl_multi_task_recipe_trains_each_sample_on_its_task(algorithm: str) -> None:
    """Two prompts per step, one per task, 4 completions each, the default aggregator (PAMA):
    every completion is scored by exactly one reward, and its combined advantage is that
    reward's own (per-objective) advantage on every token; tokens are used
    (``agg/used_token_frac`` > 0, it was 0.0)."""
    from mogradient_llm.loop.trainer import MOTrainer

    model, tokenizer = load_tiny_lm()
    dataset = datasets.Dataset.from_list(
        [
            {"prompt": "the film was", "task": "math"},
            {"prompt": "a story about", "task": "coding"},
        ]
        * 4
    )
    config = tiny_config(algorithm)
    assert config.aggregator == "pama"
    trainer = MOTrainer(
        config,
        model,
        tokenizer,
        [Reward(math_reward_func), Reward(coding_reward_func)],
        dataset,
    )
    seen = []
    prepare = trainer.prepare_batch

    def keep(rollout, scores, preferences=None):
        batch = prepare(rollout, scores, preferences)
        seen.append(batch)
        return batch

    trainer.prepare_batch = keep
    used = []
    for _ in range(2):
        used.append(trainer.step()["agg/used_token_frac"])
    assert max(used) > 0.0
    for batch in seen:
        valid = ~torch.isnan(batch.scores)
        assert bool((valid.sum(0) == 1).all())  # each completion: one scoring reward
        owner = valid.float().argmax(0)
        own = batch.objective_advantages[owner, torch.arange(batch.size)]
        assert torch.equal(batch.advantages[0], own * batch.mask)
        assert bool((own.abs().sum(1) > 0).any())  # not all zero: something is followed


@pytest.mark.parametrize("aggregation", ["sum_then_normalize", "normalize_then_sum"])
def test_trl_multi_task_recipe_with_a_weighted_sum(aggregation: str) -> None:
    """``linear`` on the same recipe (GRPO's weighted sum of rewards, or GDPO): a missing reward
    adds nothing, so each completion's advantage has the sign of its own reward's deviation
    from its group's mean (a group is one prompt, so one task), and is 0 where that is 0."""
    from mogradient_llm.loop.trainer import MOTrainer

    model, tokenizer = load_tiny_lm()
    dataset = datasets.Dataset.from_list(
        [{"prompt": "the film was", "task": "math"}, {"prompt": "a story about", "task": "coding"}]
    )
    config = tiny_config("grpo", aggregator="linear", multi_objective_aggregation=aggregation)
    rewards = [Reward(math_reward_func), Reward(coding_reward_func)]
    trainer = MOTrainer(config, model, tokenizer, rewards, dataset)
    rows = dataset.to_list()
    rollout = trainer.generate(rows)
    scores = trainer.score(rows, rollout)
    batch = trainer.prepare_batch(rollout, scores)
    own = scores.nan_to_num(0.0).sum(0).view(2, 4)  # each completion's one score
    deviation = (own - own.mean(1, keepdim=True)).flatten()
    first = batch.advantages[0, :, 0]  # a sequence's advantage, on its first token
    moved = deviation != 0
    assert torch.equal(torch.sign(first[moved]), torch.sign(deviation[moved]).to(first.dtype))
    # GDPO's batch mean of group-centred values is 0 up to float32 rounding (8 terms of at
    # most |Â| ≤ 2 each: ≤ 8 · 2 · 2⁻²⁴ ≈ 1e-6 before dividing by the batch std, about 1)
    assert bool((first[~moved].abs() <= 1e-5).all())
