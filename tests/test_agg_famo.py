"""FAMO: weights c·zᵢ/Lᵢ with z = softmax(ξ), ξ stepped on the decrease of the log losses
between consecutive calls (Liu et al., NeurIPS 2023)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mogradient.aggregators import get_aggregator
from mogradient.aggregators.famo import FAMO
from tests.bounds import U64, assert_weighted_gradient, gamma

loss_vectors = st.integers(1, 6).flatmap(
    lambda n: st.lists(st.floats(-10, 15).map(lambda e: 10.0**e), min_size=n, max_size=n)
)


def papers_scalarization(losses: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
    """c·Σ zᵢ log Lᵢ with z = softmax(ξ) and c = (Σ zᵢ/Lᵢ)⁻¹ held fixed (the paper's §3)."""
    z = torch.softmax(xi, dim=0)
    c = 1.0 / (z / losses.detach()).sum()
    return c * (z * torch.log(losses)).sum()


def test_registered_and_repr() -> None:
    assert isinstance(get_aggregator("famo"), FAMO)
    assert repr(FAMO()) == "FAMO(lr=0.025, weight_decay=0.001, optimizer='adam')"
    agg = FAMO(lr=0.1, weight_decay=0, optimizer="sgd")
    assert repr(agg) == "FAMO(lr=0.1, weight_decay=0.0, optimizer='sgd')"
    assert repr(eval(repr(agg))) == repr(agg)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": -0.1}, "lr must be a finite number >= 0"),
        ({"lr": math.nan}, "lr must be a finite number >= 0"),
        ({"lr": "0.1"}, "lr must be a finite number >= 0"),
        ({"weight_decay": -1e-3}, "weight_decay must be a finite number >= 0"),
        ({"weight_decay": math.inf}, "weight_decay must be a finite number >= 0"),
        ({"optimizer": "adamw"}, "optimizer must be 'adam' or 'sgd'"),
    ],
)
def test_invalid_hyperparameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FAMO(**kwargs)  # type: ignore[arg-type]


def test_first_call_weights_inverse_losses() -> None:
    # ξ = 0: z = (½, ½), c = 1/(½ + ½/3) = 3/2, w = c·z/L = (3/4, 1/4)
    np.testing.assert_allclose(FAMO().weights(np.array([1.0, 3.0])), [0.75, 0.25], rtol=1e-15)
    assert FAMO().weights(np.array([4.0])).tolist() == [1.0]
    # equal losses, decreasing at equal rates: ξ stays uniform (up to its decay), w = 1/n
    agg = FAMO(lr=0.5)
    for v in (1e15, 1e3, 1.0, 1e-10):
        np.testing.assert_allclose(agg.weights(np.full(3, v)), np.full(3, 1 / 3), rtol=1e-15)


def test_pinned_second_call_sgd_and_adam() -> None:
    l1, l2 = np.array([1.0, 3.0]), np.array([0.5, 2.7])
    delta = [math.log(1.0 / 0.5), math.log(3.0 / 2.7)]
    mean = 0.5 * (delta[0] + delta[1])
    g = [0.5 * (delta[0] - mean), 0.5 * (delta[1] - mean)]  # J_zᵀδ at z = (½, ½)
    for optimizer, xi in (
        ("sgd", [-1.0 * g[0], -1.0 * g[1]]),  # ξ = 0 − 1·g
        ("adam", [-1.0 * g[0] / (abs(g[0]) + 1e-8), -1.0 * g[1] / (abs(g[1]) + 1e-8)]),
    ):
        agg = FAMO(lr=1.0, weight_decay=0.0, optimizer=optimizer)  # type: ignore[arg-type]
        agg.weights(l1)
        w = agg.weights(l2)
        y = [xi[0] - math.log(0.5), xi[1] - math.log(2.7)]
        expected = [math.exp(y[0]) / (math.exp(y[0]) + math.exp(y[1])), 0.0]
        expected[1] = 1 - expected[0]
        np.testing.assert_allclose(w, expected, rtol=1e-14)
        assert agg.logits is not None and agg.logits[0] < 0 < agg.logits[1]  # the faster one loses


def test_weights_are_the_gradient_of_the_papers_scalarization() -> None:
    rng = np.random.default_rng(0)
    agg = FAMO(lr=0.3, weight_decay=1e-2)
    for _ in range(10):
        losses = 10.0 ** rng.uniform(-3, 3, 4)
        w = agg.weights(losses)
        assert agg.logits is not None
        lt = torch.tensor(losses, requires_grad=True)
        (expected,) = torch.autograd.grad(papers_scalarization(lt, torch.tensor(agg.logits)), lt)
        np.testing.assert_allclose(w, expected.numpy(), rtol=1e-12)


@pytest.mark.parametrize(("lr", "weight_decay"), [(0.025, 1e-3), (0.5, 0.0), (0.1, 0.1)])
def test_matches_torchjd_famo_on_a_sequence(lr: float, weight_decay: float) -> None:
    """TorchJD adds ε = 1e-8 to every loss; min_losses = ε cancels it (ℓ − ε + ε = ℓ(1 + 2u)),
    so both run the same float64 operations and differ by rounding alone. Each step rounds
    δ = log ℓ_t − log ℓ_{t+1} (≤ 32 operations on values ≤ max|log ℓ|: error η ≤ γ₃₂·2max|log ℓ|),
    and Adam's normalised step m̂/(√v̂ + 10⁻⁸) passes on a relative error η/|δ| without
    amplification while |δ| ≫ 10⁻⁸ (asserted: min|δ| ≥ 1e-4 here); the errors of 40 steps
    add, and the softmax and the division by ℓ add a few roundings: rtol = 40·η/min|δ| + γ₁₆."""
    # TorchJD: forward(L_t) then update(L_{t+1}); ours: call t+1 updates with (L_t, L_{t+1}).
    torchjd_scalarization = pytest.importorskip("torchjd.scalarization")
    eps = torch.full((3,), 1e-8, dtype=torch.float64)
    ref = torchjd_scalarization.FAMO(3, min_losses=eps, lr=lr, weight_decay=weight_decay).double()
    ours = FAMO(lr=lr, weight_decay=weight_decay)
    rng = np.random.default_rng(1)
    seq = [10.0 ** rng.uniform(-1, 1, 3) for _ in range(40)]
    logs = np.log(np.array(seq))
    smallest_step = float(np.abs(np.diff(logs, axis=0)).min())
    assert smallest_step >= 1e-4
    eta = gamma(32, U64) * 2 * float(np.abs(logs).max())
    rtol = len(seq) * eta / smallest_step + gamma(16, U64)
    for t, losses in enumerate(seq):
        if t > 0:
            ref.update(torch.tensor(losses))
        values = torch.tensor(losses, requires_grad=True)
        (w_ref,) = torch.autograd.grad(ref(values), values)
        np.testing.assert_allclose(ours.weights(losses), w_ref.numpy(), rtol=rtol)


def test_full_batch_training_matches_the_papers_algorithm_via_torchjd() -> None:
    # Same batch at every step: the losses of call t are exactly the "after" losses of step t−1,
    # so a training loop with our FAMO follows TorchJD's, which recomputes them.
    torchjd_scalarization = pytest.importorskip("torchjd.scalarization")
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 6, 4, generator=gen, dtype=torch.float64)
    b = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    scale = torch.tensor([0.1, 1.0, 30.0], dtype=torch.float64)

    def losses_of(theta: torch.Tensor) -> torch.Tensor:
        return scale * (((a @ theta) - b) ** 2).mean(1) + 0.05

    theta0 = torch.randn(4, generator=gen, dtype=torch.float64)
    eps = torch.full((3,), 1e-8, dtype=torch.float64)  # cancels TorchJD's ε: the same model
    ours = FAMO(lr=0.05)
    ref = torchjd_scalarization.FAMO(3, min_losses=eps, lr=0.05).double()
    th_ours = theta0.clone().requires_grad_()
    th_ref = theta0.clone().requires_grad_()
    opt_ours = torch.optim.SGD([th_ours], lr=0.01)
    opt_ref = torch.optim.SGD([th_ref], lr=0.01)
    for _ in range(60):
        opt_ours.zero_grad()
        ours.scalarize(losses_of(th_ours)).backward()
        opt_ours.step()
        opt_ref.zero_grad()
        ref(losses_of(th_ref)).backward()
        opt_ref.step()
        ref.update(losses_of(th_ref).detach())
    torch.testing.assert_close(th_ours, th_ref, rtol=1e-6, atol=1e-8)
    ours.weights(losses_of(th_ours).detach())  # our pending update of ξ happens at the next call
    assert ours.logits is not None
    np.testing.assert_allclose(ours.logits, ref._w.detach().numpy(), rtol=1e-5, atol=1e-7)


def test_sgd_is_the_papers_plain_step() -> None:
    # ξ ← ξ − β(∇_ξ zᵀδ + γξ), the softmax's vector-Jacobian product by autograd.
    beta, gamma = 0.7, 0.05
    ours = FAMO(lr=beta, weight_decay=gamma, optimizer="sgd")
    xi = torch.zeros(3, dtype=torch.float64)
    rng = np.random.default_rng(2)
    previous = None
    for _ in range(15):
        losses = 10.0 ** rng.uniform(-2, 2, 3)
        if previous is not None:
            delta = torch.tensor(np.log(previous) - np.log(losses))
            xr = xi.clone().requires_grad_()
            (g,) = torch.autograd.grad(torch.softmax(xr, 0), xr, grad_outputs=delta)
            xi = xi - beta * (g + gamma * xi)
        previous = losses
        w = ours.weights(losses)
        z = torch.softmax(xi, 0).numpy()
        np.testing.assert_allclose(w, (z / losses) / (z / losses).sum(), rtol=1e-12)


def test_lr_zero_keeps_inverse_loss_weights() -> None:
    agg = FAMO(lr=0.0)
    rng = np.random.default_rng(3)
    for _ in range(5):
        losses = rng.uniform(0.1, 10, 3)
        np.testing.assert_allclose(agg.weights(losses), (1 / losses) / (1 / losses).sum())


def test_extreme_scales() -> None:
    agg = FAMO(lr=0.5)
    rng = np.random.default_rng(4)
    for _ in range(20):
        losses = np.array([1e-300, 1e-10, 1.0, 1e15, 1e300]) * rng.uniform(0.5, 2, 5)
        w = agg.weights(losses)
        assert np.all(np.isfinite(w)) and np.all(w >= 0)
        assert math.isclose(w.sum(), 1.0, rel_tol=1e-12)


@pytest.mark.parametrize("bad", [0.0, -0.3])
def test_non_positive_loss_is_refused(bad: float) -> None:
    agg = FAMO()
    agg.weights(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"objective 0 has loss .*shift that objective"):
        agg.weights(np.array([bad, 2.0]))


def test_reset_and_changing_n() -> None:
    agg = FAMO(lr=0.3)
    seq = [agg.weights(np.array([3.0, 1.0, 2.0]) / k) for k in (1.0, 1.5, 1.6, 3.0)]
    assert agg.logits is not None and np.any(agg.logits != 0)
    with pytest.raises(ValueError, match="call reset"):
        agg.weights(np.ones(2))
    agg.reset()
    again = [agg.weights(np.array([3.0, 1.0, 2.0]) / k) for k in (1.0, 1.5, 1.6, 3.0)]
    np.testing.assert_array_equal(np.array(again), np.array(seq))


def test_dtypes_and_scalarize_gradient() -> None:
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        theta = torch.randn(4, dtype=dtype, requires_grad=True)
        targets = torch.randn(3, 4, dtype=dtype)
        losses = ((theta - targets) ** 2).sum(1) * torch.tensor([1e-3, 1.0, 1e3], dtype=dtype)
        a, b, c = FAMO(lr=0.5), FAMO(lr=0.5), FAMO(lr=0.5)
        for agg in (a, b, c):
            agg.weights(np.array([1.0, 2.0, 3.0]))
        (grad,) = torch.autograd.grad(a.scalarize(losses), theta, retain_graph=True)
        assert a.logits is not None
        formula = papers_scalarization(losses, torch.tensor(a.logits, dtype=dtype))
        (expected,) = torch.autograd.grad(formula, theta, retain_graph=True)
        jac = torch.stack([torch.autograd.grad(li, theta, retain_graph=True)[0] for li in losses])
        d = b(jac, losses=losses.detach())
        assert d.dtype == dtype
        w = c.weights(losses.detach())
        assert_weighted_gradient(grad, d, w, jac)
        assert_weighted_gradient(grad, expected, w, jac)


def test_state_dict_round_trip_mid_sequence() -> None:
    # a checkpoint taken after a few calls, loaded into a fresh instance, continues identically
    rng = np.random.default_rng(11)
    seq = [10.0 ** rng.uniform(-3, 3, 3) for _ in range(8)]
    agg = FAMO(lr=0.3, weight_decay=0.01)
    for losses in seq[:4]:
        agg.weights(losses)
    state = agg.state_dict()
    tail = [agg.weights(losses) for losses in seq[4:]]
    restored = FAMO()
    restored.load_state_dict(state)
    np.testing.assert_array_equal(np.array([restored.weights(x) for x in seq[4:]]), np.array(tail))


@settings(max_examples=200, deadline=None)
@given(loss_vectors, st.integers(0, 2**32 - 1), st.sampled_from(["adam", "sgd"]))
def test_claims_on_random_inputs(values: list[float], seed: int, optimizer: str) -> None:
    losses = np.array(values)
    n = losses.shape[0]
    rng = np.random.default_rng(seed)
    factors = [np.ones(n), *(10.0 ** rng.uniform(-1, 1, (3, n)))]
    perm = rng.permutation(n)
    jac = torch.tensor(rng.standard_normal((n, 4)))
    make = lambda: FAMO(lr=0.5, optimizer=optimizer)  # noqa: E731
    agg, other, permuted = make(), make(), make()
    seq = [agg.weights(losses * f) for f in factors]
    for w in seq:  # simplex_weights, non_negative_weights
        assert np.all(w >= 0) and math.isclose(w.sum(), 1.0, rel_tol=1e-12)
    np.testing.assert_array_equal(np.array([other.weights(losses * f) for f in factors]), seq)
    for f, w in zip(factors, seq):  # permutation_invariant (over a history)
        np.testing.assert_allclose(
            permuted.weights((losses * f)[perm]), w[perm], rtol=1e-9, atol=1e-300
        )
    agg.reset()  # reset_restores
    np.testing.assert_array_equal(agg.weights(losses), seq[0])
    lt = torch.tensor(losses)
    d = make()(jac, losses=lt)  # scale_equivariant, non_differentiable
    torch.testing.assert_close(make()(3.0 * jac, losses=lt), 3.0 * d)
    assert not make()(jac.requires_grad_(), losses=lt).requires_grad
