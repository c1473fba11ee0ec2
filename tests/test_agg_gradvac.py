"""GradVac (Wang et al., ICLR 2021): Algorithm 1 on explicit vectors, pinned values, TorchJD
0.18, state (EMA targets, seed, reset), edge cases, claimed properties, hyper-parameters, repr."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import mogradient.aggregators.gradvac as gradvac_module
from mogradient import get_aggregator
from mogradient.aggregators import gramian_of
from tests.bounds import U64, assert_float32_direction, gamma, matvec_bound
from tests.gradvac_bounds import Steps, first_order_bound

torchjd_aggregation = pytest.importorskip("torchjd.aggregation")


def _algorithm1(j: np.ndarray, orders: np.ndarray, phi_hat: np.ndarray, beta: float) -> np.ndarray:
    """Algorithm 1 of the paper on explicit vectors (updates ``phi_hat`` in place); returns
    the summed corrected gradients."""
    n = j.shape[0]
    total = np.zeros(j.shape[1])
    for i in range(n):
        gi = j[i].copy()
        for jj in orders[i]:
            if jj == i:
                continue
            gj = j[jj]
            ni, nj = np.linalg.norm(gi), np.linalg.norm(gj)
            if ni == 0 or nj == 0:
                continue
            phi = float(np.clip(gi @ gj / (ni * nj), -1, 1))
            target = phi_hat[i, jj]
            if phi < target and abs(target) < 1:
                w = ni * (target * math.sqrt(1 - phi**2) - phi * math.sqrt(1 - target**2))
                gi = gi + w / (nj * math.sqrt(1 - target**2)) * gj
            phi_hat[i, jj] = (1 - beta) * target + beta * phi
        total += gi
    return total


class _Spy:
    """Records the visiting orders the aggregator draws (to replay them in a reference)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.orders: list[np.ndarray] = []
        self.weights: list[torch.Tensor] = []
        original = gradvac_module.gradvac_weights

        def spy(gramian, orders, phi_hat, beta):  # type: ignore[no-untyped-def]
            self.orders.append(np.array(orders))
            self.weights.append(torch.tensor(original(gramian, orders, phi_hat, beta)))
            return self.weights[-1].numpy().copy()

        monkeypatch.setattr(gradvac_module, "gradvac_weights", spy)


def _torchjd_step(reference: object, gram: torch.Tensor, orders: np.ndarray) -> torch.Tensor:
    """One TorchJD GradVacWeighting call with torch.randperm replaced by ``orders``."""
    n = orders.shape[0]
    perms = []
    for i in range(n):
        others = [j for j in range(n) if j != i]
        perms.append(torch.tensor([others.index(int(j)) for j in orders[i] if j != i]))
    queue = iter(perms)
    original = torch.randperm
    torch.randperm = lambda *args, **kwargs: next(queue)  # type: ignore[assignment]
    try:
        return reference(gram)  # type: ignore[operator]
    finally:
        torch.randperm = original


# -- the paper's algorithm and pinned values ------------------------------------------------


def test_pinned_first_two_steps() -> None:
    # g1 = e1, g2 = (-1, 1), φ = -1/√2, targets 0. Step 1: g1 + ½g2 = (½, ½) and g2 + g1 =
    # (0, 1), weights (2, 3/2); targets become -β/√2. Step 2 (β = ½, φ̂ = -1/(2√2)): w₁ =
    # ‖g1‖(φ̂√(1-φ²) - φ√(1-φ̂²))/(‖g2‖√(1-φ̂²)), w₂ the same with the norms swapped.
    jac = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    agg = get_aggregator("gradvac", beta=0.5)
    gram = gramian_of(jac).numpy()
    # a cosine, two square roots, a product and a quotient, a sum: at most 16 roundings
    np.testing.assert_allclose(agg.weights(gram), [2.0, 1.5], rtol=gamma(16, U64))
    phi, target = -1 / math.sqrt(2), -1 / (2 * math.sqrt(2))
    core = (target * math.sqrt(1 - phi**2) - phi * math.sqrt(1 - target**2)) / math.sqrt(
        1 - target**2
    )
    w12, w21 = core / math.sqrt(2), core * math.sqrt(2)
    # both sides: ≤ 16 roundings of each term of core, whose difference cancels by the ratio
    # (|a| + |b|)/|a − b|, then a product and a sum: 2·γ₁₆ of that, relatively
    terms = abs(target * math.sqrt(1 - phi**2)) + abs(phi * math.sqrt(1 - target**2))
    rtol = 2 * gamma(16, U64) * terms / abs(core * math.sqrt(1 - target**2))
    np.testing.assert_allclose(agg.weights(gram), [1 + w21, 1 + w12], rtol=rtol)


def test_corrected_gradient_reaches_the_target() -> None:
    # After a correction, cos(gᵢ + w gⱼ, gⱼ) equals the target.
    jac = torch.tensor([[1.0, 0.2, 0.0], [-1.0, 1.0, 0.5]], dtype=torch.float64)
    agg = get_aggregator("gradvac", beta=0.5)
    gram = gramian_of(jac).numpy()
    agg.weights(gram)
    agg.weights(gram)  # targets now at a negative value above the observed cosine
    target = agg._phi_hat[0, 1]
    w = agg.weights(gram)
    # weights = column sums of C: 1 + w₂₁ for g1 and 1 + w₁₂ for g2
    g1 = jac[0].numpy() + (w[1] - 1) * jac[1].numpy()
    cos = g1 @ jac[1].numpy() / np.linalg.norm(g1) / np.linalg.norm(jac[1].numpy())
    assert cos == pytest.approx(target, abs=1e-12)


@pytest.mark.parametrize("beta", [0.0, 0.01, 0.5, 1.0])
def test_matches_algorithm1_on_explicit_vectors(
    beta: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Agreement to the first-order bound of two float64 evaluations (first_order_bound).
    spy = _Spy(monkeypatch)
    rng = np.random.default_rng(0)
    agg = get_aggregator("gradvac", beta=beta, seed=3)
    n, d = 5, 7
    phi_hat = np.zeros((n, n))
    steps = Steps(beta)
    for _ in range(12):
        j = rng.standard_normal((n, d)) + 0.3 * rng.standard_normal(d)
        if rng.random() < 0.3:
            j[rng.integers(0, n)] = 0.0
        ours = agg(torch.tensor(j)).numpy()
        expected = _algorithm1(j, spy.orders[-1], phi_hat, beta)
        steps.add(torch.tensor(j), spy.orders[-1], ours, expected, agg._phi_hat, phi_hat)
    steps.check(spy.weights)


def test_beta_zero_is_pcgrad() -> None:
    # With β = 0 the targets stay 0: a conflicting pair is projected to orthogonality, exactly
    # PCGrad's rule (checked on explicit vectors with the same visiting orders).
    rng = np.random.default_rng(1)
    j = rng.standard_normal((4, 6))
    orders = np.argsort(rng.random((4, 4)), axis=1)
    from mogradient.solvers.gradvac import gradvac_weights

    w = gradvac_weights(j @ j.T, orders, np.zeros((4, 4)), 0.0)
    ((dw, _),) = first_order_bound([torch.tensor(j)], [orders], 0.0)
    wt, jt = torch.as_tensor(w), torch.tensor(j)
    bound = (dw @ jt.abs() + 2 * matvec_bound(wt, jt, roundings=2 * 4)).numpy()
    total = np.zeros(6)
    for i in range(4):
        gi = j[i].copy()
        for k in orders[i]:
            if k != i and gi @ j[k] < 0:
                gi -= (gi @ j[k]) / (j[k] @ j[k]) * j[k]
        total += gi
    # two float64 evaluations of the same projections: first_order_bound (β = 0: targets 0,
    # the correction −gᵢ·gⱼ/‖gⱼ‖², PCGrad's) plus both products' rounding, as in Steps
    assert np.all(np.abs(w @ j - total) <= bound)


# -- TorchJD 0.18 ---------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.0, 0.01, 0.5, 1.0])
def test_matches_torchjd_with_eps_zero(beta: float, monkeypatch: pytest.MonkeyPatch) -> None:
    # TorchJD adds eps (default 1e-8) to two denominators; with eps = 0 and the same visiting
    # orders the two agree over a sequence of steps (targets included) to the first-order
    # bound of two float64 evaluations (first_order_bound).
    spy = _Spy(monkeypatch)
    rng = np.random.default_rng(2)
    for trial in range(8):
        n = int(rng.integers(2, 7))
        d = int(rng.integers(n, 10))
        agg = get_aggregator("gradvac", beta=beta, seed=trial)
        reference = torchjd_aggregation.GradVacWeighting(beta=beta, eps=0.0)
        steps = Steps(beta)
        first = len(spy.weights)
        for _ in range(6):
            jac = torch.tensor(rng.standard_normal((n, d)) * 10.0 ** rng.uniform(-3, 3))
            ours = agg(jac)
            expected = _torchjd_step(reference, gramian_of(jac), spy.orders[-1]) @ jac
            phi_ref = reference._phi_t.numpy()
            steps.add(jac, spy.orders[-1], ours, expected, agg._phi_hat, phi_ref)
        steps.check(spy.weights[first:])


def test_close_to_torchjd_default_eps_at_unit_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    # TorchJD's default eps = 1e-8 shifts two denominators; at unit scale they are ≥ 10⁴·eps,
    # so ours (eps = 0) and TorchJD's differ by the first-order effect of eps plus both
    # evaluations' rounding (first_order_bound with eps), over a sequence of steps.
    spy = _Spy(monkeypatch)
    rng = np.random.default_rng(3)
    agg = get_aggregator("gradvac")
    reference = torchjd_aggregation.GradVacWeighting()
    steps = Steps(0.5, eps=reference.eps)
    for _ in range(10):
        jac = torch.tensor(rng.standard_normal((4, 8)))
        ours = agg(jac)
        expected = _torchjd_step(reference, gramian_of(jac), spy.orders[-1]) @ jac
        steps.add(jac, spy.orders[-1], ours, expected, agg._phi_hat, reference._phi_t.numpy())
    steps.check(spy.weights)


# -- state ----------------------------------------------------------------------------------


def _sequence(agg: object, jacs: list[torch.Tensor]) -> list[torch.Tensor]:
    return [agg(j) for j in jacs]  # type: ignore[operator]


def _jacs(seed: int, n: int = 4, steps: int = 5) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    return [torch.tensor(rng.standard_normal((n, 6))) for _ in range(steps)]


def test_seed_reproduces_and_reset_restores() -> None:
    jacs = _jacs(4)
    a, b = get_aggregator("gradvac", seed=7), get_aggregator("gradvac", seed=7)
    first = _sequence(a, jacs)
    for x, y in zip(first, _sequence(b, jacs), strict=True):
        assert torch.equal(x, y)
    a.reset()
    for x, y in zip(first, _sequence(a, jacs), strict=True):
        assert torch.equal(x, y)


def test_state_carries_over_between_steps() -> None:
    jac = _jacs(5, steps=1)[0]
    agg = get_aggregator("gradvac", beta=0.5)
    first = agg(jac)
    agg.reset()
    agg(jac)
    assert not torch.equal(agg(jac), first)  # targets have moved


def test_seed_none_draws_its_seed_once() -> None:
    # None: fresh entropy at construction, so reset() still restores this instance's sequence
    # (reset_restores holds for every seed), but two instances differ (no deterministic claim).
    assert type(get_aggregator("gradvac")).properties == {
        "non_negative_weights",
        "scale_equivariant",
        "reset_restores",
        "non_differentiable",
    }
    assert "deterministic" not in get_aggregator("gradvac", seed=None).claims()
    assert "deterministic" in get_aggregator("gradvac", seed=0).claims()
    jacs = _jacs(11, n=6)
    agg = get_aggregator("gradvac", seed=None)
    first = _sequence(agg, jacs)
    agg.reset()
    for x, y in zip(first, _sequence(agg, jacs), strict=True):
        assert torch.equal(x, y)


def test_state_dict_round_trip() -> None:
    jacs = _jacs(12, steps=6)
    agg = get_aggregator("gradvac", seed=5)
    _sequence(agg, jacs[:3])
    state = agg.state_dict()
    expected = _sequence(agg, jacs[3:])
    restored = get_aggregator("gradvac", seed=99)
    restored.load_state_dict(state)
    assert repr(restored) == "GradVac(beta=0.5, seed=5)"
    for x, y in zip(expected, _sequence(restored, jacs[3:]), strict=True):
        assert torch.equal(x, y)


def test_changing_the_number_of_objectives_restarts_the_targets() -> None:
    agg = get_aggregator("gradvac", seed=1)
    agg(_jacs(6, n=3, steps=1)[0])
    jac = _jacs(7, n=5, steps=1)[0]
    fresh = get_aggregator("gradvac", seed=1)
    fresh(_jacs(6, n=3, steps=1)[0])  # same random stream position, targets restarted below
    out = agg(jac)
    assert agg._phi_hat.shape == (5, 5)
    torch.testing.assert_close(out, fresh(jac))


# -- edge cases -----------------------------------------------------------------------------


def test_one_objective_returns_its_gradient() -> None:
    jac = torch.tensor([[3.0, -4.0]], dtype=torch.float64)
    agg = get_aggregator("gradvac")
    for _ in range(3):
        torch.testing.assert_close(agg(jac), jac[0])


def test_zero_jacobian() -> None:
    agg = get_aggregator("gradvac")
    jac = torch.zeros(3, 4, dtype=torch.float64)
    np.testing.assert_array_equal(agg.weights(gramian_of(jac)).numpy(), np.ones(3))
    assert torch.count_nonzero(agg(jac)) == 0
    np.testing.assert_array_equal(agg._phi_hat, np.zeros((3, 3)))  # undefined cosines: skipped


def test_identical_gradients_are_summed() -> None:
    jac = torch.tensor([[1.0, 2.0, 3.0]] * 2, dtype=torch.float64)
    agg = get_aggregator("gradvac", beta=0.5)
    torch.testing.assert_close(agg(jac), 2 * jac[0])
    # the cosine of identical gradients is snapped to exactly 1: the targets are exactly ½
    np.testing.assert_array_equal(agg._phi_hat, [[0.0, 0.5], [0.5, 0.0]])


def test_opposite_gradients_cancel() -> None:
    # φ = -1 < 0: each gradient gets the other added in full, both become 0, weights (2, 2).
    jac = torch.tensor([[1.0, -1.0, 0.5], [-1.0, 1.0, -0.5]], dtype=torch.float64)
    agg = get_aggregator("gradvac")
    # φ snapped to exactly −1 and equal norms: each multiple is ‖gᵢ‖/‖gⱼ‖ = 1 exactly
    np.testing.assert_array_equal(agg.weights(gramian_of(jac)).numpy(), [2.0, 2.0])
    agg.reset()
    torch.testing.assert_close(agg(jac), torch.zeros(3, dtype=torch.float64))


def test_unreachable_target_is_left_uncorrected() -> None:
    # β = 1 and identical gradients: the targets become exactly 1. A later pair below that
    # target cannot be raised to cosine 1 by a finite multiple: no correction, no NaN.
    agg = get_aggregator("gradvac", beta=1.0)
    agg(torch.tensor([[1.0, 0.0]] * 2, dtype=torch.float64))
    assert agg._phi_hat[0, 1] == 1.0
    jac = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    np.testing.assert_array_equal(agg.weights(gramian_of(jac)).numpy(), [1.0, 1.0])


@pytest.mark.parametrize("scale", [2.0**-33, 2.0**-17, 1.0, 2.0**17, 2.0**33, 2.0**50])
def test_scales(scale: float) -> None:
    """Exact: a power of two (about 1e-10 to 1e15) scales J, the Gramian (by its square) and
    every rounding with them, so the cosines, targets and weights are the same bits."""
    jacs = _jacs(8)
    a, b = get_aggregator("gradvac"), get_aggregator("gradvac")
    for jac in jacs:
        ds = b(jac * scale)
        assert torch.isfinite(ds).all()
        assert torch.equal(ds, a(jac) * scale)


def test_float32_jacobian() -> None:
    j64 = _jacs(9, steps=1)[0]
    assert_float32_direction(lambda: get_aggregator("gradvac"), j64.float())


# -- claimed properties ---------------------------------------------------------------------


def test_claims() -> None:
    assert get_aggregator("gradvac", seed=0).claims() == {
        "non_negative_weights",
        "scale_equivariant",
        "deterministic",
        "reset_restores",
        "non_differentiable",
    }


def test_claimed_properties_hold_on_random_jacobians() -> None:
    rng = np.random.default_rng(10)
    for trial in range(100):
        n, d = int(rng.integers(1, 7)), int(rng.integers(1, 9))
        jacs = [
            torch.tensor(rng.standard_normal((n, d)) * 10.0 ** rng.uniform(-8, 8)) for _ in range(3)
        ]
        a = float(2.0 ** rng.integers(-10, 11))  # a power of two: scales exactly
        agg, scaled = get_aggregator("gradvac", seed=trial), get_aggregator("gradvac", seed=trial)
        outs = []
        for jac in jacs:
            w = agg.weights(gramian_of(jac))
            assert bool((w >= 1.0).all())  # every correction adds a non-negative multiple
            w_scaled = scaled.weights(gramian_of(jac * a))
            # G·a² is exact and so is every step after it: the same weights, bit for bit
            assert torch.equal(w_scaled, w)
            outs.append(w)
        agg.reset()
        for jac, w in zip(jacs, outs, strict=True):
            assert torch.equal(agg.weights(gramian_of(jac)), w)


def test_no_graph_through_the_output() -> None:
    jac = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert not get_aggregator("gradvac")(jac).requires_grad


# -- hyper-parameters and repr --------------------------------------------------------------


def test_repr() -> None:
    assert repr(get_aggregator("gradvac")) == "GradVac(beta=0.5, seed=0)"
    assert repr(get_aggregator("gradvac", beta=0.01, seed=None)) == "GradVac(beta=0.01, seed=None)"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"beta": -0.1}, "beta must be a number in \\[0, 1\\]"),
        ({"beta": 1.5}, "beta must be a number in \\[0, 1\\]"),
        ({"beta": float("nan")}, "beta must be"),
        ({"beta": True}, "beta must be"),
        ({"beta": "0.5"}, "beta must be"),
        ({"seed": -1}, "seed must be a non-negative int or None"),
        ({"seed": 1.5}, "seed must be"),
        ({"seed": True}, "seed must be"),
    ],
)
def test_invalid_hyperparameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        get_aggregator("gradvac", **kwargs)


def test_eps_is_not_a_hyperparameter() -> None:
    with pytest.raises(TypeError, match="accepts: beta, seed"):
        get_aggregator("gradvac", eps=1e-8)
