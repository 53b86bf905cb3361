"""`train.device`: auto picks a GPU when torch sees one; cuda without one is refused in one line;
on a GPU a run, a batched run and the diagnostics compute what they compute on the CPU, a
checkpoint written on the GPU resumes on the CPU, and the driver does not synchronize with the
GPU between its boundaries.

The GPU tests run only where torch sees a CUDA device (a CUDA build of torch, README); the
project's CI machines have none, so there they are skipped with that reason."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from helpers.batched import Spec
from helpers.cli import harness_train
from helpers.host_reads import host_reads
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

import tasks
from harness import names
from harness.batched import BatchedStepper
from harness.clipping import Clipper
from harness.diagnostics import diagnose
from harness.loop import Checkpointing, FusedStepper, MemoryTracker, RunRecord, drive, train_loop
from harness.models import RecurrentModel
from harness.optimizers import make_optimizer
from harness.resources import resolve_device
from harness.schema import OptimConfig, TrainConfig
from harness.train import train

GPU = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not GPU, reason="no CUDA device: torch.cuda.is_available() is "
                               f"False (torch {torch.__version__}, CUDA build: "
                               f"{torch.version.cuda is not None})")
no_gpu = pytest.mark.skipif(GPU, reason="this machine has a GPU: the CPU-only behaviour is moot")

TASK = tasks.make_task("delayed_recall", gap=8, filler="noise")
CFG = TrainConfig(steps=20, batch_size=16, log_every=1, eval_every=10, eval_batch_size=64,
                  profile_batch_size=8, solve_threshold=1.5)
OPTIM = OptimConfig(lr=3e-3)
# float32 on two devices: cuBLAS and oneDNN sum in other orders, so the runs agree to
# rounding, which 20 Adam steps amplify to about 1e-4 relative in the losses.
RTOL = 2e-3


@no_gpu
def test_auto_is_the_cpu_without_a_gpu(make_cfg: Callable[..., DictConfig],
                                       store_uri: str) -> None:
    assert resolve_device("auto") == torch.device("cpu")
    train(make_cfg("task=copy", "task.gap=4", "train.steps=5", "train.device=auto",
                   "experiment_name=device"))
    client = MlflowClient(store_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("device").experiment_id])
    assert run.data.tags[names.DEVICE] == "cpu"


@no_gpu
def test_cuda_without_a_gpu_is_one_line_and_no_store(tmp_path: Path,
                                                      cli_env: dict[str, str]) -> None:
    done = harness_train("train.device=cuda", f"tracking.uri=sqlite:///{tmp_path}/s/mlflow.db",
                         f"hydra.run.dir={tmp_path}/run", cwd=tmp_path, env=cli_env)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "harness-train: invalid config: train.device: cuda, but torch sees no GPU"), lines
    assert not (tmp_path / "s").exists()


def fused_run(device: str, cell: str = "lstm", checkpointing: Checkpointing | None = None
              ) -> tuple[RecurrentModel, MemoryTracker]:
    """The harness's loop on the fused model, on `device` (its data follows the model)."""
    torch.manual_seed(0)
    model = RecurrentModel(cell, TASK.input_size, TASK.output_size, 16).to(device)
    tracker = MemoryTracker()
    train_loop(TASK, model, make_optimizer(model, OPTIM), Clipper.of(Spec(0).clip), CFG,
               tracker, seed=0, checkpointing=checkpointing)
    return model, tracker


def losses(tracker: MemoryTracker) -> torch.Tensor:
    return torch.tensor([v for _, v in tracker.history[names.TRAIN_LOSS]])


@needs_gpu
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_a_run_on_the_gpu_is_the_run_on_the_cpu(cell: str) -> None:
    _, on_cpu = fused_run("cpu", cell)
    model, on_gpu = fused_run("cuda", cell)
    assert next(model.parameters()).device.type == "cuda"
    torch.testing.assert_close(losses(on_gpu), losses(on_cpu), rtol=RTOL, atol=1e-5)


@needs_gpu
def test_batched_members_on_the_gpu_are_their_cpu_runs() -> None:
    """The batched model on CUDA runs its eager cell (the C++ recurrence is CPU code)."""

    def members(device: str) -> list[MemoryTracker]:
        specs = [Spec(seed, "gru") for seed in (0, 1)]
        records = [RunRecord(s.task, CFG, MemoryTracker(), s.seed, device=device) for s in specs]
        models = [s.model().to(device) for s in specs]
        stepper = BatchedStepper(models, [s.task for s in specs], [s.optim for s in specs],
                                 [s.clip for s in specs], [None] * len(specs))
        drive(stepper, records, CFG)
        return [r.tracker for r in records]  # type: ignore[misc]

    for gpu, cpu in zip(members("cuda"), members("cpu"), strict=True):
        torch.testing.assert_close(losses(gpu), losses(cpu), rtol=RTOL, atol=1e-5)


@needs_gpu
def test_diagnostics_on_the_gpu_equal_the_cpu() -> None:
    torch.manual_seed(0)
    model = RecurrentModel("lstm", TASK.input_size, TASK.output_size, 16)
    batch = TASK.sample(8, torch.Generator().manual_seed(1))
    on_cpu = diagnose(model, TASK, batch, step=0)
    on_gpu = diagnose(model.clone().to("cuda"), TASK, batch.to("cuda"), step=0)
    for cpu, gpu in zip(on_cpu.profiles, on_gpu.profiles, strict=True):  # float64 both
        torch.testing.assert_close(gpu.grad_norm.cpu(), cpu.grad_norm, rtol=1e-9, atol=1e-30)


@needs_gpu
def test_a_gpu_checkpoint_resumes_on_the_cpu() -> None:
    saves: list[dict] = []
    whole, _ = fused_run("cuda", checkpointing=Checkpointing(10, saves.append))
    state = torch.load(_saved(saves[0]), map_location="cpu", weights_only=False)
    assert all(t.device.type == "cpu" for t in state["model"].values())
    resumed, tracker = fused_run("cpu", checkpointing=Checkpointing(10, lambda s: None, state))
    assert min(step for step, _ in tracker.history[names.TRAIN_LOSS]) == 11  # only the rest
    for a, b in zip(resumed.parameters(), whole.parameters(), strict=True):
        torch.testing.assert_close(a, b.cpu(), rtol=RTOL, atol=1e-4)


def _saved(state: dict) -> object:
    """A checkpoint as the file torch.save writes (what a resume on another node reads)."""
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


@needs_gpu
@pytest.mark.parametrize("batched", [False, True])
def test_no_host_sync_between_boundaries_on_the_gpu(monkeypatch: pytest.MonkeyPatch,
                                                    batched: bool) -> None:
    """CUDA's own sync check (`torch.cuda.set_sync_debug_mode("warn")`) warns of every
    synchronizing call; each warning is counted at the step the driver had reached: only
    boundaries (logging every 10 steps, evaluation every 20) may have any
    (tests/test_host_syncs.py checks the same calls on the CPU)."""
    cfg = TrainConfig(steps=40, batch_size=16, log_every=10, eval_every=20, eval_batch_size=64,
                      profile_batch_size=8)
    specs = [Spec(seed, "lstm") for seed in ((0, 1) if batched else (0,))]
    records = [RunRecord(s.task, cfg, MemoryTracker(), s.seed, device="cuda") for s in specs]
    models = [s.model().to("cuda") for s in specs]
    stepper = BatchedStepper(models, [s.task for s in specs], [s.optim for s in specs],
                             [s.clip for s in specs]) if batched else FusedStepper(
        models[0], make_optimizer(models[0], specs[0].optim), Clipper.of(specs[0].clip),
        specs[0].task)
    synced: list[int] = []
    with host_reads(monkeypatch) as reads, warnings.catch_warnings():  # restores showwarning
        warnings.simplefilter("always")
        warnings.showwarning = lambda *args, **kwargs: synced.append(reads.steps)
        torch.cuda.set_sync_debug_mode("warn")
        try:
            drive(stepper, records, cfg)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert all(r.result.steps_run == cfg.steps for r in records)
    assert synced and set(synced) <= {0, 10, 20, 30, 40}, sorted(set(synced))
