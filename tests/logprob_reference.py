"""An exact reference for the features-level Gramian of TRL's policy losses: TRL's own loss
code (the base trainer's ``_compute_loss``) differentiated in float64 with respect to the
backbone's last hidden state through an explicit float64 LM head, at TRL's float32 forward.

Each loss call runs TRL's forward; its log-probs are replaced by
``ℓ₃₂ + (ℓ₆₄(H) − ℓ₆₄(H).detach())`` — TRL's float32 values (``x − x`` is exactly 0), with the
derivative of ``log softmax(H Wᵀ / T)[y]`` computed in float64 from a float64 copy of ``H`` — so
the loss is TRL's at TRL's point and autograd gives its exact hidden-state gradients, without
any factorisation. Used by ``tests/test_trl_adapter_factorised.py`` and the parity tests.
"""

from __future__ import annotations

from typing import Any

import torch

U64 = 2.0**-53


def _gamma(n: int) -> float:
    return n * U64 / (1 - n * U64)


def exact_gradients(t: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The float64 Jacobian ``[k, B·L·d]`` of TRL's per-objective policy losses (the columns of
    ``batch["objective_advantages"]``) with respect to the last hidden state, and their slopes
    ``∂Lᵢ/∂ℓ`` ``[k, B, C]``."""
    base = type(t).__mro__[2]  # GRPOTrainer / RLOOTrainer, after the adapter's mixin
    model = t.model
    hidden: list[torch.Tensor] = []
    handle = model.transformer.register_forward_hook(
        lambda m, a, out: hidden.append(out.last_hidden_state)
    )
    real = t._get_per_token_logps_and_entropies
    completion = batch["completion_ids"]
    weight = model.get_output_embeddings().weight.detach().double()
    pinned: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(*args: Any, **kwargs: Any) -> Any:
        logps, entropies, aux = real(*args, **kwargs)
        h = hidden[-1].detach().double().requires_grad_()
        z = h[:, -completion.shape[1] - 1 : -1] @ weight.T / t.temperature
        exact = z.log_softmax(-1).gather(-1, completion.unsqueeze(-1)).squeeze(-1)
        value = logps.detach().double() + (exact - exact.detach())
        pinned.append((h, value))
        return value, None if entropies is None else entropies.detach(), aux

    t._get_per_token_logps_and_entropies = forward
    rows, slopes = [], []
    try:
        for column in batch["objective_advantages"].T:
            loss = base._compute_loss(t, model, {**batch, "advantages": column})
            h, value = pinned[-1]
            grad_h, grad_l = torch.autograd.grad(loss, [h, value])
            rows.append(grad_h.flatten())
            slopes.append(grad_l)
    finally:
        del t._get_per_token_logps_and_entropies
        handle.remove()
    return torch.stack(rows), torch.stack(slopes)


def factorisation_error(
    slopes: torch.Tensor, jacobian: torch.Tensor, weight: torch.Tensor, temperature: float
) -> torch.Tensor:
    """A bound ``[k, k]`` on ``|G_factorised − J Jᵀ|`` (both float64 at the same point).

    ``vₜ = Wᵀ(e_y − pₜ)/T`` has norm at most ``β = 2 maxⱼ‖wⱼ‖ / T``; each side's ``vₜ`` (the
    reference's backward of a float64 log-softmax, the factorisation's online softmax) is
    within ``δ = 8 γ_{V+d} β`` of the exact one (a length-``V`` sum of terms of norm ≤ β, a
    length-``d`` dot product, a few element-wise roundings), so ``‖vₜ‖²`` within ``(2β + δ)δ``;
    the slopes of both sides come from the same float64 operations of TRL's loss (within
    ``γ₁₆`` each). Summed over tokens: ``Σₜ |aᵢₜ aⱼₜ| ((2β + δ)δ + 2γ₁₆ β²)``, plus the
    reference's float64 product ``γ_n ‖gᵢ‖‖gⱼ‖`` over its ``n`` columns.
    """
    vocab, dim = weight.shape
    beta = 2 * float(weight.detach().double().norm(dim=-1).max()) / temperature
    delta = 8 * _gamma(vocab + dim) * beta
    a = slopes.flatten(1).abs().double()
    per_token = (2 * beta + delta) * delta + 2 * _gamma(16) * beta**2
    norms = jacobian.norm(dim=-1)
    return (a @ a.T) * per_token + _gamma(jacobian.shape[1]) * torch.outer(norms, norms)
