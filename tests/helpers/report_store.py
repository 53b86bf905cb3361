"""The report tests' MLflow store, whose answers are known (tests/test_report.py says what
it holds): the fake runs, the closed-form values they log, and `build`, which logs them.
The `report_store` fixture (tests/conftest.py) builds it once per test module."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from harness import names
from harness.cells import GATE_BLOCKS

EXPERIMENT = "sweep-test"
EMPTY_EXPERIMENT = "sweep-empty"
CLIP_EXPERIMENT = "sweep-clip"
LEGACY_EXPERIMENT = "sweep-legacy"
BARE_EXPERIMENT = "sweep-bare"
A = ("lstm", "tanh", "norm", 1.0)
B = ("rnn", "tanh", "none", 1.0)
LABEL_A = names.config_label(*A)
LABEL_B = names.config_label(*B)
CLIP_CONFIGS = (("lstm", "tanh", "norm", 0.5), ("lstm", "tanh", "norm", 2.0),
                ("gru", "tanh", "value", 0.5))
PROFILE_STEPS = (0, 50, 100)
LOG_STEPS = (50, 100)  # train.log_every windows
UNDERFLOW_LAG = 30  # norms beyond this lag are exact zeros
OLD_PROFILE_COLUMNS = ("step", "t", "lag", "grad_norm", "grad_norm_std")  # before layers
HOSTILE_REASON = "<script>alert(1)</script> | pipe"


@dataclass
class FakeRun:
    """What one fake job logs; `profile` None = no artifact, "" = header-only file."""

    task: str
    config: tuple[str, str, str, float]
    gap: int
    seed: int
    status: str
    accuracy: float | None
    reason: str = "ok"
    profile: str | None = field(default="normal")
    legacy: bool = False  # logged before gradient diagnostics existed

    @property
    def name(self) -> str:
        return names.run_name(self.task, *self.config, self.gap, self.seed)

    @property
    def label(self) -> str:
        return names.config_label(*self.config)

    @property
    def layers(self) -> int:
        return 2 if self.config[0] == "lstm" and not self.legacy else 1

    @property
    def profile_steps(self) -> tuple[int, ...]:
        if self.profile not in ("normal", "diverged"):
            return ()
        return (0,) if self.status == names.DIVERGED else PROFILE_STEPS

    @property
    def diagnosed(self) -> bool:
        """Logs the new gradient diagnostics (decay, spectral radius, ...)."""
        return not self.legacy and self.status != names.FAILED

    @property
    def metric_steps(self) -> tuple[int, ...]:
        return (0,) if self.status == names.DIVERGED else PROFILE_STEPS

    @property
    def spectral_steps(self) -> tuple[int, ...]:
        """The diverged run also logs an infinite spectral radius as it blows up."""
        return PROFILE_STEPS[:2] if self.status == names.DIVERGED else PROFILE_STEPS

    @property
    def log_steps(self) -> tuple[int, ...]:
        return LOG_STEPS[:1] if self.status == names.DIVERGED else LOG_STEPS


def profile_norm(run: FakeRun, step: int, layer: int, lag: int) -> float:
    """‖∂L/∂h_t‖ of the fake profile: exactly geometric in lag, per step, seed and layer."""
    if lag > UNDERFLOW_LAG:
        return 0.0
    if run.profile == "diverged" and lag == 0:
        return math.inf
    if layer < run.layers - 1:
        return 7.0 * 0.99**lag  # an inner layer: must never reach the figures
    return ((0.5 if step == 0 else 0.9) ** (1 + run.seed)) ** lag


def decay_rate(run: FakeRun, step: int) -> float:
    if run.config == B and (run.gap, run.seed) == (40, 0) and step == PROFILE_STEPS[-1]:
        return 0.02  # exploding at the end, so its last logged half-life is stale
    return -(0.05 + 0.01 * run.seed + run.gap / 1000) - step / 10_000


def reach(run: FakeRun, step: int) -> float:
    return float(run.gap + 5 - 2 * run.seed - step // 50)


def grad_norm(run: FakeRun, step: int) -> float:
    return (1 + run.seed) * (0.5 + step / 100) * (2.0 if run.config == B else 1.0)


def spectral(run: FakeRun, layer: int, block: int, step: int) -> float:
    if run.status == names.DIVERGED and step > 0:
        return math.inf
    return 0.6 + 0.1 * block + 0.2 * layer + step / 1000 + 0.01 * run.seed


def clip_rate(run: FakeRun) -> float:
    if run.config[2] == "none":
        return 0.0
    return round(0.1 + 0.01 * run.seed + run.gap / 1000 + run.config[3] / 100, 6)


def accuracy(config: tuple[str, str, str, float], gap: int, seed: int, status: str) -> float:
    # Distinct value per run so that means can be checked against what was logged.
    base = 0.99 if status == names.SOLVED else 0.2 if config == B else 0.55
    return round(base - gap / 10_000 - seed / 1_000, 6)


def fake_runs() -> list[FakeRun]:
    runs = []
    for gap in (10, 20, 40):
        for seed in (0, 1):
            status = names.SOLVED if (gap < 40 or seed == 0) else names.UNSOLVED
            runs.append(FakeRun("copy", A, gap, seed, status, accuracy(A, gap, seed, status)))
            b_status = names.DIVERGED if (gap, seed) == (40, 1) else names.UNSOLVED
            b_acc = None if b_status == names.DIVERGED else accuracy(B, gap, seed, b_status)
            runs.append(FakeRun("copy", B, gap, seed, b_status, b_acc))
    for run in runs:
        if run.config == A and (run.gap, run.seed) == (10, 1):
            run.profile = ""  # header only
        if run.config == B and (run.gap, run.seed) == (20, 0):
            run.profile = None  # artifact never written
        if run.status == names.DIVERGED:
            run.profile = "diverged"  # step 0 only, with non-finite values
            run.reason = HOSTILE_REASON
    runs.append(FakeRun("adding", A, 10, 0, names.SOLVED, 0.97))
    runs.append(FakeRun("adding", B, 10, 0, names.FAILED, None, "RuntimeError('oom')", None))
    return runs


def clip_runs() -> list[FakeRun]:
    return [FakeRun("copy", config, gap, seed, names.UNSOLVED, 0.3, profile=None)
            for config in CLIP_CONFIGS for gap in (10, 20) for seed in (0, 1)]


def legacy_runs() -> list[FakeRun]:
    return [FakeRun("copy", B, 10, 0, names.UNSOLVED, 0.2, legacy=True),
            FakeRun("copy", B, 20, 0, names.UNSOLVED, 0.2, profile=None, legacy=True)]


def bare_runs() -> list[FakeRun]:
    return [FakeRun("copy", A, 10, 0, names.FAILED, None, "RuntimeError('oom')", None)]


def profile_csv(run: FakeRun) -> str:
    columns = OLD_PROFILE_COLUMNS if run.legacy else names.PROFILE_COLUMNS
    lines = [",".join(columns)]
    length = run.gap + 5
    for step in run.profile_steps:
        for layer in range(run.layers):
            for t in range(length):
                lag = length - 1 - t
                norm = profile_norm(run, step, layer, lag)
                values = {"step": step, "layer": layer, "t": t, "lag": lag, "grad_norm": norm,
                          "grad_norm_std": norm / 10, "hidden_norm": 0.5}
                lines.append(",".join(repr(values[c]) for c in columns))
    return "\n".join(lines) + "\n"


def diagnostics(run: FakeRun) -> list[Metric]:
    """The histories the training side logs: gradient decay, spectral radii, grad norms."""
    metrics: list[Metric] = []
    if run.status == names.FAILED:
        return metrics
    for step in run.log_steps:
        pre = grad_norm(run, step)
        post = min(pre, run.config[3]) if run.config[2] == "norm" else pre
        metrics += [Metric(names.GRAD_NORM_PRE_CLIP, pre, 0, step),
                    Metric(names.CLIP_RATE, clip_rate(run), 0, step)]
        if run.diagnosed:
            metrics.append(Metric(names.GRAD_NORM_POST_CLIP, post, 0, step))
    if not run.diagnosed:
        return metrics
    for step in run.metric_steps:
        rate = decay_rate(run, step)
        metrics += [Metric(names.GRAD_DECAY_RATE, rate, 0, step),
                    Metric(names.GRAD_DECAY_R2, 1.0, 0, step),
                    Metric(names.GRAD_REACH, reach(run, step), 0, step)]
        if rate < 0:
            metrics.append(Metric(names.GRAD_HALF_LIFE, math.log(2) / -rate, 0, step))
    for step in run.spectral_steps:
        for layer in range(run.layers):
            for i, block in enumerate(GATE_BLOCKS[run.config[0]]):
                value = spectral(run, layer, i, step)
                metrics += [
                    Metric(names.block_key(names.SPECTRAL_RADIUS, layer, block), value, 0, step),
                    Metric(names.block_key(names.SINGULAR_VALUE_MAX, layer, block), value + 1,
                           0, step),
                ]
    steps = run.metric_steps
    metrics.append(Metric(names.GRAD_NORM_POST_CLIP_MAX, 1.0, 0, steps[-1]))
    if run.status == names.DIVERGED:
        metrics.append(Metric(names.DIVERGED_STEP, 50.0, 0, steps[-1]))
    return metrics


def log_run(client: MlflowClient, experiment_id: str, run: FakeRun, tmp: Path) -> None:
    model, activation, clip_mode, threshold = run.config
    mlflow_run = client.create_run(experiment_id, run_name=run.name)
    run_id = mlflow_run.info.run_id
    params = {
        names.TASK: run.task, names.GAP: run.gap, names.MODEL: model,
        names.ACTIVATION: activation, names.HIDDEN_SIZE: 32, names.CLIP_MODE: clip_mode,
        names.CLIP_THRESHOLD: threshold, names.LR: 0.001, names.SEED: run.seed,
    }
    tags = {names.STATUS: run.status, names.STATUS_REASON: run.reason,
            names.CONFIG_HASH: f"hash-{run.name}", names.GIT_COMMIT: "0" * 40}
    single = {
        names.CHANCE_LOSS: 2.0, names.CHANCE_ACCURACY: 0.125 if run.task == "copy" else 0.1,
        names.STEPS_RUN: 100.0, names.WALL_TIME_S: 12.5 + run.gap,
        names.GRAD_NORM_PRE_CLIP_MAX: 3.0, names.CLIP_RATE_TOTAL: clip_rate(run),
    }
    if run.accuracy is not None:
        single |= {names.FINAL_EVAL_ACCURACY: run.accuracy, names.FINAL_EVAL_LOSS: 0.5,
                   names.BEST_EVAL_ACCURACY: run.accuracy}
    if run.status == names.SOLVED:
        single[names.STEPS_TO_SOLVE] = 80.0
    metrics = [Metric(k, v, 0, 100) for k, v in single.items()]
    for step in (0, 50, 100):
        metrics += [Metric(names.TRAIN_LOSS, 2.0 - step / 100, 0, step),
                    Metric(names.EVAL_ACCURACY, step / 100, 0, step)]
    metrics += diagnostics(run)
    if run.status == names.FAILED:
        metrics = []  # the job raised before logging anything: params and tags only
    for start in range(0, len(metrics), 1000):  # MLflow's limit of metrics per log_batch
        client.log_batch(run_id, metrics=metrics[start:start + 1000])
    client.log_batch(
        run_id,
        params=[Param(k, str(v)) for k, v in params.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    if run.profile is not None:
        folder = tmp / run_id
        folder.mkdir()
        (folder / names.GRAD_PROFILE_ARTIFACT).write_text(profile_csv(run))
        client.log_artifact(run_id, str(folder / names.GRAD_PROFILE_ARTIFACT))
    client.set_terminated(run_id, "FAILED" if run.status == names.DIVERGED else "FINISHED")


def build(root: Path) -> str:
    """Log the store under `root` (an empty folder); its `sqlite:///` URI."""
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    client.create_experiment(EMPTY_EXPERIMENT, artifact_location=(root / "art2").as_uri())
    staging = root / "staging"
    staging.mkdir()
    sweeps = {EXPERIMENT: fake_runs(), CLIP_EXPERIMENT: clip_runs(),
              LEGACY_EXPERIMENT: legacy_runs(), BARE_EXPERIMENT: bare_runs()}
    for experiment, fakes in sweeps.items():
        exp_id = client.create_experiment(experiment,
                                          artifact_location=(root / experiment).as_uri())
        for run in fakes:
            log_run(client, exp_id, run, staging)
        # A multirun's parent run lives in the same experiment; it is not a row of the report.
        sweep = client.create_run(exp_id, run_name="sweep-0",
                                  tags={names.RUN_KIND: names.SWEEP_KIND})
        client.log_param(sweep.info.run_id, names.SWEEP_OVERRIDES, "task.gap=10,20,40")
        client.set_terminated(sweep.info.run_id)
    return uri
