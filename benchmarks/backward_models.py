"""The models of the backward-step benchmark (:mod:`benchmarks.backward_step`) and of the
device check: an MLP, a small transformer encoder and a GPT-2, each with k losses, the shared
representation ``features=`` aggregates on and a float64 copy for the exact reference update,
at three sizes (``bench``, ``tiny`` for the smoke runs, ``device`` for a GPU)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

    #: A model's k losses and the shared representation ``features=`` aggregates on.
    Forward = Callable[[torch.nn.Module], tuple[list[torch.Tensor], torch.Tensor]]
    #: A model's float64 copy and its k losses, for the exact reference update.
    ToFloat64 = Callable[
        [torch.nn.Module], tuple[torch.nn.Module, Callable[[torch.nn.Module], list[torch.Tensor]]]
    ]

MODELS = ("mlp", "transformer", "gpt2")
#: Sizes of the models: ``bench`` (this benchmark's), ``tiny`` (the device check's smoke mode)
#: and ``device`` (the device check on a GPU: GPT-2 at its 124M shape, 12 × 768).
SIZES: dict[str, dict[str, dict[str, int]]] = {
    "bench": {
        "mlp": {"width": 512, "batch": 256},
        "transformer": {"width": 128, "heads": 4, "ff": 256, "seq": 32, "batch": 32},
        "gpt2": {"n_layer": 2, "n_embd": 64, "n_head": 2, "vocab": 512, "seq": 64, "batch": 8},
    },
    "tiny": {
        "mlp": {"width": 16, "batch": 8},
        "transformer": {"width": 16, "heads": 2, "ff": 32, "seq": 4, "batch": 4},
        "gpt2": {"n_layer": 1, "n_embd": 16, "n_head": 2, "vocab": 64, "seq": 8, "batch": 2},
    },
    "device": {
        "mlp": {"width": 512, "batch": 256},
        "transformer": {"width": 128, "heads": 4, "ff": 256, "seq": 32, "batch": 32},
        "gpt2": {
            "n_layer": 12,
            "n_embd": 768,
            "n_head": 12,
            "vocab": 50257,
            "seq": 128,
            "batch": 8,
        },  # fmt: skip
    },
}


def build_model(
    model_name: str, k: int, *, size: str = "bench", device: str = "cpu"
) -> tuple[torch.nn.Module, Forward, ToFloat64]:
    """The model, its forward and its float64 reference (see :data:`Forward`), seeded, of
    ``SIZES[size]`` and on ``device`` (its inputs drawn on the CPU, then moved)."""
    import torch

    torch.manual_seed(0)
    shape = SIZES[size][model_name]
    model, forward, to64 = BUILDERS[model_name](k, shape, torch.device(device))
    return model.to(device), forward, to64


def _build_mlp(
    k: int, shape: dict[str, int], device: torch.device
) -> tuple[torch.nn.Module, Forward, ToFloat64]:
    """A three-layer ReLU trunk (512 wide at the bench size) and a linear head, k
    squared-error objectives."""
    import torch

    w = shape["width"]
    trunk = torch.nn.Sequential(
        torch.nn.Linear(w, w),
        torch.nn.ReLU(),
        torch.nn.Linear(w, w),
        torch.nn.ReLU(),
        torch.nn.Linear(w, w),
        torch.nn.ReLU(),
    )
    head = torch.nn.Linear(w, k)
    model = torch.nn.ModuleDict({"trunk": trunk, "head": head})
    x = torch.randn(shape["batch"], w).to(device)
    y = torch.randn(shape["batch"], k).to(device)

    def forward(m):  # noqa: ANN001, ANN202
        h = m["trunk"](x)
        out = m["head"](h)
        return [((out[:, i] - y[:, i]) ** 2).mean() for i in range(k)], h

    def to64(m, _x=x, _y=y):  # noqa: ANN001, ANN202
        return m.double(), lambda mm: _forward64(mm, _x.double(), _y.double(), k)

    def _forward64(m, xx, yy, kk):  # noqa: ANN001, ANN202
        out = m["head"](m["trunk"](xx))
        return [((out[:, i] - yy[:, i]) ** 2).mean() for i in range(kk)]

    return model, forward, to64


def _build_transformer(
    k: int, shape: dict[str, int], device: torch.device
) -> tuple[torch.nn.Module, Forward, ToFloat64]:
    """A two-layer transformer encoder (width 128 at the bench size) and a linear head, k
    squared-error objectives."""
    import torch

    w = shape["width"]
    layer = torch.nn.TransformerEncoderLayer(
        w, shape["heads"], shape["ff"], dropout=0.0, batch_first=True
    )
    trunk = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    head = torch.nn.Linear(w, k)
    model = torch.nn.ModuleDict({"trunk": trunk, "head": head})
    x = torch.randn(shape["batch"], shape["seq"], w).to(device)
    y = torch.randn(shape["batch"], shape["seq"], k).to(device)

    def forward(m):  # noqa: ANN001, ANN202
        h = m["trunk"](x)
        out = m["head"](h)
        return [((out[..., i] - y[..., i]) ** 2).mean() for i in range(k)], h

    def to64(m):  # noqa: ANN001, ANN202
        xx, yy = x.double(), y.double()

        def f(mm):  # noqa: ANN001, ANN202
            out = mm["head"](mm["trunk"](xx))
            return [((out[..., i] - yy[..., i]) ** 2).mean() for i in range(k)]

        return m.double(), f

    return model, forward, to64


def _build_gpt2(
    k: int, shape: dict[str, int], device: torch.device
) -> tuple[torch.nn.Module, Forward, ToFloat64]:
    """A GPT-2 (two layers of width 64 at the bench size, eager attention); objective i is
    the next-token loss at the positions p with p mod k = i."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    vocab, seq = shape["vocab"], shape["seq"]
    config = GPT2Config(
        vocab_size=vocab,
        n_positions=seq,
        n_embd=shape["n_embd"],
        n_layer=shape["n_layer"],
        n_head=shape["n_head"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel(config)
    model.config._attn_implementation = "eager"
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (shape["batch"], seq), generator=gen).to(device)
    pos = torch.arange(seq - 1, device=device)

    def losses_of(m, want_h=False):  # noqa: ANN001, ANN202
        out = m(ids, output_hidden_states=want_h)
        logp = torch.log_softmax(out.logits[:, :-1], -1)
        nll = -logp.gather(-1, ids[:, 1:, None])[..., 0]
        losses = [nll[:, pos % k == i].mean() for i in range(k)]
        return losses, (out.hidden_states[-1] if want_h else None)

    def forward(m):  # noqa: ANN001, ANN202
        return losses_of(m, want_h=True)

    def to64(m):  # noqa: ANN001, ANN202
        return m.double(), lambda mm: losses_of(mm)[0]

    return model, forward, to64


#: Each model's builder: ``(k, shape, device) -> (model, forward, float64 reference)``.
BUILDERS = {"mlp": _build_mlp, "transformer": _build_transformer, "gpt2": _build_gpt2}
