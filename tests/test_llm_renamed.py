"""PPO's finished names: ``num_ppo_epochs`` and ``kl_controller: fixed | adaptive`` with
``target_kl`` and ``kl_horizon``. The old names (TRL's older PPOConfig: ``ppo_epochs``,
``adap_kl_ctrl``, ``target``, ``horizon``) are refused wherever they can be given, naming the
new one: no silent aliases."""

from __future__ import annotations

import pytest

from mogradient_llm.cli import main, parse_train_args
from mogradient_llm.estimators import MOPPOConfig
from mogradient_llm.estimators.ppo import PPOEstimator

RUN = ["--reward", "length", "--output-dir", "out"]
OLD = {
    "ppo_epochs": ("num_ppo_epochs", 2),
    "adap_kl_ctrl": ("kl_controller", False),
    "target": ("target_kl", 1.0),
    "horizon": ("kl_horizon", 5.0),
}


@pytest.mark.parametrize("old", sorted(OLD))
def test_the_config_class_refuses_an_old_name(old: str) -> None:
    new, value = OLD[old]
    with pytest.raises(TypeError, match=f"{old} is now {new}"):
        MOPPOConfig(**{old: value})
    with pytest.raises(TypeError, match=f"{old} is now {new}"):
        MOPPOConfig.from_dict({"algorithm": "ppo", old: value})


@pytest.mark.parametrize("old", sorted(OLD))
def test_a_config_file_with_an_old_name_is_refused(old: str, tmp_path) -> None:
    new, value = OLD[old]
    path = tmp_path / "ppo.yaml"
    path.write_text(f"algorithm: ppo\n{old}: {str(value).lower()}\n")
    with pytest.raises(TypeError, match=f"{old} is now {new}"):
        parse_train_args(["--config", str(path), *RUN])


@pytest.mark.parametrize(
    ("flags", "new"),
    [
        (["--ppo-epochs", "2"], "--num-ppo-epochs"),
        (["--ppo_epochs", "2"], "--num-ppo-epochs"),
        (["--adap-kl-ctrl"], "--kl-controller"),
        (["--no-adap-kl-ctrl"], "--kl-controller"),
        (["--target", "1"], "--target-kl"),  # not taken as an abbreviation of --target-kl
        (["--horizon", "5"], "--kl-horizon"),
    ],
)
def test_an_old_flag_is_refused_naming_the_new_one(flags, new, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", *RUN, *flags])
    assert info.value.code == 2
    assert f"renamed: use {new}" in capsys.readouterr().err


def test_the_new_flags_set_the_new_fields() -> None:
    _, config = parse_train_args(
        [*RUN, "--num-ppo-epochs", "3", "--kl-controller", "fixed", "--target-kl", "2",
         "--kl-horizon", "50"]
    )  # fmt: skip
    assert isinstance(config, MOPPOConfig)
    assert (config.num_ppo_epochs, config.epochs) == (3, 3)
    assert (config.kl_controller, config.target_kl, config.kl_horizon) == ("fixed", 2.0, 50.0)
    with pytest.raises(ValueError, match="kl_controller must be one of"):
        MOPPOConfig(kl_controller="pid")  # type: ignore[arg-type]


@pytest.mark.parametrize("observed_kl", [9.0, 6.6, 1.0])
def test_the_adaptive_controller_moves_beta_as_ziegler_et_al(observed_kl: float) -> None:
    """β ← β (1 + e n / horizon) with e = clip(KL / target − 1, −0.2, 0.2) (Ziegler et al. 2019,
    TRL's AdaptiveKLController), written out here; exact up to float rounding (1e-12)."""
    config = MOPPOConfig(kl_coef=0.2, kl_controller="adaptive", target_kl=6.0, kl_horizon=100.0)
    estimator = PPOEstimator(config, ["a", "b"])
    estimator.kl_ctl.update(observed_kl, 32)
    error = min(max(observed_kl / 6.0 - 1.0, -0.2), 0.2)
    assert estimator.kl_ctl.value == pytest.approx(0.2 * (1 + error * 32 / 100.0), abs=1e-12)

    fixed = PPOEstimator(MOPPOConfig(kl_coef=0.2, kl_controller="fixed"), ["a", "b"])
    fixed.kl_ctl.update(observed_kl, 32)
    assert fixed.kl_ctl.value == 0.2
