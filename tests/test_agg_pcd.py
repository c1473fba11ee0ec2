"""PCD (Priority-Constrained Descent): TorchJD 0.18's PCDWeighting (weights, direction and the
moving average across calls), the KKT conditions of its QP checked on the Jacobian, pinned
values, edge cases, bad hyper-parameters."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mogradient import get_aggregator
from mogradient.aggregation.gramian import gramian_of
from mogradient.aggregators.pcd import PCD
from tests.bounds import (
    U64,
    assert_float32_direction,
    gamma,
    pcd_direction_tolerance,
    pcd_kkt_tolerance,
    pcd_weight_tolerance,
)
from tests.references import linprog_settled, reference_call

SEEDS = st.integers(0, 2**32 - 1)


def jacobian(seed: int, m: int, d: int, rank: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = np.exp(rng.normal(size=(m, 1)))
    if rank is None:
        return rng.normal(size=(m, d)) * scales
    return (rng.normal(size=(m, rank)) @ rng.normal(size=(rank, d))) * scales


def torchjd_weighting(tau: float | torch.Tensor, beta: float, eps: float) -> torch.nn.Module:
    from torchjd.aggregation import PCDWeighting

    return PCDWeighting(tau=tau, beta=beta, eps=eps)


def scales_by_formula(sq_norms: list[np.ndarray], beta: float, eps: float) -> np.ndarray:
    """The paper's normalisation after these calls: 1/√(v̂ + ε), v̂ the bias-corrected EMA."""
    v = np.zeros_like(sq_norms[0])
    for s in sq_norms:
        v = beta * v + (1 - beta) * s
    den = np.sqrt(v / (1 - beta ** len(sq_norms)) + eps)
    return np.divide(1.0, den, out=np.zeros_like(den), where=den > 0)


def assert_kkt(j: np.ndarray, w: np.ndarray, s: np.ndarray, taus: np.ndarray) -> None:
    """The weights solve PCD's QP on the Jacobian itself: with c = w₀/s₀ (the rescaling) and
    μ = w[1:]/(s·c), d̃ = g̃₁ + Σμⱼg̃ⱼ is feasible (g̃ⱼ·d̃ ≥ τⱼ‖g̃ⱼ‖²), μ ≥ 0, and μⱼ > 0 only
    where the constraint binds: sufficient for the minimiser of this convex QP. Each
    residual is within ``pcd_kkt_tolerance`` of 0."""
    gt = j * s[:, None]
    c = w[0] / s[0]
    mu = w[1:] / (s[1:] * c)
    d = gt[0] + mu @ gt[1:]
    slack = gt[1:] @ d - taus * (gt[1:] ** 2).sum(axis=1)
    tol = pcd_kkt_tolerance(gt, mu)
    assert (mu >= 0).all()
    assert (slack >= -tol).all(), (slack, tol)
    assert (np.abs(mu * slack) <= tol * np.maximum(mu, 1.0)).all(), (mu, slack, tol)
    # ‖Σwᵢgᵢ‖ = ‖g₁‖, to rounding: the rescaling divides by ‖d̃‖² formed from the Gramian,
    # off by γ·(Σ|wᵢ|‖gᵢ‖)² (relative γ·M²/‖g₁‖², M = Σ|wᵢ|‖gᵢ‖, halved by the square root),
    # and the (cancelling) sum Σwᵢgᵢ adds γ·‖|w||J|‖ ≤ γ·M
    m, d = j.shape
    big_m = float(np.abs(w) @ np.linalg.norm(j, axis=1))
    norm = float(np.linalg.norm(j[0]))
    atol = 4 * (gamma(16 * m, U64) + gamma(m + d, U64)) * big_m * (1 + big_m / norm)
    assert abs(float(np.linalg.norm(w @ j)) - norm) <= atol


def kkt_holds(j: np.ndarray, w: np.ndarray, s: np.ndarray, taus: np.ndarray) -> bool:
    try:
        assert_kkt(j, w, s, taus)
    except AssertionError:
        return False
    return True


def test_pinned_two_objectives():
    """g₁ = (1, 0), g₂ = (−1, 1), eps = 0, first call: g̃₁ = e₁, g̃₂ = (−1, 1)/√2, and the one
    constraint g̃₂·d ≥ τ binds: μ = τ + 1/√2; the direction is d̃ = e₁ + μg̃₂ at norm 1."""
    tau = 0.5
    mu = tau + 1 / np.sqrt(2)
    d = np.array([1.0, 0.0]) + mu * np.array([-1.0, 1.0]) / np.sqrt(2)
    j = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    got = PCD(tau=tau, eps=0.0)(j).numpy()
    np.testing.assert_allclose(got, d / np.linalg.norm(d), rtol=0, atol=1e-15)


@settings(deadline=None, max_examples=60)
@given(SEEDS, st.integers(1, 8), st.floats(0.0, 1.0), st.sampled_from([0.0, 0.5, 0.999]))
def test_matches_torchjd_over_calls(seed, m, tau, beta):
    """Four calls on independent Jacobians (m ≤ d: independent secondaries, a unique dual),
    with TorchJD's default eps = 1e-8: the weights agree with TorchJD's to
    ``pcd_weight_tolerance`` at every call, and the moving average and step count equal
    TorchJD's (both are the same float64 recurrence)."""
    rng = np.random.default_rng(seed)
    ours, ref = PCD(tau=tau, beta=beta, eps=1e-8), torchjd_weighting(tau, beta, 1e-8)
    for step in range(4):
        j = jacobian(int(rng.integers(2**32)), m, m + 2)
        g = j @ j.T
        w = ours.weights(g)
        r = reference_call(ref, torch.tensor(g)).numpy()
        s = 1 / np.sqrt(ours._sq_norm_ema / (1 - beta ** (step + 1)) + 1e-8)
        tol = pcd_weight_tolerance(g * np.outer(s, s), r / (s * max(r[0] / s[0], 1e-300)))
        np.testing.assert_allclose(w, r, atol=tol * max(1.0, np.abs(r).max()), rtol=0)
        np.testing.assert_allclose(ours._sq_norm_ema, ref._sq_norm_ema.numpy(), rtol=1e-15)
        assert ours._n_steps == int(ref._n_steps)


@settings(deadline=None, max_examples=80)
@given(SEEDS, st.integers(3, 9), st.integers(1, 3), st.floats(0.0, 1.0))
def test_kkt_on_dependent_secondaries(seed, m, rank, tau):
    """More secondaries than dimensions (the dual is degenerate, TorchJD's multipliers need not
    be ours): our weights satisfy the KKT conditions on the Jacobian, or, where the constraints
    are infeasible, are e₁ exactly as TorchJD's; and the direction matches TorchJD's where the
    problem is feasible (the minimiser d̃ is unique)."""
    j = jacobian(seed, m, 6, rank)
    agg = PCD(tau=tau, eps=0.0)
    w = agg.weights(j @ j.T)
    s = scales_by_formula([np.diag(j @ j.T)], 0.999, 0.0)
    r = reference_call(torchjd_weighting(tau, 0.999, 0.0), torch.tensor(j @ j.T)).numpy()
    if (w == 0).all():  # d̃ is zero to rounding: TorchJD's test of that is ours
        np.testing.assert_array_equal(r, w)
        return
    taus = np.full(m - 1, tau)
    if (w[1:] == 0).all() and not kkt_holds(j, w, s, taus):
        # the constraints were dropped: they must be infeasible (an LP says so), as for TorchJD;
        # d = τ·d' makes the LP's right-hand side ‖g̃ⱼ‖² ~ 1, above HiGHS's tolerance (1e-7)
        gt = j * s[:, None]
        lp = linprog_settled(
            np.zeros(j.shape[1]),
            A_ub=-gt[1:],
            b_ub=-(gt[1:] ** 2).sum(axis=1) * (1.0 if tau > 0 else 0.0),
            bounds=(None, None),
        )
        assert lp.status == 2
        np.testing.assert_allclose(r, w, rtol=4 * U64, atol=0)
        return
    assert_kkt(j, w, s, taus)
    # the minimiser is unique: TorchJD's direction, if its own KKT conditions hold, is ours
    try:
        assert_kkt(j, r, s, taus)
    except AssertionError:
        return  # TorchJD's solver stopped early or dropped feasible constraints: no reference
    mu = w[1:] / (s[1:] * w[0] / s[0])
    err = float(np.linalg.norm(w @ j - r @ j))
    assert err <= pcd_direction_tolerance(j, w, mu), (err, pcd_direction_tolerance(j, w, mu))


@settings(deadline=None, max_examples=60)
@given(SEEDS, st.integers(2, 8), st.floats(0.0, 1.0), st.integers(1, 4))
def test_secondaries_keep_their_share(seed, m, tau, steps):
    """The guarantee, on agg(J) after several calls: every secondary gets g̃ⱼ·d̃ ≥ τ‖g̃ⱼ‖²
    (normalisation from the formula), d̃ is the closest such direction to g̃₁ (KKT), and the
    update has ‖g₁‖'s norm."""
    rng = np.random.default_rng(seed)
    agg, beta, seen = PCD(tau=tau, beta=0.9), 0.9, []
    for _ in range(steps):
        j = jacobian(int(rng.integers(2**32)), m, m + 3)
        seen.append(np.diag(j @ j.T))
        before = copy.deepcopy(agg)
        d = agg(torch.tensor(j)).numpy()
    w = before.weights(j @ j.T)  # the same state: the weights of d
    np.testing.assert_allclose(d, w @ j, rtol=0, atol=1e-12 * np.abs(w) @ np.abs(j).max(axis=1))
    assert_kkt(j, w, scales_by_formula(seen, beta, 0.0), np.full(m - 1, tau))


def test_per_secondary_taus_and_wrong_length():
    j = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 1.0, 0.0], [-1.0, 0.0, 1.0]], dtype=torch.float64)
    taus = (0.1, 0.6)
    w = PCD(tau=taus, eps=0.0).weights(gramian_of(j)).numpy()
    ref_weighting = torchjd_weighting(torch.tensor(taus, dtype=torch.float64), 0.999, 0.0)
    ref = ref_weighting(gramian_of(j)).numpy()
    np.testing.assert_allclose(w, ref, rtol=1e-12)
    with pytest.raises(ValueError, match="tau has 2 entries but there are 3 secondary"):
        PCD(tau=taus)(torch.randn(4, 3, dtype=torch.float64))


def test_edge_cases():
    g = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    torch.testing.assert_close(PCD()(g), g[0])  # one objective: g₁
    zero_primary = torch.tensor([[0.0, 0.0], [1.0, 2.0]], dtype=torch.float64)
    assert (PCD()(zero_primary) == 0).all()
    same = torch.tensor([[1.0, 2.0], [1.0, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(PCD(tau=0.7)(same), same[0])  # the constraint holds at g₁
    zero_secondary = torch.tensor([[1.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(PCD()(zero_secondary), zero_secondary[0])
    # g₂ = −g₁: d̃ = (1 − μ)g̃₁ with −(1 − μ) = τ, so the update is −g₁ (at ‖g₁‖)
    opposite = torch.tensor([[1.0, 2.0], [-2.0, -4.0]], dtype=torch.float64)
    torch.testing.assert_close(PCD(tau=0.3)(opposite), -opposite[0])
    # two opposite secondaries: infeasible for τ > 0, the constraints are dropped
    infeasible = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], dtype=torch.float64)
    torch.testing.assert_close(PCD(tau=0.1)(infeasible), infeasible[0])
    ref = torchjd_weighting(0.1, 0.999, 1e-8)(gramian_of(infeasible))
    torch.testing.assert_close(ref, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))


def test_float32():
    j32 = torch.tensor(jacobian(3, 4, 7), dtype=torch.float32)
    assert_float32_direction(lambda: PCD(tau=0.3), j32)


def test_state_reset_and_checkpoint():
    """reset() restarts the moving average; state_dict carries it; a new m restarts it."""
    rng = np.random.default_rng(0)
    js = [torch.tensor(jacobian(int(rng.integers(99)), 3, 5)) for _ in range(3)]
    agg = get_aggregator("pcd", beta=0.5)
    first = agg(js[0])
    agg(js[1])
    saved = agg.state_dict()
    after = agg(js[2])
    other = PCD(beta=0.5)
    other.load_state_dict(saved)
    torch.testing.assert_close(other(js[2]), after, rtol=0, atol=0)
    agg.reset()
    torch.testing.assert_close(agg(js[0]), first, rtol=0, atol=0)
    agg(torch.tensor(jacobian(5, 2, 5)))  # two objectives: a fresh average
    assert agg._n_steps == 1 and agg._sq_norm_ema is not None and agg._sq_norm_ema.shape == (2,)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tau": -0.1}, r"tau must be a number in \[0, 1\]"),
        ({"tau": 1.5}, r"tau must be a number in \[0, 1\]"),
        ({"tau": float("nan")}, r"tau must be a number in \[0, 1\]"),
        ({"tau": True}, "tau must be a number"),
        ({"tau": [0.1, 2.0]}, r"tau\[1\] must be a number in \[0, 1\]"),
        ({"tau": [[0.1]]}, "one per secondary"),
        ({"beta": 1.0}, r"beta must be a number in \[0, 1\)"),
        ({"beta": -0.5}, r"beta must be a number in \[0, 1\)"),
        ({"eps": -1e-8}, "eps must be a finite number ≥ 0"),
        ({"eps": float("inf")}, "eps must be a finite number ≥ 0"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PCD(**kwargs)
