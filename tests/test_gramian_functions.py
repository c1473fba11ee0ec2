"""The Gramian engine with custom ``torch.autograd.Function`` s (fused kernels): their forward
runs with grad disabled, out of the recorded calls' sight, so a tracked parameter they use must
leave the per-layer route for the exact fallback.

Every model is float64 and the reference is the plain ``autograd.grad`` Jacobian ``J`` with
``G = J Jᵀ``. Bound: each gradient entry is a chain of fewer than 30 rounded operations over
sums of fewer than 100 terms, so relative to the sum of its absolute terms it is off by at most
γ₁₃₀ ≈ 1.5e-14 on either side; by Cauchy–Schwarz (``|Gᵢⱼ| ≤ maxᵢ Gᵢᵢ``) every Gramian entry is
then off by at most ``(2·κ·γ₁₃₀ + γ_d)·max|G|`` with κ the ratio of absolute terms to result
(d < 100 here). The tolerance 1e-10·max|G| allows κ up to 3000 for these small tanh/LayerNorm
models, while the use missed before is 2 to 8% of the largest entry.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

from mogradient.gramian.recorder import GramianRecorder

torch.set_num_threads(1)
GRAD_DISABLED = "with grad disabled (inside a no-grad region or a custom autograd.Function)"


class MatMul(torch.autograd.Function):
    """``x @ wᵀ`` as a custom Function (no ``setup_context``: ``torch.func`` cannot replay it)."""

    @staticmethod
    def forward(ctx, x, w):  # type: ignore[no-untyped-def]
        ctx.save_for_backward(x, w)
        return x @ w.t()

    @staticmethod
    def backward(ctx, g):  # type: ignore[no-untyped-def]
        x, w = ctx.saved_tensors
        return g @ w, g.t() @ x


class ChunkedLogprob(torch.autograd.Function):
    """The shape of a fused log-prob kernel (TRL's chunked one): ``log softmax(h Wᵀ)[target]``
    over vocabulary chunks, never holding the logits for the backward, which recomputes them."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk):  # type: ignore[no-untyped-def]
        lse = torch.cat(
            [torch.logsumexp(hidden @ w.t(), -1, keepdim=True) for w in weight.split(chunk)], -1
        )
        lse = torch.logsumexp(lse, -1)
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.chunk = chunk
        return (hidden * weight[targets]).sum(-1) - lse

    @staticmethod
    def backward(ctx, g):  # type: ignore[no-untyped-def]
        hidden, weight, targets, lse = ctx.saved_tensors
        # d logp / d logits = onehot(target) - softmax: the softmax part per chunk
        grad_hidden = g[:, None] * weight[targets]
        grad_weight = torch.zeros_like(weight).index_add(0, targets, g[:, None] * hidden)
        start = 0
        for w in weight.split(ctx.chunk):
            p = torch.exp(hidden @ w.t() - lse[:, None]) * g[:, None]
            grad_hidden = grad_hidden - p @ w
            grad_weight[start : start + w.shape[0]] -= p.t() @ hidden
            start += w.shape[0]
        return grad_hidden, grad_weight, None, None


def _exact(losses: list[torch.Tensor], params: list[torch.Tensor]) -> torch.Tensor:
    rows = [
        torch.cat(
            [
                g.reshape(-1)
                for g in torch.autograd.grad(
                    loss, params, retain_graph=True, materialize_grads=True
                )
            ]
        )
        for loss in losses
    ]
    jac = torch.stack(rows)
    return jac @ jac.T


def _record(
    model: nn.Module, forward: Callable[[], list[torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The recorder's Gramian of ``forward()``'s losses, the exact one, and the warnings."""
    params = [p for p in model.parameters() if p.requires_grad]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with GramianRecorder(model) as rec:
            losses = forward()
        gram = rec.gramian(losses)
    return gram, _exact(losses, params), [str(w.message) for w in caught]


def _assert_exact(gram: torch.Tensor, exact: torch.Tensor) -> None:
    err = ((gram - exact).abs().max() / exact.abs().max()).item()
    assert err < 1e-10, (err, gram, exact)


def _two_losses(y: torch.Tensor) -> list[torch.Tensor]:
    return [y[:, 0].sum(), (y[:, 1] ** 2).sum()]


def test_function_on_a_weight_also_used_through_a_module() -> None:
    """The embedding table is used by its module (recorded) and by a custom Function reading
    it as a head: the recorder used to leave the Function's use out, silently (G₀₀ 2% low);
    now the table takes the fallback and the warning names it and the cause."""

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.e = nn.Embedding(3, 4)
            self.a = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return MatMul.apply(torch.tanh(self.a(self.e(x))), self.e.weight)

    torch.manual_seed(0)
    model = Model().double()
    x = torch.tensor([0, 1, 2, 1, 0])
    gram, exact, caught = _record(model, lambda: _two_losses(model(x)))
    _assert_exact(gram, exact)
    fell_back = [m for m in caught if "plain autograd.grad" in m]
    assert len(fell_back) == 1 and f"e.weight (used by t {GRAD_DISABLED}" in fell_back[0]
    assert "a.weight" not in fell_back[0]  # the Linear stays on the per-layer route


def test_function_on_the_weight_of_a_module_never_called() -> None:
    """A head whose module is never called, its weight read by a custom Function only: exact
    through the fallback, the warning naming it (before too, as having no recorded use)."""

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.head = nn.Linear(4, 3, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return MatMul.apply(torch.tanh(self.a(x)), self.head.weight)

    torch.manual_seed(1)
    model = Model().double()
    x = torch.randn(5, 4, dtype=torch.float64)
    gram, exact, caught = _record(model, lambda: _two_losses(model(x)))
    _assert_exact(gram, exact)
    fell_back = [m for m in caught if "plain autograd.grad" in m]
    assert len(fell_back) == 1 and "head.weight" in fell_back[0]
    assert "a.weight" not in fell_back[0]


def test_function_inside_its_owners_forward() -> None:
    """A module applying a custom Function to its own weight (and adding its bias directly):
    its call is not replayed (``torch.func`` cannot run such a Function; it used to raise), its
    parameters take the fallback, the Linear before it stays on the per-layer route."""

    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(3, 4))
            self.b = nn.Parameter(torch.randn(3))

        def forward(self, h: torch.Tensor) -> torch.Tensor:
            return MatMul.apply(h, self.w) + self.b

    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), Head()).double()
    x = torch.randn(6, 4, dtype=torch.float64)
    gram, exact, caught = _record(model, lambda: _two_losses(model(x)))
    _assert_exact(gram, exact)
    fell_back = [m for m in caught if "plain autograd.grad" in m]
    assert len(fell_back) == 1
    assert f"2.w (used by t {GRAD_DISABLED} inside Head)" in fell_back[0]
    assert "2.b" in fell_back[0] and "0.weight" not in fell_back[0]


def test_tied_embedding_with_a_fused_logprob_head() -> None:
    """A tied embedding / LM head where the head is a fused log-prob Function (a chunked
    kernel reading the table): k = 3 differently weighted sums of per-token log-probs."""

    class TinyLM(nn.Module):
        def __init__(self, vocab: int = 7, dim: int = 5) -> None:
            super().__init__()
            self.wte = nn.Embedding(vocab, dim)
            self.block = nn.Linear(dim, dim)
            self.norm = nn.LayerNorm(dim)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            h = self.norm(torch.tanh(self.block(self.wte(ids[:-1]))))
            return ChunkedLogprob.apply(h, self.wte.weight, ids[1:], 3)

    torch.manual_seed(3)
    model = TinyLM().double()
    ids = torch.tensor([0, 3, 6, 2, 3, 5, 1, 0, 4])
    weights = torch.rand(3, len(ids) - 1, dtype=torch.float64)

    def losses() -> list[torch.Tensor]:
        logp = model(ids)
        return [-(w * logp).sum() for w in weights]

    # the kernel itself: its log-probs are log_softmax's, its backward passes gradcheck
    h = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    table = model.wte.weight.detach().clone().requires_grad_()
    targets = ids[1:5]
    expected = torch.log_softmax(h @ table.T, -1).gather(1, targets[:, None])[:, 0]
    torch.testing.assert_close(ChunkedLogprob.apply(h, table, targets, 3), expected)
    assert torch.autograd.gradcheck(lambda a, b: ChunkedLogprob.apply(a, b, targets, 3), (h, table))

    gram, exact, caught = _record(model, losses)
    _assert_exact(gram, exact)
    fell_back = [m for m in caught if "plain autograd.grad" in m]
    assert len(fell_back) == 1 and "wte.weight (used by " in fell_back[0]
    assert GRAD_DISABLED in fell_back[0]
    assert "block.weight" not in fell_back[0] and "norm.weight" not in fell_back[0]


def test_a_no_grad_read_takes_the_exact_fallback() -> None:
    """A use under ``no_grad`` cannot be told apart from one inside a custom Function's
    forward (both run with grad disabled): it takes the exact fallback, and the warning names
    it and says why (a false positive costs speed, never the Gramian)."""

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                c = self.lin.weight.sum()
            return self.lin(x) + c

    torch.manual_seed(10)
    model = Model().double()
    x = torch.randn(5, 4, dtype=torch.float64)
    gram, exact, caught = _record(model, lambda: _two_losses(model(x)))
    _assert_exact(gram, exact)
    fell_back = [m for m in caught if "plain autograd.grad" in m]
    assert len(fell_back) == 1
    assert f"lin.weight (used by sum {GRAD_DISABLED} outside any module)" in fell_back[0]
    assert "lin.bias" not in fell_back[0]  # it stays on the per-layer route


def test_a_module_returning_its_own_parameter_stays_on_the_route() -> None:
    """The recorder's own tap (a Function whose forward detaches the module's output) is not a
    use with grad disabled, even when that output is the parameter itself."""

    class Position(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.table = nn.Parameter(torch.randn(5, 4))

        def forward(self) -> torch.Tensor:
            return self.table

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pos = Position()
            self.lin = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x + self.pos())

    torch.manual_seed(5)
    model = Model().double()
    x = torch.randn(5, 4, dtype=torch.float64)
    gram, exact, caught = _record(model, lambda: _two_losses(model(x)))
    _assert_exact(gram, exact)
    assert not [m for m in caught if "plain autograd.grad" in m], caught
