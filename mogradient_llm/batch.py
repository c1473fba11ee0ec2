"""The typed batch a training step builds once and its updates read: :class:`RolloutBatch`."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class RolloutBatch:
    """One step's completions and everything the updates need, rows = completions.

    ``k`` objectives, ``B`` completions, ``T`` response tokens. ``advantages`` has one row per
    policy loss: ``k`` for Gramian methods (one loss per objective), 1 once a loss weighting or
    an advantage combiner (PAMA) has combined them.
    """

    input_ids: torch.Tensor  #: ``[B, Q + T]`` prompt (left-padded) and response tokens
    attention_mask: torch.Tensor  #: ``[B, Q + T]``
    query_length: int  #: ``Q``
    mask: torch.Tensor  #: ``[B, T]`` float, 1 on response tokens up to the first EOS
    scores: torch.Tensor  #: ``[k, B]`` raw rewards, NaN where a reward could not score
    objective_losses: torch.Tensor  #: ``[k]`` −mean raw score, over every process
    objective_advantages: torch.Tensor  #: ``[m, B, T]`` before the combine (after Noon)
    advantages: torch.Tensor  #: ``[m', B, T]`` what the policy losses are made of
    old_logprobs: torch.Tensor | None = None  #: ``[B, T]``; ``None``: the live ones, detached
    ref_logprobs: torch.Tensor | None = None  #: ``[B, T]`` of the KL reference, if any
    kl: torch.Tensor | None = None  #: ``[B, T]`` per-token KL estimate to the reference
    old_values: torch.Tensor | None = None  #: ``[k, B, T]`` value heads (estimators with a critic)
    returns: torch.Tensor | None = None  #: ``[k, B, T]`` their regression targets
    value_mask: torch.Tensor | None = None  #: ``[k, B, T]`` tokens each head is trained on
    stats: dict[str, float] = field(default_factory=dict)  #: logged with the step
    #: ``[B, T]`` the update's own log-probs, detached, filled as it runs, when no forward ran
    #: before it (``old_logprobs`` is ``None``): what the step's KL and entropy are logged from
    live_logprobs: torch.Tensor | None = None

    @property
    def size(self) -> int:
        """The number of completions ``B``."""
        return int(self.input_ids.shape[0])
