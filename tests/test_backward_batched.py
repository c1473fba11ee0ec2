"""Batched Jacobians (``jacobian(batched=...)``) and the float32-blocked Gramian
(``gramian_of(precision="input")``)."""

from __future__ import annotations

import warnings

import pytest
import torch

import mogradient
from mogradient.aggregators import gramian_of
from mogradient.autograd import jacobian
from mogradient.gramian import jacobians


def _model_losses(seed: int = 0, k: int = 3) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, k))
    x = torch.randn(10, 6)
    out = net(x)
    losses = [out[:, i].pow(2).mean() + 0.1 * i * out.sum() for i in range(k)]
    return losses, list(net.parameters())


@pytest.mark.parametrize("k", [1, 2, 5])
def test_batched_rows_equal_the_loop(k: int) -> None:
    losses, params = _model_losses(k=k)
    loop = jacobian(losses, params, retain_graph=True, batched=False)
    vec = jacobian(losses, params, retain_graph=True, batched=True)
    torch.testing.assert_close(vec, loop, rtol=1e-5, atol=1e-6)


def test_unused_inputs_give_zero_columns() -> None:
    a = torch.nn.Parameter(torch.randn(3))
    unused = torch.nn.Parameter(torch.randn(2))
    losses = [a.pow(2).sum(), a.sum()]
    jac = jacobian(losses, [a, unused], batched=True)
    assert jac.shape == (2, 5)
    assert torch.all(jac[:, 3:] == 0)


def test_nonfinite_branch_does_not_pollute_the_other_rows() -> None:
    """Stacking sends a zero cotangent into objective 1's branch: 0 · inf = NaN would land in
    row 0 too. The batched path sees the non-finite result and recomputes with the loop, so the
    error names objective 1, as the loop does."""
    for batched in (True, False):
        x = torch.nn.Parameter(torch.tensor([0.0, 1.0]))
        losses = [x.sum(), torch.sqrt(x).sum()]  # d sqrt(x)/dx is inf at 0
        with pytest.raises(ValueError, match="gradient of objective 1"):
            mogradient.backward(losses, [x], aggregator="mgda", batched=batched)


def test_zero_cotangent_nan_is_not_returned() -> None:
    """Objective 1's branch has an infinite local derivative that a relu masks on its own
    graph; the batched path must still return the loop's finite rows."""
    x = torch.nn.Parameter(torch.tensor([-1.0, 2.0]))
    r = torch.relu(x)
    losses = [x.pow(2).sum(), torch.sqrt(r).sum()]
    loop = jacobian(losses, [x], retain_graph=True, batched=False)
    vec = jacobian(losses, [x], retain_graph=True, batched=True)
    assert torch.isfinite(vec).all()
    torch.testing.assert_close(vec, loop)


def test_unsupported_vmap_falls_back_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    losses, params = _model_losses()

    def refuse(*args: object, **kwargs: object) -> torch.Tensor:
        raise RuntimeError("vmap: no batching rule")

    monkeypatch.setattr(jacobians, "_jacobian_batched", refuse)
    reference = jacobian(losses, params, retain_graph=True, batched=False)
    with pytest.warns(RuntimeWarning, match="not supported"):
        got = jacobian(losses, params, retain_graph=True, batched=True)
    torch.testing.assert_close(got, reference)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default loop never tries vmap
        jacobian(losses, params, retain_graph=True)


@pytest.mark.parametrize("batched", [True, False])
def test_backward_threads_batched_through_every_gramian_path(batched: bool) -> None:
    losses, params = _model_losses(seed=1)
    expected = mogradient.get_aggregator("mgda")(jacobian(losses, params, retain_graph=True))
    for through in (False, True):
        for p in params:
            p.grad = None
        mogradient.backward(
            losses,
            params,
            aggregator="mgda",
            batched=batched,
            through_backward=through,
            retain_graph=True,
        )
        got = torch.cat([p.grad.reshape(-1) for p in params])
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def _conflicting(k: int, d: int, cos: float, seed: int) -> torch.Tensor:
    """k float32 gradients of norms spread over 1e-2..1e2, pairwise nearly opposite in a
    common direction (cosine ≈ ``cos``) with a small shared component."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(d, generator=g, dtype=torch.float64)
    rows = []
    for i in range(k):
        noise = torch.randn(d, generator=g, dtype=torch.float64)
        sign = 1.0 if i % 2 == 0 else -1.0
        v = sign * base + (1 + cos) ** 0.5 * 0.5 * noise / noise.norm() * base.norm()
        rows.append(v * 10.0 ** (4 * i / max(k - 1, 1) - 2))
    return torch.stack(rows).to(torch.float32)


@pytest.mark.parametrize("k", [2, 4, 8])
@pytest.mark.parametrize("d", [1000, 70_000, 1_100_000])
def test_float32_gramian_within_the_stated_bound(k: int, d: int) -> None:
    jac = _conflicting(k, d, cos=-0.999, seed=k + d)
    exact = gramian_of(jac, precision="float64")
    fast = gramian_of(jac, precision="input")
    norms = exact.diagonal().sqrt()
    relative = (fast - exact).abs() / (norms[:, None] * norms[None, :])
    u = 2.0**-24
    bound = 1024 * u / (1 - 1024 * u)
    # the bound, plus the PSD shift (≤ 2·k·γ on the diagonal)
    assert float(relative.max()) <= bound * (1 + 2 * k)
    assert float(relative.max()) <= 1e-6  # what is observed: far below the worst case
    assert fast.dtype == torch.float64


@pytest.mark.parametrize("k", [2, 4, 8])
@pytest.mark.parametrize("cos", [-0.9, -0.999, -0.99999])
def test_mgda_weights_on_nearly_conflicting_gradients(k: int, cos: float) -> None:
    """MGDA's weights from the float32-blocked Gramian agree with the float64 ones to 2e-4
    (absolute, weights sum to 1) and the direction to cosine ≥ 1 − 1e-5, down to a min-norm
    direction 1.6e-3 × the smallest gradient (cos = −0.99999, norms spread over 1e4; measured:
    1.0e-4 and 2.7e-6 there, ≤ 5e-6 and 4e-10 at cos = −0.999). Nearer Pareto stationarity
    use ``precision="float64"``."""
    jac = _conflicting(k, 200_000, cos=cos, seed=k)
    agg = mogradient.get_aggregator("mgda")
    w64 = agg.weights(gramian_of(jac, precision="float64"))
    w32 = agg.weights(gramian_of(jac, precision="input"))
    assert float((w64 - w32).abs().max()) <= 2e-4
    j64 = jac.double()
    d64, d32 = w64 @ j64, w32.double() @ j64
    cosine = float(d64 @ d32 / (d64.norm() * d32.norm()))
    assert cosine >= 1 - 1e-5


def test_parallel_gradients_stay_psd() -> None:
    """Two float32 gradients that are exactly parallel: rounding must not make the Gramian
    violate Cauchy–Schwarz (the solver would refuse it)."""
    g = torch.randn(300_000)
    jac = torch.stack([g, 3 * g, -0.5 * g])
    gram = gramian_of(jac, precision="input")
    assert float(torch.linalg.eigvalsh(gram)[0]) >= -1e-12 * float(gram.diagonal().max())
    mogradient.get_aggregator("mgda").weights(gram)  # accepted


def test_low_precision_jacobian_is_accumulated_in_float32() -> None:
    jac = torch.randn(3, 5000).to(torch.bfloat16)
    exact = jac.double() @ jac.double().T
    torch.testing.assert_close(gramian_of(jac, precision="input"), exact, rtol=1e-6, atol=1e-3)


def test_bad_precision() -> None:
    with pytest.raises(ValueError, match="precision"):
        gramian_of(torch.randn(2, 3), precision="half")  # type: ignore[arg-type]


def test_accumulator_precision_option() -> None:
    losses, params = _model_losses(seed=2)
    results = {}
    for precision in ("float64", "input"):
        acc = mogradient.GramianAccumulator("parameters", precision=precision, batched=True)
        acc.add(losses, params, retain_graph=True)
        results[precision] = acc.gramian()
    torch.testing.assert_close(results["input"], results["float64"], rtol=1e-6, atol=1e-9)
