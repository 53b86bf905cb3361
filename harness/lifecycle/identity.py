"""A job's identity: its validated config, MLflow params, run name and config hash, and the
options it was composed from (`hydra.runtime.choices`); the members of a batched job."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from harness import names
from harness.batching import read_batch
from harness.resources import check_resources
from harness.schema import Config, ConfigError, validate
from harness.tracking.liveness import run_lock_path
from harness.tracking.run import config_hash, flatten
from harness.tracking.sweep import read_name_axes

# Config keys of the sweep or the job, not of its run (popped before params and hash).
SWEEP_KEYS = ("frontier", "batch_file", "train.batch_members", "train.batch_max")


@dataclass
class Job:
    """One run's identity: its validated config, MLflow params, name and config hash."""

    spec: Config
    resolved: Any  # the config as plain containers (the config artifact)
    params: dict[str, str]
    name: str
    hash_: str
    seq_len: int  # its task's sequence length
    cfg: DictConfig  # the composed config it was validated from
    choices: dict[str, str]  # the options it was composed from (`choices_of`)

    @property
    def lock(self) -> Path:
        return run_lock_path(self.spec.train.checkpoint_dir, self.spec.experiment_name,
                             self.hash_)

    @property
    def checkpoint(self) -> Path:
        return Path(self.spec.train.checkpoint_dir) / self.spec.experiment_name / \
            f"{self.hash_}.pt"

    @property
    def closing(self) -> Path:
        """Where an outage saves its run's closing (harness/lifecycle/runs.py, `Closing`)."""
        return self.checkpoint.with_suffix(".closing.pt")


def job_of(cfg: DictConfig, choices: dict[str, str] | None = None,
           axes: Sequence[str] | None = None) -> Job:
    """Validate `cfg` (ConfigError before any run exists: ranges, unknown keys, chrono on a
    too-short sequence, a step too big for this machine's memory) and name its run.

    `choices`: the options it was composed from (`choices_of`), logged as params beside the
    flattened config (`model=irnn` beside `model.name=rnn`), outside the config hash.
    `axes`: the keys that vary within its sweep, which its name shows (None: those its
    sweeper left in the sweep folder, `sweep_axes`)."""
    spec = validate(cfg)
    task = spec.task.build()  # validate() ran the task's own checks
    check_resources(spec, task.seq_len, task.input_size, task.output_size)
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    # how the sweep searches and batches, not what the run computes: not logged, not hashed
    for key in SWEEP_KEYS:
        group, _, name = key.rpartition(".")
        (resolved[group] if group else resolved).pop(name, None)  # type: ignore[index,union-attr]
    params = {**flatten(resolved), **(choices or {})}  # type: ignore[arg-type]
    name = run_name(spec, params, sweep_axes() if axes is None else axes)
    return Job(spec, resolved, params, name, config_hash(params), task.seq_len, cfg,
               dict(choices or {}))


def run_name(spec: Config, params: dict[str, str], axes: Sequence[str] = ()) -> str:
    """`adding_mean-lstm-tanh-noclip-gap100-s0`: the task option's name, as in the report;
    with the values of `axes` (the keys that vary within its sweep) that the name does not
    show otherwise (`names.NAMED_KEYS`): `...-noclip-lr3e-3-gap100-s0`."""
    model = spec.model
    task = params.get(names.TASK_LABEL) or names.task_label(spec.task.name.value, params)
    shown = {key: params[key] for key in axes if key in params and key not in names.NAMED_KEYS}
    return names.run_name(task, model.name, model.activation.value,
                          spec.clip.mode.value, spec.clip.threshold, spec.task.gap, spec.seed,
                          init=model.init.value, chrono=model.chrono,
                          num_layers=model.num_layers, bidirectional=model.bidirectional,
                          gap_min=spec.task.gap_min, axes=shown)


def varying_keys(jobs: Iterable[Job]) -> list[str]:
    """A sweep's axes as its run names show them, sorted: within `jobs` of one task option and
    cell, the params a name needs besides what it shows anyway (`names.NAMED_KEYS`: cell,
    activation, init, clipping, gap, seed, ...) to tell their configurations apart. A key
    joins when two of them agree on every key taken so far and differ in it (a key some lack
    counts), the optimizer first, then the learning rate, the hidden size, then the rest by
    name: an lr sweep shows `lr3e-3`, while an IRNN with SGD beside a tanh RNN with Adam needs
    neither (activation and init tell them apart). Across task options or cells the keys of
    their own settings differ too, but the name's task and cell tell those runs apart already.
    Where and how fast a run executes (`names.NON_SEMANTIC_PREFIXES`) is not an axis. The
    named keys that vary are listed too (the name shows them in its own way)."""
    groups: dict[tuple[str | None, str | None], list[Job]] = {}
    for job in jobs:
        key = (job.params.get(names.TASK_LABEL, job.params.get(names.TASK)),
               job.params.get(names.MODEL))
        groups.setdefault(key, []).append(job)
    first = (names.OPTIM_CHOICE, names.OPTIMIZER, names.LR, names.HIDDEN_SIZE)
    found: set[str] = set()
    for members in groups.values():
        shown = sorted(names.NAMED_KEYS - {names.SEED})
        keys = {key for job in members for key in job.params}
        found.update(key for key in keys & names.NAMED_KEYS  # shown by the name anyway
                     if len({job.params.get(key) for job in members}) > 1)
        candidates = keys - names.NAMED_KEYS
        order = [*(key for key in first if key in candidates),
                 *sorted(candidates - set(first))]
        for key in order:
            if key.startswith(names.NON_SEMANTIC_PREFIXES):
                continue
            values: dict[tuple[object, ...], set[object]] = {}
            for job in members:
                values.setdefault(tuple(job.params.get(k) for k in shown),
                                  set()).add(job.params.get(key))
            if any(len(seen) > 1 for seen in values.values()):
                shown.append(key)
                found.add(key)
    return sorted(found)


def sweep_axes() -> list[str]:
    """In a sweep's job, the keys its sweeper found varying (the sweep folder's file,
    `harness.tracking.sweep.write_name_axes`); [] outside a sweep."""
    if not in_sweep():
        return []
    return read_name_axes(Path(HydraConfig.get().sweep.dir))


def choices_of(hydra_cfg: Any) -> dict[str, str]:
    """The options a job's config was composed from (`hydra.runtime.choices`) for the groups
    that define a run (`names.CHOICE_PARAMS`: `task=adding_mean`, `model=irnn`, ...); {} outside
    Hydra. `hydra_cfg` is the `hydra` node of a job's config, or HydraConfig.get()."""
    if hydra_cfg is None:
        return {}
    found = OmegaConf.select(hydra_cfg, "runtime.choices", default=None) or {}
    return {group: str(found[group]) for group in names.CHOICE_PARAMS
            if found.get(group) is not None}


def in_sweep() -> bool:
    """Whether this job is one of a multirun's (Hydra's job context says so)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def hydra_choices() -> dict[str, str]:
    """This job's choices (`choices_of`), inside a Hydra run or job; {} outside Hydra."""
    return choices_of(HydraConfig.get()) if HydraConfig.initialized() else {}


def member_jobs(cfg: DictConfig, choices: dict[str, str] | None = None,
                axes: Sequence[str] | None = None) -> list[Job]:
    """One job per seed of `batched_seeds`: the config of the separate run with that seed
    (`seed` set, `batched_seeds` null), so its params and config hash are that run's (`axes`:
    as `job_of` takes them)."""
    spec = validate(cfg)
    if not spec.batched_seeds:
        raise ConfigError("batched_seeds: null; list the seeds to batch, e.g. [0,1,2,3]")
    from harness.batched import unbatchable  # it imports torch: only for a valid config

    model = spec.model
    reason = unbatchable(model.name, model.activation.value, model.bidirectional)
    if reason is not None:
        raise ConfigError(f"batched_seeds: {reason}; train these seeds as separate jobs "
                          "(seed=...)")
    jobs = []
    for seed in spec.batched_seeds:
        member = cfg.copy()
        member.seed, member.batched_seeds = seed, None
        jobs.append(job_of(member, choices, axes))
    return jobs


@dataclass(frozen=True)
class MemberOutcome:
    """What a batched job returns per member (harness.sweeping.expand): its run's identity
    and its objective."""

    name: str
    hash_: str
    loss: float


def batch_file_jobs(cfg: DictConfig) -> list[Job]:
    """The members of a batched job (`batch_file`, harness/batching.py): each composed from
    its own overrides, as its separate job would be."""
    from hydra import compose

    jobs = []
    config_name = HydraConfig.get().job.config_name if HydraConfig.initialized() else "config"
    for overrides in read_batch(cfg.batch_file):
        member = compose(config_name=config_name, overrides=overrides,
                         return_hydra_config=True)
        choices = choices_of(member.hydra)
        with open_dict(member):
            del member["hydra"]
        jobs.append(job_of(member, choices))
    return jobs
