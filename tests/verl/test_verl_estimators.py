"""The ``"mogradient"`` verl advantage estimator against verl's own GRPO and GDPO estimators on
the same tensors, and against the formulas (PAMA, Tchebycheff, STCH) on hand-made groups.

Skipped without verl; ``.ci/run`` runs this directory in a light environment that has it
(``docs/verl.md``). Tolerances: verl computes in float32 (group mean and std over ≤ 8 values,
whitening over ≤ 100 tokens); our group statistics are float64, cast to float32. Each result
is O(1) (|A| ≤ √7 in a group of 8, a whitened value ≤ 10), so the difference is a few float32
roundings of O(1) values, ≤ 100 · 2⁻²³ ≈ 1.2e-5 in the worst case: atol 2e-5. Whitening is
scale-invariant up to verl's 1e-8 in rsqrt(var + 1e-8), a relative 1e-8 / var ≤ 1e-6 here.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from typing import Any

import numpy as np
import pytest
import torch

if os.environ.get("MOGRADIENT_REQUIRE_VERL"):  # the verl step of .ci/run: fail, never skip
    core_algos = importlib.import_module("verl.trainer.ppo.core_algos")
else:
    core_algos = pytest.importorskip("verl.trainer.ppo.core_algos")

from omegaconf import OmegaConf  # noqa: E402  (verl's config library, there with verl)

from mogradient_llm.integrations import verl as mv  # noqa: E402
from mogradient_llm.integrations import verl_trainers as vt  # noqa: E402

ATOL = 2e-5


def make_batch(
    group_sizes: list[int], t: int = 6, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """Random response masks (each response 1..t tokens, left-aligned as verl's), uids in a
    shuffled order, and each response's last valid token (where verl's rewards sit)."""
    rng = np.random.default_rng(seed)
    uids = np.concatenate([[f"uid{g}"] * n for g, n in enumerate(group_sizes)])
    uids = uids[rng.permutation(len(uids))].astype(object)
    lengths = rng.integers(1, t + 1, size=len(uids))
    mask = torch.tensor(np.arange(t)[None, :] < lengths[:, None], dtype=torch.float32)
    return torch.zeros(len(uids), t), mask, uids, lengths - 1


def token_rewards(scores: np.ndarray, mask: torch.Tensor, last: np.ndarray) -> torch.Tensor:
    """verl's token-level rewards: each score on its response's last valid token."""
    out = torch.zeros_like(mask)
    out[torch.arange(len(scores)), torch.as_tensor(last)] = torch.tensor(scores).float()
    return out


def estimate(config: dict[str, Any] | None, **kwargs: Any) -> torch.Tensor:
    fn = core_algos.get_adv_estimator_fn(mv.NAME)
    advantages, returns = fn(config=None if config is None else OmegaConf.create(config), **kwargs)
    assert torch.equal(advantages, returns)
    return advantages


def test_importing_registers_the_estimator_in_verls_registry() -> None:
    assert core_algos.get_adv_estimator_fn("mogradient") is mv.compute_mogradient_advantage
    mv.register()  # idempotent
    assert core_algos.ADV_ESTIMATOR_REGISTRY["mogradient"] is mv.compute_mogradient_advantage


@pytest.mark.parametrize("norm", [True, False])
@pytest.mark.parametrize("seed", range(3))
def test_linear_with_one_objective_is_verls_grpo(norm: bool, seed: int) -> None:
    """No reward keys: the token-level reward is the one objective, the combine is the
    identity, so the advantage is verl's GRPO (groups of 1 to 8 in any order, a group of
    identical rewards, std normalisation on and off)."""
    _, mask, uids, last = make_batch([4, 8, 1, 3, 2, 5], seed=seed)
    scores = np.random.default_rng(seed).normal(size=len(uids))
    scores[uids == "uid3"] = 1.0  # a group whose std is 0
    rewards = token_rewards(scores, mask, last)
    expected, _ = core_algos.compute_grpo_outcome_advantage(
        rewards, mask, uids, norm_adv_by_std_in_grpo=norm
    )
    got = estimate(
        {"norm_adv_by_std_in_grpo": norm},
        token_level_rewards=rewards,
        response_mask=mask,
        index=uids,
    )
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    assert got.dtype == expected.dtype


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("weights", [[1.0, 1.0, 1.0], [0.2, 1.0, 3.0]])
def test_gdpo_style_is_verls_gdpo(seed: int, weights: list[float]) -> None:
    """Per-objective group normalisation, the weighted sum (``linear`` with the weights as its
    preference: the same up to the scale Σw, which the whitening removes), then verl's
    token-weighted whitening: verl's GDPO given the same keys and weights."""
    _, mask, uids, last = make_batch([4, 4, 6, 2], seed=seed)
    rng = np.random.default_rng(100 + seed)
    keys = ["accuracy", "format", "length"]
    extra = {
        "accuracy": rng.integers(0, 2, len(uids)).astype(float),
        "format": rng.uniform(size=len(uids)),
        "length": -rng.uniform(0, 5, size=len(uids)),
    }
    rewards = token_rewards(sum(extra.values()), mask, last)
    prompts = torch.zeros(len(uids), 3, dtype=torch.long)
    batch = {"prompts": prompts, "attention_mask": torch.cat([prompts + 1, mask.long()], 1)}
    algorithm = {
        "gdpo_reward_keys": keys,
        "gdpo_reward_weights": weights,
        "mogradient": {"reward_keys": keys, "preference": weights, "whiten": True},
    }
    expected, _ = core_algos.compute_gdpo_outcome_advantage(
        rewards,
        mask,
        uids,
        config=OmegaConf.create(algorithm),
        non_tensor_batch=extra,
        batch=batch,
    )
    got = estimate(
        algorithm,
        token_level_rewards=rewards,
        response_mask=mask,
        index=uids,
        non_tensor_batch=extra,
    )
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def group_formula(scores: np.ndarray, uids: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """verl's GRPO advantage written out with numpy (groups of ≥ 2 here)."""
    out = np.empty_like(scores)
    for uid in set(uids):
        members = uids == uid
        group = scores[members]
        out[members] = (group - group.mean()) / (group.std(ddof=1) + eps)
    return out


HAND = {
    # two groups of four; the two objectives agree in sign on some responses only
    "helpful": np.array([0.0, 1.0, 2.0, 5.0, 1.0, 1.0, 0.0, 2.0]),
    "short": np.array([3.0, 1.0, 2.0, 4.0, 0.0, 2.0, 2.0, 0.0]),
}
HAND_UIDS = np.array(["a", "a", "a", "a", "b", "b", "b", "b"], dtype=object)


def pama_formula(a: np.ndarray) -> np.ndarray:
    """PAMA's Theorem 1 per response: 0 projected onto [min, max] of its advantages."""
    lo, hi = a.min(0), a.max(0)
    return np.clip(0.0, lo, hi)


@pytest.mark.parametrize("noon", [False, True])
def test_pama_on_hand_made_groups_is_the_formula(noon: bool) -> None:
    """PAMA (with and without the Noon clip max(A, 0) first) on two objectives' group
    advantages: 0 where they disagree in sign, else the one nearest 0, on every token."""
    _, mask, _, last = make_batch([8], seed=0)
    a = np.stack([group_formula(HAND[k], HAND_UIDS) for k in HAND])
    expected = pama_formula(np.maximum(a, 0.0) if noon else a)
    assert (expected != 0).any() and (expected == 0).any()  # the example has both cases
    if noon:
        assert (expected >= 0).all()
    else:
        assert (expected < 0).any()
    got = estimate(
        {"mogradient": {"reward_keys": list(HAND), "aggregator": "pama", "noon": noon}},
        token_level_rewards=token_rewards(HAND["helpful"], mask, last),
        response_mask=mask,
        index=HAND_UIDS,
        non_tensor_batch=HAND,
    )
    torch.testing.assert_close(
        got, torch.tensor(expected)[:, None].float() * mask, atol=ATOL, rtol=0
    )


def test_tchebycheff_and_stch_weigh_the_group_advantages_by_the_mean_rewards() -> None:
    """Loss weightings decide from each objective's loss −mean(reward) and weigh the normalised
    advantages: Tchebycheff puts its (uniform) preference ½ on the objective of the lowest mean
    reward, STCH pᵢ·softmax(−p ⊙ mean / μ)ᵢ on each."""
    _, mask, _, last = make_batch([8], seed=1)
    a = np.stack([group_formula(HAND[k], HAND_UIDS) for k in HAND])
    means = np.array([HAND[k].mean() for k in HAND])  # helpful 1.5, short 1.75
    common = {
        "token_level_rewards": token_rewards(HAND["helpful"], mask, last),
        "response_mask": mask,
        "index": HAND_UIDS,
        "non_tensor_batch": HAND,
    }
    tcheby = estimate(
        {"mogradient": {"reward_keys": list(HAND), "aggregator": "tchebycheff"}}, **common
    )
    torch.testing.assert_close(
        tcheby, torch.tensor(0.5 * a[0])[:, None].float() * mask, atol=ATOL, rtol=0
    )
    mu = 0.3
    logits = 0.5 * -means / mu
    w = 0.5 * np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    stch = estimate(
        {
            "mogradient": {
                "reward_keys": list(HAND),
                "aggregator": "stch",
                "aggregator_kwargs": {"mu": mu},
            }
        },
        **common,
    )
    torch.testing.assert_close(stch, torch.tensor(w @ a)[:, None].float() * mask, atol=ATOL, rtol=0)


def test_unscored_responses_take_no_part_in_their_objectives_groups() -> None:
    """A ``None`` reward (verl fills missing reward_extra_info keys with None) is left out of its
    objective's group statistics, and PAMA combines over the objectives that scored."""
    _, mask, _, last = make_batch([8], seed=2)
    helpful = [None, 1.0, 2.0, 5.0, 1.0, 1.0, 0.0, 2.0]
    rewards = {"helpful": helpful, "short": HAND["short"]}
    got = estimate(
        {"mogradient": {"reward_keys": ["helpful", "short"], "aggregator": "pama"}},
        token_level_rewards=token_rewards(HAND["short"], mask, last),
        response_mask=mask,
        index=HAND_UIDS,
        non_tensor_batch=rewards,
    )
    a_helpful = np.zeros(8)
    a_helpful[1:4] = group_formula(np.array(helpful[1:4], dtype=float), HAND_UIDS[1:4])
    a_helpful[4:] = group_formula(HAND["helpful"][4:], HAND_UIDS[4:])
    a_short = group_formula(HAND["short"], HAND_UIDS)
    expected = pama_formula(np.stack([a_helpful, a_short]))
    expected[0] = a_short[0]  # only "short" scored response 0
    torch.testing.assert_close(
        got, torch.tensor(expected)[:, None].float() * mask, atol=ATOL, rtol=0
    )


def test_the_per_objective_rewards_come_from_the_context_without_non_tensor_batch() -> None:
    """What the trainer glue does: rewards handed through ``objective_rewards``, and the
    aggregator's weights back in the context's stats."""
    _, mask, _, last = make_batch([8], seed=3)
    config = {"mogradient": {"reward_keys": list(HAND), "aggregator": "pama"}}
    common = {
        "token_level_rewards": token_rewards(HAND["helpful"], mask, last),
        "response_mask": mask,
        "index": HAND_UIDS,
    }
    with mv.objective_rewards(HAND) as context:
        via_context = estimate(config, **common)
    torch.testing.assert_close(via_context, estimate(config, non_tensor_batch=HAND, **common))
    assert set(context.stats) >= {"agg/weight/helpful", "agg/weight/short"}


def test_bad_settings_say_what_to_fix() -> None:
    _, mask, uids, last = make_batch([4, 4])
    common = {"token_level_rewards": mask.clone(), "response_mask": mask, "index": uids}
    keys = {"reward_keys": list(HAND)}
    with pytest.raises(ValueError, match="trainer.v1.trainer_mode=mogradient_sync"):
        estimate({"mogradient": keys}, **common)
    with pytest.raises(KeyError, match="make compute_score return a dict with 'short'"):
        estimate({"mogradient": keys}, non_tensor_batch={"helpful": [1.0] * 8}, **common)
    with pytest.raises(ValueError, match="never sees"):
        estimate({"mogradient": {**keys, "aggregator": "upgrad"}}, non_tensor_batch=HAND, **common)
    with pytest.raises(ValueError, match="never sees"):  # a Jacobian weighting too
        estimate({"mogradient": {**keys, "aggregator": "moco"}}, non_tensor_batch=HAND, **common)
    with pytest.raises(
        ValueError, match=r"unknown algorithm.mogradient setting\(s\) \['weights'\]"
    ):
        estimate({"mogradient": {"weights": [1, 2]}}, **common)
    with pytest.raises(TypeError, match="noon must be true or false"):
        estimate({"mogradient": {"noon": "false"}}, **common)
    with pytest.raises(ValueError, match="non-empty list"):
        estimate({"mogradient": {"reward_keys": "helpful"}}, **common)
    with pytest.raises(ValueError, match="7 values for a batch of 8"):
        estimate(
            {"mogradient": keys},
            non_tensor_batch={"helpful": [1.0] * 7, "short": [1.0] * 8},
            **common,
        )


def test_rewards_from_extra_fields_reads_each_responses_reward_extra_info() -> None:
    """The v1 TransferQueue's ``extra_fields``: dicts, or tensordict's NonTensorData holding
    one; a response without a key gets None."""
    wrapped = types.SimpleNamespace(data={"reward_extra_info": {"a": 3.0}})
    rows = [{"reward_extra_info": {"a": 1.0, "b": 2.0}}, wrapped, {"other": 1}]
    assert vt.rewards_from_extra_fields(rows) == {"a": [1.0, 3.0, None], "b": [2.0, None, None]}


class _FakeV1Trainer:
    """Stands for verl's v1 ``_compute_advantage``: calls the estimator the way its
    ``compute_advantage`` does for a registered estimator (no rewards beyond the tensors)."""

    def __init__(self, algorithm: dict[str, Any], tensors: dict[str, Any]):
        self.config = types.SimpleNamespace(algorithm=OmegaConf.create(algorithm))
        self.tensors = tensors

    def _compute_advantage(self, batch: Any, metrics: dict[str, Any]) -> torch.Tensor:
        fn = core_algos.get_adv_estimator_fn(self.config.algorithm.adv_estimator)
        return fn(config=self.config.algorithm, **self.tensors)[0]


class _Glued(vt.RewardExtraInfoMixin, _FakeV1Trainer):
    pass


def test_the_v1_glue_hands_the_transferqueues_reward_extra_info_to_the_estimator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The mixin fetches ``extra_fields`` for the batch's keys, in their order, and the
    estimator sees each response's rewards; the aggregator's stats land in verl's metrics."""
    _, mask, _, last = make_batch([8], seed=4)
    keys = [f"k{i}" for i in range(8)]
    extra = [{"reward_extra_info": {k: float(HAND[k][i]) for k in HAND}} for i in range(8)]
    calls = []

    def kv_batch_get(keys: list[str], partition_id: str, select_fields: list[str]) -> dict:
        calls.append((keys, partition_id, select_fields))
        return {"extra_fields": np.array(extra, dtype=object)}

    monkeypatch.setitem(
        sys.modules, "transfer_queue", types.SimpleNamespace(kv_batch_get=kv_batch_get)
    )
    algorithm = {
        "adv_estimator": "mogradient",
        "mogradient": {"reward_keys": list(HAND), "aggregator": "pama"},
    }
    tensors = {
        "token_level_rewards": token_rewards(HAND["helpful"], mask, last),
        "response_mask": mask,
        "index": HAND_UIDS,
    }
    metrics: dict[str, Any] = {}
    got = _Glued(algorithm, tensors)._compute_advantage(
        types.SimpleNamespace(keys=keys, partition_id="train"), metrics
    )
    assert calls == [(keys, "train", ["extra_fields"])]
    expected = estimate(algorithm, non_tensor_batch=HAND, **tensors)
    torch.testing.assert_close(got, expected)
    assert "mogradient/agg/weight/helpful" in metrics
    with pytest.raises(ValueError, match="mogradient_sync"):  # verl's own trainer passes none
        _FakeV1Trainer(algorithm, tensors)._compute_advantage(None, {})
    other = {**algorithm, "adv_estimator": "grpo"}  # other estimators: no fetch, verl's path
    calls.clear()
    _Glued(other, {**tensors, "index": HAND_UIDS})._compute_advantage(None, {})
    assert calls == []


def test_the_glue_refuses_a_verl_it_was_not_written_against() -> None:
    vt.check_verl_version("0.9.1")
    with pytest.raises(RuntimeError, match="install verl==0.9.1"):
        vt.check_verl_version("0.10.0")


def _full_verl(module: str) -> Any:
    """A verl trainer module: they import verl's whole dependency tree (and the v1 trainer
    TransferQueue), which the light environment leaves out; run these where verl is fully
    installed (docs/verl.md)."""
    return pytest.importorskip(module, reason=f"{module} needs verl's full dependencies")


def test_the_legacy_glue_hands_non_tensor_batch_to_the_estimator_and_is_undone() -> None:
    """verl's own ``compute_advantage`` (legacy trainer) passes no rewards to a registered
    estimator but ``gdpo``; after ``patch_legacy_trainer`` the ``"mogradient"`` estimator gets
    ``non_tensor_batch``, other estimators are untouched, and ``undo`` restores verl's."""
    ray_trainer = _full_verl("verl.trainer.ppo.ray_trainer")
    from verl.protocol import DataProto

    _, mask, _, last = make_batch([8], seed=5)
    algorithm = OmegaConf.create(
        {
            "adv_estimator": "mogradient",
            "mogradient": {"reward_keys": list(HAND), "aggregator": "pama"},
        }
    )
    tensors = {
        "token_level_rewards": token_rewards(HAND["short"], mask, last),
        "response_mask": mask,
    }
    non_tensors = {"uid": HAND_UIDS, **{k: np.asarray(v, dtype=object) for k, v in HAND.items()}}

    def run(estimator: str) -> torch.Tensor:
        data = DataProto.from_dict(
            tensors={k: v.clone() for k, v in tensors.items()}, non_tensors=non_tensors
        )
        out = ray_trainer.compute_advantage(data, adv_estimator=estimator, config=algorithm)
        return out.batch["advantages"]

    verls = ray_trainer.compute_advantage
    with pytest.raises(ValueError, match="patch_legacy_trainer"):
        run("mogradient")
    undo = vt.patch_legacy_trainer()
    try:
        assert vt.patch_legacy_trainer() is not None and ray_trainer.compute_advantage is not verls
        expected = estimate(dict(algorithm), index=HAND_UIDS, non_tensor_batch=HAND, **tensors)
        torch.testing.assert_close(run("mogradient"), expected)
        grpo, _ = core_algos.compute_grpo_outcome_advantage(
            tensors["token_level_rewards"], mask, HAND_UIDS
        )
        torch.testing.assert_close(run("grpo"), grpo)
    finally:
        undo()
    assert ray_trainer.compute_advantage is verls


def test_register_trainers_adds_a_mogradient_trainer_per_v1_mode() -> None:
    v1 = _full_verl("verl.trainer.ppo.v1")
    trainers = vt.register_trainers()
    assert trainers == vt.register_trainers()  # idempotent
    for mode in vt.V1_MODES:
        cls = v1.get_trainer_cls(f"mogradient_{mode}")
        assert trainers[f"mogradient_{mode}"] is cls
        assert issubclass(cls, v1.get_trainer_cls(mode))
        assert cls._compute_advantage is vt.RewardExtraInfoMixin._compute_advantage


def test_the_docs_worked_configuration_composes_and_selects_the_estimator() -> None:
    """docs/verl.md's command line, composed with verl's own Hydra config: the settings reach
    the estimator, the setup hook names a function that registers the trainer mode it selects.
    (It does not train: that needs GPUs.)"""
    _full_verl("verl.trainer.ppo.v1")
    hydra = _full_verl("hydra")
    import shlex
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "verl.md").read_text()
    block = next(b for b in text.split("```bash")[1:] if "verl.trainer.main_ppo" in b)
    words = shlex.split(block.split("```")[0].replace("\\\n", " "))
    overrides = words[words.index("verl.trainer.main_ppo") + 1 :]
    with hydra.initialize_config_module("verl.trainer.config", version_base=None):
        config = hydra.compose("ppo_trainer", overrides=overrides)
    assert config.algorithm.adv_estimator == mv.NAME
    settings = mv.settings_from(config.algorithm)
    assert (settings.reward_keys, settings.aggregator, settings.noon) == (
        ("accuracy", "format"),
        "pama",
        True,
    )
    hook = config.ray_kwargs.ray_init.runtime_env.worker_process_setup_hook
    module, _, name = hook.rpartition(".")
    setup = getattr(importlib.import_module(module), name)
    setup()
    from verl.trainer.ppo.v1 import get_trainer_cls

    assert issubclass(get_trainer_cls(config.trainer.v1.trainer_mode), vt.RewardExtraInfoMixin)
