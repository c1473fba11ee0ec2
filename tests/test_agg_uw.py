"""UW: weights ½e^(−s) of Kendall et al.'s objective, log-variances s learned by an implicit
gradient step on the same objective."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import lambertw

from mogradient.aggregators import get_aggregator
from mogradient.aggregators.uw import UW, implicit_step
from tests.bounds import assert_weighted_gradient

loss_vectors = st.integers(1, 6).flatmap(
    lambda n: st.lists(st.floats(-10, 15).map(lambda e: 10.0**e), min_size=n, max_size=n)
)


def kendall_objective(losses: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Σ Lᵢ/(2σᵢ²) + log σᵢ with σᵢ² = e^(sᵢ), written from the paper's formula."""
    sigma = torch.exp(0.5 * s)
    return (losses / (2 * sigma**2) + torch.log(sigma)).sum()


def test_registered_and_repr() -> None:
    assert isinstance(get_aggregator("uw"), UW)
    assert isinstance(get_aggregator("uncertainty", lr=0.5), UW)
    assert repr(UW()) == "UW(lr=0.01, init=0.0)"
    assert repr(UW(lr=0.5, init=-0.5)) == "UW(lr=0.5, init=-0.5)"
    assert repr(eval(repr(UW(lr=2, init=1)))) == "UW(lr=2.0, init=1.0)"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": 0.0}, "lr must be > 0"),
        ({"lr": -1.0}, "lr must be > 0"),
        ({"lr": math.inf}, "lr must be a finite number"),
        ({"lr": "0.1"}, "lr must be a finite number"),
        ({"lr": True}, "lr must be a finite number"),
        ({"init": math.nan}, "init must be a finite number"),
        ({"init": -800.0}, r"init must lie in \[-700, 700\]"),
    ],
)
def test_invalid_hyperparameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        UW(**kwargs)


def test_weights_are_the_gradient_of_kendalls_objective() -> None:
    # d/dLᵢ [Lᵢ/(2σᵢ²) + log σᵢ] = 1/(2σᵢ²) = ½e^(−sᵢ), checked by autograd at every call.
    agg = UW(lr=0.3, init=0.7)
    rng = np.random.default_rng(0)
    s = np.full(3, 0.7)
    for _ in range(6):
        losses = 10.0 ** rng.uniform(-3, 3, 3)
        lt = torch.tensor(losses, requires_grad=True)
        (expected,) = torch.autograd.grad(kendall_objective(lt, torch.tensor(s)), lt)
        np.testing.assert_allclose(agg.weights(losses), expected.numpy(), rtol=1e-14)
        assert agg.log_vars is not None
        s = agg.log_vars.copy()


def test_the_step_is_the_implicit_gradient_step() -> None:
    # s' = s − lr·∂f/∂s evaluated at s' (backward Euler), the gradient taken by autograd.
    rng = np.random.default_rng(1)
    for lr in (1e-3, 0.1, 2.0, 50.0):
        s = rng.uniform(-5, 5, 4)
        losses = 10.0 ** rng.uniform(-10, 15, 4)
        s_new = implicit_step(s, losses, lr)
        st_ = torch.tensor(s_new, requires_grad=True)
        (grad,) = torch.autograd.grad(kendall_objective(torch.tensor(losses), st_), st_)
        np.testing.assert_allclose(s_new, s - lr * grad.numpy(), rtol=1e-12, atol=1e-12)


def test_the_step_matches_a_50_digit_root_for_any_lr_and_scale() -> None:
    # The root of x − s + (lr/2)(1 − L·e^(−x)) (increasing in x), bracketed by s and log L,
    # found by bisection in mpmath at 50 digits: no cancellation for lr from 1e-12 to 1e300.
    mpmath = pytest.importorskip("mpmath")
    rng = np.random.default_rng(5)
    with mpmath.workdps(50):
        for _ in range(300):
            lr = 10.0 ** rng.uniform(-12, 300)
            s = float(rng.uniform(-50, 50))
            loss = 10.0 ** rng.uniform(-300, 300)
            got = float(implicit_step(np.array([s]), np.array([loss]), lr)[0])
            lo, hi = sorted((mpmath.mpf(s), mpmath.log(loss)))
            half, big_l = mpmath.mpf(lr) / 2, mpmath.mpf(loss)
            for _ in range(400):  # bisection: f(lo) ≤ 0 ≤ f(hi)
                mid = (lo + hi) / 2
                if mid - s + half * (1 - big_l * mpmath.exp(-mid)) > 0:
                    hi = mid
                else:
                    lo = mid
            root = float((lo + hi) / 2)
            assert abs(got - root) <= 1e-12 * (1 + abs(root)), (lr, s, loss)


def test_the_step_matches_scipys_lambert_w() -> None:
    rng = np.random.default_rng(2)
    s = rng.uniform(-3, 3, 50)
    losses = 10.0 ** rng.uniform(-6, 6, 50)
    lr = 0.2
    x = 0.5 * lr * losses * np.exp(0.5 * lr - s)
    expected = s - 0.5 * lr + lambertw(x).real
    np.testing.assert_allclose(implicit_step(s, losses, lr), expected, rtol=1e-13, atol=1e-13)


def _gap_to_torchjd_uw_with_sgd(lr: float, steps: int = 30) -> float:
    """Largest relative gap between our weights and TorchJD's UW trained by torch's SGD (the
    explicit step), over ``steps`` calls on the same losses."""
    torchjd_scalarization = pytest.importorskip("torchjd.scalarization")
    ref = torchjd_scalarization.UW(3).double()
    opt = torch.optim.SGD(ref.parameters(), lr=lr)
    ours = UW(lr=lr)
    rng = np.random.default_rng(3)
    gap = 0.0
    for _ in range(steps):
        losses = rng.uniform(0.5, 3.0, 3)
        values = torch.tensor(losses, requires_grad=True)
        opt.zero_grad()
        ref(values).backward()
        assert values.grad is not None
        w_ref = values.grad.numpy()
        opt.step()
        gap = max(gap, float(np.max(np.abs(ours.weights(losses) / w_ref - 1))))
    return gap


def test_agrees_with_the_explicit_sgd_step_of_torchjd_uw_to_first_order() -> None:
    # Implicit and explicit steps differ by O(lr²) per step: 10× smaller lr, ~100× smaller gap.
    coarse, fine = _gap_to_torchjd_uw_with_sgd(1e-3), _gap_to_torchjd_uw_with_sgd(1e-4)
    assert fine < 1e-6
    assert 50 < coarse / fine < 200


@pytest.mark.parametrize("loss", [1e-10, 1e-3, 1.0, 7.5, 1e6, 1e15])
def test_constant_loss_converges_to_log_loss(loss: float) -> None:
    # The stationary point of ½e^(−s)L + ½s is s = log L: weight 1/(2L), weighted loss ½.
    agg = UW(lr=1.0)
    previous = 0.0
    for _ in range(200):
        agg.weights(np.array([loss]))
        assert agg.log_vars is not None
        s = float(agg.log_vars[0])
        # monotone, never past the fixed point (an explicit step from 0 jumps by L/2 here)
        assert (s - previous) * (math.log(loss) - previous) >= 0
        assert (s - math.log(loss)) * (previous - math.log(loss)) >= -1e-24
        previous = s
    assert math.isclose(s, math.log(loss), rel_tol=1e-9, abs_tol=1e-9)
    w = agg.weights(np.array([loss]))
    assert math.isclose(float(w[0]) * loss, 0.5, rel_tol=1e-9)


def test_pinned_history() -> None:
    # L = 1 at s = 0 is the fixed point (u = W((lr/2)e^(lr/2)) = lr/2): weight ½ forever.
    agg = UW(lr=0.4)
    for _ in range(5):
        assert agg.weights(np.array([1.0])).tolist() == pytest.approx([0.5], rel=1e-15)
    # A zero loss pulls s down by exactly lr/2 per call: weights ½e^(t·lr/2).
    agg = UW(lr=0.4)
    got = [float(agg.weights(np.array([0.0]))[0]) for _ in range(5)]
    np.testing.assert_allclose(got, [0.5 * math.exp(0.2 * t) for t in range(5)], rtol=1e-14)


def test_equal_losses_keep_equal_weights() -> None:
    agg = UW(lr=0.3)
    for v in (1e-10, 2.0, 1e15, 0.0):
        w = agg.weights(np.full(3, v))
        assert w[0] == w[1] == w[2]


def test_objectives_are_learned_independently() -> None:
    a, b, both = UW(lr=0.5), UW(lr=0.5), UW(lr=0.5)
    rng = np.random.default_rng(4)
    for _ in range(10):
        losses = 10.0 ** rng.uniform(-2, 2, 2)
        w = both.weights(losses)
        np.testing.assert_array_equal(w, [a.weights(losses[:1])[0], b.weights(losses[1:])[0]])


def test_negative_loss_is_refused_zero_is_not() -> None:
    agg = UW()
    with pytest.raises(ValueError, match=r"objective 1 has loss -0.5.*shift that objective"):
        agg.weights(np.array([1.0, -0.5]))
    assert agg.log_vars is None  # a refused call leaves no state
    agg.weights(np.array([0.0, 1.0]))


def test_reset_and_changing_n() -> None:
    agg = UW(lr=0.7, init=0.3)
    seq = [agg.weights(np.array([2.0, 0.1, 5.0]) * k) for k in (1, 2, 3)]
    with pytest.raises(ValueError, match="call reset"):
        agg.weights(np.ones(2))
    agg.reset()
    np.testing.assert_array_equal(agg.weights(np.array([2.0, 0.1, 5.0])), seq[0])
    agg.reset()
    assert agg.weights(np.ones(2)).shape == (2,)


def test_extreme_scales_stay_finite() -> None:
    agg = UW(lr=10.0)
    losses = np.array([1e-10, 1.0, 1e15, 0.0])
    for _ in range(50):
        w = agg.weights(losses)
        assert np.all(np.isfinite(w)) and np.all(w > 0)
    np.testing.assert_allclose(w[:3] * losses[:3], 0.5, rtol=1e-6)


def test_dtypes_and_scalarize_gradient() -> None:
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        theta = torch.randn(4, dtype=dtype, requires_grad=True)
        targets = torch.randn(3, 4, dtype=dtype)
        scale = torch.tensor([1e-3, 1.0, 1e3], dtype=dtype)
        losses = ((theta - targets) ** 2).sum(1) * scale
        a, b, c = UW(lr=0.5), UW(lr=0.5), UW(lr=0.5)
        for agg in (a, b, c):
            agg.weights(np.array([1.0, 2.0, 3.0]))  # same state, not the initial one
        (grad,) = torch.autograd.grad(a.scalarize(losses), theta, retain_graph=True)
        jac = torch.stack([torch.autograd.grad(li, theta, retain_graph=True)[0] for li in losses])
        d = b(jac, losses=losses.detach())
        assert d.dtype == dtype
        assert_weighted_gradient(grad, d, c.weights(losses.detach()), jac)


def test_state_dict_round_trip_mid_sequence() -> None:
    # a checkpoint taken after a few calls, loaded into a fresh instance, continues identically
    rng = np.random.default_rng(11)
    seq = [10.0 ** rng.uniform(-3, 3, 3) for _ in range(8)]
    agg = UW(lr=0.5, init=0.2)
    for losses in seq[:4]:
        agg.weights(losses)
    state = agg.state_dict()
    tail = [agg.weights(losses) for losses in seq[4:]]
    restored = UW()
    restored.load_state_dict(state)
    np.testing.assert_array_equal(np.array([restored.weights(x) for x in seq[4:]]), np.array(tail))


@settings(max_examples=200, deadline=None)
@given(loss_vectors, st.integers(0, 2**32 - 1), st.floats(1e-3, 10.0))
def test_claims_on_random_inputs(values: list[float], seed: int, lr: float) -> None:
    losses = np.array(values)
    n = losses.shape[0]
    rng = np.random.default_rng(seed)
    factors = [np.ones(n), *(10.0 ** rng.uniform(-1, 1, (2, n)))]
    perm = rng.permutation(n)
    jac = torch.tensor(rng.standard_normal((n, 4)))
    agg, other, permuted = UW(lr=lr), UW(lr=lr), UW(lr=lr)
    seq = [agg.weights(losses * f) for f in factors]
    for w in seq:  # non_negative_weights
        assert np.all(w >= 0) and np.all(np.isfinite(w))
    np.testing.assert_array_equal(np.array([other.weights(losses * f) for f in factors]), seq)
    for f, w in zip(factors, seq):  # permutation_invariant (over a history)
        np.testing.assert_allclose(permuted.weights((losses * f)[perm]), w[perm], rtol=1e-12)
    agg.reset()  # reset_restores
    np.testing.assert_array_equal(agg.weights(losses), seq[0])
    lt = torch.tensor(losses)
    d = UW(lr=lr)(jac, losses=lt)  # scale_equivariant, non_differentiable
    torch.testing.assert_close(UW(lr=lr)(3.0 * jac, losses=lt), 3.0 * d)
    assert not UW(lr=lr)(jac.requires_grad_(), losses=lt).requires_grad
