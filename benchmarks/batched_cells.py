"""Which batched recurrent step is fastest (issue #13 item 3): candidates against K separate runs.

    python benchmarks/batched_cells.py                      # the full grid (tens of minutes)
    python benchmarks/batched_cells.py --quick              # one shape, fewer rounds
    python benchmarks/batched_cells.py --profile            # the bare fused step's profile
    python benchmarks/batched_cells.py --compile-time       # C++ build and torch.compile times

A training step is what a run does per step: sample each member's batch (delayed recall,
`tasks.make_task("delayed_recall", gap=g)`), forward, the task's loss, backward, Adam step.
`separate` is K fused `RecurrentModel`s (torch's nn.RNN/LSTM/GRU) trained one after another;
each candidate trains the same K members (seeds 0..K-1) as one stacked model:

- `v0`: `harness.batched.BatchedModel`, the batched cell of issue #6 (autograd per step);
- `eager`: `BatchedCellsModel(backend="eager")`: autograd per step, time-major;
- `fused_layout` (LSTM only): the eager cell with the fused gate layout: the gate rows
  reordered to i, f, o, g (per forward call), one sigmoid over i, f, o, one tanh over g,
  `addcmul` for the cell update;
- `compiled`: the fused-layout cell step (and only the step, not the loop) through
  torch.compile;
- `pyfunc` (LSTM only): a custom autograd.Function over the sequence, fused gate layout,
  backward through time in Python ops, dW_hh as one bmm at the end;
- `cpp`: `BatchedCellsModel(backend="cpp")`, the C++ sequence forward and backward;
- `cpp_mixed` (RNN only): `cpp` with the members' activations tanh, relu, leaky_relu,
  hard_tanh in turn; its row also gives its time over `cpp`'s (all tanh). Its factor is
  against the tanh separate runs: leaky_relu states decay into denormal numbers, which
  the CPU computes slowly in any implementation (`--flush-denormal` sets
  torch.set_flush_denormal(True) to take that effect out);
- `cpp_start`: `cpp` with per-member starts 0, 1, 2, ... (the hold's cost at the same L).

All with 1 torch thread, candidates interleaved in rounds (each round times `steps` steps of
every candidate, process CPU time), medians over the rounds. Factor = separate time per
member-step / candidate time per member-step (> 1: the candidate is faster). The share of
sgemm peak counts the matmul FLOPs (forward + 2x backward, input projection, recurrence,
readout) against the 2048² fp32 matmul rate measured in the same process: before every
row, the best so far taken as the peak (the machine is shared: one measurement can be low).
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.batched_cells import BatchedCellsModel, kernels  # noqa: E402

import tasks  # noqa: E402
from harness.batched import BatchedModel, build_member  # noqa: E402
from harness.models import RecurrentModel  # noqa: E402

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
MIXED = ("tanh", "relu", "leaky_relu", "hard_tanh")


def sgemm_gflops(size: int = 2048, repeats: int = 5) -> float:
    """The 2048² fp32 matmul rate, best of `repeats` (1 thread, as everything here)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def step_flops(cell: str, task: tasks.Task, hidden: int, batch: int) -> float:
    """Matmul FLOPs of one member's training step: forward, and 2x that backward."""
    gates = GATES[cell] * hidden
    per_step = 2 * batch * ((task.input_size + hidden) * gates + hidden * task.output_size)
    return 3.0 * per_step * task.seq_len


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ---- candidates that lost (kept here so that the measurement can be repeated) -------------


def lstm_step(x_t: Tensor, h: Tensor, c: Tensor, w_t: Tensor) -> tuple[Tensor, Tensor]:
    """The fused-layout LSTM step (gates i, f, o, g), as BatchedCellsModel's eager cell."""
    hidden = h.shape[-1]
    gates = torch.baddbmm(x_t, h, w_t)
    i, f, o = torch.sigmoid(gates[..., :3 * hidden]).chunk(3, dim=-1)
    c = torch.addcmul(f * c, i, torch.tanh(gates[..., 3 * hidden:]))
    return o * torch.tanh(c), c


def gru_step(x_t: Tensor, h: Tensor, w_t: Tensor, b_hh: Tensor) -> Tensor:
    hidden = h.shape[-1]
    h_proj = torch.baddbmm(b_hh, h, w_t)
    r, z = torch.sigmoid(x_t[..., :2 * hidden] + h_proj[..., :2 * hidden]).chunk(2, dim=-1)
    n = torch.tanh(torch.addcmul(x_t[..., 2 * hidden:], r, h_proj[..., 2 * hidden:]))
    return torch.lerp(n, h, z)


def rnn_step(x_t: Tensor, h: Tensor, w_t: Tensor) -> Tensor:
    return torch.tanh(torch.baddbmm(x_t, h, w_t))


class CompiledStep(BatchedCellsModel):
    """The fused-layout cell with its step (not the loop) through torch.compile (or not:
    `compile=False`); homogeneous tanh members, no start."""

    def __init__(self, members: list[RecurrentModel], compile: bool = True) -> None:
        super().__init__(members, backend="eager")
        step = {"lstm": lstm_step, "gru": gru_step, "rnn": rnn_step}[self.cell]
        self.step = torch.compile(step, dynamic=False, fullgraph=True) if compile else step

    def _layer_eager(self, layer_input: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor,
                     b_hh: Tensor, start: Tensor | None, length: int) -> Tensor:
        k, hidden = layer_input.shape[0], self.hidden_size
        if self.cell == "lstm":
            w_ih, w_hh, b_ih, b_hh = (torch.cat([t.narrow(1, j * hidden, hidden)
                                                 for j in (0, 1, 3, 2)], dim=1)
                                      for t in (w_ih, w_hh, b_ih, b_hh))
        bias = b_ih if self.cell == "gru" else b_ih + b_hh
        projected = torch.baddbmm(bias.unsqueeze(1), layer_input, w_ih.transpose(1, 2))
        steps = projected.view(k, length, -1, projected.shape[-1]).unbind(dim=1)
        w_t, b = w_hh.transpose(1, 2), b_hh.unsqueeze(1)
        h = layer_input.new_zeros(k, steps[0].shape[1], hidden)
        c, states = h, []
        for x_t in steps:
            if self.cell == "lstm":
                h, c = self.step(x_t, h, c, w_t)
            elif self.cell == "gru":
                h = self.step(x_t, h, w_t, b)
            else:
                h = self.step(x_t, h, w_t)
            states.append(h)
        return torch.stack(states, dim=1)


class PyLSTMSequence(torch.autograd.Function):
    """The LSTM recurrence over the sequence with a hand-written backward in Python ops
    (gates i, f, o, g): xproj [K, L, B, 4H], w_hh [K, 4H, H] -> h [K, L, B, H]."""

    @staticmethod
    def forward(ctx: Any, xproj: Tensor, w_hh: Tensor) -> Tensor:
        k, length, batch, gh = xproj.shape
        hidden = gh // 4
        hbuf = xproj.new_zeros(k, length + 1, batch, hidden)
        cbuf = xproj.new_zeros(k, length + 1, batch, hidden)
        gates = torch.empty_like(xproj)
        tanh_c = xproj.new_empty(k, length, batch, hidden)
        w_t = w_hh.transpose(1, 2)
        for t in range(length):
            g = gates[:, t]
            torch.baddbmm(xproj[:, t], hbuf[:, t], w_t, out=g)
            g[..., :3 * hidden].sigmoid_()
            g[..., 3 * hidden:].tanh_()
            i, f, o, gg = g.chunk(4, dim=-1)
            c = cbuf[:, t + 1]
            torch.mul(f, cbuf[:, t], out=c)
            c.addcmul_(i, gg)
            torch.tanh(c, out=tanh_c[:, t])
            torch.mul(o, tanh_c[:, t], out=hbuf[:, t + 1])
        ctx.save_for_backward(w_hh)
        ctx.buffers = hbuf, cbuf, gates, tanh_c
        return hbuf[:, 1:]

    @staticmethod
    def backward(ctx: Any, grad_h: Tensor) -> tuple[Tensor, Tensor]:
        (w_hh,) = ctx.saved_tensors
        hbuf, cbuf, gates, tanh_c = ctx.buffers
        k, length, batch, gh = gates.shape
        hidden = gh // 4
        dgates = torch.empty_like(gates)
        dh_rec = grad_h.new_zeros(k, batch, hidden)
        dc = grad_h.new_zeros(k, batch, hidden)
        for t in range(length - 1, -1, -1):
            i, f, o, g = gates[:, t].chunk(4, dim=-1)
            tc = tanh_c[:, t]
            dh = grad_h[:, t] + dh_rec
            dc = dc + dh * o * (1 - tc * tc)
            sig = gates[:, t, :, :3 * hidden]
            d = dgates[:, t]
            di, df, do, dg = d.chunk(4, dim=-1)
            torch.mul(dc, g, out=di)
            torch.mul(dc, cbuf[:, t], out=df)
            torch.mul(dh, tc, out=do)
            d[..., :3 * hidden].mul_(sig * (1 - sig))
            torch.mul(dc * i, 1 - g * g, out=dg)
            dc = dc * f
            dh_rec = torch.bmm(d, w_hh)
        h_prev = hbuf[:, :length].reshape(k, length * batch, hidden)
        dw = torch.bmm(dgates.view(k, length * batch, gh).transpose(1, 2), h_prev)
        return dgates, dw


class PyFunctionLSTM(BatchedCellsModel):
    def __init__(self, members: list[RecurrentModel]) -> None:
        super().__init__(members, backend="eager")

    def _layer_eager(self, layer_input: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor,
                     b_hh: Tensor, start: Tensor | None, length: int) -> Tensor:
        hidden = self.hidden_size
        w_ih, w_hh, b_ih, b_hh = (torch.cat([t.narrow(1, j * hidden, hidden)
                                             for j in (0, 1, 3, 2)], dim=1)
                                  for t in (w_ih, w_hh, b_ih, b_hh))
        projected = torch.baddbmm((b_ih + b_hh).unsqueeze(1), layer_input,
                                  w_ih.transpose(1, 2))
        k = layer_input.shape[0]
        return PyLSTMSequence.apply(projected.view(k, length, -1, projected.shape[-1]), w_hh)


# ---- training steps ------------------------------------------------------------------------


def separate_step(task: tasks.Task, runs: list[tuple[nn.Module, Any, torch.Generator]],
                  batch: int) -> Callable[[], None]:
    def step() -> None:
        for model, optimizer, generator in runs:
            data = task.sample(batch, generator)
            loss = task.loss(model(data.inputs), data)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return step


def batched_step(task: tasks.Task, model: nn.Module, generators: list[torch.Generator],
                 batch: int, start: Tensor | None = None) -> Callable[[], None]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        data = [task.sample(batch, g) for g in generators]
        inputs = torch.stack([d.inputs for d in data])
        outputs = model(inputs) if start is None else model(inputs, start)
        loss = sum(task.loss(outputs[k], d) for k, d in enumerate(data))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def candidates_for(cell: str, k: int, task: tasks.Task, hidden: int, batch: int,
                   names: list[str]) -> dict[str, Callable[[], None]]:
    def members(activations: tuple[str, ...] = ("tanh",)) -> list[RecurrentModel]:
        return [build_member(seed, cell, task, hidden,
                             activation=activations[seed % len(activations)])
                for seed in range(k)]

    def generators() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(1000 + seed) for seed in range(k)]

    steps: dict[str, Callable[[], None]] = {}
    runs = [(m, torch.optim.Adam(m.parameters(), lr=1e-3), g)
            for m, g in zip(copy.deepcopy(members()), generators(), strict=True)]
    steps["separate"] = separate_step(task, runs, batch)
    for name in names:
        if name == "v0":
            model: nn.Module = BatchedModel(members())
        elif name == "eager":
            model = BatchedCellsModel(members(), backend="eager")
        elif name == "fused_layout":
            if cell != "lstm":
                continue
            model = CompiledStep(members(), compile=False)
        elif name == "compiled":
            model = CompiledStep(members())
        elif name == "pyfunc":
            if cell != "lstm":
                continue
            model = PyFunctionLSTM(members())
        elif name in ("cpp", "cpp_start"):
            model = BatchedCellsModel(members(), backend="cpp")
        elif name == "cpp_mixed":
            if cell != "rnn":
                continue
            model = BatchedCellsModel(members(MIXED), backend="cpp")
        else:
            raise ValueError(f"unknown candidate {name!r}")
        start = torch.arange(k) if name == "cpp_start" else None
        steps[name] = batched_step(task, model, generators(), batch, start)
    return steps


def measure(cell: str, k: int, gap: int, hidden: int, batch: int, names: list[str],
            steps: int, rounds: int, peak: float) -> dict[str, float]:
    """Median CPU seconds per training step of all K members, per candidate."""
    now = sgemm_gflops(repeats=3)
    peak = max(peak, now)
    task = tasks.make_task("delayed_recall", gap=gap)
    runs = candidates_for(cell, k, task, hidden, batch, names)
    for run in runs.values():  # warm-up (and torch.compile's compilation)
        run()
        run()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.process_time()
            for _ in range(steps):
                run()
            seconds[name].append((time.process_time() - start) / steps)
    median = {name: statistics.median(s) for name, s in seconds.items()}
    flops = k * step_flops(cell, task, hidden, batch)
    separate = median["separate"]
    cells = [f"{cell:4} K={k} gap={gap:3} H={hidden:3} B={batch:2} | sgemm {now:3.0f} "
             f"(peak {peak:3.0f}) load {os.getloadavg()[0]:4.1f} | separate "
             f"{1e3 * separate / k:6.2f} ms/member-step ({flops / separate / 1e9 / peak:.0%} "
             "of sgemm)"]
    for name in runs:
        if name == "separate":
            continue
        factors = sorted(a / b for a, b in zip(seconds["separate"], seconds[name], strict=True))
        cells.append(f"{name} {separate / median[name]:.2f} ({factors[0]:.2f}-{factors[-1]:.2f}, "
                     f"{flops / median[name] / 1e9 / peak:.0%})")
    if "cpp_mixed" in median and "cpp" in median:
        cells.append(f"mixed/homogeneous time {median['cpp_mixed'] / median['cpp']:.2f}")
    print(" | ".join(cells), flush=True)
    return {**median, "peak": peak}


# ---- profile and compile times -------------------------------------------------------------


def profile_fused(cell: str, gap: int, hidden: int, batch: int, steps: int,
                  peak: float) -> None:
    """torch.profiler on the bare fused single-model training step: where its time goes."""
    from torch.profiler import ProfilerActivity, profile

    task = tasks.make_task("delayed_recall", gap=gap)
    model = build_member(0, cell, task, hidden)
    run = separate_step(task, [(model, torch.optim.Adam(model.parameters(), lr=1e-3),
                                torch.Generator().manual_seed(0))], batch)
    for _ in range(3):
        run()
    start = time.process_time()
    for _ in range(steps):
        run()
    per_step = (time.process_time() - start) / steps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            run()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    flops = step_flops(cell, task, hidden, batch)
    print(f"\n{cell} gap {gap} H={hidden} B={batch}: {1e3 * per_step:.2f} ms/step unprofiled, "
          f"{flops / per_step / 1e9:.1f} GFLOP/s = {flops / per_step / 1e9 / peak:.0%} of "
          f"sgemm ({peak:.0f}); {sum(e.count for e in events) / steps:.0f} ops/step; "
          "self CPU time by op:")
    for event in sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]:
        print(f"  {event.key:42} {event.self_cpu_time_total / total:6.1%} "
              f"{event.count / steps:7.1f} calls/step "
              f"{event.self_cpu_time_total / steps / 1e3:7.3f} ms/step")


COMPILED_FIRST_STEP = """
import sys, time, torch
sys.path.insert(0, {folder!r})
torch.set_num_threads(1)
import batched_cells as bench, tasks
task = tasks.make_task("delayed_recall", gap={gap})
model = bench.CompiledStep([bench.build_member(s, {cell!r}, task, {hidden}) for s in range({k})])
inputs = torch.stack([task.sample({batch}, torch.Generator().manual_seed(s)).inputs
                      for s in range({k})])
start = time.perf_counter()
model(inputs).sum().backward()
first = time.perf_counter() - start
start = time.perf_counter()
model(inputs).sum().backward()
print(f"{{first:.1f}} {{1e3 * (time.perf_counter() - start):.1f}}")
"""


def compile_times(gap: int, hidden: int, batch: int, k: int) -> None:
    """First-use costs, each in a fresh process: the C++ ops' build (into an empty cache
    folder), then their load from that cache; torch.compile of the cell step (first forward
    + backward) with an empty inductor cache, then with the cache the first run left."""
    code = ("import time, torch; t = time.perf_counter(); "
            "from harness.batched_cells import kernels; ops = kernels(); "
            "print(f'{time.perf_counter() - t:.1f}', ops is not None)")
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "TORCH_EXTENSIONS_DIR": folder, "PYTHONPATH": str(root)}
        for label in ("fresh build", "cached load"):
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                 text=True, check=True).stdout.split()
            print(f"C++ cell, {label}: {out[0]} s (built: {out[1]})", flush=True)
    for cell in GATES:
        with tempfile.TemporaryDirectory() as folder:
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": folder, "PYTHONPATH": str(root)}
            script = COMPILED_FIRST_STEP.format(folder=str(root / "benchmarks"), gap=gap,
                                                cell=cell, hidden=hidden, k=k, batch=batch)
            for label in ("empty cache", "warm cache"):
                first, then = subprocess.run([sys.executable, "-c", script], env=env,
                                             capture_output=True, text=True,
                                             check=True).stdout.split()
                print(f"torch.compile {cell} step (K={k}, gap {gap}, {label}): first forward "
                      f"+ backward {first} s, the next {then} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", nargs="+", default=list(GATES))
    parser.add_argument("--ks", nargs="+", type=int, default=[4, 8])
    parser.add_argument("--gaps", nargs="+", type=int, default=[20, 80])
    parser.add_argument("--shapes", nargs="+", default=["64x32", "128x64"],
                        help="hidden x batch")
    parser.add_argument("--candidates", nargs="+",
                        default=["v0", "eager", "fused_layout", "compiled", "pyfunc", "cpp",
                                 "cpp_mixed", "cpp_start"])
    parser.add_argument("--steps", type=int, default=3, help="steps per candidate per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="64x32, 3 rounds of 2 steps")
    parser.add_argument("--profile", action="store_true", help="profile the bare fused step")
    parser.add_argument("--compile-time", action="store_true")
    parser.add_argument("--flush-denormal", action="store_true",
                        help="torch.set_flush_denormal(True) (denormals computed as zero)")
    args = parser.parse_args()
    if args.quick:
        args.shapes, args.steps, args.rounds = ["64x32"], 2, 3
    torch.set_num_threads(1)
    torch.set_flush_denormal(args.flush_denormal)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    peak = sgemm_gflops()
    print(f"torch {torch.__version__}, 1 thread; sgemm 2048² fp32: {peak:.1f} GFLOP/s; "
          f"load average {load()}; C++ cell: {'built' if kernels() else 'unavailable'}",
          flush=True)
    if args.compile_time:
        compile_times(20, 64, 32, 4)
    if args.profile:
        for cell in args.cells:
            for gap in args.gaps:
                profile_fused(cell, gap, 64, 32, 30, peak)
    if args.compile_time or args.profile:
        return
    started = time.perf_counter()
    for shape in args.shapes:
        hidden, batch = (int(x) for x in shape.split("x"))
        for cell in args.cells:
            for k in args.ks:
                for gap in args.gaps:
                    peak = measure(cell, k, gap, hidden, batch, args.candidates, args.steps,
                                   args.rounds, peak)["peak"]
    print(f"sgemm at the end: {sgemm_gflops():.1f} GFLOP/s; load average {load()}; "
          f"{time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
