"""``examples/trl_grpo_upgrad.py`` runs offline on the tiny policy it builds; the accelerate
configs beside it load through accelerate's own loader."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import pytest
import torch
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "trl_grpo_upgrad.py"


def test_the_upgrad_example_trains_two_steps(tmp_path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("trl_grpo_upgrad", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny policy is far faster on one thread
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            trainer = module.main(["--max-steps", "2", "--output-dir", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    assert trainer.state.global_step == 2
    assert trainer.mo_objective.kind == "gramian" and trainer.mo_objective.level == "features"
    assert "mo/weight/reward_brevity" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("name", "kind"),
    [("ddp", DistributedType.MULTI_GPU), ("deepspeed_zero2", DistributedType.DEEPSPEED)],
)
def test_the_accelerate_configs_load(name: str, kind: DistributedType) -> None:
    config = load_config_from_file(str(EXAMPLE.parent / "trl" / f"{name}.yaml"))
    assert config.distributed_type == kind and config.num_processes == 8
