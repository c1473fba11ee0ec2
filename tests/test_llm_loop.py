"""What the loop adds around every estimator: per-objective diagnostics and trackers through
accelerate (``report_to``). Two processes agreeing on GRPO and RLOO updates: in
``tests/test_llm_distributed.py`` (the same two-process run as the other estimators)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from accelerate.tracking import GeneralTracker

from mogradient_llm.objectives.diagnostics import (
    advantage_diagnostics,
    correlation_matrix,
    cosine_matrix,
    gradient_diagnostics,
)
from tests.llm_fixtures import make_trainer


def test_gradient_cosines_and_conflict_rate_match_the_gradients() -> None:
    grads = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 0.0, 2.0]], dtype=torch.float64)
    stats = gradient_diagnostics(grads @ grads.T, ["a", "b", "c"])
    for (i, x), (j, y) in [((0, "a"), (1, "b")), ((0, "a"), (2, "c")), ((1, "b"), (2, "c"))]:
        expected = float(grads[i] @ grads[j] / grads[i].norm() / grads[j].norm())
        assert stats[f"diag/grad_cos/{x}/{y}"] == pytest.approx(expected)
    assert stats["diag/conflict_rate"] == pytest.approx(2 / 3)  # a·c < 0 and b·c < 0
    zero = cosine_matrix(torch.zeros(2, 2))
    assert torch.equal(zero, torch.zeros(2, 2, dtype=torch.float64))


def test_advantage_correlation_matches_numpy_over_the_masked_tokens() -> None:
    torch.manual_seed(0)
    advantages = torch.randn(3, 4, 5)
    mask = (torch.rand(4, 5) > 0.3).float()
    picked = advantages[:, mask.bool()].numpy()
    expected = np.corrcoef(picked)
    torch.testing.assert_close(
        correlation_matrix(advantages, mask), torch.from_numpy(expected), rtol=1e-6, atol=1e-9
    )
    stats = advantage_diagnostics(advantages, mask, ["a", "b", "c"])
    assert stats["diag/adv_corr/a/c"] == pytest.approx(expected[0, 2])


class _Recorder(GeneralTracker):
    """An accelerate tracker that keeps what it is given."""

    name = "recorder"
    requires_logging_directory = False

    def __init__(self) -> None:
        super().__init__()
        self.config: dict = {}
        self.logged: list[tuple[int, dict]] = []

    @property
    def tracker(self):
        return self

    def store_init_configuration(self, values: dict) -> None:
        self.config = values

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        self.logged.append((step, values))


def test_trackers_get_the_config_and_every_steps_metrics(tmp_path) -> None:
    from accelerate import Accelerator

    from mogradient_llm.inputs.builtin_rewards import LengthReward

    recorder = _Recorder()
    accelerator = Accelerator(cpu=True, log_with=[recorder])
    trainer = make_trainer(
        [LengthReward(), _chars], accelerator=accelerator, algorithm="grpo", aggregator="pama"
    )
    trainer.train(2, tmp_path, progress=False)
    assert recorder.config["algorithm"] == "grpo" and recorder.config["aggregator"] == "pama"
    assert [step for step, _ in recorder.logged] == [1, 2]
    assert "objective/scores/_chars" in recorder.logged[0][1]
    assert (tmp_path / "metrics.csv").exists() and (tmp_path / "metrics.jsonl").exists()


def _chars(completions, **kwargs):
    return [len(c) / 10.0 for c in completions]
