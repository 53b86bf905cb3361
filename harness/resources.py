"""What a job may use on this machine, decided before it trains: torch threads (cores over the
parallel jobs, SLURM's cpus per task, the launcher's setting), the device, and whether one step
fits in memory (a config that cannot fit is refused before any run exists).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from harness.cells import CELLS, parameter_count
from harness.schema import Activation, Config, ConfigError, ModelConfig

# torch is imported where a job is placed (`placement_of`), not for the memory check: a config
# that cannot fit is refused before torch loads.
if TYPE_CHECKING:
    import torch


def cpu_count() -> int:
    """Cores this process may use (respects taskset/cgroup affinity where the OS has it;
    macOS has no sched_getaffinity: all its cores)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def launcher_setting(key: str, default: Any = None) -> Any:
    """A key of the sweep's `hydra.launcher` config (`default` outside a multirun or if the
    launcher has no such key)."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return default
    return OmegaConf.select(HydraConfig.get(), f"launcher.{key}", default=default)


def concurrent_jobs() -> int:
    """How many jobs share this machine's cores: the joblib launcher's n_jobs in a sweep."""
    n_jobs = launcher_setting("n_jobs", default=1)
    return cpu_count() if n_jobs is None or n_jobs < 1 else int(n_jobs)


def torch_threads(requested: int) -> int:
    """Threads for this job: as asked; else SLURM's cpus per task (inside a SLURM job); else
    the submitit launcher's cpus_per_task; else cores / the joblib launcher's parallel jobs."""
    if requested > 0:
        return requested
    if "SLURM_CPUS_PER_TASK" in os.environ:
        return int(os.environ["SLURM_CPUS_PER_TASK"])
    cpus_per_task = launcher_setting("cpus_per_task")
    if cpus_per_task is not None:
        return int(cpus_per_task)
    return max(1, cpu_count() // concurrent_jobs())


def configure_torch(threads: int) -> None:
    """Threads for this job, and denormal floats flushed to zero.

    Vanishing gradients are exactly the values that fall into the denormal range, where x86
    arithmetic is ~100x slower: flushing them made the fused RNN and GRU about 3.7x faster per
    step at gap 300 (measured when it was added; README, Benchmark); only values below
    1.2e-38 (float32) change.
    """
    import torch

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)


def resolve_device(device: str) -> torch.device:
    """`train.device`: auto (cuda when torch sees a GPU, else cpu), cpu or cuda; ValueError for
    cuda where torch sees none (a CPU build of torch, or no GPU on this node)."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        build = ", a CPU build" if torch.version.cuda is None else ""
        raise ValueError(f"cuda, but torch sees no GPU here (torch {torch.__version__}{build}); "
                         "install a CUDA build of torch (README) or use train.device=cpu")
    return torch.device(device)


@dataclass(frozen=True)
class Placement:
    """Where a job's runs train on this machine: torch threads and device."""

    threads: int
    device: torch.device


def placement_of(spec: Config) -> Placement:
    """`train.threads` and `train.device` resolved here, and torch set up for them;
    ConfigError for cuda where torch sees no GPU (before the store is even opened)."""
    try:
        device = resolve_device(spec.train.device.value)
    except ValueError as err:
        raise ConfigError(f"train.device: {err}") from None
    threads = torch_threads(spec.train.threads)
    configure_torch(threads)
    return Placement(threads, device)


# Bytes per float32 value; activations kept for backprop are counted `ACTIVATION_FACTOR`
# times (the autograd graph holds each gate's pre- and post-activation, torch's fused kernels
# a workspace of the same order); what a cell keeps per unit and step is its spec's
# (`harness.cells.Cell.kept_per_step`: rnn 2, gru 4, lstm 5). Training holds each parameter
# `TRAINING_COPIES` times: the weight, its gradient and the optimizer's state (Adam's two
# moments; SGD and RMSprop keep fewer, so this is their upper end).
FLOAT_BYTES = 4
ACTIVATION_FACTOR = 2
TRAINING_COPIES = 4


@dataclass(frozen=True)
class Shape:
    """What the memory estimate needs of a model: its parameter count, and the numbers that
    one sequence's time step keeps for backprop (`kept`, all layers and directions)."""

    parameters: int
    kept: int
    input_size: int
    output_size: int


def shape_of(model: ModelConfig, input_size: int, output_size: int) -> Shape:
    """The `Shape` of a `model` config's model for a task's input and output sizes."""
    cell = CELLS[model.name]
    directions = 2 if model.bidirectional else 1
    count = parameter_count(cell, input_size, model.hidden_size, output_size, model.num_layers,
                            directions, model.cell_options(), model.learn_init_state,
                            model.activation == Activation.modrelu)
    kept = model.hidden_size * cell.kept_per_step() * model.num_layers * directions
    return Shape(count, kept, input_size, output_size)


def step_bytes(batch: int, seq_len: int, shape: Shape, backprop: bool = True) -> int:
    """Estimated bytes one step needs (a lower bound of the order of the real peak):

        activations = batch * seq_len * shape.kept * 4 bytes * ACTIVATION_FACTOR
                                                    (kept for backprop; once without)
        data        = batch * seq_len * (input_size + output_size) * 4 bytes
                                                    (one-hot inputs, targets / outputs)
        parameters  = shape.parameters * 4 bytes * TRAINING_COPIES   (once without backprop)

    `backprop` False (evaluation): each layer's activations once, nothing kept.
    """
    activations = batch * seq_len * shape.kept * FLOAT_BYTES
    data = batch * seq_len * (shape.input_size + shape.output_size) * FLOAT_BYTES
    return (activations * (ACTIVATION_FACTOR if backprop else 1) + data
            + parameter_bytes(shape, backprop))


def parameter_bytes(shape: Shape, backprop: bool = True) -> int:
    """The parameters' share of `step_bytes`."""
    return shape.parameters * FLOAT_BYTES * (TRAINING_COPIES if backprop else 1)


def physical_memory() -> int | None:
    """This machine's memory in bytes (None where the OS does not tell)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def check_resources(spec: Config, seq_len: int, input_size: int, output_size: int,
                    memory: int | None = None) -> None:
    """Refuse, before any run, what cannot work on this machine: chrono init on a sequence
    shorter than 3 steps (T_max − 1 < 2), and a step (training, evaluation or gradient
    profile batch) whose estimated memory (`step_bytes`) exceeds this machine's memory."""
    model = spec.model
    if model.chrono and model.chrono_t_max == 0 and seq_len < 3:
        raise ConfigError(f"model.chrono: needs a sequence of at least 3 steps (T_max = "
                          f"sequence length = {seq_len} with task.gap={spec.task.gap}); set "
                          "model.chrono_t_max>=3 or a larger task.gap")
    memory = physical_memory() if memory is None else memory
    if memory is None:
        return
    train = spec.train
    shape = shape_of(model, input_size, output_size)
    gib = 2 ** 30
    weights = parameter_bytes(shape)
    if weights > memory:  # too big at any batch and length: the model is the key responsible
        raise ConfigError(f"model.hidden_size: {model.hidden_size} gives "
                          f"{shape.parameters} parameters"
                          "; training them (weights, gradients, optimizer state) "
                          f"needs about {weights / gib:.1f} GiB, more than this machine's "
                          f"{memory / gib:.1f} GiB; lower model.hidden_size or model.num_layers")
    needs = {"train.batch_size": step_bytes(train.batch_size, seq_len, shape),
             "train.eval_batch_size": step_bytes(train.eval_batch_size, seq_len, shape,
                                                 backprop=False),
             "train.profile_batch_size": step_bytes(train.profile_batch_size, seq_len, shape)}
    key, need = max(needs.items(), key=lambda item: item[1])
    if need > memory:
        raise ConfigError(f"task.gap: {spec.task.gap} makes sequences of {seq_len} steps; one "
                          f"step with {key}={getattr(train, key.split('.')[1])} needs about "
                          f"{need / gib:.1f} GiB, more than this machine's {memory / gib:.1f} "
                          "GiB; lower task.gap or the batch size")
