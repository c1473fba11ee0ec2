"""The parameter-path rule (``mogradient.gramian.path``) and ``backward(parameter_path=...)``:
the rule's choices on small synthetic cases, the overrides, what ``backward`` can run without a
user-made recorder, and equal updates from the loop and the layer path."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import mogradient
from benchmarks.backward_paths import loop_memory_factor
from benchmarks.tables import read_csv
from mogradient.gramian import path as path_rule
from mogradient.gramian.path import (
    LOOP_MEMORY_FACTOR,
    choose_parameter_path,
    jacobian_bytes,
)
from mogradient.gramian.recorder import GramianRecorder


def _params(d: int, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    return [torch.zeros(d, dtype=dtype, requires_grad=True)]


def test_jacobian_bytes_is_k_times_d_times_the_widest_itemsize() -> None:
    params = [torch.zeros(3, 5), torch.zeros(7, dtype=torch.float64)]
    assert jacobian_bytes(4, params) == 4 * 22 * 8
    assert jacobian_bytes(2, _params(10, torch.bfloat16)) == 2 * 10 * 2


def test_a_jacobian_over_the_budget_takes_the_layer_path() -> None:
    params = _params(1000)  # k = 4: a 16,000-byte Jacobian
    need = LOOP_MEMORY_FACTOR * 16_000
    assert choose_parameter_path(4, params, can_record=True, memory_budget=need - 1) == "layers"
    assert choose_parameter_path(4, params, can_record=True, memory_budget=need) == "loop"


def test_small_d_takes_the_loop_under_the_default_budget(monkeypatch) -> None:
    monkeypatch.setattr(path_rule, "default_memory_budget", lambda device: 2**20)
    assert choose_parameter_path(8, _params(100), can_record=True) == "loop"
    assert choose_parameter_path(8, _params(10**6), can_record=True) == "layers"


def test_the_default_budget_is_a_share_of_the_free_memory() -> None:
    budget = path_rule.default_memory_budget(torch.device("cpu"))
    assert 0 < budget  # a quarter of what the host has free now


def test_without_a_record_the_rule_can_only_take_the_loop() -> None:
    assert choose_parameter_path(8, _params(10**6), can_record=False, memory_budget=0) == "loop"
    with pytest.raises(ValueError, match="closure.*model="):
        choose_parameter_path(2, _params(10), requested="layers", can_record=False)


def test_the_override_is_taken_as_given() -> None:
    params = _params(10**6)
    assert choose_parameter_path(8, params, requested="loop", can_record=True, memory_budget=0) == (
        "loop"
    )
    assert choose_parameter_path(
        2, _params(2), requested="layers", can_record=True, memory_budget=10**12
    ) == ("layers")


def test_bad_inputs_name_the_fix() -> None:
    with pytest.raises(ValueError, match="parameter_path must be one of"):
        choose_parameter_path(2, _params(3), requested="jacobian", can_record=True)
    with pytest.raises(ValueError, match="memory_budget must be >= 0"):
        choose_parameter_path(2, _params(3), can_record=True, memory_budget=-1)


def test_the_loop_memory_factor_covers_every_measured_cell() -> None:
    """The rule's constant is at least the largest ratio (loop's peak extra memory / k×d
    Jacobian bytes) of the committed measurements it says it comes from."""
    # imported here, not at the top: the ranks of test_every_rank_takes_the_same_path import
    # this module, and the docs' modules would load transformers into each (~5 CPU seconds)
    from tests.test_docs_tables import RESULTS

    rows = read_csv(RESULTS / "backward_paths" / "backward_paths.csv")
    assert LOOP_MEMORY_FACTOR >= loop_memory_factor(rows) > 1.0


# -- backward ---------------------------------------------------------------------------------


def _problem() -> tuple[torch.nn.Module, Callable[[], list[torch.Tensor]]]:
    """A float64 two-layer net and three conflicting squared-error objectives."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)
    ).double()
    x = torch.randn(32, 6, dtype=torch.float64)
    y = torch.randn(32, 3, dtype=torch.float64)

    def losses() -> list[torch.Tensor]:
        out = model(x)
        return [((out[:, i] - y[:, i]) ** 2).mean() for i in range(3)]

    return model, losses


class _Spy:
    """Counts which path ran: the recorder's Gramian, the Jacobian's rows, a discarded record."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        gramian, discard = GramianRecorder.gramian, GramianRecorder.discard
        jacobian = mogradient.autograd.jacobian

        def spy_gramian(rec, losses):  # noqa: ANN001, ANN202
            self.calls.append("layers")
            return gramian(rec, losses)

        def spy_discard(rec):  # noqa: ANN001, ANN202
            self.calls.append("discard")
            return discard(rec)

        def spy_jacobian(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            self.calls.append("loop")
            return jacobian(*args, **kwargs)

        monkeypatch.setattr(GramianRecorder, "gramian", spy_gramian)
        monkeypatch.setattr(GramianRecorder, "discard", spy_discard)
        monkeypatch.setattr(mogradient.autograd, "jacobian", spy_jacobian)


def _update(model: torch.nn.Module) -> torch.Tensor:
    out = torch.cat([torch.as_tensor(p.grad).reshape(-1) for p in model.parameters()])
    model.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"memory_budget": 0}, ["layers"]),  # the Jacobian exceeds the budget
        ({"memory_budget": 10**12}, ["discard", "loop"]),  # it fits: the record is dropped
        ({"parameter_path": "loop", "memory_budget": 0}, ["loop"]),  # not even recorded
        ({"parameter_path": "layers", "memory_budget": 10**12}, ["layers"]),
    ],
)
def test_backward_of_a_closure_with_its_model_follows_the_rule(
    monkeypatch, kwargs, expected
) -> None:
    model, losses = _problem()
    spy = _Spy(monkeypatch)
    mogradient.backward(losses, model=model, aggregator="upgrad", **kwargs)
    assert spy.calls == expected
    assert all(p.grad is not None for p in model.parameters())


def test_backward_of_tensors_runs_the_loop_whatever_the_budget(monkeypatch) -> None:
    model, losses = _problem()
    spy = _Spy(monkeypatch)
    mogradient.backward(losses(), aggregator="mgda", memory_budget=0)
    assert spy.calls == ["loop"]
    with pytest.raises(ValueError, match="closure.*model=, or a GramianRecorder"):
        mogradient.backward(losses(), aggregator="mgda", parameter_path="layers")
    with pytest.raises(ValueError, match="pass model="):
        mogradient.backward(losses, aggregator="mgda", parameter_path="layers")


def test_a_recorder_with_the_loop_is_refused() -> None:
    model, losses = _problem()
    with pytest.raises(ValueError, match="parameter_path='loop'.*recorder="):
        mogradient.backward(
            losses, recorder=GramianRecorder(model), aggregator="mgda", parameter_path="loop"
        )


def test_a_closure_runs_under_a_users_recorder(monkeypatch) -> None:
    model, losses = _problem()
    spy = _Spy(monkeypatch)
    mogradient.backward(losses, recorder=GramianRecorder(model), aggregator="mgda")
    assert spy.calls == ["layers"]


@pytest.mark.parametrize("aggregator", ["mgda", "upgrad", "dualproj"])
def test_both_paths_give_the_same_update(aggregator) -> None:
    """Float64: the two Gramians are sums of the same ≤ 10³ products in different orders, so
    they agree to 10³·ε‖gᵢ‖‖gⱼ‖ ≈ 2e-13 relative; the weights move by at most cond(G) times
    that (cond(G) < 10³ is checked here), so the updates agree to ~2e-10 relative and to
    rtol 1e-8 with room; ``wᵀJ`` and the backward of Σ wᵢ Lᵢ differ by rounding only."""
    model, losses = _problem()
    updates = {}
    for path in ("loop", "layers"):
        weights = mogradient.backward(
            losses, model=model, aggregator=aggregator, parameter_path=path
        )
        assert weights is not None
        updates[path] = _update(model)
    jac = mogradient.autograd.jacobian(losses(), list(model.parameters()))
    assert torch.linalg.cond(jac @ jac.T) < 1e3
    torch.testing.assert_close(updates["layers"], updates["loop"], rtol=1e-8, atol=1e-12)


def test_loss_weightings_run_the_closure_without_recording(monkeypatch) -> None:
    model, losses = _problem()
    spy = _Spy(monkeypatch)
    weights = mogradient.backward(losses, model=model, aggregator="mean", memory_budget=0)
    assert spy.calls == [] and weights is not None
    total = torch.stack(losses()).mean()
    expected = torch.autograd.grad(total, list(model.parameters()))
    torch.testing.assert_close(_update(model), torch.cat([g.reshape(-1) for g in expected]))


def _rank_worker(rank: int, port: int, out: str) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        # rank 0 has no memory to spare, rank 1 plenty: alone they would take different paths
        path_rule.default_memory_budget = lambda device: 0 if rank == 0 else 10**12  # type: ignore[assignment]
        chosen = choose_parameter_path(4, _params(1000), can_record=True)
        with open(f"{out}/rank{rank}.txt", "w") as f:
            f.write(chosen)
    finally:
        torch.distributed.destroy_process_group()


def test_every_rank_takes_the_same_path(tmp_path) -> None:
    """Under torch.distributed the default budget is the smallest of the ranks' (the two paths'
    collectives differ, so ranks on different paths would wait on each other forever)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)] == ["layers", "layers"]
