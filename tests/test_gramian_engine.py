"""The per-layer Gramian engine against the exact float64 Gramian of the plain Jacobian.

Every model is float64, so agreement is to rounding (1e-10 relative to the largest entry)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from mogradient.aggregation.gramian import gramian_of
from mogradient.autograd import jacobian
from mogradient.gramian import recorder
from mogradient.gramian.recorder import GramianRecorder, module_gramian

torch.set_num_threads(1)
K = 3


def _reference(losses, params):
    return gramian_of(jacobian(losses, params, retain_graph=True))


def _check(model, forward, params=None, gram_trick="auto", expect_fallback=False):
    """Record ``forward()`` (returns k losses), compare with the exact Gramian, and check that
    the weighted backward still runs through the same graph."""
    params = [p for p in model.parameters() if p.requires_grad] if params is None else params
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with GramianRecorder(model, params, gram_trick=gram_trick) as rec:
            losses = forward()
        gram = rec.gramian(losses)
    fell_back = [str(w.message) for w in caught if "plain autograd.grad" in str(w.message)]
    assert bool(fell_back) == bool(expect_fallback), [str(w.message) for w in caught]
    if not expect_fallback:
        assert not rec._outside  # nothing left the per-layer route
    elif isinstance(expect_fallback, str):  # the warning names the parameter
        assert expect_fallback in fell_back[0], fell_back
    ref = _reference(losses, params)
    assert gram.dtype == torch.float64 and gram.shape == (len(losses), len(losses))
    err = ((gram - ref).abs().max() / ref.abs().max()).item()
    assert err < 1e-10, err
    # the graph is kept: the weighted backward runs and gives Σ wᵢ ∂Lᵢ (taps pass through)
    w = torch.rand(len(losses), dtype=torch.float64)
    jac = jacobian(losses, params, retain_graph=True)
    torch.autograd.backward(sum(float(wi) * li for wi, li in zip(w, losses)), inputs=params)
    got = torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
    )
    torch.testing.assert_close(got, w.to(jac.dtype) @ jac)
    return rec


def _token_losses(logits, ids, k=K, seed=0):
    """k objectives: differently weighted per-token negative log-likelihoods."""
    g = torch.Generator().manual_seed(seed)
    nll = nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none"
    )
    return [(torch.rand(nll.shape, generator=g, dtype=nll.dtype) * nll).mean() for _ in range(k)]


@pytest.mark.parametrize("gram_trick", ["auto", "always", "never"])
def test_mlp(gram_trick):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, K)
    ).double()
    x = torch.randn(10, 6, dtype=torch.float64)

    def forward():
        y = model(x)
        return [y[:, i].pow(2).mean() + y.mean() for i in range(K)]

    _check(model, forward, gram_trick=gram_trick)


class _EmbedNorm(nn.Module):
    def __init__(self, tied: bool, padding_idx=None):
        super().__init__()
        self.emb = nn.Embedding(20, 8, padding_idx=padding_idx)
        self.norm = nn.LayerNorm(8)
        self.rms = nn.RMSNorm(8, eps=1e-6)
        self.head = nn.Linear(8, 20, bias=False)
        if tied:
            self.head.weight = self.emb.weight

    def forward(self, ids):
        return self.head(self.rms(torch.tanh(self.norm(self.emb(ids)))))


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("padding_idx", [None, 0])
def test_embedding_layernorm_tied_and_untied(tied, padding_idx):
    torch.manual_seed(1)
    model = _EmbedNorm(tied, padding_idx).double()
    ids = torch.randint(0, 20, (3, 7))
    ids[0, :3] = 5  # repeated ids: the per-id sums matter
    ids[1, 0] = 0
    _check(model, lambda: _token_losses(model(ids), ids))


def test_tied_contributions_are_not_additive():
    """A tied weight's Gramian is that of the summed per-use gradients, not the sum of per-use
    Gramians: an untied copy with the same values gives the per-use gradients."""
    torch.manual_seed(1)
    tied = _EmbedNorm(tied=True).double()
    untied = _EmbedNorm(tied=False).double()
    untied.load_state_dict(tied.state_dict())
    with torch.no_grad():
        untied.head.weight.copy_(tied.emb.weight)
    ids = torch.randint(0, 20, (3, 7))
    losses = _token_losses(untied(ids), ids)
    per_use = [
        jacobian(losses, [untied.emb.weight], retain_graph=True),
        jacobian(losses, [untied.head.weight], retain_graph=True),
    ]
    summed_gramians = gramian_of(per_use[0]) + gramian_of(per_use[1])
    gramian_of_sum = gramian_of(per_use[0] + per_use[1])
    assert not torch.allclose(summed_gramians, gramian_of_sum, rtol=1e-3)
    with GramianRecorder(tied, [tied.emb.weight]) as rec:
        losses = _token_losses(tied(ids), ids)
    torch.testing.assert_close(rec.gramian(losses), gramian_of_sum, rtol=1e-10, atol=0)


def test_module_reused_twice():
    torch.manual_seed(2)
    lin = nn.Linear(5, 5).double()
    model = nn.ModuleList([lin])
    x = torch.randn(4, 5, dtype=torch.float64)

    def forward():
        y = lin(torch.tanh(lin(x)))
        return [y[:, i].sum() for i in range(K)]

    _check(model, forward)


def test_unsupported_parameter_falls_back_with_warning():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)
            self.lin2 = nn.Linear(4, 4)

        def forward(self, x):
            # lin2's weight used functionally: no recorded module call
            return nn.functional.linear(self.lin(x), self.lin2.weight) * 2

    torch.manual_seed(3)
    model = Scaled().double()
    x = torch.randn(6, 4, dtype=torch.float64)
    params = [model.lin.weight, model.lin.bias, model.lin2.weight]

    def forward():
        y = model(x)
        return [y[:, i].pow(2).mean() for i in range(K)]

    _check(model, forward, params=params, expect_fallback=True)


def _sq_losses(y):
    return [y[:, i].pow(2).mean() + y.mean() for i in range(K)]


def test_parent_uses_child_weight_directly():
    """``lin.weight`` is used by ``lin`` (recorded) and by ``F.linear`` in the parent's forward:
    the recorded use alone would miss the second; the whole parameter takes the fallback."""

    class Parent(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)
            self.out = nn.Linear(4, K)

        def forward(self, x):
            h = torch.tanh(self.lin(x))
            return self.out(h + nn.functional.linear(h, self.lin.weight))

    torch.manual_seed(6)
    model = Parent().double()
    x = torch.randn(7, 4, dtype=torch.float64)
    rec = _check(model, lambda: _sq_losses(model(x)), expect_fallback="lin.weight")
    assert set(rec._outside) == {id(model.lin.weight)}  # lin.bias and out stay on the route


def test_module_reads_another_modules_weight():
    """A recorded module (it owns ``scale``) whose forward reads another module's weight, that
    module also being called normally."""

    class Reader(nn.Module):
        def __init__(self, other):
            super().__init__()
            self.scale = nn.Parameter(torch.randn(4))
            self._other = [other]  # not a submodule

        def forward(self, x):
            return x * self.scale + x @ self._other[0].weight.T

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)
            self.reader = Reader(self.lin)
            self.out = nn.Linear(4, K)

        def forward(self, x):
            return self.out(torch.tanh(self.reader(torch.tanh(self.lin(x)))))

    torch.manual_seed(7)
    model = Model().double()
    x = torch.randn(5, 4, dtype=torch.float64)
    rec = _check(model, lambda: _sq_losses(model(x)), expect_fallback="lin.weight")
    assert set(rec._outside) == {id(model.lin.weight)}


def test_reused_module_with_an_unrecorded_call():
    """A module called once returning a tensor (recorded) and once returning a tuple (not
    recordable): the tuple call's use of its parameter must not be dropped."""

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(4))

        def forward(self, x, as_tuple=False):
            y = torch.tanh(x * self.w)
            return (y,) if as_tuple else y

    torch.manual_seed(8)
    twice = Twice().double()
    model = nn.ModuleList([twice, nn.Linear(4, K).double()])
    x = torch.randn(5, 4, dtype=torch.float64)

    def forward():
        return _sq_losses(model[1](twice(twice(x), as_tuple=True)[0]))

    _check(model, forward, expect_fallback="0.w")


@pytest.mark.parametrize("kind", ["linear", "embedding"])
def test_subclass_with_own_forward_takes_the_generic_route(kind):
    """A ``Linear``/``Embedding`` subclass overriding ``forward`` (a scaled embedding) is not
    the closed form's layer: it is replayed, exactly, without a fallback."""

    class ScaledLinear(nn.Linear):
        def forward(self, x):
            return super().forward(x) * 3.0

    class ScaledEmbedding(nn.Embedding):
        def forward(self, ids):
            return super().forward(ids) * 3.0

    torch.manual_seed(9)
    first = ScaledLinear(4, 4) if kind == "linear" else ScaledEmbedding(10, 4)
    model = nn.Sequential(first, nn.Tanh(), nn.Linear(4, K)).double()
    x = torch.randn(6, 4, dtype=torch.float64) if kind == "linear" else torch.randint(0, 10, (6,))
    _check(model, lambda: _sq_losses(model(x)))


def test_no_false_fallback_for_non_differentiable_reads():
    """Reading a parameter's dtype/shape, or using it through ``detach``, outside its owner is
    not a use the Gramian can miss."""

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, K)

        def forward(self, x):
            x = x.to(self.lin.weight.dtype) * self.lin.weight.shape[0]
            return self.lin(x) + self.lin.weight.detach().mean()

    torch.manual_seed(10)
    model = Model().double()
    x = torch.randn(5, 4, dtype=torch.float64)
    _check(model, lambda: _sq_losses(model(x)))


def _gpt2(tied=True, **extra):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        vocab_size=50,
        n_positions=16,
        n_embd=16,
        n_layer=2,
        n_head=2,
        tie_word_embeddings=tied,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
        **extra,
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).double().eval()


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_gpt2_tied_head(attn):
    model = _gpt2(attn_implementation=attn)
    assert model.lm_head.weight is model.transformer.wte.weight
    ids = torch.randint(0, 50, (2, 9))
    # no warning, nothing routed to the fallback, and wte's two uses share a dense buffer
    rec = _check(model, lambda: _token_losses(model(ids).logits, ids))
    assert rec._n_uses[id(model.transformer.wte.weight)] == 2


def test_gpt2_untied_head():
    model = _gpt2(tied=False)
    assert model.lm_head.weight is not model.transformer.wte.weight
    ids = torch.randint(0, 50, (2, 9))
    _check(model, lambda: _token_losses(model(ids).logits, ids))


def test_llama_untied_rmsnorm():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=50,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=16,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).double().eval()
    ids = torch.randint(0, 50, (2, 9))
    _check(model, lambda: _token_losses(model(ids).logits, ids))


def test_peft_lora_gpt2():
    peft = pytest.importorskip("peft")
    model = _gpt2()
    lora = peft.get_peft_model(
        model,
        peft.LoraConfig(
            r=4,
            lora_alpha=8,
            target_modules=["c_attn", "c_fc"],
            lora_dropout=0.0,
            fan_in_fan_out=True,
        ),
    )
    # peft initialises B to zero: perturb it so every adapter gradient is nonzero
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    params = [p for p in lora.parameters() if p.requires_grad]
    assert params and all("lora_" in n for n, p in lora.named_parameters() if p.requires_grad)
    ids = torch.randint(0, 50, (2, 9))
    _check(lora, lambda: _token_losses(lora(input_ids=ids).logits, ids), params=params)


def test_module_gramian_and_single_objective():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    gram, losses = module_gramian(model, lambda: [model(x).pow(2).mean()])
    ref = _reference(losses, list(model.parameters()))
    torch.testing.assert_close(gram, ref, rtol=1e-10, atol=0)


def test_float32_model_equals_float64_reference():
    """A float32 model whose arithmetic is exact: weights and inputs in {−½, 0, ½} and ReLU.
    The premises, checked: the float32 Jacobian equals a float64 model's (no rounding in the
    forward or the backward), its entries are integers times 2⁻⁸, and |J||J|ᵀ stays below 2²⁴
    in units of 2⁻¹⁶, so every float32 product and partial sum of the engine's blocks is exact
    too: the Gramians agree bit for bit, in any order of summation."""
    gen = torch.Generator().manual_seed(5)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, K))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randint(-1, 2, p.shape, generator=gen) / 2)
    x = torch.randint(-1, 2, (16, 8), generator=gen) / 2
    with GramianRecorder(model) as rec:
        y = model(x)
        losses = [y[:, i].pow(2).mean() for i in range(K)]
    gram = rec.gramian(losses)
    jac = jacobian(losses, list(model.parameters()), retain_graph=True).double()
    twin = copy.deepcopy(model).double()
    y64 = twin(x.double())
    losses64 = [y64[:, i].pow(2).mean() for i in range(K)]
    assert torch.equal(jacobian(losses64, list(twin.parameters()), retain_graph=True), jac)
    units = jac * 2**8
    assert torch.equal(units, units.round())
    assert float((units.abs() @ units.abs().T).max()) < 2**24
    ref = gramian_of(jac)
    assert gram.dtype == torch.float64 and bool((ref.diagonal() > 0).all())
    assert torch.equal(gram, ref)


def _ddp_worker(rank: int, port: int, out: str) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    try:
        torch.manual_seed(1)  # same weights on both ranks
        model = _EmbedNorm(tied=True).double()
        ids = torch.randint(0, 20, (4, 7), generator=torch.Generator().manual_seed(7))
        with GramianRecorder(model) as rec:
            losses = _token_losses(
                model(ids[2 * rank : 2 * rank + 2]), ids[2 * rank : 2 * rank + 2]
            )
        torch.save(rec.gramian(losses), f"{out}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_distributed_gramian_is_that_of_the_mean_gradient(tmp_path):
    """Two gloo ranks, half the batch each: every rank gets the Gramian of the mean of the
    ranks' gradients (each rank's losses are means over its half, so that is the whole batch's
    gradient), not the mean of the ranks' Gramians."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.manual_seed(1)
    mp.spawn(_ddp_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    torch.manual_seed(1)
    model = _EmbedNorm(tied=True).double()
    ids = torch.randint(0, 20, (4, 7), generator=torch.Generator().manual_seed(7))
    jacs = [
        jacobian(
            _token_losses(model(ids[2 * r : 2 * r + 2]), ids[2 * r : 2 * r + 2]),
            list(model.parameters()),
        )
        for r in range(2)
    ]
    ref = gramian_of((jacs[0] + jacs[1]) / 2)
    for r in range(2):
        torch.testing.assert_close(torch.load(tmp_path / f"rank{r}.pt"), ref, rtol=1e-10, atol=0)


@pytest.mark.parametrize("name", ["mgda", "upgrad", "cagrad"])
def test_core_backward_with_a_recorder_matches_the_jacobian_path(name) -> None:
    from mogradient import backward

    def run(use_recorder: bool):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
        x = torch.randn(7, 5, dtype=torch.float64)

        def forward():
            out = model(x)
            return [out[:, i].pow(2).mean() for i in range(3)]

        if use_recorder:
            with GramianRecorder(model) as rec:
                losses = forward()
            weights = backward(losses, aggregator=name, recorder=rec)
        else:
            weights = backward(forward(), list(model.parameters()), aggregator=name)
        return weights, [p.grad.clone() for p in model.parameters()]

    (w_rec, g_rec), (w_jac, g_jac) = run(True), run(False)
    torch.testing.assert_close(w_rec, w_jac, rtol=1e-9, atol=1e-12)
    for got, expected in zip(g_rec, g_jac):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


def test_core_backward_refuses_a_recorder_over_other_parameters() -> None:
    from mogradient import backward

    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)).double()
    with GramianRecorder(model, [model[0].weight]) as rec:
        out = model(torch.randn(2, 3, dtype=torch.float64))
    losses = [out[:, 0].sum(), out[:, 1].sum()]
    with pytest.raises(ValueError, match="same params"):
        backward(losses, list(model.parameters()), aggregator="mgda", recorder=rec)
    with pytest.raises(ValueError, match="Gramian"):
        backward(losses, aggregator="pama", recorder=rec)


def test_layernorm_and_rmsnorm_take_the_closed_form(monkeypatch):
    def refuse(use, delta, context):
        raise AssertionError(f"{type(use.module).__name__} was replayed generically")

    monkeypatch.setattr(recorder, "replay", refuse)
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Linear(4, 6), nn.LayerNorm(6), nn.Tanh(), nn.RMSNorm(6), nn.Linear(6, K)
    ).double()
    x = torch.randn(5, 3, 4, dtype=torch.float64)

    def forward():
        y = model(x)
        return [y[..., i].pow(2).mean() for i in range(K)]

    _check(model, forward)


def test_recorded_inputs_are_released_after_the_gramian():
    """Once the Gramian is taken and the weighted backward is done, nothing keeps the recorded
    activations alive (a reference cycle through the taps' autograd contexts once did, and
    memory grew by every RL step); a second ``gramian()`` on the same recording is refused."""
    import gc
    import weakref

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    seen: list[weakref.ref] = []
    model[2].register_forward_pre_hook(lambda m, args: seen.append(weakref.ref(args[0])))
    with GramianRecorder(model) as rec:
        out = model(torch.randn(16, 4))
    losses = list((out**2).mean(0))
    gram = rec.gramian(losses)
    assert gram.shape == (2, 2)
    with pytest.raises(RuntimeError, match="already called"):
        rec.gramian(losses)
    torch.autograd.backward(sum(losses))
    del out, losses
    gc.collect()
    assert seen and seen[0]() is None


def test_conv1d_is_recognised_once_transformers_is_loaded() -> None:
    """GPT-2's Conv1D takes the closed-form rule: the engine finds the class among the loaded
    modules (it never imports transformers itself)."""
    from transformers.pytorch_utils import Conv1D

    from mogradient.gramian.rules import conv1d_type

    assert conv1d_type() is Conv1D
