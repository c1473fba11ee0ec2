"""Non-finite rewards, advantages and losses: every rank stops (or skips) together."""

from __future__ import annotations

import warnings

import torch
from accelerate import Accelerator


class NonFiniteError(FloatingPointError):
    """A reward, advantage or loss of one objective is NaN or infinite."""


class NonFiniteGuard:
    """Agreement across ranks on a problem, then an error — or, with ``skip``, a warning."""

    def __init__(self, accelerator: Accelerator, skip: bool):
        self.accelerator = accelerator
        self.skip = skip

    def agree(self, problem: str | None) -> str | None:
        """``problem`` if any rank has one: every rank must skip (or stop) together, or the
        others would wait forever in the next collective."""
        if self.accelerator.num_processes == 1:
            return problem
        flag = torch.tensor([float(problem is not None)], device=self.accelerator.device)
        if float(self.accelerator.reduce(flag, "sum")) == 0:
            return None
        return problem or "another rank met a non-finite value"

    def report(self, problem: str, step: int) -> None:
        """Raise :class:`NonFiniteError`, or warn when skipping is allowed."""
        if not self.skip:
            raise NonFiniteError(
                f"step {step}: {problem}; check that objective's reward scale (or turn on "
                "use_score_scaling), lower the learning rate, or pass skip_nonfinite=True "
                "(--skip-nonfinite) to skip such steps"
            )
        warnings.warn(f"step {step}: {problem}; skipping it (skip_nonfinite)", stacklevel=3)
