"""SDMGrad (``sdmgrad``) against TorchJD 0.18's ``SDMGradWeighting`` and an exact rational
transcription of Algorithm 1, pinned values, edge cases, state.

Agreement bound with TorchJD (small inner steps): one inner step maps (w, v) to
v' = μv + ã(w + λp), w' = Π(w − lr·v'); the projection is non-expansive, so a difference
e = ‖δw‖ + ‖δv‖ grows by at most ``L = 1 + (1 + lr)·max(μ, ‖ã‖₂)`` per step, and each
computation adds at most ``e₀ = 4(n + 4)·eps·(1 + lr)(1 + B)`` per step, with
``B = ‖|ã|‖_∞(1 + λ)/(1 − μ)`` bounding ‖v‖ (Higham's γ_m ≈ m·eps for the sums, the
normaliser's relative error (n + 4)·eps folded into the same term). Over K inner steps in all
(across calls, w carried): ``‖δw‖ ≤ 2e₀·Σ_{k<K} Lᵏ``, plus the final (w + λp)/(1 + λ).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from torchjd.aggregation import SDMGradWeighting

import mogradient
from mogradient.aggregators.sdmgrad import SDMGrad

EPS = float(np.finfo(np.float64).eps)


def _bound(mats: list[np.ndarray], lr: float, momentum: float, n_iter: int, lam: float) -> float:
    n = mats[0].shape[0]
    total = 0.0
    for a in mats:
        s = float(np.sqrt(np.maximum(np.diagonal(a), 0)).mean())
        at = a / (s * s + 1e-8)
        lip = 1 + (1 + lr) * max(momentum, float(np.linalg.norm(at, 2)))
        b = float(np.abs(at).sum(1).max()) * (1 + lam) / (1 - momentum)
        e0 = 4 * (n + 4) * EPS * (1 + lr) * (1 + b)
        for _ in range(n_iter):
            total = total * lip + e0
    return 2 * total + 4 * EPS


SMALL_STEPS = [
    {"lr": 0.05, "momentum": 0.5, "n_iter": 3, "lambda_": 0.3},
    {"lr": 0.1, "momentum": 0.0, "n_iter": 2, "lambda_": 0.0},
    {"lr": 0.02, "momentum": 0.9, "n_iter": 4, "lambda_": 2.0},
]


@pytest.mark.parametrize("kwargs", SMALL_STEPS)
@pytest.mark.parametrize("n", [1, 2, 4])
def test_successive_calls_agree_with_torchjd(n: int, kwargs: dict) -> None:
    """Four successive calls on non-symmetric J₁J₂ᵀ (state carried), a preference on the
    simplex: within the module's bound of TorchJD's weights at every call."""
    gen = torch.Generator().manual_seed(10 + n)
    pref = torch.rand(n, generator=gen, dtype=torch.float64) + 0.1
    pref = pref / pref.sum()
    ours = SDMGrad(**kwargs, preference=pref.tolist())
    theirs = SDMGradWeighting(**kwargs, pref_vector=pref)
    mats: list[np.ndarray] = []
    for _ in range(4):
        j1 = torch.randn(n, 6, generator=gen, dtype=torch.float64)
        j2 = j1 + 0.5 * torch.randn(n, 6, generator=gen, dtype=torch.float64)
        a = j1 @ j2.T
        mats.append(a.numpy())
        bound = _bound(mats, kwargs["lr"], kwargs["momentum"], kwargs["n_iter"], kwargs["lambda_"])
        np.testing.assert_allclose(ours.weights(a).numpy(), theirs(a).numpy(), rtol=0, atol=bound)


def _project(y: list[Fraction]) -> list[Fraction]:
    """The exact Euclidean projection onto the simplex (sort and scan), in rationals."""
    u = sorted(y, reverse=True)
    total, theta = Fraction(0), Fraction(0)
    for k, uk in enumerate(u, start=1):
        total += uk
        if uk - (total - 1) / k > 0:
            theta = (total - 1) / k
    return [max(v - theta, Fraction(0)) for v in y]


def _exact(
    mats: list[list[list[int]]], lr: int, momentum: Fraction, n_iter: int, lam: Fraction
) -> tuple[list[list[Fraction]], Fraction]:
    """Algorithm 1 in rationals (diagonals perfect squares, so the normaliser is rational),
    uniform preference; also the smallest vertex margin: at every inner step, how far the
    largest entry of the projection's input stands above the next one beyond 1 (positive: the
    projection returns that vertex and is locally constant there)."""
    n = len(mats[0])
    p = [Fraction(1, n)] * n
    w = list(p)
    out, margin = [], Fraction(10**9)
    for a in mats:
        s = sum((Fraction(int(round(a[i][i] ** 0.5))) for i in range(n)), Fraction(0)) / n
        c = s * s + Fraction(1, 10**8)
        v = [Fraction(0)] * n
        for _ in range(n_iter):
            x = [wi + lam * pi for wi, pi in zip(w, p)]
            grad = [sum(Fraction(a[i][j]) * x[j] for j in range(n)) / c for i in range(n)]
            v = [momentum * vi + gi for vi, gi in zip(v, grad)]
            y = [wi - lr * vi for wi, vi in zip(w, v)]
            top = sorted(y, reverse=True)
            margin = min(margin, top[0] - top[1] - 1)
            w = _project(y)
        out.append([(wi + lam * pi) / (1 + lam) for wi, pi in zip(w, p)])
    return out, margin


def test_defaults_match_the_exact_algorithm_where_every_step_lands_on_a_vertex() -> None:
    """At the defaults (lr 10, momentum ½, 20 inner steps, λ 0.3) the worst-case bound above
    is vacuous, but on these matrices every inner step's projection input has its top entry
    more than 1 + 1e-3 above the next (checked in the exact computation): the projection
    returns that vertex and is constant within 1e-3, far beyond rounding (the inputs are
    O(10²), their rounding ~1e-13). So the float weights equal the exact ones up to the final
    (w + λp)/(1 + λ): 4 eps."""
    mats = [[[1, 2, 0], [-1, 4, 1], [0, 3, 9]], [[4, -1, 0], [2, 1, 0], [1, 1, 1]]]
    exact, margin = _exact(mats, 10, Fraction(1, 2), 20, Fraction(3, 10))
    assert margin > Fraction(1, 1000), "the example must stay on vertices"
    agg, tjd = SDMGrad(), SDMGradWeighting()
    for a, expected in zip(mats, exact):
        arr = np.array(a, dtype=np.float64)
        want = [float(e) for e in expected]
        np.testing.assert_allclose(agg.weights(arr), want, rtol=0, atol=4 * EPS)
        np.testing.assert_allclose(tjd(torch.from_numpy(arr)).numpy(), want, rtol=0, atol=4 * EPS)


def test_pinned_one_inner_step() -> None:
    """A = diag(1, 4): normaliser ((1 + 2)/2)² + 1e-8 = 2.25 + 1e-8 =: c; with lr = 0.1,
    momentum 0, one step, λ = 0 from (½, ½): y = (½ − 0.05/c, ½ − 0.2/c), projected by the
    shift (0.25/c)/2: w = (½ + 0.075/c, ½ − 0.075/c). Bound: 8 eps."""
    c = 2.25 + 1e-8
    agg = SDMGrad(lr=0.1, momentum=0.0, n_iter=1, lambda_=0.0)
    w = agg.weights(np.diag([1.0, 4.0]))
    np.testing.assert_allclose(w, [0.5 + 0.075 / c, 0.5 - 0.075 / c], rtol=0, atol=8 * EPS)


def test_edge_cases_one_objective_and_the_zero_matrix() -> None:
    """One objective: (1 + λ)/(1 + λ) = 1. The zero matrix: ã = 0/(0 + 1e-8) = 0, so w stays
    uniform and so do the weights (with a preference p: (1/n + λp)/(1 + λ))."""
    assert SDMGrad().weights(np.array([[-3.0]])).tolist() == [1.0]
    agg = SDMGrad()
    for _ in range(2):
        np.testing.assert_allclose(agg.weights(np.zeros((4, 4))), [0.25] * 4, rtol=0, atol=EPS)
    p = np.array([0.1, 0.2, 0.3, 0.4])
    w = SDMGrad(preference=p.tolist()).weights(np.zeros((4, 4)))
    np.testing.assert_allclose(w, (0.25 + 0.3 * p) / 1.3, rtol=0, atol=4 * EPS)


def test_a_non_symmetric_matrix_with_negative_diagonal_is_accepted() -> None:
    a = np.array([[-1.0, 2.0], [0.5, -4.0]])  # J₁J₂ᵀ of anti-aligned batches: diag < 0
    w = SDMGrad().weights(a)
    assert abs(w.sum() - 1) < 4 * EPS and (w >= 0).all()
    with pytest.raises(ValueError, match="square"):
        SDMGrad().weights(np.ones(3))


def test_state_reset_and_checkpoint() -> None:
    gen = torch.Generator().manual_seed(4)
    mats = [torch.randn(3, 3, generator=gen, dtype=torch.float64).numpy() for _ in range(3)]
    agg = SDMGrad(lr=0.3)
    first = [agg.weights(m) for m in mats]
    agg.reset()
    assert np.array_equal(agg.weights(mats[0]), first[0])
    other = SDMGrad(lr=0.3)
    other.load_state_dict(agg.state_dict())
    assert np.array_equal(other.weights(mats[1]), first[1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": 0.0}, "lr"),
        ({"momentum": 1.0}, "momentum"),
        ({"momentum": -0.1}, "momentum"),
        ({"n_iter": 0}, "n_iter"),
        ({"n_iter": 2.5}, "n_iter"),
        ({"lambda_": -1.0}, "lambda_"),
        ({"preference": [1.0, -1.0]}, "non-negative"),
    ],
)
def test_bad_hyperparameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SDMGrad(**kwargs)


def test_a_preference_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="one entry per objective"):
        SDMGrad(preference=[1.0, 1.0]).weights(np.eye(3))


def test_registered_with_its_facts() -> None:
    agg = mogradient.get_aggregator("sdmgrad", lambda_=0.5)
    assert isinstance(agg, SDMGrad) and agg.needs_two_batches and SDMGrad.preference_aware
    assert "permutation_invariant" in agg.claims()
    assert "permutation_invariant" not in SDMGrad(preference=[1, 2]).claims()
