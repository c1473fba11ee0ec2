"""The per-layer rules called on their own: each returns its share of the Gramian as blocks,
from one recorded call and its k cotangents, and changes nothing it is given.

Reference: per-objective gradients from plain ``autograd.grad`` of the same float64 layer.
Error bound (Higham's dot-product bound): every gradient entry is a sum of at most N products
(N rows of the layer's input), so each of the two computations errs by at most ``γ_N·Aᵢ``
entrywise, ``Aᵢ = |Δᵢ|ᵀ|X|`` (and ``Σₙ|Δᵢₙ|`` for the bias); an inner product of P such entries
adds ``γ_P·‖Aᵢ‖‖Aⱼ‖``. So the rule's Gramian and the reference's differ by at most
``2(2γ_N + γ_N² + γ_P)·‖Aᵢ‖‖Aⱼ‖``; the Gram trick's three products stay within the same form
with ``N + in + P`` terms (``mogradient.gramian.rules.trick_block``), bounded alike.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mogradient.gramian.recorder
import mogradient.gramian_engine
from mogradient.gramian.rules import Gradient, Gram, RuleContext, closed_form, embedding, linear
from mogradient.gramian.taps import Use

EPS = torch.finfo(torch.float64).eps
K = 3


def _gamma(n: int) -> float:
    return n * EPS / (1 - n * EPS)


def _linear_call(seed: int, rows: int = 7, d_in: int = 5, d_out: int = 4):
    """A float64 ``nn.Linear``, its recorded call, the k cotangents of its output and the
    reference per-objective gradients ``[(∂Lᵢ/∂W, ∂Lᵢ/∂b)]``."""
    gen = torch.Generator().manual_seed(seed)
    layer = nn.Linear(d_in, d_out).double()
    x = torch.randn(rows, d_in, generator=gen, dtype=torch.float64)
    weights = torch.randn(K, rows, d_out, generator=gen, dtype=torch.float64)
    y = layer(x)
    losses = [(y * w).sum() for w in weights]
    refs = [
        torch.autograd.grad(loss, [layer.weight, layer.bias], retain_graph=True) for loss in losses
    ]
    delta = torch.stack([torch.autograd.grad(loss, y, retain_graph=True)[0] for loss in losses])
    use = Use(layer, (x,), {}, dict(layer.named_parameters()))
    return layer, x, use, delta, refs


def _context(layer: nn.Module, *, trick: str = "never", dense: bool = False) -> RuleContext:
    ids = {id(p) for p in layer.parameters()}
    return RuleContext(ids, {}, ids if dense else set(), False, trick)


def _grams(blocks: list[Gram | Gradient]) -> list[Gram]:
    """The blocks, each checked to be a finished Gram block."""
    assert blocks and all(isinstance(b, Gram) for b in blocks), blocks
    return [b for b in blocks if isinstance(b, Gram)]


def _bound(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """``2(2γ_N + γ_N² + γ_P)·‖Aᵢ‖‖Aⱼ‖`` with N the rows plus the input width (the trick's
    longest product chain) and P the entries of the weight and the bias."""
    a = torch.cat(
        [torch.einsum("kno,ni->koi", delta.abs(), x.abs()).reshape(K, -1), delta.abs().sum(1)], 1
    )
    norms = a.norm(dim=1)
    g_n = _gamma(x.shape[0] + x.shape[1])
    factor = 2 * (2 * g_n + g_n**2 + _gamma(a.shape[1] + x.shape[0] + x.shape[1]))
    return factor * norms[:, None] * norms[None, :]


@pytest.mark.parametrize("trick", ["never", "always"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_linear_rule_returns_the_layers_gramian(trick: str, seed: int) -> None:
    layer, x, use, delta, refs = _linear_call(seed)
    context = _context(layer, trick=trick)
    blocks = _grams(linear(use, delta, context))
    got = torch.stack([b.gram for b in blocks]).sum(0)
    flat = torch.stack([torch.cat([g.reshape(-1) for g in ref]) for ref in refs])
    assert bool(((got - flat @ flat.T).abs() <= _bound(x, delta)).all())
    assert all(bool((b.error2 >= 0).all()) for b in blocks)


def test_a_rule_changes_nothing_it_is_given() -> None:
    """The same call twice gives the same blocks; the inputs, cotangents, parameters and the
    context are as before."""
    layer, x, use, delta, _ = _linear_call(3)
    context = _context(layer)
    before = (x.clone(), delta.clone(), [p.detach().clone() for p in layer.parameters()])
    first = _grams(linear(use, delta, context))
    second = _grams(linear(use, delta, context))
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a.gram, b.gram) and torch.equal(a.error2, b.error2)
    assert torch.equal(x, before[0]) and torch.equal(delta, before[1])
    assert all(torch.equal(p, q) for p, q in zip(layer.parameters(), before[2], strict=True))
    assert context.shared == set() and context.outside == {}


def test_a_dense_parameter_comes_back_as_its_per_objective_gradient() -> None:
    """Shared or distributed parameters are not reduced to a Gram block by the rule: it returns
    ``[k, *shape]``, equal to each objective's autograd gradient within ``γ_N·Aᵢ``."""
    layer, x, use, delta, refs = _linear_call(4)
    blocks = [b for b in linear(use, delta, _context(layer, dense=True)) if isinstance(b, Gradient)]
    assert len(blocks) == 2
    assert blocks[0].param is layer.weight and blocks[1].param is layer.bias
    bound_w = _gamma(x.shape[0]) * torch.einsum("kno,ni->koi", delta.abs(), x.abs())
    bound_b = _gamma(x.shape[0]) * delta.abs().sum(1)
    for i, (gw, gb) in enumerate(refs):
        assert bool(((blocks[0].grad[i] - gw).abs() <= 2 * bound_w[i]).all())
        assert bool(((blocks[1].grad[i] - gb).abs() <= 2 * bound_b[i]).all())


def test_the_embedding_rule_sums_cotangents_per_distinct_id() -> None:
    """Dense: the table's per-objective gradient equals autograd's (rows of repeated ids are
    sums of at most N cotangents: within ``γ_N`` of the summed absolute values)."""
    gen = torch.Generator().manual_seed(5)
    table = nn.Embedding(9, 4, padding_idx=0).double()
    ids = torch.tensor([[1, 3, 3, 0], [8, 1, 0, 3]])
    y = table(ids)
    weights = torch.randn(K, *y.shape, generator=gen, dtype=torch.float64)
    losses = [(y * w).sum() for w in weights]
    refs = [torch.autograd.grad(loss, table.weight, retain_graph=True)[0] for loss in losses]
    delta = torch.stack([torch.autograd.grad(loss, y, retain_graph=True)[0] for loss in losses])
    use = Use(table, (ids,), {}, dict(table.named_parameters()))
    (dense,) = embedding(use, delta, _context(table, dense=True))
    assert isinstance(dense, Gradient)
    bound = _gamma(ids.numel()) * delta.abs().sum((1, 2)).max()
    assert float((dense.grad - torch.stack(refs)).abs().max()) <= 2 * float(bound)
    (gram,) = embedding(use, delta, _context(table))
    flat = torch.stack([r.reshape(-1) for r in refs])
    norms = delta.abs().reshape(K, -1).sum(1)
    tol = 2 * (2 * _gamma(ids.numel()) + _gamma(36)) * norms[:, None] * norms[None, :]
    assert isinstance(gram, Gram) and bool(((gram.gram - flat @ flat.T).abs() <= tol).all())


def test_closed_forms_and_the_replay() -> None:
    class Scaled(nn.Embedding):
        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(ids)

    assert closed_form(nn.Linear(2, 2)) is linear
    assert closed_form(nn.Embedding(3, 2)) is embedding
    assert closed_form(nn.Embedding(3, 2, scale_grad_by_freq=True)) is None
    assert closed_form(Scaled(3, 2)) is None  # an overridden forward is replayed
    assert closed_form(nn.Conv2d(1, 1, 1)) is None


def test_the_former_import_path_re_exports_the_recorder() -> None:
    assert mogradient.gramian_engine.GramianRecorder is mogradient.gramian.recorder.GramianRecorder
    assert mogradient.gramian_engine.module_gramian is mogradient.gramian.recorder.module_gramian
