"""Soft-min advantage combination against the formula written out by hand.

The reference evaluates ``s = −τ·log Σᵢ p̃ᵢ exp(−zᵢ/τ)`` per sample in Python floats (``math``)
after standardising each objective by hand (``statistics.pmean`` / ``pstdev`` over the masked
samples it scored). Tolerance: both sides take at most 32 rounded float64 operations per term
(exp and log within 1 ulp), so they differ by at most ``2·γ₃₂·(max|z| + τ·max|log p̃ᵢ|)`` — the
magnitude of the terms, whatever their cancellation.
"""

from __future__ import annotations

import math
import statistics
import threading

import pytest
import torch

from mogradient import get_aggregator
from mogradient.aggregators.softmin import SoftMin, softmin
from tests.bounds import U64, gamma


def _softmin(z: list[float], p: list[float], tau: float) -> float:
    """The formula, in the shifted form that cannot overflow (m = min z)."""
    total = sum(p)
    m = min(z)
    return m - tau * math.log(sum(pi / total * math.exp(-(zi - m) / tau) for zi, pi in zip(z, p)))


def _tol(z: list[float], p: list[float], tau: float) -> float:
    total = sum(p)
    log_p = max(-math.log(q / total) for q in p)
    return 2 * gamma(32, U64) * (max(abs(v) for v in z) + tau * log_p)


def _standardise(rows: list[list[float]]) -> list[list[float]]:
    out = []
    for row in rows:
        mu, sd = statistics.fmean(row), statistics.pstdev(row)
        out.append([(v - mu) / sd if sd > 0 else 0.0 for v in row])
    return out


@pytest.mark.parametrize("tau", [0.05, 1.0, 30.0])
def test_the_formula_by_hand_without_normalisation(tau: float) -> None:
    rows = [[1.0, -2.0, 0.5, 4.0], [0.5, 3.0, -1.0, 4.0], [2.0, -3.0, 0.0, -4.0]]
    p = [0.2, 0.5, 0.3]
    agg = SoftMin(tau=tau, preference=p, normalize=False)
    combined, weights, _ = agg.combine(torch.tensor(rows, dtype=torch.float64))
    for j in range(4):
        z = [row[j] for row in rows]
        assert abs(float(combined[j]) - _softmin(z, p, tau)) <= _tol(z, p, tau)
        e = [pi * math.exp(-(zi - min(z)) / tau) for zi, pi in zip(z, p)]
        for i in range(3):  # wᵢ ∝ pᵢ exp(−zᵢ/τ): relative error ≤ γ₃₂ per weight, n of them
            assert abs(float(weights[i, j]) - e[i] / sum(e)) <= 3 * gamma(32, U64)


def test_each_objective_is_standardised_over_the_batch() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 12, generator=gen, dtype=torch.float64) * torch.tensor([[1e-3], [1.0], [50]])
    a[1] += 7.0  # a shift and a scale of its own per objective
    p = [0.5, 0.25, 0.25]
    combined = SoftMin(tau=0.3, preference=p).combine(a).combined
    z = _standardise(a.tolist())
    for j in range(12):
        zj = [row[j] for row in z]
        # the standardisation adds ≤ γ₈ relative to |z| ≤ √12 on each side
        tol = _tol(zj, p, 0.3) + 2 * gamma(8, U64) * math.sqrt(12)
        assert abs(float(combined[j]) - _softmin(zj, p, 0.3)) <= tol


@pytest.mark.parametrize("tau", [1e-3, 1e-8, 1e-300])
def test_the_tchebycheff_limit(tau: float) -> None:
    """min z ≤ s ≤ min z + τ·log(1/p̃ᵢ) for the objective i holding the minimum; the weights
    go to the arg-min (exactly one-hot once exp underflows)."""
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(4, 9, generator=gen, dtype=torch.float64)
    p = [0.1, 0.2, 0.3, 0.4]
    combined, weights, _ = SoftMin(tau=tau, preference=p).combine(a)
    z = torch.tensor(_standardise(a.tolist()), dtype=torch.float64)
    zmin, arg = z.min(dim=0)
    rounding = 2 * gamma(8, U64) * 3.0  # standardisation, |z| ≤ 3 here
    for j in range(9):
        slack = tau * -math.log(p[int(arg[j])])
        assert float(zmin[j]) - rounding <= float(combined[j]) <= float(zmin[j]) + slack + rounding
    if tau <= 1e-8:  # gaps between entries ≥ 1e-3 ≫ τ·745: the other weights are exactly 0
        assert torch.equal(weights, torch.nn.functional.one_hot(arg, 4).T.double())


def test_the_linear_limit_and_the_bounds_between() -> None:
    """By Jensen s ≤ Σ pᵢzᵢ, and by Hoeffding's lemma s ≥ Σ pᵢzᵢ − (max z − min z)²/(8τ)."""
    rows = [[1.0, -2.0, 0.5], [0.5, 3.0, -1.0]]
    p = [0.3, 0.7]
    for tau in (0.1, 10.0, 1e6):
        s = SoftMin(tau=tau, preference=p, normalize=False).combine(
            torch.tensor(rows, dtype=torch.float64)
        )
        for j in range(3):
            z = [r[j] for r in rows]
            mean = p[0] * z[0] + p[1] * z[1]
            tol = _tol(z, p, tau)
            lo = max(min(z), mean - (max(z) - min(z)) ** 2 / (8 * tau))
            assert lo - tol <= float(s.combined[j]) <= mean + tol


def test_objectives_that_did_not_score_take_no_part() -> None:
    """``valid``: the sum runs over the scoring objectives with the preference renormalised
    over them, their statistics are over the samples they scored, and a sample none scored
    gets 0 and no weight; values at unscored entries change nothing."""
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(3, 10, generator=gen, dtype=torch.float64)
    valid = torch.rand(3, 10, generator=gen) < 0.6
    valid[:, 0] = False
    p = [0.2, 0.3, 0.5]
    agg = SoftMin(tau=0.5, preference=p)
    combined, weights, _ = agg.combine(a, valid=valid)
    noise = torch.where(valid, a, 1e6 * torch.randn(3, 10, generator=gen, dtype=torch.float64))
    assert torch.equal(agg.combine(noise, valid=valid).combined, combined)
    z = []
    for i in range(3):
        scored = [float(a[i, j]) for j in range(10) if valid[i, j]]
        mu, sd = statistics.fmean(scored), statistics.pstdev(scored)
        z.append([(float(a[i, j]) - mu) / sd for j in range(10)])
    assert float(combined[0]) == 0.0 and bool((weights[:, 0] == 0).all())
    for j in range(1, 10):
        part = [i for i in range(3) if valid[i, j]]
        if not part:
            assert float(combined[j]) == 0.0
            continue
        zj, pj = [z[i][j] for i in part], [p[i] for i in part]
        tol = _tol(zj, pj, 0.5) + 2 * gamma(8, U64) * math.sqrt(10)
        assert abs(float(combined[j]) - _softmin(zj, pj, 0.5)) <= tol
        assert all(float(weights[i, j]) == 0.0 for i in range(3) if not valid[i, j])


def test_masked_samples_take_no_part_and_ranks_agree() -> None:
    """Masked samples neither enter the statistics nor get a coefficient; two ranks that sum
    their statistics with ``all_reduce_sum`` each get their part of the one-process answer."""
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(2, 4, 6, generator=gen, dtype=torch.float64)
    mask = (torch.rand(4, 6, generator=gen) < 0.7).double()
    agg = SoftMin(tau=0.2)
    whole = agg.combine(a, mask).combined
    assert bool((whole[mask == 0] == 0).all())
    moved = torch.where(mask.bool(), a, a + 100.0)
    assert torch.equal(agg.combine(moved, mask).combined, whole)

    halves = [(a[:, :2], mask[:2]), (a[:, 2:], mask[2:])]
    parts = _two_ranks(agg, halves)
    got = torch.cat(parts)
    # reordered float64 sums of ≤ 24 terms: γ₂₄ relative to |z| ≤ √24 on each side
    assert torch.allclose(got, whole, rtol=0, atol=4 * gamma(24, U64) * math.sqrt(24) * 8)


def _two_ranks(agg: SoftMin, halves: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    """Run two ranks in lock-step (threads): each all-reduce returns both ranks' sum."""
    barrier = threading.Barrier(2)
    slots: list[list[torch.Tensor | None]] = [[None, None], [None, None]]
    out: list[torch.Tensor] = [torch.empty(0), torch.empty(0)]

    def run(rank: int) -> None:
        calls = [0]

        def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
            k = calls[0]
            calls[0] += 1
            slots[k][rank] = t
            barrier.wait()
            first, second = slots[k]
            assert first is not None and second is not None
            total = first + second
            barrier.wait()
            return total

        ai, mi = halves[rank]
        out[rank] = agg.combine(ai, mi, all_reduce_sum).combined

    threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_a_zero_preference_excludes_an_objective() -> None:
    a = torch.tensor([[5.0, -1.0], [-9.0, 2.0], [1.0, 1.5]], dtype=torch.float64)
    with_zero = SoftMin(tau=0.5, preference=[0.5, 0.0, 0.5], normalize=False)
    without = SoftMin(tau=0.5, normalize=False)
    got = with_zero.combine(a)
    assert torch.equal(got.combined, without.combine(a[[0, 2]]).combined)
    assert bool((got.weights[1] == 0).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_advantages_and_extreme_scales(dtype: torch.dtype) -> None:
    a = torch.tensor([[1e-10, -3e-10, 2e-10], [4e15, -1e15, 0.0]]).to(dtype)
    c = SoftMin(tau=1e-3).combine(a)
    assert bool(torch.isfinite(c.combined).all()) and bool(torch.isfinite(c.weights).all())
    assert torch.allclose(c.weights.sum(0).double(), torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tau": 0.0}, "tau must be > 0"),
        ({"tau": -1.0}, "tau must be > 0"),
        ({"tau": float("inf")}, "tau must be a finite number"),
        ({"preference": [1.0, -1.0]}, "non-negative"),
        ({"normalize": "yes"}, "normalize must be True or False"),
    ],
)
def test_bad_hyperparameters(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        get_aggregator("softmin", **kwargs)


def test_bad_inputs() -> None:
    agg = SoftMin(preference=[1.0, 2.0])
    with pytest.raises(ValueError, match="one entry per objective"):
        agg.combine(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="one mask entry per sample"):
        agg.combine(torch.zeros(2, 4), torch.ones(5))
    with pytest.raises(ValueError, match="one entry per objective and sample"):
        agg.combine(torch.zeros(2, 4), valid=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="objective 1 contain NaN"):
        agg.combine(torch.tensor([[0.0, 1.0], [float("nan"), 0.0]]))


@pytest.mark.parametrize("seed", range(4))
def test_soft_min_keeps_relative_precision_at_every_scale(seed: int) -> None:
    """Against a 340-digit evaluation (mpmath) of −τ log Σ p̃ᵢ exp(−Aᵢ/τ), inputs from 1e-300 to
    1e2. Bound: m = min A is exact, x = −(A − m)/τ has relative error ≤ 2ε, Σ p̃ᵢ expm1(xᵢ)
    (terms of one sign) ≤ (n + 3)ε, log1p or the log-sum-exp ≤ 2ε more, and m − τ·lse one
    rounding: |s − s*| ≤ 2(n + 5)·ε·(|s − m| + |s|). The log-sum-exp alone near s ≈ m had an
    absolute error of ε·τ, all of a small s − m (a permuted input moved s by 1 %)."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 340  # exp(−v/τ) = 1 − O(1e-300) must not round to 1
    gen = torch.Generator().manual_seed(seed)
    eps = torch.finfo(torch.float64).eps
    for _ in range(40):
        n = int(torch.randint(1, 6, (), generator=gen))
        scale = 10.0 ** int(torch.randint(-300, 3, (), generator=gen))
        tau = 10.0 ** int(torch.randint(-2, 2, (), generator=gen))
        a = torch.randn(n, 3, dtype=torch.float64, generator=gen) * scale
        p = torch.rand(n, dtype=torch.float64, generator=gen) + 0.01
        p = p / p.sum()
        s, _ = softmin(a, tau, p)
        exact_p = [mpmath.mpf(float(v)) for v in p]
        total = sum(exact_p)
        for c in range(3):
            column = [mpmath.mpf(float(v)) for v in a[:, c]]
            exact = -tau * mpmath.log(
                sum(q / total * mpmath.exp(-v / tau) for q, v in zip(exact_p, column))
            )
            m = float(a[:, c].min())
            bound = 2 * (n + 5) * eps * (abs(float(s[c]) - m) + abs(float(s[c])))
            assert abs(float(s[c]) - float(exact)) <= bound, (n, scale, tau, c)
