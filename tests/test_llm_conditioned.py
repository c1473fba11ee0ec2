"""One preference-conditioned policy (``--conditioned``): the preference stream, its injection
into the prompt, each sample's own preference in the loss, training with PPO, GRPO and RLOO,
resuming, refusals, and the flags."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mogradient import get_aggregator
from mogradient_llm.cli import parse_sweep_args, parse_train_args
from mogradient_llm.config import MOConfig
from mogradient_llm.inputs.preferences import PreferenceSampler, TextPrefix, on_grid
from mogradient_llm.objectives.advantages import Advantages
from mogradient_llm.objectives.loss import MultiObjectiveLoss
from tests.llm_fixtures import make_trainer


def more_e(prompts, completions, **kwargs):
    """A deterministic reward: how many ``e`` the completion holds."""
    return [float(c.count("e")) for c in completions]


def shorter(prompts, completions, **kwargs):
    """A deterministic reward at odds with ``more_e``: minus the completion's length."""
    return [-float(len(c)) for c in completions]


def _linear_per_preference(p):
    return get_aggregator("linear", preference=p)


# ---------------------------------------------------------------------- the preference stream


def test_preferences_lie_on_the_grid_and_sum_to_one() -> None:
    """Largest-remainder rounding: every entry a multiple of 1/100, within 1/100 of the drawn
    value, each row summing to 1 exactly in units of 1/100."""
    rng = np.random.default_rng(0)
    drawn = rng.dirichlet([0.3, 0.3, 0.3], size=200)
    grid = on_grid(drawn)
    units = grid * 100
    np.testing.assert_allclose(units, np.round(units), atol=1e-9)
    assert (np.round(units).sum(1) == 100).all()
    assert np.abs(grid - drawn).max() < 0.01


def test_the_stream_is_seeded_per_rank_and_checkpointable() -> None:
    a, b = PreferenceSampler(2, 1.0, seed=3, rank=0), PreferenceSampler(2, 1.0, seed=3, rank=0)
    np.testing.assert_array_equal(a.draw(5), b.draw(5))
    other = PreferenceSampler(2, 1.0, seed=3, rank=1)
    assert not np.array_equal(PreferenceSampler(2, 1.0, seed=3).draw(5), other.draw(5))
    state = json.loads(json.dumps(a.state_dict()))  # what a checkpoint writes
    expected = a.draw(4)
    b.load_state_dict(state)
    np.testing.assert_array_equal(b.draw(4), expected)


@pytest.mark.parametrize(
    ("args", "message"),
    [((1, 1.0, 0), "at least 2 objectives"), ((2, 0.0, 0), "concentration must be positive")],
)
def test_bad_streams_are_refused(args, message) -> None:
    with pytest.raises(ValueError, match=message):
        PreferenceSampler(*args)


# ---------------------------------------------------------------------- the injection


def test_the_text_prefix_writes_the_preference_before_the_prompt() -> None:
    prefix = TextPrefix()
    texts = prefix.apply(["Great film", "Great film"], np.array([[0.8, 0.2], [0.25, 0.75]]))
    assert texts == ["<0.80|0.20> Great film", "<0.25|0.75> Great film"]
    with pytest.raises(ValueError, match="'{weights}'"):
        TextPrefix("no placeholder")


def test_the_injection_changes_the_policy_input_per_preference() -> None:
    trainer = make_trainer([more_e, shorter], aggregator="linear", conditioned=True)
    rows = trainer.sample_prompts()
    n = len(rows)
    first = trainer.generate(rows, np.tile([0.9, 0.1], (n, 1)))
    second = trainer.generate(rows, np.tile([0.1, 0.9], (n, 1)))
    plain = trainer.generate(rows)
    assert all(p.startswith("<0.90|0.10> ") for p in first.prompts)
    assert all(p.startswith("<0.10|0.90> ") for p in second.prompts)
    assert not any(p.startswith("<") for p in plain.prompts)
    # the token ids the policy reads differ between the preferences (same prompts)
    assert first.query_ids.shape == second.query_ids.shape
    assert not torch.equal(first.query_ids, second.query_ids)


# ---------------------------------------------------------------------- each sample's preference


def test_each_sample_is_weighed_by_its_own_preference_in_the_loss() -> None:
    """``linear`` per sample: ``A_b = Σᵢ p_b,i A_i,b`` (normalised weights, total 1)."""
    loss = MultiObjectiveLoss(
        get_aggregator("linear"),
        ["a", "b"],
        normalize_weights=True,
        per_preference=_linear_per_preference,
    )
    values = torch.tensor([[[1.0, 2.0], [3.0, -1.0]], [[-2.0, 4.0], [5.0, 0.5]]])  # [k, B, T]
    prefs = torch.tensor([[0.8, 0.2], [0.3, 0.7]])
    stats: dict[str, float] = {}
    scalarize = loss.scalarizer(-torch.ones(2), stats, 1.0, prefs)
    assert scalarize is not None
    expected = torch.tensor(
        [[0.8 * 1 + 0.2 * -2, 0.8 * 2 + 0.2 * 4], [0.3 * 3 + 0.7 * 5, 0.3 * -1 + 0.7 * 0.5]]
    )
    torch.testing.assert_close(scalarize(values)[0], expected)
    assert stats["agg/weight/a"] == pytest.approx((0.8 + 0.3) / 2)
    # the combine stage (engines that do not scalarise in the estimator) agrees
    mask = torch.ones(2, 2)
    combined, _ = loss.combine(Advantages.of(values, ["a", "b"]), mask, -torch.ones(2), None, prefs)
    torch.testing.assert_close(combined.values[0], expected)


def test_the_trainer_weighs_each_prompt_by_its_drawn_preference() -> None:
    """GRPO (sum then normalise, no scaling, no KL, no Noon clip), two prompts of two
    completions, preferences p₁ = (0.8, 0.2) and p₂ = (0.3, 0.7): with normalised weights at
    TRL's scale (Σ = k = 2), completion b of group g gets ``R_b − mean_g R`` with
    ``R_b = 2 Σᵢ p_g,i r_i,b`` — by hand, (−0.8, 0.8) and (−1.3, 1.3)."""
    trainer = make_trainer(
        [more_e, shorter],
        algorithm="grpo",
        aggregator="linear",
        conditioned=True,
        noon=False,
        scale_rewards="none",
        beta=0.0,
        num_generations=2,
        batch_size=4,
        mini_batch_size=2,
    )
    rows = trainer.sample_prompts()[:2]
    prefs = np.array([[0.8, 0.2], [0.3, 0.7]])
    rollout = trainer.generate(rows, prefs)
    scores = torch.tensor([[1.0, 3.0, 3.0, 5.0], [4.0, 0.0, 1.0, 2.0]])
    batch = trainer.prepare_batch(rollout, scores, prefs)
    per_sample = (batch.advantages[0] * batch.mask).sum(1) / batch.mask.sum(1)
    torch.testing.assert_close(per_sample, torch.tensor([-0.8, 0.8, -1.3, 1.3]))
    swapped = trainer.prepare_batch(rollout, scores, prefs[::-1].copy())
    per_sample = (swapped.advantages[0] * swapped.mask).sum(1) / swapped.mask.sum(1)
    # p₂ on group 1: R = 2(0.3·1 + 0.7·4) = 6.2, 2(0.3·3 + 0.7·0) = 1.8 → ±2.2;
    # p₁ on group 2: R = 2(0.8·3 + 0.2·1) = 5.2, 2(0.8·5 + 0.2·2) = 8.8 → ∓1.8
    torch.testing.assert_close(per_sample, torch.tensor([2.2, -2.2, -1.8, 1.8]))


def test_an_advantage_combiner_combines_each_preference_group_alone() -> None:
    """``softmin`` per preference: each group's samples are combined by the combiner built for
    its preference, exactly as that combiner combines the group on its own."""

    def factory(p):
        return get_aggregator("softmin", tau=0.5, preference=p)

    loss = MultiObjectiveLoss(get_aggregator("softmin"), ["a", "b"], per_preference=factory)
    torch.manual_seed(0)
    values = torch.randn(2, 4, 3)
    mask = torch.ones(4, 3)
    prefs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.2, 0.8], [0.2, 0.8]])
    combined, _ = loss.combine(Advantages.of(values, ["a", "b"]), mask, None, None, prefs)
    for rows, p in (([0, 1], [0.9, 0.1]), ([2, 3], [0.2, 0.8])):
        s, _, _ = factory(p).combine(values[:, rows], mask[rows])
        torch.testing.assert_close(combined.values[0, rows], s)


# ---------------------------------------------------------------------- training


@pytest.mark.parametrize("algorithm", ["ppo", "grpo", "rloo"])
def test_each_algorithm_trains_two_conditioned_steps(algorithm: str) -> None:
    """Two steps move the policy; the logged weight of the first objective is the mean drawn
    preference on it, replayed from the same seeded stream (× TRL's scale, k = 2, for GRPO and
    RLOO)."""
    trainer = make_trainer(
        [more_e, shorter], algorithm=algorithm, aggregator="linear", conditioned=True
    )
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    replay = PreferenceSampler(2, 1.0, seed=trainer.config.seed)
    for _ in range(2):
        stats = trainer.step()
        drawn = replay.draw(trainer.prompts_per_step)
    assert stats["train/skipped"] == 0.0
    scale = 1.0 if algorithm == "ppo" else 2.0
    assert stats["agg/weight/more_e"] == pytest.approx(scale * drawn[:, 0].mean())
    after = list(trainer.policy.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


def test_resume_continues_the_same_preference_stream(tmp_path: Path) -> None:
    trainer = make_trainer([more_e, shorter], aggregator="linear", conditioned=True)
    trainer.step()
    trainer.save(tmp_path / "checkpoint-1")
    assert (tmp_path / "checkpoint-1" / "resume" / "preference_sampler_0.json").is_file()
    expected = trainer.draw_preferences(4)
    resumed = make_trainer([more_e, shorter], aggregator="linear", conditioned=True)
    fresh = resumed.draw_preferences(4)  # a fresh trainer starts the stream from the start
    assert not np.array_equal(fresh, expected)
    resumed.load_checkpoint(tmp_path / "checkpoint-1")
    np.testing.assert_array_equal(resumed.draw_preferences(4), expected)
    plain = make_trainer([more_e, shorter], aggregator="linear")
    plain.save(tmp_path / "plain" / "checkpoint-0")
    with pytest.raises(ValueError, match="without --conditioned"):
        resumed.load_checkpoint(tmp_path / "plain" / "checkpoint-0")


# ---------------------------------------------------------------------- refusals and flags


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"aggregator": "upgrad"},
            r"one Gramian \(one backward\) per prompt.*without --conditioned",
        ),
        ({"aggregator": "epo"}, r"one Gramian .*linear"),
        ({"aggregator": "pama"}, "takes no preference"),
        ({"aggregator": "linear", "constraints": ["more_e>=1"]}, "constraints and --conditioned"),
    ],
)
def test_methods_that_cannot_weigh_per_sample_are_refused(overrides, message) -> None:
    with pytest.raises(ValueError, match=message):
        make_trainer([more_e, shorter], conditioned=True, **overrides)


def test_a_fixed_preference_is_refused_with_conditioned() -> None:
    with pytest.raises(ValueError, match="draws each prompt's preference itself"):
        MOConfig(conditioned=True, aggregator="linear", reward_weights=[0.5, 0.5])
    with pytest.raises(ValueError, match="preference_concentration must be positive"):
        MOConfig(preference_concentration=0.0)


def test_the_conditioned_flags_parse(tmp_path: Path) -> None:
    base = ["--reward", "length", "--reward", "vader", "--output-dir", str(tmp_path)]
    _, config = parse_train_args([*base, "--conditioned", "--preference-concentration", "0.5"])
    assert config.conditioned and config.preference_concentration == 0.5
    _, config = parse_train_args(base)
    assert not config.conditioned
    _, config, options = parse_sweep_args(
        [*base, "--conditioned", "--aggregator", "linear", "--preferences", "3"]
    )
    assert config.conditioned
    assert options.preferences == ((0.0, 1.0), (0.5, 0.5), (1.0, 0.0))


PER_SAMPLE_METHODS = ["linear", "tchebycheff", "stch", "pbi", "cosmos", "softmin"]


@pytest.mark.parametrize("method", PER_SAMPLE_METHODS)
def test_one_shared_preference_is_the_plain_loss_with_that_preference(method: str) -> None:
    """For every loss- and advantage-level preference-aware method: a conditioned batch whose
    samples all read ``p`` is combined exactly as the plain loss built with ``preference=p``."""
    import warnings

    p = [0.7, 0.3]

    def factory(preference):
        return get_aggregator(method, preference=preference)

    conditioned = MultiObjectiveLoss(get_aggregator(method), ["a", "b"], per_preference=factory)
    plain = MultiObjectiveLoss(factory(p), ["a", "b"])
    torch.manual_seed(1)
    values = torch.randn(2, 4, 3)
    mask = torch.ones(4, 3)
    losses = torch.tensor([0.4, 1.3])  # positive: every method's ideal point lies below
    prefs = torch.tensor([p] * 4)
    advantages = Advantages.of(values, ["a", "b"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # methods that warn about the losses warn alike
        expected, _ = plain.combine(advantages, mask, losses, None)
        got, _ = conditioned.combine(advantages, mask, losses, None, prefs)
    torch.testing.assert_close(got.values, expected.values)
