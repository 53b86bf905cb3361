"""A recorder of the host's reads of tensor values, to test on the CPU that the training loop
would not synchronize a GPU between its boundaries (tests/test_host_syncs.py).

On a GPU, reading a value computed there (`.item()`, `.tolist()`, `bool(t)`, `float(t)`, a
boolean-mask selection, `nonzero`, `unique`, `.cpu()`) waits until the GPU's queue
has drained: the host sync the loop must not do once per step. Copying host numbers to the
device (`torch.tensor(...)`) from pageable memory blocks the same way. On the CPU none of this
costs anything, so the tests watch for the calls themselves: `HostReads` is a torch function
mode that records each such call with the number of training steps the driver had taken
(`Pending.add` calls) when it happened.

Two things are not device reads and are left out:
- a task's data generation (`RunRecord.sample`): it runs on the CPU by design, then moves the
  batch in one asynchronous copy (`Batch.to`);
- an optimizer's step count: torch's optimizers (and `StackedOptimizer`, in their format)
  make it as a 0-dim tensor on the CPU and read it every step; it never lives on the GPU.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from harness.loop import Pending, RunRecord
from harness.optimizers import StackedOptimizer

READS: dict[Callable[..., Any], str] = {
    Tensor.item: "item", Tensor.tolist: "tolist", Tensor.__bool__: "bool",
    Tensor.__float__: "float", Tensor.__int__: "int", Tensor.__index__: "index",
    Tensor.numpy: "numpy", Tensor.nonzero: "nonzero", torch.nonzero: "nonzero",
    Tensor.masked_select: "masked_select", torch.masked_select: "masked_select",
    Tensor.unique: "unique", torch.unique: "unique", Tensor.cpu: "cpu",
    torch.tensor: "tensor from host data", torch.as_tensor: "tensor from host data",
}


def _bool_index(index: Any) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, Tensor) and p.dtype == torch.bool for p in parts)


def _scalar(value: Any) -> bool:
    """A 0-dim tensor, or the Python number one is made from."""
    return isinstance(value, int | float) or isinstance(value, Tensor) and value.dim() == 0


def _in_optimizer_step() -> bool:
    """Whether an optimizer's `step` is on the call stack."""
    frame = sys._getframe(2)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if frame.f_code.co_name == "step" and isinstance(
                owner, torch.optim.Optimizer | StackedOptimizer):
            return True
        frame = frame.f_back
    return False


class HostReads(TorchFunctionMode):
    """Records (steps taken, what) for every host read of a tensor value while active."""

    def __init__(self) -> None:
        super().__init__()
        self.steps = 0
        self.paused = False
        self.events: list[tuple[int, str]] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if not self.paused:
            what = READS.get(func)
            if func is Tensor.__getitem__ and len(args) > 1 and _bool_index(args[1]):
                what = "boolean selection"
            if what is not None and not (args and _scalar(args[0]) and _in_optimizer_step()):
                self.events.append((self.steps, what))
        return func(*args, **kwargs)

    def at(self) -> set[int]:
        """The step counts at which something was read."""
        return {steps for steps, _ in self.events}


@contextmanager
def host_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[HostReads]:
    """Record the host reads of the training driver run inside the block."""
    mode = HostReads()
    sample, add = RunRecord.sample, Pending.add

    def paused_sample(record: RunRecord) -> Any:
        mode.paused = True
        try:
            return sample(record)
        finally:
            mode.paused = False

    def counted_add(pending: Pending, *args: Any) -> None:
        add(pending, *args)
        mode.steps += 1

    monkeypatch.setattr(RunRecord, "sample", paused_sample)
    monkeypatch.setattr(Pending, "add", counted_add)
    with mode:
        yield mode
