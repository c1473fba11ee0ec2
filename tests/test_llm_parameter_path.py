"""The RL loop's ``parameter_gramian="auto"`` default: a two-step GRPO run at the parameters
level, and which path the rule of :mod:`mogradient.gramian.path` makes it take."""

from __future__ import annotations

import pytest
import torch

from mogradient import GramianAccumulator
from mogradient.gramian import path as path_rule
from mogradient.gramian.recorder import GramianRecorder
from mogradient_llm.estimators import MOGRPOConfig
from tests.llm_fixtures import make_trainer
from tests.test_llm_grpo import _varied_rewards


def test_the_default_is_auto_and_the_old_values_stay_overrides() -> None:
    assert MOGRPOConfig().parameter_gramian == "auto"
    for value in ("layers", "jacobian"):
        assert MOGRPOConfig(parameter_gramian=value).parameter_gramian == value
    with pytest.raises(ValueError, match=r"parameter_gramian must be one of \('auto'"):
        MOGRPOConfig(parameter_gramian="loop")  # type: ignore[arg-type]


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    gramian, add = GramianRecorder.gramian, GramianAccumulator.add
    add_jacobian = GramianAccumulator.add_jacobian  # the Jacobian factorised through the head

    def spy_gramian(rec, losses):  # noqa: ANN001, ANN202
        calls.append("layers")
        return gramian(rec, losses)

    def spy_add(acc, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append("jacobian")
        return add(acc, *args, **kwargs)

    def spy_add_jacobian(acc, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append("jacobian")
        return add_jacobian(acc, *args, **kwargs)

    monkeypatch.setattr(GramianRecorder, "gramian", spy_gramian)
    monkeypatch.setattr(GramianAccumulator, "add", spy_add)
    monkeypatch.setattr(GramianAccumulator, "add_jacobian", spy_add_jacobian)
    return calls


@pytest.mark.parametrize(("budget", "path"), [(0, "layers"), (10**12, "jacobian")])
def test_two_grpo_steps_at_the_parameters_level_take_the_rules_path(
    monkeypatch, budget, path
) -> None:
    """With the default ``"auto"``: a budget the k×d Jacobian exceeds takes the layer path,
    one it fits takes the Jacobian; both train for two steps."""
    monkeypatch.setattr(path_rule, "default_memory_budget", lambda device: budget)
    calls = _spy(monkeypatch)
    trainer = make_trainer(
        _varied_rewards(),
        algorithm="grpo",
        aggregator="upgrad",
        gramian_level="parameters",
        beta=0.0,
    )
    assert trainer.config.parameter_gramian == "auto"
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    for _ in range(2):
        stats = trainer.step()
        assert stats["agg/weight_sum"] > 0
    after = list(trainer.policy.parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after))
    assert calls and set(calls) == {path}


def test_an_override_ignores_the_budget(monkeypatch) -> None:
    monkeypatch.setattr(path_rule, "default_memory_budget", lambda device: 0)
    calls = _spy(monkeypatch)
    trainer = make_trainer(
        _varied_rewards(),
        algorithm="grpo",
        aggregator="mgda",
        gramian_level="parameters",
        parameter_gramian="jacobian",
        beta=0.0,
    )
    trainer.step()
    assert calls and set(calls) == {"jacobian"}
