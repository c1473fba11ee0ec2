"""DB-MTL against the paper's update written out by hand (no TorchJD version exists): the
gradient of each log loss (taken here by autograd through ``torch.log``), its EMA
ĝ ← β_t ĝ + (1 − β_t)∇log Lᵢ from 0 with β_t = β/t^σ, then d = Σᵢ (maxⱼ‖ĝⱼ‖/‖ĝᵢ‖) ĝᵢ.

Tolerance: the method divides the Jacobian's rows by the losses where the reference
differentiates log L (each ≤ 2u relative apart); each EMA step adds ≤ 3u relative to an entry
of magnitude ≤ max‖∇log L‖; the norms are ≤ γ_{d+2} relative apart and the factors
maxⱼ‖ĝⱼ‖/‖ĝᵢ‖ ≤ κ (the largest ratio of norms, computed from the reference). So after T calls
every term of d is ≤ (3T + d + 8)·u·κ·M relative apart, M = the largest ‖ĝᵢ‖ of that call;
γ_{n} more for the sum of the n terms.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mogradient import get_aggregator
from mogradient.aggregators.db_mtl import DBMTL
from tests.bounds import U64, gamma


def _losses(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Positive toy losses of different scales: 10^i·(‖x − cᵢ‖² + 0.5)."""
    scales = 10.0 ** torch.arange(len(centres), dtype=x.dtype)
    return scales * (((x - centres) ** 2).sum(1) + 0.5)


def _paper(log_grads: list[np.ndarray], beta: float, sigma: float) -> list[np.ndarray]:
    tracked = np.zeros_like(log_grads[0])
    out = []
    for t, grads in enumerate(log_grads, start=1):
        b = beta / t**sigma
        tracked = b * tracked + (1 - b) * grads
        norms = np.sqrt((tracked**2).sum(1))
        out.append(sum(norms.max() / norms[i] * tracked[i] for i in range(len(norms))))
    return out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("beta", "sigma"), [(0.9, 0.0), (0.5, 0.5), (0.0, 0.0)])
def test_follows_the_paper_over_several_steps(seed: int, beta: float, sigma: float) -> None:
    g = torch.Generator().manual_seed(seed)
    n, d, steps = 3, 5, 7
    centres = torch.randn(n, d, generator=g, dtype=torch.float64)
    agg = DBMTL(beta=beta, beta_decay=sigma)
    jacs, log_grads, ours = [], [], []
    for _ in range(steps):
        x = torch.randn(d, generator=g, dtype=torch.float64, requires_grad=True)
        losses = _losses(x, centres)
        jac = torch.stack([torch.autograd.grad(v, x, retain_graph=True)[0] for v in losses])
        log_jac = torch.stack(
            [torch.autograd.grad(torch.log(v), x, retain_graph=True)[0] for v in losses]
        )
        jacs.append(jac)
        log_grads.append(log_jac.numpy())
        ours.append(agg(jac, losses.detach()))
    expected = _paper(log_grads, beta, sigma)
    tracked = np.zeros((n, d))
    for t, (mine, ref) in enumerate(zip(ours, expected), start=1):
        b = beta / t**sigma
        tracked = b * tracked + (1 - b) * log_grads[t - 1]
        norms = np.linalg.norm(tracked, axis=1)
        kappa = norms.max() / norms.min()
        atol = n * ((3 * t + d + 8) * U64 * kappa + gamma(n, U64)) * norms.max()
        np.testing.assert_allclose(mine.numpy(), ref, rtol=0.0, atol=atol)


def test_every_rescaled_term_has_the_largest_norm_with_beta_zero() -> None:
    """β = 0: d = Σ (max‖gⱼ/Lⱼ‖/‖gᵢ/Lᵢ‖)·gᵢ/Lᵢ; with orthogonal gradients each term shows."""
    jac = torch.tensor([[3.0, 0.0], [0.0, 0.1]], dtype=torch.float64)
    losses = torch.tensor([1.5, 0.01], dtype=torch.float64)
    # gradients of the logs: [2, 0] and [0, 10]; both rescaled to norm 10
    torch.testing.assert_close(DBMTL(beta=0.0)(jac, losses), torch.tensor([10.0, 10.0]).double())


def test_first_call_scales_by_one_minus_beta() -> None:
    jac = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    out = DBMTL(beta=0.9)(jac, torch.tensor([4.0], dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor([0.05, 0.0], dtype=torch.float64))


def test_a_zero_gradient_adds_nothing() -> None:
    jac = torch.tensor([[1.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    out = DBMTL(beta=0.0)(jac, torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor([1.0, 1.0], dtype=torch.float64))


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_non_positive_losses_are_refused_by_name(bad: float) -> None:
    with pytest.raises(ValueError, match="objective 1 has loss"):
        DBMTL()(torch.ones(2, 3), torch.tensor([1.0, bad]))


def test_losses_are_required() -> None:
    with pytest.raises(ValueError, match="losses="):
        DBMTL()(torch.ones(2, 3))
    with pytest.raises(ValueError, match="one loss value per objective"):
        DBMTL()(torch.ones(2, 3), torch.ones(3))


def test_float32_state_and_direction() -> None:
    agg = DBMTL()
    out = agg(torch.ones(2, 3), torch.ones(2))
    assert out.dtype == torch.float32
    with pytest.raises(ValueError, match="call reset"):
        agg(torch.ones(2, 4), torch.ones(2))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"beta": 1.5}, "beta must be a number in \\[0, 1\\]"),
        ({"beta": float("nan")}, "beta"),
        ({"beta_decay": -0.1}, "beta_decay must be a finite number >= 0"),
    ],
)
def test_bad_hyperparameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DBMTL(**kwargs)


def test_repr() -> None:
    assert repr(get_aggregator("db-mtl")) == "DBMTL(beta=0.9, beta_decay=0.0)"
