"""Multi-objective GRPO and RLOO: advantages against the formulas written out group by group,
``None`` rewards, the loss normalisations, and full steps with every kind of aggregator."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from mogradient_llm.estimators import GRPOEstimator, MOGRPOConfig, MORLOOConfig, RLOOEstimator
from mogradient_llm.estimators.base import EstimatorInputs
from mogradient_llm.inputs.builtin_rewards import LengthReward
from mogradient_llm.inputs.rewards import Reward
from mogradient_llm.objectives.surrogate import token_weights
from tests.llm_fixtures import make_trainer, untied_lm_dir
from tests.test_llm_update import _assert_same_gradients, _gradients_at_step

G = 4


def _config(cls=MOGRPOConfig, **overrides) -> MOGRPOConfig:
    values = {"batch_size": 8, "mini_batch_size": 8, "num_generations": G, **overrides}
    return cls(**values)


def _inputs(scores: torch.Tensor, length: int = 3) -> EstimatorInputs:
    return EstimatorInputs(scores, torch.ones(scores.shape[1], length), G)


def _grpo_by_hand(r: list[float], scale: bool = True) -> list[float]:
    """(r − mean) / (unbiased std + 1e-4) over one group, written out."""
    mean = sum(r) / len(r)
    std = math.sqrt(sum((x - mean) ** 2 for x in r) / (len(r) - 1))
    return [(x - mean) / (std + 1e-4) if scale else x - mean for x in r]


def _rloo_by_hand(r: list[float]) -> list[float]:
    """rᵢ minus the mean of the other completions of the group, written out."""
    return [x - (sum(r) - x) / (len(r) - 1) for x in r]


SCORES = torch.tensor(
    [[1.0, 2.0, 4.0, 7.0, 0.0, 0.5, 0.5, 3.0], [3.0, -1.0, 0.0, 2.0, 5.0, 1.0, 4.0, 4.5]]
)


@pytest.mark.parametrize("scale", ["group", "none"])
def test_grpo_advantages_are_group_relative_per_objective(scale) -> None:
    estimate = GRPOEstimator(_config(scale_rewards=scale), ["a", "b"]).estimate(
        _inputs(SCORES), None
    )
    expected = [
        sum((_grpo_by_hand(row[i : i + G].tolist(), scale == "group") for i in (0, G)), [])
        for row in SCORES
    ]
    torch.testing.assert_close(estimate.advantages.values[:, :, 0], torch.tensor(expected))
    assert torch.equal(
        estimate.advantages.values[:, :, 0], estimate.advantages.values[:, :, 2]
    )  # per sequence


def test_batch_scaling_divides_by_the_batch_std() -> None:
    estimate = GRPOEstimator(_config(scale_rewards="batch"), ["a", "b"]).estimate(
        _inputs(SCORES), None
    )
    centred = torch.tensor(
        [sum((_grpo_by_hand(row[i : i + G].tolist(), False) for i in (0, G)), []) for row in SCORES]
    )
    expected = centred / (SCORES.std(1, keepdim=True) + 1e-4)
    torch.testing.assert_close(estimate.advantages.values[:, :, 0], expected)


def test_rloo_uses_the_leave_one_out_baseline() -> None:
    estimate = RLOOEstimator(_config(MORLOOConfig), ["a", "b"]).estimate(_inputs(SCORES), None)
    expected = [sum((_rloo_by_hand(row[i : i + G].tolist()) for i in (0, G)), []) for row in SCORES]
    torch.testing.assert_close(estimate.advantages.values[:, :, 0], torch.tensor(expected))


def test_loss_weightings_follow_multi_objective_aggregation() -> None:
    w = torch.tensor([0.75, 0.25])

    def scalarize(x: torch.Tensor) -> torch.Tensor:
        return torch.tensordot(w.to(x), x, dims=1)[None]

    summed = GRPOEstimator(_config(), ["a", "b"]).estimate(_inputs(SCORES), scalarize)
    weighted = (w @ SCORES).tolist()
    expected = sum((_grpo_by_hand(weighted[i : i + G]) for i in (0, G)), [])
    torch.testing.assert_close(summed.advantages.values[0, :, 0], torch.tensor(expected))

    gdpo = _config(multi_objective_aggregation="normalize_then_sum")
    got = (
        GRPOEstimator(gdpo, ["a", "b"])
        .estimate(_inputs(SCORES), scalarize)
        .advantages.values[0, :, 0]
    )
    per_objective = torch.tensor(
        [sum((_grpo_by_hand(row[i : i + G].tolist()) for i in (0, G)), []) for row in SCORES]
    )
    combined = w @ per_objective
    torch.testing.assert_close(got, (combined - combined.mean()) / (combined.std() + 1e-4))


def test_none_rewards_take_no_part_and_get_no_advantage() -> None:
    scores = SCORES.clone()
    scores[0, 1] = math.nan  # objective a could not score completion 1
    scores[:, 5] = math.nan  # no reward could score completion 5
    advantages = (
        GRPOEstimator(_config(), ["a", "b"]).estimate(_inputs(scores), None).advantages.values
    )
    assert float(advantages[0, 1].abs().sum()) == 0.0
    assert float(advantages[:, 5].abs().sum()) == 0.0
    first = [1.0, 4.0, 7.0]  # the group of objective a without completion 1
    expected = _grpo_by_hand(first)
    torch.testing.assert_close(advantages[0, [0, 2, 3], 0], torch.tensor(expected))
    torch.testing.assert_close(
        advantages[0, [4, 6, 7], 0], torch.tensor(_grpo_by_hand([0, 0.5, 3]))
    )
    assert torch.isfinite(advantages).all()


@pytest.mark.parametrize(
    ("normalization", "expected"),
    [
        ("token", lambda m: m / m.sum()),
        ("global_token", lambda m: m / m.sum()),  # with the global count as ``tokens``
        ("sequence", lambda m: m / m.sum(1, keepdim=True) / m.shape[0]),
        ("constant", lambda m: m / (m.shape[0] * 5)),
    ],
)
def test_token_weights_of_each_loss_type(normalization, expected) -> None:
    mask = torch.tensor([[1.0, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]])
    got = token_weights(mask, normalization, rows=3, tokens=float(mask.sum()), max_length=5)
    torch.testing.assert_close(got, expected(mask))
    halves = [
        token_weights(
            mask[rows], normalization, rows=1.5, tokens=float(mask.sum()) / 2, max_length=5
        )
        for rows in ([0], [1, 2])
    ]  # two micro-batches: accelerate halves each loss again, so their sum is the whole's
    torch.testing.assert_close(torch.cat(halves) / 2, expected(mask))


def test_micro_token_weights_are_each_micro_batch_own_token_mean() -> None:
    """BNPO as TRL's: each micro-batch's token mean, which accelerate averages over them."""
    mask = torch.tensor([[1.0, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]])
    for rows in ([0], [1, 2]):
        got = token_weights(mask[rows], "micro_token", rows=9.0, tokens=99.0, max_length=5)
        torch.testing.assert_close(got, mask[rows] / mask[rows].sum())


def _varied_rewards() -> list:
    """Two rewards that vary between completions of one prompt (TRL style, one returns None)."""

    def chars(completions, **kwargs):
        return [float(len(c)) / 10 for c in completions]

    def vowels(completions, **kwargs):
        return [
            None if not c else sum(ch in "aeiou" for ch in c) / max(len(c), 1) for c in completions
        ]

    return [chars, vowels]


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
@pytest.mark.parametrize(
    "setting",
    [
        {"aggregator": "pama", "noon": True},
        {"aggregator": "linear", "reward_weights": [1.0, 0.5]},
        {"aggregator": "linear", "multi_objective_aggregation": "normalize_then_sum"},
        {"aggregator": "mgda", "gramian_level": "features"},
        {"aggregator": "upgrad", "gramian_level": "parameters"},
    ],
    ids=["pama", "linear", "gdpo", "mgda-features", "upgrad-parameters"],
)
def test_a_step_updates_the_policy_with_every_kind(algorithm, setting) -> None:
    trainer = make_trainer(_varied_rewards(), algorithm=algorithm, beta=0.0, **setting)
    assert trainer.ref_model is None  # beta = 0: no reference model at all
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    stats = trainer.step()
    after = list(trainer.policy.parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after))
    assert stats["agg/weight_sum"] > 0 and "diag/conflict_rate" in stats
    assert "objective/kl" not in stats  # nothing to compare with


def test_pama_trains_on_the_smallest_positive_advantage_of_each_sequence() -> None:
    trainer = make_trainer(_varied_rewards(), algorithm="grpo", aggregator="pama", noon=True)
    rows = trainer.sample_prompts()
    rollout = trainer.generate(rows)
    batch = trainer.prepare_batch(rollout, trainer.score(rows, rollout))
    per_sequence = batch.objective_advantages.amax(2)  # [k, B], one value per sequence
    expected = per_sequence.min(0).values[:, None] * batch.mask
    torch.testing.assert_close(batch.advantages[0], expected)
    used = ((expected > 0) & batch.mask.bool()).sum() / batch.mask.sum()
    assert batch.stats["agg/used_token_frac"] == pytest.approx(float(used))


def test_beta_loads_a_reference_and_adds_the_k3_term_once() -> None:
    trainer = make_trainer(
        _varied_rewards(), algorithm="grpo", aggregator="mgda", beta=0.5, mini_batch_size=8
    )
    assert trainer.ref_model is not None
    stats = trainer.step()
    assert stats["objective/kl"] == 0.0  # the reference is the policy before this step
    assert stats["loss/kl"] == 0.0
    second = trainer.step()
    assert second["objective/kl"] > 0 and second["loss/kl"] > 0


@pytest.mark.parametrize(
    ("loss_type", "level", "untied"),
    [
        ("grpo", "features", False),
        ("dapo", "features", False),
        ("dr_grpo", "features", False),
        ("grpo", "parameters", True),  # Llama-style untied head; layers path vs Jacobian path
    ],
)
def test_gradient_accumulation_gives_the_update_of_the_whole_minibatch(
    loss_type, level, untied
) -> None:
    # accelerate keeps one gradient-accumulation state per process: each trainer runs before
    # the next one is made.
    common = {"algorithm": "grpo", "aggregator": "mgda", "loss_type": loss_type}
    common.update(mini_batch_size=8, max_grad_norm=None, gramian_level=level)
    if untied:  # the full minibatch by the layer path, the halves by the Jacobian
        common.update(lm_dir=untied_lm_dir(), parameter_gramian="layers")
    full = make_trainer(_varied_rewards(), **common)
    rows = full.sample_prompts()
    rollout = full.generate(rows)
    batch = full.prepare_batch(rollout, full.score(rows, rollout))
    assert batch.advantages.abs().sum() > 0
    expected, _ = _gradients_at_step(full, batch)
    halves = make_trainer(_varied_rewards(), gradient_accumulation_steps=2, **common)
    got, _ = _gradients_at_step(halves, batch)
    _assert_same_gradients(got, expected)


def test_a_trl_reward_and_dataset_columns_reach_the_reward_unchanged() -> None:
    from datasets import Dataset

    seen: dict = {}

    def reward_len(completions, **kwargs):  # as TRL's documentation writes them
        seen.update(kwargs)
        return [-abs(20 - len(completion)) for completion in completions]

    trainer = make_trainer([reward_len, LengthReward()], algorithm="grpo", aggregator="pama")
    data = Dataset.from_dict({"prompt": ["the film", "a movie"], "topic": ["x", "y"]})
    stats = trainer.step(data)
    assert seen["topic"] == ["x"] * G + ["y"] * G
    assert len(seen["completion_ids"]) == 2 * G and "trainer_state" in seen
    assert math.isfinite(stats["objective/scores/reward_len"])


def test_configuration_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match="at least 2 completions per prompt"):
        MOGRPOConfig(num_generations=1, batch_size=4, mini_batch_size=4)
    with pytest.raises(ValueError, match="multiple of num_generations"):
        MOGRPOConfig(num_generations=3, batch_size=8, mini_batch_size=8)
    with pytest.raises(ValueError, match="loss_type"):
        MOGRPOConfig(loss_type="ppo")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="reward_weights.*takes none"):
        make_trainer([LengthReward()], algorithm="grpo", aggregator="pama", reward_weights=[1.0])


def test_rloo_config_defaults_to_no_std_scaling() -> None:
    assert not MORLOOConfig().normalize_advantages and MOGRPOConfig().scale_rewards == "group"
    assert copy.deepcopy(MORLOOConfig()).algorithm == "rloo"


def test_a_reward_that_scores_nothing_gives_no_update_without_crashing() -> None:
    nothing = Reward(lambda p, c: [None] * len(c), name="nothing")
    trainer = make_trainer([nothing, LengthReward()], algorithm="grpo", aggregator="pama")
    stats = trainer.step()
    assert math.isnan(stats["objective/scores/nothing"]) and stats["train/skipped"] == 0.0


def test_without_noon_pama_trains_on_sequences_worse_on_every_objective() -> None:
    trainer = make_trainer(_varied_rewards(), algorithm="grpo", aggregator="pama", noon=False)
    rows = trainer.sample_prompts()
    rollout = trainer.generate(rows)
    batch = trainer.prepare_batch(rollout, trainer.score(rows, rollout))
    tokens = batch.mask.sum(1).clamp(min=1)
    per_sequence = (batch.objective_advantages * batch.mask).sum(2) / tokens  # shared by tokens
    low, high = per_sequence.min(0).values, per_sequence.max(0).values
    s_star = torch.where(low > 0, low, torch.where(high < 0, high, torch.zeros_like(low)))
    torch.testing.assert_close(batch.advantages[0], s_star[:, None] * batch.mask)
    used = ((s_star[:, None] * batch.mask != 0) & batch.mask.bool()).sum() / batch.mask.sum()
    assert batch.stats["agg/used_token_frac"] == pytest.approx(float(used))


class _AbandonedDataloader:
    """A dataloader whose iteration another trainer in the process left unfinished."""

    end_of_dataloader = True


def test_a_dataloader_left_in_accelerates_state_forces_no_extra_optimiser_step() -> None:
    """accelerate's gradient state is process-wide: a dataloader another trainer (TRL's) left
    registered at its end must not make our loop sync, and step, after every micro-batch."""
    from accelerate.state import GradientState

    state = GradientState()
    left = _AbandonedDataloader()
    state._add_dataloader(left)
    try:
        whole_minibatch = test_gradient_accumulation_gives_the_update_of_the_whole_minibatch
        whole_minibatch("dapo", "features", False)
    finally:
        state._remove_dataloader(left)
