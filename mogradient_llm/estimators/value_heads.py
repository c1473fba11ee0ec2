"""k value heads — one ``Linear(hidden, k)`` — on the trunk of a causal LM (none for
critic-free estimators: the same forward then returns no values)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mogradient_llm.objectives.surrogate import masked_mean

if TYPE_CHECKING:
    from transformers import PretrainedConfig

HEADS_FILE = "value_heads.safetensors"


class PolicyWithValueHeads(nn.Module):
    """A causal LM and a ``Linear(hidden, k)`` value head reading its last hidden states.

    ``forward`` returns ``(logits, values, hidden)`` with ``values`` of shape
    ``[batch, seq, k]`` (``None`` with ``n_objectives=0``: no head) and ``hidden`` the last
    hidden states (the MGDA-UB features). The head
    and so its optimiser state stay in float32 whatever the policy's dtype, and it runs outside
    any autocast: values and returns are regression targets that bf16 would round.
    """

    def __init__(self, policy: nn.Module, n_objectives: int):
        super().__init__()
        if n_objectives < 0:
            raise ValueError(f"need a non-negative number of heads, got {n_objectives}")
        self.policy = policy
        # nn.Module types attributes as Tensor | Module: the policy is a causal LM (or its peft
        # wrapper), whose config is a transformers config.
        hidden: int = cast("PretrainedConfig", policy.config).hidden_size
        self.value_head: nn.Linear | None = None
        if n_objectives:
            self.value_head = nn.Linear(hidden, n_objectives)
            nn.init.normal_(self.value_head.weight, std=1.0 / (hidden + 1) ** 0.5)
            nn.init.zeros_(self.value_head.bias)
            self.value_head.to(device=next(policy.parameters()).device)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        out = self.policy(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_hidden_states=True,
            use_cache=False,
        )
        hidden = out.hidden_states[-1]
        if self.value_head is None:
            return out.logits, None, hidden
        with torch.autocast(hidden.device.type, enabled=False):
            values = self.value_head(hidden.float())
        return out.logits, values, hidden

    def save_heads(self, directory: str | Path) -> Path | None:
        """Write the head to ``directory/value_heads.safetensors`` (if there is one)."""
        if self.value_head is None:
            return None
        path = Path(directory) / HEADS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.value_head.state_dict().items()}
        save_file(state, str(path))
        return path

    def load_heads(self, directory: str | Path) -> None:
        """Load a head written by :meth:`save_heads`."""
        if self.value_head is None:
            raise ValueError("this policy has no value head to load")
        self.value_head.load_state_dict(load_file(str(Path(directory) / HEADS_FILE)))


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    weights: torch.Tensor,
    cliprange_value: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``½ max((V - R)², (clip(V) - R)²)`` summed with ``weights`` and over the k heads.

    ``values``, ``old_values``, ``returns``: ``[k, B, T]``; ``weights``: ``[B, T]``, or
    ``[k, B, T]`` when a head is not trained on some sequences (its reward had no score).
    """
    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped_err = (values - returns) ** 2
    clipped_err = (clipped - returns) ** 2
    per_token = 0.5 * torch.maximum(unclipped_err, clipped_err)
    loss = (per_token * weights.expand_as(per_token)).sum()
    with torch.no_grad():
        mask = weights.expand_as(per_token) > 0
        stats = {"val/clipfrac_avg": masked_mean((clipped_err > unclipped_err).float(), mask)}
    return loss, stats
