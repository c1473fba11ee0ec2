"""Float32 Gramians of dependent objectives: the rounding bound of how they are computed, the
projection onto the PSD cone within it, and the refusal beyond it.

References are independent: float64 products of the same float32 data (exact to ~1e-16
relative, far below the float32 bounds checked) and ``numpy.linalg.eigvalsh``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import mogradient
import mogradient.gramian.rules as rules
from mogradient._psd import blocked_gram, project_psd, rounding_gamma, symmetric_error2
from mogradient.gramian.recorder import GramianRecorder

EPS64 = float(np.finfo(np.float64).eps)


def _min_eig_unit(g: torch.Tensor) -> float:
    """λ_min of the unit-diagonal form (numpy, float64)."""
    a = g.double().numpy()
    s = 1 / np.sqrt(np.clip(np.diag(a), 1e-300, None))
    return float(np.linalg.eigvalsh(a * s[:, None] * s[None, :])[0])


@pytest.mark.parametrize("n", [37, 1024, 5000])
def test_blocked_product_is_within_its_bound(n: int) -> None:
    """|Ĝᵢⱼ − Gᵢⱼ| ≤ eᵢeⱼ with e² = γ_b·Ĝᵢᵢ/(1 − γ_b), G the float64 product of the same float32
    rows (Higham's dot-product bound per block, Cauchy–Schwarz across blocks)."""
    gen = torch.Generator().manual_seed(n)
    base = torch.randn(3, n, generator=gen)
    a = torch.cat([base, 3 * base[:1], base[1:2] + 1e-4 * torch.randn(1, n, generator=gen)])
    g_hat = blocked_gram(a)
    exact = a.double() @ a.double().T
    e = symmetric_error2(g_hat, min(n, 1024), a.dtype).sqrt()
    assert bool(((g_hat - exact).abs() <= e[:, None] * e[None, :] + 4 * EPS64).all())


def test_gamma() -> None:
    """γₙ = n·u/(1 − n·u), u = 2⁻²⁴ for float32; infinite once n·u ≥ 1."""
    u = 2.0**-24
    assert rounding_gamma(1024, torch.float32) == pytest.approx(1024 * u / (1 - 1024 * u))
    assert rounding_gamma(2**24, torch.float32) == float("inf")


def test_projection_leaves_a_psd_gramian_alone() -> None:
    j = torch.randn(4, 50, dtype=torch.float64)
    g = j @ j.T
    assert torch.equal(project_psd(g, torch.full((4,), 1e-3)), g)


def test_projection_within_the_bound() -> None:
    """A rank-1 Gramian perturbed by δ ≤ eᵢeⱼ: the result is PSD (λ_min of the unit-diagonal
    form ≥ −16·k²·eps), and no farther from the truth than the input in the scaled Frobenius
    norm (projection onto a convex set that holds the truth is non-expansive)."""
    v = torch.tensor([1.0, 3.0, 0.5], dtype=torch.float64)
    truth = v[:, None] * v[None, :]
    e = 1e-4 * v
    delta = torch.tensor([[0.0, 1.0, -1.0], [1.0, 0.0, 1.0], [-1.0, 1.0, 0.0]]) * (
        0.9 * e[:, None] * e[None, :]
    )
    g_hat = truth + delta
    assert _min_eig_unit(g_hat) < -1e-9  # the rounding made it indefinite
    out = project_psd(g_hat, e)
    assert _min_eig_unit(out) >= -16 * 9 * EPS64
    s = g_hat.diagonal().rsqrt()
    scaled = s[:, None] * s[None, :]
    assert float(((out - truth) * scaled).norm()) <= float(((g_hat - truth) * scaled).norm())
    mogradient.get_aggregator("mgda").weights(out)  # the solvers' float64 validation accepts it


def test_projection_refuses_beyond_the_bound() -> None:
    """λ_min(C) = −1e-3 against a bound ‖Se‖² = 2e-8: refused, naming both numbers."""
    g = torch.tensor([[1.0, 1.001], [1.001, 1.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="beyond the rounding.*-0.001"):
        project_psd(g, torch.full((2,), 1e-4))


class _Net(nn.Module):
    """A linear layer: each objective's weight gradient is ``Cᵢᵀ X`` exactly (the losses are
    linear in the output), so the float64 reference Gramian is exact from the float32 data."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d_in, d_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def _dependent_case(k: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``X [n, 24]`` and cotangents ``C [k, n, 40]`` whose weight gradients span at most
    3 dimensions: rows 0–2 random, the others scaled copies and sums of them."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 24, generator=gen)
    base = torch.randn(3, n, 40, generator=gen)
    rows = [base[0], base[1], base[2], 3 * base[0], base[0] + base[1], -2 * base[2]]
    rows += [base[(i % 3)] * (i + 1) for i in range(k - len(rows))]
    return x, torch.stack(rows[:k])


@pytest.mark.parametrize("trick", ["always", "never"])
def test_recorder_projects_dependent_objectives(trick: str) -> None:
    """9 objectives whose gradients span 3 dimensions (rank-deficient, with rank-1 pairs): the
    recorder's Gramian is PSD to float64 rounding, MGDA and UPGrad accept it, and it is within
    the bound of the float64 reference: ``|Pᵢⱼ − Gᵢⱼ| ≤ ‖Se‖²·√(ĜᵢᵢĜⱼⱼ)`` (the scaled
    projection is non-expansive, and ``‖S(Ĝ − G)S‖_F ≤ ‖Se‖²``); Ĝᵢᵢ is taken as the output's
    diagonal times (1 + ‖Se‖²), the most the projection lowers it. On the old code (float32
    blocks summed with no projection) some seed comes out indefinite."""
    worst = 0.0
    for seed in range(8):
        x, c = _dependent_case(9, 6, seed)
        net = _Net(24, 40)
        with GramianRecorder(net, gram_trick=trick) as rec:
            y = net(x)
            losses = [(y * ci).sum() for ci in c]
        out = rec.gramian(losses)
        worst = min(worst, _min_eig_unit(out))
        grads = torch.einsum("kno,ni->koi", c.double(), x.double()).reshape(9, -1)
        truth = grads @ grads.T
        assert rec.error is not None
        diag = out.diagonal().clamp_min(1e-300)
        rel = float(((rec.error**2) / diag).sum())
        bound = rel * (1 + rel) * (diag[:, None] * diag[None, :]).sqrt()
        assert bool(((out - truth).abs() <= bound + 1e-12 * float(diag.max())).all()), seed
        mogradient.get_aggregator("mgda").weights(out)
        mogradient.get_aggregator("upgrad").weights(out)
    assert worst >= -16 * 81 * EPS64


def test_recorder_refuses_a_gramian_indefinite_beyond_its_bound(monkeypatch) -> None:
    """A block product that errs far beyond its rounding (corrupted on purpose: 1e-3 of the
    diagonal added to one off-diagonal entry) makes the Gramian indefinite beyond the bound:
    refused, not projected."""
    real = rules.blocked_gram

    def corrupted(a: torch.Tensor, b: torch.Tensor | None = None, **kw: int) -> torch.Tensor:
        g = real(a, b, **kw)
        bump = 1e-3 * float(g.diagonal().abs().max())
        g[0, 1] += bump
        g[1, 0] += bump
        return g

    monkeypatch.setattr(rules, "blocked_gram", corrupted)
    x, c = _dependent_case(2, 6, 0)
    c[1] = 3 * c[0]  # rank 1: any off-diagonal excess is a negative eigenvalue
    net = _Net(24, 40)
    with GramianRecorder(net, gram_trick="never") as rec:
        y = net(x)
        losses = [(y * ci).sum() for ci in c]
    with pytest.raises(ValueError, match="beyond the rounding"):
        rec.gramian(losses)


def test_gramian_of_input_precision_refuses_beyond_the_bound(monkeypatch) -> None:
    """``gramian_of(precision="input")`` shares the projection: a rank-1 float32 Jacobian gives
    a PSD Gramian; an off-diagonal corrupted by 1e-3 relative (≫ 2·γ₁₀₂₄) is refused."""
    base = torch.randn(1, 3000)
    jac = torch.cat([base, 3 * base, -base, 0.5 * base])
    out = mogradient.gramian_of(jac, precision="input")
    assert _min_eig_unit(out) >= -16 * 16 * EPS64
    bad = out.clone()
    bad[0, 1] += 1e-3 * float(bad[1, 1].sqrt() * bad[0, 0].sqrt())
    bad[1, 0] = bad[0, 1]
    with pytest.raises(ValueError, match="beyond the rounding"):
        project_psd(bad, symmetric_error2(bad, 1024, torch.float32).sqrt())


@pytest.mark.parametrize("level", ["parameters", "features"])
def test_accumulator_over_micro_batches_is_psd(level: str) -> None:
    """``GramianAccumulator`` (the RL update's path with several micro-batches, and the features
    level): 9 objectives spanning 3 dimensions over 2 micro-batches come out PSD to float64
    rounding (each micro-batch's ``gramian_of`` is projected; a sum of PSD matrices is PSD) and
    the solvers accept them."""
    acc = mogradient.GramianAccumulator(level, n_micro_batches=2)
    net = _Net(24, 40)
    for seed in range(2):
        x, c = _dependent_case(9, 6, seed)
        feats = x @ torch.randn(24, 24, generator=torch.Generator().manual_seed(seed))
        feats.requires_grad_(True)
        y = net(feats)
        losses = [(y * ci).sum() for ci in c]
        acc.add(losses, [feats] if level == "features" else list(net.parameters()))
    out = acc.gramian()
    assert _min_eig_unit(out) >= -16 * 81 * EPS64
    mogradient.get_aggregator("upgrad").weights(out)


def test_backward_with_a_recorder_and_duplicated_losses() -> None:
    """``mogradient.backward(recorder=...)`` on losses equal up to scale (a rank-1 Gramian):
    MGDA's weights come out and the update is written (it was refused as not PSD)."""
    x, c = _dependent_case(2, 6, 2)
    c[1] = 3 * c[0]
    net = _Net(24, 40)
    with GramianRecorder(net) as rec:
        y = net(x)
        losses = [(y * ci).sum() for ci in c]
    w = mogradient.backward(losses, aggregator="mgda", recorder=rec)
    assert w is not None and bool(torch.isfinite(w).all())
    assert net.lin.weight.grad is not None
