"""The batched model's two backends (the C++ recurrence of harness/batched_kernels.py, and the
eager autograd cell): each member of the stacked model computes its separate fused model.

float64 throughout (except the float32 check): the batched cell and torch's fused modules
then agree to ~1e-15, so 1e-10 leaves room only for rounding, not for a wrong term. Both
backends are checked (the C++ ops, built on first use, and the eager autograd cell).
"""

from __future__ import annotations

import copy
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness import batched_kernels
from harness.batched import BatchedModel, stack_batches
from harness.batched_kernels import STALE_LOCK_S, clear_stale_lock, kernels
from harness.cells import CELLS as REGISTRY
from harness.models import RecurrentModel
from harness.optimizers import StackedOptimizer
from harness.schema import OptimConfig
from tasks import Batch

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

D, OUT, H, B, L = 5, 3, 7, 4, 9
TOL = {"rtol": 1e-10, "atol": 1e-12}
# name: (cell, the members' activations, learned initial state): every cell that can be
# batched, from the registry, with its first activation; a vanilla cell with mixed ones too.
CELLS = {name: (name, (spec.activations[0],) * 3, False)
         for name, spec in REGISTRY.items() if spec.batched}
CELLS["rnn_mixed"] = ("rnn", ("tanh", "relu", "leaky_relu", "hard_tanh"), False)
CELLS |= {f"{name}_h0": (name, (spec.activations[0],) * 2, True)
          for name, spec in REGISTRY.items() if spec.batched}
# The C++ recurrence serves the cells whose spec names a kernel (zero initial state).
KERNEL_CELLS = [name for name, (cell, _, learned) in CELLS.items()
                if REGISTRY[cell].kernel is not None and not learned]
HAVE_COMPILER = shutil.which("c++") is not None and shutil.which("ninja") is not None
CPP = pytest.mark.skipif(not HAVE_COMPILER,
                         reason="no C++ compiler or ninja: the eager cell is the one in use")
BACKENDS = [pytest.param("cpp", marks=CPP), "eager"]
# (cell, backend): the eager step for every cell, the C++ kernel where a cell has one
PATHS = [pytest.param(name, "cpp", marks=CPP) for name in KERNEL_CELLS] + \
    [(name, "eager") for name in CELLS]


def members(cell: str, activations: tuple[str, ...], layers: int,
            dtype: torch.dtype = torch.float64, learn_init_state: bool = False
            ) -> list[RecurrentModel]:
    """Seeds 0.., as separate runs build them; biases (and learned initial states) made
    non-trivial, so that a step on a padded (held) position would change the state if it
    were computed."""
    models = []
    for seed, activation in enumerate(activations):
        torch.manual_seed(seed)
        model = RecurrentModel(cell, D, OUT, H, layers, activation,
                               learn_init_state=learn_init_state).to(dtype)
        with torch.no_grad():
            for name, value in model.named_parameters():
                if "bias" in name or name.startswith("cell_params.h0"):
                    value.uniform_(-0.5, 0.5)
        models.append(model)
    return models


def of(name: str, layers: int, dtype: torch.dtype = torch.float64) -> list[RecurrentModel]:
    cell, activations, learned = CELLS[name]
    return members(cell, activations, layers, dtype, learned)


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad for name, p in model.named_parameters()}


def check_against_separate(model: BatchedModel, separate: list[RecurrentModel],
                           inputs: torch.Tensor, start: list[int] | None,
                           tol: dict[str, float]) -> None:
    """Outputs (member k's from start[k] on) and every member's gradients of a loss on them
    equal the separate fused model's on its unpadded sequence."""
    k = len(separate)
    first = start or [0] * k
    outputs = model(inputs, start)
    weights = torch.randn(outputs.shape, dtype=outputs.dtype)  # a loss that reaches every output
    (sum((outputs[m, :, first[m]:] * weights[m, :, first[m]:]).sum() for m in range(k))
     ).backward()
    for m, member in enumerate(separate):
        expected = member(inputs[m, :, first[m]:])
        torch.testing.assert_close(outputs[m, :, first[m]:], expected, **tol)
        (expected * weights[m, :, first[m]:]).sum().backward()
        for name, grad in grads(member).items():
            stacked = model.stacked[name.replace(".", "__")].grad
            assert stacked is not None, name
            torch.testing.assert_close(stacked[m], grad, **tol, msg=f"member {m} {name}")


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize(("name", "backend"), PATHS)
def test_equals_separate_models(name: str, layers: int, backend: str) -> None:
    """The batched eager path (the cell's step with a member axis) and the C++ kernel equal
    each member's own model (torch's fused module, or the step)."""
    separate = of(name, layers)
    model = BatchedModel(copy.deepcopy(separate), backend)
    assert model.backend == backend
    inputs = torch.randn(len(separate), B, L, D, dtype=torch.float64)
    check_against_separate(model, separate, inputs, None, TOL)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize(("name", "backend"), PATHS)
def test_per_member_start(name: str, layers: int, backend: str) -> None:
    """Left-padded members: from start[k] on, the separate run on the unpadded sequence. The
    padding holds random values (not zeros): the held steps must not read them."""
    separate = of(name, layers)
    model = BatchedModel(copy.deepcopy(separate), backend)
    start = [0, 3, 8, 1][:len(separate)]
    inputs = torch.randn(len(separate), B, L, D, dtype=torch.float64)
    check_against_separate(model, separate, inputs, start, TOL)
    # The held state: the outputs before start[k] are the readout of the initial state.
    outputs = model(inputs, start).detach()
    for m, first in enumerate(start):
        held = separate[m].readout(separate[m].initial_state(
            separate[m].weights(separate[m].num_layers - 1), inputs[m, :, 0])[0]).detach()
        torch.testing.assert_close(outputs[m, :, :first],
                                   held[:, None].expand(B, first, OUT), **TOL)


@pytest.mark.parametrize(("name", "backend"), PATHS)
def test_float32_close_to_separate(name: str, backend: str) -> None:
    """The training dtype (the C++ ops' float kernels, vectorized exp and tanh): float32
    rounding only."""
    separate = of(name, 2, torch.float32)
    model = BatchedModel(copy.deepcopy(separate), backend)
    inputs = torch.randn(len(separate), B, L, D)
    check_against_separate(model, separate, inputs, [0, 2, 5, 0][:len(separate)],
                           {"rtol": 1e-4, "atol": 1e-5})


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_diverged_member_leaves_the_others_alone(backend: str) -> None:
    separate = members("lstm", ("tanh",) * 3, 1)
    model = BatchedModel(copy.deepcopy(separate), backend)
    with torch.no_grad():
        model.stacked["rnn__weight_hh_l0"][1].fill_(float("nan"))
    inputs = torch.randn(3, B, L, D, dtype=torch.float64)
    outputs = model(inputs)
    outputs.sum().backward()
    assert bool(outputs[1].isnan().all())
    for m in (0, 2):
        torch.testing.assert_close(outputs[m], separate[m](inputs[m]), **TOL)
        assert all(bool(p.grad[m].isfinite().all()) for p in model.parameters())


@pytest.mark.parametrize("backend", BACKENDS)
def test_member_round_trip(backend: str) -> None:
    """member(k) is member k (weights, activation); the members stack back to the same
    parameters in the same order (so optimizer state index i means the same tensor)."""
    separate = of("rnn_mixed", 2)
    model = BatchedModel(separate, backend)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    extracted = [model.member(k) for k in range(model.members)]
    assert [m.activation for m in extracted] == list(CELLS["rnn_mixed"][1])
    assert [name for name, _ in extracted[0].named_parameters()] == \
        [name.replace("__", ".") for name in model.stacked]
    for k, member in enumerate(extracted):
        for name, value in member.named_parameters():
            assert torch.equal(value, model.stacked[name.replace(".", "__")][k])
    again = BatchedModel(extracted, backend)
    for a, b in zip(model.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_adam_state_maps_to_separate_runs(backend: str) -> None:
    """Three Adam steps batched (members at different starts) equal three separate steps per
    member, in the weights and in the optimizer state; the state goes back and forth."""
    separate = members("gru", ("tanh",) * 3, 2)
    model = BatchedModel(copy.deepcopy(separate), backend)
    optimizer = StackedOptimizer(list(model.parameters()), [OptimConfig(lr=1e-2)] * 3)
    optimizers = [torch.optim.Adam(m.parameters(), lr=1e-2) for m in separate]
    start = [0, 4, 2]
    for _ in range(3):
        inputs = torch.randn(3, B, L, D, dtype=torch.float64)
        outputs = model(inputs, start)
        optimizer.zero_grad()
        sum(outputs[m, :, s:].square().mean() for m, s in enumerate(start)).backward()
        optimizer.step()
        for m, (member, opt) in enumerate(zip(separate, optimizers, strict=True)):
            opt.zero_grad()
            member(inputs[m, :, start[m]:]).square().mean().backward()
            opt.step()
    for m, (member, opt) in enumerate(zip(separate, optimizers, strict=True)):
        for name, value in model.member(m).named_parameters():
            torch.testing.assert_close(value, dict(member.named_parameters())[name], **TOL)
        ours, theirs = optimizer.member_state(m), opt.state_dict()
        assert set(ours["state"]) == set(theirs["state"])
        for index, entry in theirs["state"].items():
            for key, value in entry.items():
                torch.testing.assert_close(ours["state"][index][key], value, **TOL,
                                           msg=f"member {m} param {index} {key}")
    fresh = StackedOptimizer(list(BatchedModel(separate, backend).parameters()),
                             [OptimConfig(lr=1e-2)] * 3)
    fresh.load_member_states([optimizer.member_state(m) for m in range(3)])
    for index, entry in optimizer.state.items():
        for key, value in entry.items():
            assert torch.equal(fresh.state[index][key], value)


@pytest.mark.skipif(not HAVE_COMPILER, reason="no C++ compiler or ninja")
def test_cpp_backward_runs_once_per_forward() -> None:
    model = BatchedModel(members("lstm", ("tanh",) * 2, 1), "cpp")
    loss = model(torch.randn(2, B, L, D, dtype=torch.float64)).sum()
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="once per forward"):
        loss.backward()


def test_start_is_checked() -> None:
    model = BatchedModel(members("rnn", ("tanh",) * 2, 1), "eager")
    inputs = torch.randn(2, B, L, D, dtype=torch.float64)
    for bad in ([0], [0, L], [-1, 0]):
        with pytest.raises(ValueError, match="start"):
            model(inputs, bad)
    padded, start = stack_batches([Batch(torch.ones(1, n, 2), torch.zeros(1, n),
                                         torch.ones(1, n, dtype=torch.bool)) for n in (9, 4, 7)])
    assert start == (0, 5, 2)
    assert padded.inputs[1, 0, :5].abs().sum() == 0 and not padded.mask[1, 0, :5].any()


def test_members_must_share_a_shape() -> None:
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="differ in shape"):
        BatchedModel([RecurrentModel("lstm", D, OUT, H),
                           RecurrentModel("lstm", D, OUT, H + 1)])
    with pytest.raises(ValueError, match="not batched"):
        BatchedModel([RecurrentModel("rnn", D, OUT, H, activation="modrelu")])


def test_no_compiler_falls_back_to_eager_with_one_log_line(monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture
                                                           ) -> None:
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    kernels.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger=batched_kernels.__name__):
            model = BatchedModel(members("lstm", ("tanh",) * 2, 1))
            BatchedModel(members("gru", ("tanh",) * 2, 1))
        assert model.backend == "eager"
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1 and "eager" in lines[0] and "/nonexistent/c++" in lines[0]
        with pytest.raises(RuntimeError, match="could not be built"):
            BatchedModel(members("lstm", ("tanh",) * 2, 1), "cpp")
    finally:
        kernels.cache_clear()


def test_an_old_build_lock_is_removed_where_nothing_can_lock(tmp_path: Path) -> None:
    """The fallback of `guarded` on a file system without `flock`: only a lock older than a
    build can take is a killed build's."""
    lock = tmp_path / "lock"
    assert not clear_stale_lock(str(tmp_path))
    lock.touch()
    mtime = lock.stat().st_mtime
    assert not clear_stale_lock(str(tmp_path), now=mtime + STALE_LOCK_S - 1)
    assert lock.exists()
    assert clear_stale_lock(str(tmp_path), now=mtime + STALE_LOCK_S + 1)
    assert not lock.exists()


def test_the_guard_removes_a_killed_builds_lock_and_waits_for_a_live_one(
        tmp_path: Path) -> None:
    """torch's `lock` file found under the guard is a killed build's, however young; while a
    live process holds the guard (building), another load waits for it."""
    lock = tmp_path / "lock"
    lock.touch()  # a build killed a moment ago
    with batched_kernels.guarded(str(tmp_path)):
        assert not lock.exists()
        lock.touch()  # torch's baton, taken by the live holder
        waiter = subprocess.Popen([sys.executable, "-c", (
            "import sys, time; from harness.batched_kernels import guarded\n"
            "print('waiting', flush=True)\n"
            "with guarded(sys.argv[1]): print(time.time())"),
            str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert waiter.stdout is not None and waiter.stdout.readline() == "waiting\n"
        time.sleep(1)
        assert waiter.poll() is None  # still waiting for the guard
        lock.unlink()  # the live build ends: torch removes its baton
        released = time.time()
    out, _ = waiter.communicate(timeout=60)
    assert waiter.returncode == 0 and float(out) >= released, (out, released)


@pytest.mark.skipif(not HAVE_COMPILER, reason="no C++ compiler or ninja")
def test_a_load_after_a_build_killed_mid_check_does_not_hang() -> None:
    """The hang a SIGKILLed sweep left in .ci/run on 2026-12-07: every load holds torch's
    build lock for its ninja check; a process killed then leaves the file, and torch's next
    load waited on it forever. A fresh lock in the real build folder, then a load in a new
    process: it removes the lock and loads the ops."""
    assert kernels() is not None  # built (or found) before the lock is planted
    from torch.utils import cpp_extension

    folder = Path(cpp_extension._get_build_directory(
        f"harness_batched_kernels_{batched_kernels._cpu_tag()}", False))
    (folder / "lock").touch()
    try:
        done = subprocess.run([sys.executable, "-c", (
            "from harness.batched_kernels import kernels; "
            "assert kernels() is not None, 'no ops'")],
            capture_output=True, text=True, cwd=ROOT, timeout=120)
    finally:
        hung = (folder / "lock").exists()
        (folder / "lock").unlink(missing_ok=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not hung and "removed the build lock a killed build left" in done.stderr
