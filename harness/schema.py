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
from harness.cells import CELLS
from tasks import ParameterError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EVAL_SEED_OFFSET = 1_000_000_000  # eval stream seed = seed + offset: disjoint from train seeds


class ConfigError(ValueError):
    """A config value is out of range; the message starts with the field's full key."""


class Activation(StrEnum):
    # tanh and relu run torch's fused nn.RNN; the others the unrolled pass (harness/models.py)
    tanh = "tanh"
    relu = "relu"
    leaky_relu = "leaky_relu"
    hard_tanh = "hard_tanh"
    modrelu = "modrelu"  # sign(z) relu(|z| + b), learned b (uRNN, expRNN)
    identity = "identity"  # none: the linear recurrences (LRU) and the minimal cells' candidate


class Init(StrEnum):
    """The recurrent matrix W_hh's initialization, each gate block alike (harness/models.py)."""

    default = "default"  # PyTorch's U(-1/sqrt(H), 1/sqrt(H)); a non-matrix cell's own init
    orthogonal = "orthogonal"  # orthogonal recurrent matrices
    identity = "identity"  # IRNN (Le et al. 2015): W_hh = I, zero biases
    glorot_uniform = "glorot_uniform"  # U(±sqrt(6 / (fan_in + fan_out))) (Glorot & Bengio 2010)
    normal = "normal"  # N(0, model.init_std²)
    # k = model.init_nonzero entries per row from N(0, 1), the rest 0, then scaled to spectral
    # radius model.init_radius (Pascanu et al. 2013's "smart tanh"; Sutskever et al. 2013)
    sparse = "sparse"


class InputInit(StrEnum):
    """W_ih's (`model.init_input`) or the readout's (`model.init_readout`) initialization."""

    default = "default"  # PyTorch's (nn.RNN/LSTM/GRU's, nn.Linear's); a cell's own
    glorot_uniform = "glorot_uniform"
    normal = "normal"  # N(0, std²): model.init_input_std, model.init_readout_std


class Peephole(StrEnum):
    """model=lstm_peephole's connections from the cell state to the gates."""

    diagonal = "diagonal"  # Lasagne's LSTMLayer: i and f read c_{t-1}, o reads c_t, per unit
    output = "output"  # the uRNN authors' LSTM: o reads c_t through a full H x H matrix


class OptimName(StrEnum):
    adam = "adam"
    sgd = "sgd"
    rmsprop = "rmsprop"


class ClipMode(StrEnum):
    none = "none"
    norm = "norm"  # rescale the global L2 norm to the threshold (Pascanu et al. 2013)
    value = "value"  # clamp every gradient element to +-threshold
    # clamp to +-threshold the gradient reaching each time step's gate pre-activations, during
    # backprop through time (Lasagne's `grad_clipping`); the parameter gradients are not clipped
    backprop = "backprop"


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
    name: str = "lstm"  # the cell: one of harness/cells.CELLS
    # Only the vanilla RNNs have a choice; torch's LSTM and GRU are tanh by definition.
    activation: Activation = Activation.tanh
    hidden_size: int = 64
    num_layers: int = 1
    bidirectional: bool = False  # every layer reads both directions of the layer below
    init: Init = Init.default  # W_hh
    init_std: float = 0.1  # init=normal: W_hh ~ N(0, init_std²)
    init_nonzero: int = 15  # init=sparse: non-zeros per row of each W_hh block
    init_radius: float = 0.95  # init=sparse: each W_hh block scaled to this spectral radius
    init_input: InputInit = InputInit.default  # W_ih
    init_input_std: float = 0.1  # init_input=normal: W_ih ~ N(0, init_input_std²)
    init_readout: InputInit = InputInit.default  # the readout's weight
    init_readout_std: float = 0.1  # init_readout=normal
    zero_bias: bool = False  # every bias starts at 0 (then forget_bias sets the forget gate's)
    learn_init_state: bool = False  # h0 (and c0) learned, initialized at 0 (a cell's own init)
    # Chrono init of the keep-gate biases (LSTM forget, GRU update; Tallec & Ollivier 2018)
    # for dependencies up to chrono_t_max steps; 0 = the task's sequence length.
    chrono: bool = False
    chrono_t_max: int = 0
    # Cell-specific keys (harness/cells.Cell.options): null takes the cell's default; a
    # value on a cell that does not read the key is refused.
    forget_bias: float | None = None  # LSTMs: the forget gate's initial bias (b_ih + b_hh)
    peephole: Peephole | None = None  # lstm_peephole: which peepholes
    r_min: float | None = None  # lru: the eigenvalues' moduli start uniform on a ring
    r_max: float | None = None  # between r_min and r_max (Orvieto et al. 2023)

    def validate(self) -> None:
        _check(self.name in CELLS, "name",
               f"unknown cell {self.name!r}; choose one of {', '.join(CELLS)}")
        cell = CELLS[self.name]
        _check(self.hidden_size >= 1, "hidden_size", f"must be >= 1, got {self.hidden_size}")
        _check(self.num_layers >= 1, "num_layers", f"must be >= 1, got {self.num_layers}")
        _check(self.activation.value in cell.activations, "activation",
               f"{self.name} takes {' | '.join(cell.activations)}, got {self.activation.value}")
        _check(self.init == Init.default or cell.matrix_init, "init",
               f"{self.name} has no plain recurrent matrix to initialize; it keeps its own init "
               "(model.init=default)")
        _check(self.init != Init.identity or cell.vanilla, "init",
               "identity (IRNN) applies to the vanilla cells only: "
               f"{', '.join(n for n, c in CELLS.items() if c.vanilla)}")
        for key in ("init_std", "init_input_std", "init_readout_std", "init_radius"):
            value = getattr(self, key)
            _check(value > 0, key, f"must be > 0, got {value}")
        _check(self.init != Init.sparse or 1 <= self.init_nonzero <= self.hidden_size,
               "init_nonzero",
               f"must be in [1, model.hidden_size={self.hidden_size}], got {self.init_nonzero}")
        _check(not self.chrono or cell.keep_gate is not None, "chrono",
               f"applies to gated cells (their keep gate's bias), not {self.name}")
        _check(self.chrono_t_max == 0 or self.chrono_t_max >= 3, "chrono_t_max",
               f"must be 0 (the task's sequence length) or >= 3, got {self.chrono_t_max}")
        _check(self.chrono_t_max == 0 or self.chrono, "chrono_t_max",
               "is read only with model.chrono=true")
        for key in CELL_OPTIONS:
            readers = [n for n, c in CELLS.items() if key in c.options]
            _check(getattr(self, key) is None or key in cell.options, key,
                   f"is not read by {self.name} (only by {', '.join(readers) or 'no cell'}); "
                   "leave it null")
        refused = cell.check(self.cell_options()) if cell.check is not None else None
        if refused is not None:
            _check(False, *refused)

    def cell_options(self) -> dict[str, Any]:
        """The cell's own options, resolved (the config's value or the cell's default)."""
        return CELLS[self.name].resolved({key: getattr(self, key) for key in CELL_OPTIONS})


# The ModelConfig keys that only some cells read (harness/cells.Cell.options).
CELL_OPTIONS = ("forget_bias", "peephole", "r_min", "r_max")


@dataclass
class OptimConfig:
    name: OptimName = OptimName.adam
    lr: float = 1e-3
    momentum: float = 0.0  # sgd and rmsprop
    weight_decay: float = 0.0
    alpha: float = 0.99  # rmsprop: the squared-gradient average's decay (torch's default)
    eps: float = 1e-8  # adam and rmsprop: added to the denominator (torch's default)
    initial_accumulator: float = 0.0  # rmsprop: the squared-gradient average's start value
    # The lr times lr_decay_factor every lr_decay_every steps (a step decay; 0: constant lr).
    lr_decay_every: int = 0
    lr_decay_factor: float = 0.1

    def validate(self) -> None:
        _check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        _check(self.momentum >= 0, "momentum", f"must be >= 0, got {self.momentum}")
        _check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(0 <= self.alpha < 1, "alpha", f"must be in [0, 1), got {self.alpha}")
        _check(self.eps >= 0, "eps", f"must be >= 0, got {self.eps}")
        _check(self.initial_accumulator >= 0, "initial_accumulator",
               f"must be >= 0, got {self.initial_accumulator}")
        _check(self.eps > 0 or self.initial_accumulator > 0 or self.name != OptimName.rmsprop,
               "eps", "rmsprop with eps 0 divides by zero unless optim.initial_accumulator > 0")
        _check(self.lr_decay_every >= 0, "lr_decay_every",
               f"must be >= 0 (0 = constant lr), got {self.lr_decay_every}")
        _check(self.lr_decay_factor > 0, "lr_decay_factor",
               f"must be > 0, got {self.lr_decay_factor}")


@dataclass
class ClipConfig:
    mode: ClipMode = ClipMode.none
    threshold: float = 1.0
    # Pascanu et al. 2013's guard: a step whose gradient norm is NaN, inf or above 1e10
    # replaces W_hh's gradient by 0.02 W_hh and every other gradient by 0.
    nan_guard: bool = False

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
    # In a sweep on the CPU, group jobs of one sequence length that differ only in seed, lr,
    # clipping, activation, init or forget bias into batched jobs of at most batch_max
    # members: bit for bit what each would compute alone (harness/batching.py).
    batch_members: BatchMembers = BatchMembers.auto
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
    # How long a job waits for an unreachable tracking server before it ends as "tracking
    # server unreachable" (a transient fault: the same command resumes it once it is back).
    wait_s: float = 300.0

    def validate(self) -> None:
        _check("://" in self.uri, "uri",
               f"must be an MLflow tracking URI (sqlite:///..., http://...), got {self.uri!r}")
        _check(not self.uri.startswith("file:"), "uri",
               "the file store is deprecated; use sqlite:///path/mlflow.db or a server URL")
        _check(self.wait_s >= 0, "wait_s", f"must be >= 0, got {self.wait_s}")


@dataclass
class ReportConfig:
    out_dir: str = "${project_root:}/reports"
    on_multirun_end: bool = True  # a sweep ends by writing its report


@dataclass
class FrontierConfig:
    """The frontier sweeper's settings (`harness-train -m hydra/sweeper=frontier ...`; the
    rule is in harness/frontier.py). A sweep setting, never a run's: it is not logged with
    the runs and not part of their config hash (`continue_to`, which the sweeper sets on a
    job, extends a run's budget without changing what the run is)."""

    gap_min: int = 5  # lowest rung of the gap ladder
    gap_max: int = 640  # highest rung
    ratio: float = 2.0  # each rung is `ratio` times the one below (rounded to an integer)
    stride: int = 2  # rungs per step while bracketing upward; then bisect between
    m: int = 2  # a gap holds when at least m of n seeds solve it
    n: int = 3
    confirm: bool = True  # run all n seeds at the largest gap held and the first one failed
    lrs: list[float] | None = None  # learning rates tried at the lowest rung; best carried up
    # A level whose verdict hinges on runs still improving at train.steps continues them, from
    # their checkpoints, in their own runs, up to this many steps; censored only there.
    # None: 2 x train.steps; 0: never (the level is reported censored at train.steps).
    max_steps: int | None = None
    # Set by the sweeper on a continuation's job: continue the config's finished run, still
    # improving at its budget, to this many steps (0: a plain job). Usable by hand too.
    continue_to: int = 0
    # With lrs: every rate at every probed level (trained as members of one stacked model),
    # a level held when it holds at some rate; false: the rate chosen at the lowest rung.
    lr_every_level: bool = False
    # fixed: each probe trains on one gap, the level; variable: on gaps drawn from the task's
    # smallest up to the level (task.gap_min), judged on its longest tenth of them.
    gaps: str = "fixed"

    def validate(self) -> None:
        _check(self.gap_min >= 1, "gap_min", f"must be >= 1, got {self.gap_min}")
        _check(self.gap_max >= self.gap_min, "gap_max",
               f"must be >= frontier.gap_min ({self.gap_min}), got {self.gap_max}")
        _check(self.ratio > 1, "ratio", f"must be > 1, got {self.ratio}")
        _check(self.stride >= 1, "stride", f"must be >= 1, got {self.stride}")
        _check(self.n >= 1, "n", f"must be >= 1, got {self.n}")
        _check(1 <= self.m <= self.n, "m",
               f"must be in [1, frontier.n={self.n}] (m of n seeds), got {self.m}")
        _check(self.max_steps is None or self.max_steps >= 0, "max_steps",
               f"must be null (2 x train.steps), 0 (never continue) or > 0, got {self.max_steps}")
        _check(self.continue_to >= 0, "continue_to", f"must be >= 0, got {self.continue_to}")
        _check(self.gaps in ("fixed", "variable"), "gaps",
               f"must be fixed or variable, got {self.gaps!r}")
        _check(not self.lr_every_level or (self.lrs is not None and len(self.lrs) > 1),
               "lr_every_level", f"needs frontier.lrs to list at least 2 learning rates, got "
               f"{self.lrs}")
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
    cell = CELLS[spec.model.name]
    _check(not spec.clip.nan_guard or (cell.matrix_init and not cell.orthogonal),
           "clip.nan_guard", f"shrinks a plain recurrent matrix W_hh, which {cell.name} does "
           "not have")
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
