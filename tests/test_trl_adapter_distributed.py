"""The TRL adapter under ``accelerate launch`` with two CPU processes (gloo, DDP): each rank
scores and holds half of the completions; the Gramian is averaged over the ranks, so both decide
the same weights and end with the same parameters; a constraint's multiplier, moved on the
gathered batch, is the same on both ranks. One launch, three settings (about 1 min on a loaded
2-core machine: the slowest of the adapter's tests)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from tests.llm_fixtures import tiny_lm_dir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_decide_the_same_weights_and_end_with_the_same_parameters(tmp_path) -> None:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    # accelerate's multi-process launcher is named --multi_gpu; TRL's use_cpu=True keeps the
    # ranks on the CPU over gloo
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
        "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        str(root / "tests" / "trl_adapter_ranks.py"), str(tmp_path), str(tiny_lm_dir()),
    ]  # fmt: skip
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for name, first in ranks[0].items():
        second = ranks[1][name]
        if name == "linear-constrained":  # the Lagrange multiplier: measured on the gathered batch
            multipliers = first["multipliers"]
            assert len(multipliers) == 2 and multipliers == second["multipliers"], name
            assert 0 < multipliers[0] < multipliers[1], name  # violated at every step: λ grows
        else:
            assert len(first["weights"]) == 2 and first["weights"] == second["weights"], name
            assert all(abs(sum(w) - 1) < 1e-6 for w in first["weights"]), name
        torch.testing.assert_close(first["params"], second["params"], rtol=0, atol=0, msg=name)
