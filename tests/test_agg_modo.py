"""MoDo (``modo``) against TorchJD 0.18's ``MoDoWeighting``, pinned values, edge cases, state.

Reference for the agreement bound: one step is λ ← Π(λ − γ(A + ρI)λ). The projection onto the
simplex is non-expansive, so a difference between two computations of λ grows by at most
``L = 1 + γ(‖A‖₂ + ρ)`` per step; each computation adds at most
``e = √n·(n + 4)·eps·(1 + γ(‖|A|‖_∞ + ρ))`` per step (the standard bound γ_m ≈ m·eps of a sum
of m products, Higham Thm 3.5, for ``Aλ`` with λ on the simplex, plus the projection's
cumulative sum of n entries of size ≤ 1 + γ(‖|A|‖_∞ + ρ)). After T steps:
``‖λ − λ'‖ ≤ 2e·Σ_{t<T} Lᵗ``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchjd.aggregation import MoDoWeighting

import mogradient
from mogradient.aggregators.modo import MoDo

EPS = float(np.finfo(np.float64).eps)


def _bound(mats: list[np.ndarray], gamma: float, rho: float) -> float:
    n = mats[0].shape[0]
    total = 0.0
    for a in mats:
        lip = 1 + gamma * (float(np.linalg.norm(a, 2)) + rho)
        e = float(np.sqrt(n)) * (n + 4) * EPS * (1 + gamma * (float(np.abs(a).sum(1).max()) + rho))
        total = total * lip + e
    return 2 * total


@pytest.mark.parametrize(("gamma", "rho"), [(0.1, 0.1), (0.5, 0.0), (0.02, 2.0)])
@pytest.mark.parametrize("n", [1, 2, 5])
def test_successive_calls_agree_with_torchjd(n: int, gamma: float, rho: float) -> None:
    """Six successive calls on non-symmetric matrices J₁J₂ᵀ (state carried): within the
    module's bound of TorchJD's weights at every call."""
    gen = torch.Generator().manual_seed(n)
    ours, theirs = MoDo(gamma=gamma, rho=rho), MoDoWeighting(gamma=gamma, rho=rho)
    mats: list[np.ndarray] = []
    for _ in range(6):
        j1 = torch.randn(n, 7, generator=gen, dtype=torch.float64)
        j2 = j1 + 0.5 * torch.randn(n, 7, generator=gen, dtype=torch.float64)
        a = j1 @ j2.T
        mats.append(a.numpy())
        w = ours.weights(a)
        np.testing.assert_allclose(
            w.numpy(), theirs(a).numpy(), rtol=0, atol=_bound(mats, gamma, rho)
        )


def test_pinned_first_steps() -> None:
    """A = [[1, 0], [0, 0]], γ = ρ = 0.1, from (½, ½): y = λ − γ(Aλ + ρλ) = (0.445, 0.495),
    projected (shift by −0.03): (0.475, 0.525); next step y = (0.475 − 0.1·(0.475 + 0.0475),
    0.525 − 0.1·0.0525) = (0.42275, 0.51975), sum 0.9425, shift +0.02875: (0.4515, 0.5485).
    Bound: a few ulps of each entry (4 eps)."""
    agg = MoDo()
    a = np.array([[1.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(agg.weights(a), [0.475, 0.525], rtol=0, atol=4 * EPS)
    np.testing.assert_allclose(agg.weights(a), [0.4515, 0.5485], rtol=0, atol=4 * EPS)


def test_edge_cases_one_objective_and_the_zero_matrix() -> None:
    """One objective: weight 1 at every call. The zero matrix: the step is ρλ, uniform, so λ
    stays uniform (exactly: the projection subtracts the same number from equal entries)."""
    agg = MoDo(gamma=3.0)
    for value in (5.0, -2.0, 0.0):
        assert agg.weights(np.array([[value]])).tolist() == [1.0]
    agg = MoDo()
    for _ in range(3):
        np.testing.assert_allclose(agg.weights(np.zeros((4, 4))), [0.25] * 4, rtol=0, atol=EPS)


def test_accepts_a_non_symmetric_indefinite_matrix_and_refuses_bad_ones() -> None:
    a = np.array([[1.0, -3.0], [2.0, -0.5]])  # neither symmetric nor PSD: a valid J₁J₂ᵀ
    w = MoDo().weights(a)
    assert w.shape == (2,) and abs(w.sum() - 1) < 4 * EPS and (w >= 0).all()
    with pytest.raises(ValueError, match="square"):
        MoDo().weights(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"non-finite entry A\[1, 0\]"):
        MoDo().weights(np.array([[1.0, 0.0], [np.nan, 1.0]]))


def test_state_reset_and_checkpoint() -> None:
    """reset() restarts from uniform; state_dict() carries λ into a new instance, which then
    continues exactly; a change in the number of objectives restarts λ."""
    gen = torch.Generator().manual_seed(3)
    mats = [torch.randn(3, 3, generator=gen, dtype=torch.float64).numpy() for _ in range(4)]
    agg = MoDo(gamma=0.3)
    first = [agg.weights(m) for m in mats]
    agg.reset()
    assert np.array_equal(agg.weights(mats[0]), first[0])
    agg.reset()
    agg.weights(mats[0])
    agg.weights(mats[1])
    saved = agg.state_dict()
    other = MoDo(gamma=0.3)
    other.load_state_dict(saved)
    assert np.array_equal(other.weights(mats[2]), first[2])
    assert np.array_equal(MoDo(gamma=0.3).weights(np.eye(2)), other.weights(np.eye(2)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"gamma": 0.0}, "gamma"), ({"gamma": -1.0}, "gamma"), ({"rho": -0.1}, "rho")],
)
def test_bad_hyperparameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MoDo(**kwargs)


def test_registered_with_its_facts() -> None:
    agg = mogradient.get_aggregator("modo", gamma=0.2)
    assert isinstance(agg, MoDo) and repr(agg) == "MoDo(gamma=0.2, rho=0.1)"
    assert MoDo.needs_two_batches and not MoDo.preference_aware


def test_direction_of_two_jacobians_is_the_weighted_mean_of_both() -> None:
    """``agg(J₁, second_jacobian=J₂) = wᵀ(J₁ + J₂)/2`` with w TorchJD's weights of J₁J₂ᵀ;
    ``agg(J)`` is the case J₂ = J₁. Bound: the weights' bound above (one call) times the
    largest column sum of |J₁| + |J₂|, plus the rounding of the sums, (n + 2)·eps of it."""
    gen = torch.Generator().manual_seed(0)
    j1 = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    j2 = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    for first, second in ((j1, j2), (j1, j1)):
        a = (first @ second.T).numpy()
        size = float((first.abs() + second.abs()).sum(0).max())
        atol = (_bound([a], 0.1, 0.1) + 5 * EPS) * size
        expected = MoDoWeighting()(first @ second.T) @ (first + second) / 2
        got = MoDo()(first, second_jacobian=second) if second is not first else MoDo()(first)
        torch.testing.assert_close(got, expected, rtol=0, atol=atol)
