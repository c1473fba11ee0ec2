"""The example accelerate configs load through accelerate's own loader."""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "accelerate"


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("ddp_multi_gpu", DistributedType.MULTI_GPU),
        ("fsdp", DistributedType.FSDP),
        ("deepspeed_zero2", DistributedType.DEEPSPEED),
    ],
)
def test_config_loads(name: str, kind: DistributedType) -> None:
    config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
    assert config.distributed_type == kind and config.num_processes == 8
