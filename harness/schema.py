"""Structured configs (dataclass schemas) for every config group, and their validation.

Hydra checks types and the allowed values of the enum fields while it composes the config
(`model.activation=sigmoid` fails there, listing the choices). Ranges (gap >= 1, hidden
size >= 1, non-negative threshold, ...) are checked by `validate`, which runs before any
training or MLflow run starts and raises `ConfigError` naming the field.

The schemas are registered in Hydra's ConfigStore as `<group>/base_<name>`; each YAML file
in `conf/<group>/` extends one, so an unknown key in a YAML file or override is rejected. The
`task` group's schemas are the tasks' own configs (`tasks.TaskConfig` subclasses, one per
task module, with their checks), one per registered task: `task/base_<task name>`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.errors import MissingConfigException
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

import tasks
from harness.cells import CELLS, VANILLA
from tasks import ParameterError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EVAL_SEED_OFFSET = 1_000_000_000  # eval stream seed = seed + offset: disjoint from train seeds


class ConfigError(ValueError):
    """A config value is out of range; the message starts with the field's full key."""


# The `model.name` choices: the cells of harness/cells.py
ModelName = StrEnum("ModelName", {name: name for name in CELLS})  # type: ignore[misc]


class Activation(StrEnum):
    # tanh and relu run torch's fused nn.RNN; the others the unrolled pass (harness/models.py)
    tanh = "tanh"
    relu = "relu"
    leaky_relu = "leaky_relu"
    hard_tanh = "hard_tanh"
    modrelu = "modrelu"  # sign(z) relu(|z| + b), learned b (uRNN, expRNN)


class Init(StrEnum):
    default = "default"  # PyTorch's U(-1/sqrt(H), 1/sqrt(H))
    orthogonal = "orthogonal"  # orthogonal recurrent matrices
    identity = "identity"  # IRNN (Le et al. 2015): W_hh = I, zero recurrent bias


class OptimName(StrEnum):
    adam = "adam"
    sgd = "sgd"
    rmsprop = "rmsprop"


class ClipMode(StrEnum):
    none = "none"
    norm = "norm"  # rescale the global L2 norm to the threshold (Pascanu et al. 2013)
    value = "value"  # clamp every gradient element to +-threshold


class Device(StrEnum):
    auto = "auto"  # cuda when torch sees a GPU, else cpu
    cpu = "cpu"
    cuda = "cuda"


class BatchMembers(StrEnum):
    auto = "auto"  # a sweep's jobs that may share a stacked model train as one batched job
    off = "off"  # one job per run


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


@dataclass
class ModelConfig:
    name: ModelName = ModelName.lstm
    # Only the vanilla RNNs have a choice; torch's LSTM and GRU are tanh by definition.
    activation: Activation = Activation.tanh
    hidden_size: int = 64
    num_layers: int = 1
    bidirectional: bool = False  # every layer reads both directions of the layer below
    init: Init = Init.default
    forget_bias: float = 1.0  # LSTM only: initial forget-gate bias (b_ih + b_hh)
    # Chrono init of the keep-gate biases (LSTM forget, GRU update; Tallec & Ollivier 2018)
    # for dependencies up to chrono_t_max steps; 0 = the task's sequence length.
    chrono: bool = False
    chrono_t_max: int = 0

    def validate(self) -> None:
        cell = CELLS[self.name.value]
        vanilla = cell.vanilla
        _check(self.hidden_size >= 1, "hidden_size", f"must be >= 1, got {self.hidden_size}")
        _check(self.num_layers >= 1, "num_layers", f"must be >= 1, got {self.num_layers}")
        _check(vanilla or self.activation == Activation.tanh, "activation",
               f"{self.name.value} is tanh-only in torch; set model.activation=tanh")
        _check(self.init != Init.identity or vanilla, "init",
               f"identity (IRNN) applies to the vanilla cells only: {', '.join(VANILLA)}")
        _check(not self.chrono or cell.keep_gate is not None, "chrono",
               f"applies to gated cells (their keep gate's bias), not {self.name.value}")
        _check(self.chrono_t_max == 0 or self.chrono_t_max >= 3, "chrono_t_max",
               f"must be 0 (the task's sequence length) or >= 3, got {self.chrono_t_max}")
        _check(self.chrono_t_max == 0 or self.chrono, "chrono_t_max",
               "is read only with model.chrono=true")


@dataclass
class OptimConfig:
    name: OptimName = OptimName.adam
    lr: float = 1e-3
    momentum: float = 0.0  # sgd and rmsprop
    weight_decay: float = 0.0

    def validate(self) -> None:
        _check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        _check(self.momentum >= 0, "momentum", f"must be >= 0, got {self.momentum}")
        _check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")


@dataclass
class ClipConfig:
    mode: ClipMode = ClipMode.none
    threshold: float = 1.0

    def validate(self) -> None:
        _check(self.threshold > 0, "threshold", f"must be > 0, got {self.threshold}")


@dataclass
class TrainConfig:
    steps: int = 1000  # step budget
    batch_size: int = 32
    log_every: int = 10  # training metrics are averaged over this window and written in batches
    eval_every: int = 100
    eval_batch_size: int = 256
    # The threshold of the task's success criterion (tasks.Task.success: accuracy at least,
    # or loss / chance loss at most); None: the task's own, e.g. 0.99 accuracy, 0.06 for adding.
    solve_threshold: float | None = None
    profile_every: int = 0  # diagnostics cadence in steps; 0 = at every evaluation; -1 = never
    profile_batch_size: int = 32
    threads: int = 0  # torch threads per job; 0 = cores / concurrent jobs
    max_grad_norm: float = 1e6  # applied (post-clip) gradient norm above which a run diverged
    checkpoint_every: int = 1000  # steps between checkpoints; 0 = never
    checkpoint_dir: str = "${project_root:}/checkpoints"  # <dir>/<experiment>/<config_hash>.pt
    # At a SLURM time limit (submitit's SIGUSR2 before it): checkpoint, then submitit requeues
    # the job, which resumes into the same MLflow run; false: the run ends killed.
    checkpoint_requeue: bool = True
    # In a sweep, group jobs that differ only in seed, lr, clipping, activation, init, forget
    # bias or gap into batched jobs of at most batch_max members (harness/batching.py).
    batch_members: BatchMembers = BatchMembers.off
    batch_max: int = 8
    # Where the models train (data is generated on the CPU from the run's seeds, then moved:
    # a seed means the same data on every device). Not part of the config hash.
    device: Device = Device.auto

    def validate(self) -> None:
        for key in ("steps", "batch_size", "log_every", "eval_every", "eval_batch_size",
                    "profile_batch_size"):
            value = getattr(self, key)
            _check(value >= 1, key, f"must be >= 1, got {value}")
        _check(self.profile_every >= -1, "profile_every",
               f"must be >= -1 (-1 = never), got {self.profile_every}")
        _check(self.threads >= 0, "threads", f"must be >= 0, got {self.threads}")
        _check(self.max_grad_norm > 0, "max_grad_norm", f"must be > 0, got {self.max_grad_norm}")
        _check(self.batch_max >= 1, "batch_max", f"must be >= 1, got {self.batch_max}")
        _check(self.checkpoint_every >= 0, "checkpoint_every",
               f"must be >= 0 (0 = never), got {self.checkpoint_every}")
        _check(self.solve_threshold is None or 0 < self.solve_threshold <= 1, "solve_threshold",
               f"must be null (the task's own) or in (0, 1], got {self.solve_threshold}")


@dataclass
class TrackingConfig:
    # Absolute path, so every job of a sweep writes to one store whatever its working dir.
    uri: str = "sqlite:///${project_root:}/mlflow.db"

    def validate(self) -> None:
        _check("://" in self.uri, "uri",
               f"must be an MLflow tracking URI (sqlite:///..., http://...), got {self.uri!r}")
        _check(not self.uri.startswith("file:"), "uri",
               "the file store is deprecated; use sqlite:///path/mlflow.db or a server URL")


@dataclass
class ReportConfig:
    out_dir: str = "${project_root:}/reports"
    on_multirun_end: bool = True  # a sweep ends by writing its report


@dataclass
class FrontierConfig:
    """The frontier sweeper's settings (`harness-train -m hydra/sweeper=frontier ...`; the
    rule is in harness/frontier.py). A sweep setting, never a run's: it is not logged with
    the runs and not part of their config hash."""

    gap_min: int = 5  # lowest rung of the gap ladder
    gap_max: int = 640  # highest rung
    ratio: float = 2.0  # each rung is `ratio` times the one below (rounded to an integer)
    stride: int = 2  # rungs per step while bracketing upward; then bisect between
    m: int = 2  # a gap holds when at least m of n seeds solve it
    n: int = 3
    confirm: bool = True  # run all n seeds at the largest gap held and the first one failed
    lrs: list[float] | None = None  # learning rates tried at the lowest rung; best carried up

    def validate(self) -> None:
        _check(self.gap_min >= 1, "gap_min", f"must be >= 1, got {self.gap_min}")
        _check(self.gap_max >= self.gap_min, "gap_max",
               f"must be >= frontier.gap_min ({self.gap_min}), got {self.gap_max}")
        _check(self.ratio > 1, "ratio", f"must be > 1, got {self.ratio}")
        _check(self.stride >= 1, "stride", f"must be >= 1, got {self.stride}")
        _check(self.n >= 1, "n", f"must be >= 1, got {self.n}")
        _check(1 <= self.m <= self.n, "m",
               f"must be in [1, frontier.n={self.n}] (m of n seeds), got {self.m}")
        if self.lrs is not None:
            _check(len(self.lrs) > 0, "lrs", "must list at least one learning rate, or be null")
            for lr in self.lrs:
                _check(lr > 0, "lrs", f"each learning rate must be > 0, got {lr}")


@dataclass
class Config:
    task: Any = MISSING
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    frontier: FrontierConfig = field(default_factory=FrontierConfig)
    experiment_name: str = "default"
    seed: int = 0
    # These seeds trained in one job as one batched model, each logged as its own run with
    # `seed` = that seed (replaces `seed`); None: one run, `seed`.
    batched_seeds: list[int] | None = None
    force: bool = False  # rerun even if this config already finished in this experiment
    # Set by the sweeper (train.batch_members=auto): this job trains the members listed in
    # this file (harness/batching.py), each as its own run.
    batch_file: str | None = None


# The `task` group's schemas are not listed: `register` takes one per task in tasks.TASKS.
GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "model": {"model": ModelConfig},
    "optim": {"optim": OptimConfig},
    "clip": {"clip": ClipConfig},
    "tracking": {"tracking": TrackingConfig},
}


def register() -> None:
    """Register the schemas in Hydra's ConfigStore and the `${project_root:}` resolver."""
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))
    store = ConfigStore.instance()
    store.store(name="base_config", node=Config)
    # conf/config.yaml's `harness_sweeper: default`: the project's sweeper, as an override
    # in a group listed after `experiment`, so that a preset's own sweeper override wins.
    store.store(group="harness_sweeper", name="default", package="_global_",
                node={"defaults": [{"override /hydra/sweeper": "harness"}]})
    for group, schemas in GROUP_SCHEMAS.items():
        for name, node in schemas.items():
            store.store(group=group, name=f"base_{name}", node=node)
    # Every task registered when this runs (a task module imported later needs another call).
    # Each config is stored as an instance: its `name` is set by the config, not a default.
    for name, task in tasks.TASKS.items():
        store.store(group="task", name=f"base_{name}", node=task.config_class())


def validate(cfg: DictConfig) -> Config:
    """Turn the composed config into typed dataclasses and check every range.

    Raises ConfigError with the full key (`task.gap: must be >= 1, got 0`).
    """
    _check(0 <= cfg.seed < EVAL_SEED_OFFSET, "seed",
           f"must be in [0, {EVAL_SEED_OFFSET}), got {cfg.seed}")
    _check(bool(cfg.experiment_name), "experiment_name", "must not be empty")
    seeds = cfg.get("batched_seeds")
    if seeds is not None:
        _check(len(seeds) > 0, "batched_seeds", "must list at least one seed, or be null")
        _check(len(set(seeds)) == len(seeds), "batched_seeds",
               f"must not repeat a seed, got {list(seeds)}")
        for seed in seeds:
            _check(0 <= seed < EVAL_SEED_OFFSET, "batched_seeds",
                   f"each seed must be in [0, {EVAL_SEED_OFFSET}), got {seed}")
    check_known_keys(cfg)
    spec: Config = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    try:
        spec.task.check()
    except ParameterError as err:
        raise ConfigError(f"task.{err.key}: {err.message}") from None
    for group in ("model", "optim", "clip", "train", "tracking"):
        try:
            getattr(spec, group).validate()
        except ConfigError as err:
            raise ConfigError(f"{group}.{err}") from None
    return spec


def check_known_keys(cfg: DictConfig, prefix: str = "") -> None:
    """Refuse a key no schema declares (a `+trian.steps=50` on the command line, which Hydra
    adds without complaint): ConfigError naming it and listing the valid keys of its group.

    Walks every node whose type is a schema dataclass; `hydra` (not part of a job's config)
    is never checked.
    """
    schema = OmegaConf.get_type(cfg)
    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        return
    declared = [f.name for f in dataclasses.fields(schema)]
    for key in cfg.keys():
        key = str(key)
        if not prefix and key == "hydra":
            continue
        if key not in declared:
            group = prefix.rstrip(".") or "the top level"
            raise ConfigError(f"{prefix}{key}: no such key in {group}; valid keys: "
                              f"{', '.join(declared)}")
        node = cfg._get_node(key)
        if isinstance(node, DictConfig) and not node._is_missing() and not node._is_none():
            check_known_keys(node, f"{prefix}{key}.")


def composition_error(err: BaseException) -> str:
    """One line for a Hydra composition error: `frontier.foo: no such key in frontier; valid
    keys: gap_min, ...`, `model.activation: Invalid value 'sigmoid', expected one of [...]`,
    `model=transformer: no such option; available options in 'model': gru, lstm, ...`, or
    Hydra's own text on one line."""
    if isinstance(err, MissingConfigException) and err.missing_cfg_file and err.options:
        group, _, option = err.missing_cfg_file.rpartition("/")
        options = [o for o in err.options if not o.startswith("base_")]  # schemas, not options
        return (f"{group}={option}: no such option; available options in '{group}': "
                f"{', '.join(options)}")
    cause: BaseException | None = err
    while cause is not None:
        key = getattr(cause, "full_key", None)
        if isinstance(cause, OmegaConfBaseException) and key:
            schema = getattr(cause, "object_type", None)
            if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and \
                    dataclasses.is_dataclass(schema):
                group = key.rpartition(".")[0] or "the top level"
                valid = ", ".join(f.name for f in dataclasses.fields(schema))
                return f"{key}: no such key in {group}; valid keys: {valid}"
            return f"{key}: {str(getattr(cause, 'msg', cause)).strip().splitlines()[0]}"
        cause = cause.__cause__
    return "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
