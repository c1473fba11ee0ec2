"""Constraint objectives in the TRL adapter: ``constraints=["vowel_reward>=τ"]`` as the command
line writes them, one Lagrange multiplier per constraint moved by projected dual ascent after each
optimizer step on the batch's measured mean score (TRL's own ``rewards/<name>/mean``, gathered
over the processes), logged as ``constraint/<name>/…``, saved in TRL's checkpoints and restored
by ``resume_from_checkpoint``. The multipliers' arithmetic is checked by hand: ``max(0, λ +
η(τ − J))`` in float64 from TRL's logged J, so the tolerance is float64 rounding of three
operations on numbers below 10⁴ (1e-9 is wide)."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from tests.trl_adapter_fixtures import train, trainer, trl_args

TAU, ETA = 100.0, 0.1


def _adapter() -> Any:
    from mogradient_llm.integrations import trl as adapter

    return adapter


def _constrained(algorithm: str = "grpo", **overrides: Any) -> Any:
    a = _adapter()
    prefix = "MO" + algorithm.upper()
    args = trl_args(
        getattr(a, f"{prefix}Config"),
        aggregator="linear",
        constraints=[f"vowel_reward>={TAU:g}"],
        constraint_lr=ETA,
        **overrides,
    )
    return trainer(getattr(a, f"{prefix}Trainer"), args)


def test_constraints_parse_as_the_command_line_writes_them() -> None:
    """The config takes the CLI's strings (and TRL's parser its ``--constraint`` flag); the
    trainer's loss holds one multiplier per constraint, starting at 0; a malformed constraint
    is refused by the config, before any model loads."""
    from trl import TrlParser

    from mogradient_llm.objectives.constraints import Constraint

    a = _adapter()
    (parsed,) = TrlParser(a.MOGRPOConfig).parse_args_into_dataclasses(
        [
            "--output_dir",
            "unused",
            "--use_cpu",
            "--bf16",
            "false",
            "--constraint",
            "vowel_reward>=2.5",
            "length_reward<=3",
        ]
    )
    assert parsed.constraints == ["vowel_reward>=2.5", "length_reward<=3"]
    t = trainer(a.MOGRPOTrainer, trl_args(a.MOGRPOConfig, constraints=["vowel_reward>=2.5"]))
    lagrangian = t.mo_objective.constraints
    assert lagrangian.constraints == [Constraint("vowel_reward", ">=", 2.5)]
    assert lagrangian.multipliers == [0.0] and lagrangian.primary == ["length_reward"]
    with pytest.raises(ValueError, match="OBJECTIVE>=VALUE"):
        trl_args(a.MOGRPOConfig, constraints=["vowel_reward=>2.5"])
    with pytest.raises(ValueError, match="constraint_lr must be >= 0"):
        trl_args(a.MOGRPOConfig, constraints=["vowel_reward>=2.5"], constraint_lr=-1.0)


def test_an_unknown_objective_is_refused_by_name() -> None:
    a = _adapter()
    args = trl_args(a.MOGRPOConfig, constraints=["sentiment>=0.8"])
    with pytest.raises(ValueError, match=r"\['sentiment'\].*'length_reward', 'vowel_reward'"):
        trainer(a.MOGRPOTrainer, args)


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_a_violated_constraints_multiplier_after_one_step(algorithm: str) -> None:
    """τ = 100 vowels is out of reach: after one optimizer step λ = η(τ − J), J the step's mean
    vowel score as TRL logs it (RLOO: the raw reward, its KL penalty is not the objective's);
    the log holds it with the value and ``satisfied = 0``."""
    t = train(_constrained(algorithm, max_steps=1))
    logged = t.state.log_history[0]
    measured = logged["rewards/vowel_reward/mean"]
    expected = ETA * (TAU - measured)
    assert expected > 0
    assert t.mo_objective.constraints.multipliers[0] == pytest.approx(expected, abs=1e-9)
    assert logged["constraint/vowel_reward/multiplier"] == pytest.approx(expected, abs=1e-9)
    assert logged["constraint/vowel_reward/value"] == pytest.approx(measured, abs=1e-9)
    assert logged["constraint/vowel_reward/satisfied"] == 0.0


def test_a_satisfied_constraint_keeps_its_multiplier_at_zero() -> None:
    """``vowel_reward <= 100`` holds: the projection keeps λ at 0."""
    a = _adapter()
    args = trl_args(
        a.MOGRPOConfig, constraints=["vowel_reward<=100"], constraint_lr=ETA, max_steps=1
    )
    t = train(trainer(a.MOGRPOTrainer, args))
    logged = t.state.log_history[0]
    assert logged["constraint/vowel_reward/multiplier"] == 0.0
    assert logged["constraint/vowel_reward/satisfied"] == 1.0


def test_resume_from_checkpoint_restores_the_multipliers() -> None:
    """Two steps with a checkpoint after each; a new trainer resumed from the first checkpoint
    starts from its λ₁ (saved in ``mogradient_state.json``), so after its one step λ = λ₁ +
    η(τ − J₂) with its own J₂ — not η(τ − J₂), which a restart from 0 would give."""
    first = train(_constrained(max_steps=2, save_strategy="steps", save_steps=1))
    checkpoint = os.path.join(first.args.output_dir, "checkpoint-1")
    with open(os.path.join(checkpoint, "mogradient_state.json")) as f:
        saved = json.load(f)["constraints"]["multipliers"][0]
    lambda_1 = first.state.log_history[0]["constraint/vowel_reward/multiplier"]
    assert saved == pytest.approx(lambda_1, abs=1e-12) and lambda_1 > 0

    resumed = _constrained(max_steps=2, output_dir=first.args.output_dir)
    with_warnings_off(resumed, checkpoint)
    logged = [h for h in resumed.state.log_history if "constraint/vowel_reward/value" in h][-1]
    measured = logged["rewards/vowel_reward/mean"]
    expected = lambda_1 + ETA * (TAU - measured)
    assert resumed.mo_objective.constraints.multipliers[0] == pytest.approx(expected, abs=1e-9)
    assert abs(expected - ETA * (TAU - measured)) > 1.0  # a restart from 0 would fail


def with_warnings_off(t: Any, checkpoint: str) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        t.train(resume_from_checkpoint=checkpoint)


def test_a_gramian_weighting_with_one_unconstrained_objective() -> None:
    """UPGrad with one unconstrained objective: the constraint joins at the advantage level
    (one combined advantage; no Gramian), and it trains."""
    a = _adapter()
    args = trl_args(
        a.MOGRPOConfig, aggregator="upgrad", constraints=["vowel_reward>=100"], max_steps=1
    )
    t = train(trainer(a.MOGRPOTrainer, args))
    assert not t.mo_objective.gradient_level
    assert t.state.log_history[0]["constraint/vowel_reward/multiplier"] > 0


def test_a_checkpoint_with_other_constraints_is_refused(tmp_path: Any) -> None:
    """The multipliers saved for one constraint do not load into a config with two."""
    from mogradient import get_aggregator
    from mogradient_llm.integrations.trl.constraints import load_state, save_state
    from mogradient_llm.objectives.constraints import Lagrangian
    from mogradient_llm.objectives.loss import MultiObjectiveLoss

    names = ["a", "b", "c"]

    def loss(*constraints: str) -> MultiObjectiveLoss:
        lagrangian = Lagrangian(constraints, names, lr=ETA)
        return MultiObjectiveLoss(get_aggregator("linear"), names, constraints=lagrangian)

    one = loss("b>=1")
    one.constraints.multipliers = [0.5]
    save_state(one, str(tmp_path))
    restored = loss("b>=1")
    load_state(restored, str(tmp_path))
    assert restored.constraints.multipliers == [0.5]
    with pytest.raises(ValueError, match="1 constraint multipliers and the config has 2"):
        load_state(loss("b>=1", "c<=2"), str(tmp_path))
