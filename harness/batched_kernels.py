"""The C++ recurrence of the batched model (harness/batched.py, backend `cpp`).

`harness/batched_kernels.cpp` computes one layer of K stacked members over the whole
sequence as two CPU ops, built on first use with torch's extension builder and cached in
$TORCH_EXTENSIONS_DIR (default ~/.cache/torch_extensions):

- forward: per time step one bmm of all members' `[x_t | h_{t-1}]` with their
  `[W_ih | W_hh]^T`, then one vectorized loop that does the cell's elementwise work;
- backward: a hand-written backward through time, per step one loop over the gates and one
  bmm for the gradient reaching h_{t-1}; the weight gradients are one bmm over all steps.

`kernels()` returns the ops, or None with one log line where they cannot be built (no C++
compiler, no ninja, a failed build): the batched model then computes the same recurrence as
autograd ops (backend `eager`). `SequenceLayer` is the autograd function around the ops.
Measured against the eager cell and K separate fused runs in benchmarks/batched_kernels.py
(docs/batched_kernels.md).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from harness.models import LEAKY_SLOPE

log = logging.getLogger(__name__)

BACKENDS = ("auto", "cpp", "eager")
CELL_CODES = {"rnn": 0, "lstm": 1, "gru": 2}  # as in batched_kernels.cpp
ACTIVATION_CODES = {"tanh": 0, "relu": 1, "leaky_relu": 2, "hard_tanh": 3}
SOURCE = Path(__file__).with_name("batched_kernels.cpp")
CFLAGS = ["-O3", "-march=native", "-mprefer-vector-width=512", "-fno-math-errno",
          "-fno-trapping-math", "-fopenmp-simd"]


def _cpu_tag() -> str:
    """A short tag of this CPU's instruction sets: the build uses -march=native, so a cache
    shared by machines of other CPUs (a cluster's home folder) keeps one build per kind."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    except OSError:
        flags = ""
    return hashlib.sha1(flags.encode()).hexdigest()[:8]


STALE_LOCK_S = 600.0  # a build takes seconds; an older lock is a killed build's
GUARD_FILE = "harness.lock"  # beside torch's own `lock` in the build folder


def clear_stale_lock(folder: str, now: float | None = None) -> bool:
    """Remove the build lock a killed build left in `folder` (torch waits on it forever),
    if it is older than STALE_LOCK_S; True if one was removed. The fallback of `guarded`
    where the file system cannot `flock`."""
    lock = Path(folder) / "lock"
    try:
        age = (time.time() if now is None else now) - lock.stat().st_mtime
    except FileNotFoundError:
        return False
    if age < STALE_LOCK_S:
        return False
    lock.unlink(missing_ok=True)
    log.warning("batched_kernels: removed a stale build lock (%.0f s old): %s", age, lock)
    return True


@contextmanager
def guarded(folder: str) -> Iterator[None]:
    """Hold `folder`'s guard (an `flock`, which the kernel releases when its holder dies,
    even by SIGKILL) around torch's build of the ops there.

    torch's own build lock is a file that exists while some process builds; a process killed
    while it holds it (every load holds it for the ninja check, about a second) leaves the
    file, and every later load waits on it forever. Every load by the harness takes the guard
    first, so a `lock` found while holding the guard is a killed build's and is removed.
    Where the file system cannot lock, only a lock older than STALE_LOCK_S is removed.
    """
    Path(folder).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(folder) / GUARD_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits while a live process builds or checks
        except OSError as err:  # e.g. ENOLCK: no locking on this file system
            log.debug("batched_kernels: cannot lock %s (%s)", folder, err)
            clear_stale_lock(folder)
            yield
            return
        lock = Path(folder) / "lock"
        if lock.exists():
            lock.unlink(missing_ok=True)
            log.warning("batched_kernels: removed the build lock a killed build left: %s",
                        lock)
        yield
    finally:
        os.close(fd)  # closing the file releases the guard


def put_ninja_on_path() -> None:
    """torch's builder runs `ninja` from PATH; the project installs it into its environment
    (the `ninja` package), whose bin folder is not on PATH when a script is run by its path."""
    if shutil.which("ninja") is not None:
        return
    try:
        import ninja
    except ImportError:
        return
    os.environ["PATH"] = f"{ninja.BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}"


@cache
def kernels() -> Any | None:
    """The C++ ops (`torch.ops.batched_kernels`), built on first use and cached by torch in
    $TORCH_EXTENSIONS_DIR (default ~/.cache/torch_extensions); None, with one log line,
    where they cannot be built."""
    compiler = os.environ.get("CXX", "c++")
    put_ninja_on_path()
    missing = [tool for tool in (compiler, "ninja") if shutil.which(tool) is None]
    if missing:
        log.warning("batched_kernels: no %s found; using the eager batched cell (slower)",
                    " and no ".join(missing))
        return None
    from torch.utils import cpp_extension

    name = f"harness_batched_kernels_{_cpu_tag()}"
    start = time.perf_counter()
    try:
        with guarded(cpp_extension._get_build_directory(name, False)):
            cpp_extension.load(name=name, sources=[str(SOURCE)],
                               extra_cflags=CFLAGS, extra_ldflags=["-lmvec"],
                               is_python_module=False, verbose=False)
    except Exception as error:  # any build failure: the eager cell
        lines = str(error).strip().splitlines()
        reason = next((line for line in lines if "error" in line.lower()),
                      lines[-1] if lines else type(error).__name__)
        log.warning("batched_kernels: building the C++ cell failed (%s); using the eager "
                    "batched cell (slower)", reason.strip())
        return None
    log.debug("batched_kernels: C++ cell loaded in %.1f s", time.perf_counter() - start)
    return torch.ops.batched_kernels


class SequenceLayer(torch.autograd.Function):
    """One layer over the whole sequence through the C++ ops: x [K, L·B, D] (time-major),
    w_ih [K, G·H, D], w_hh [K, G·H, H], bias [K, G·H] (b_ih + b_hh; the GRU's b_ih),
    b_hh [K, G·H] (GRU only) -> h [K, L, B, H]."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, w_ih: Tensor, w_hh: Tensor, bias: Tensor, b_hh: Tensor,
                cell: int, start: Tensor, act: Tensor, length: int, ops: Any) -> Tensor:
        xh, gates, cbuf, hn = ops.sequence_forward(cell, x, w_ih, w_hh, bias, b_hh, start, act,
                                                   LEAKY_SLOPE, length)
        ctx.save_for_backward(x, w_ih, w_hh, start, act)
        ctx.buffers, ctx.cell, ctx.ops = [xh, gates, cbuf, hn], cell, ops
        hidden = w_hh.shape[2]
        return xh[:, 1:].view(x.shape[0], length, x.shape[1] // length, -1)[..., -hidden:]

    @staticmethod
    def backward(ctx: Any, grad_h: Tensor) -> tuple[Tensor | None, ...]:
        if ctx.buffers is None:
            raise RuntimeError("batched_kernels: the C++ layer's backward runs once per forward "
                               "(it overwrites its saved gates); retain_graph is not supported")
        x, w_ih, w_hh, start, act = ctx.saved_tensors
        xh, gates, cbuf, hn = ctx.buffers
        ctx.buffers = None
        dx, dw_ih, dw_hh, dbias, db_hh = ctx.ops.sequence_backward(
            ctx.cell, grad_h, x, w_ih, w_hh, xh, gates, cbuf, hn, start, act, LEAKY_SLOPE,
            ctx.needs_input_grad[0])
        return (dx if ctx.needs_input_grad[0] else None, dw_ih, dw_hh, dbias,
                db_hh if ctx.cell == CELL_CODES["gru"] else None,
                None, None, None, None, None)
