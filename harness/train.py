"""Hydra entry point: one job = one task × model × clipping × seed, logged as one MLflow run.

    harness-train task=copy task.gap=100 model=lstm clip=norm clip.threshold=1.0 seed=0
    harness-train -m experiment=demo
    harness-train -m model=rnn,gru batched_seeds=[0,1,2,3]   # 4 seeds per job, 4 runs each

`train(cfg)` is the plain function behind the `@hydra.main` wrapper; tests call it directly.
What a job is lives in harness/lifecycle/identity.py, what happens to its runs in
harness/lifecycle/runs.py; this module only dispatches a job and turns its errors into exit
codes and the sweep folder's job files.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import (
    ConfigCompositionException,
    OverrideParseException,
)
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from harness.lifecycle.identity import hydra_choices, in_sweep, job_of
from harness.lifecycle.progress import did_not_finish, ran
from harness.lifecycle.signals import StopRequest
from harness.resources import placement_of
from harness.schema import PROJECT_ROOT, ConfigError, composition_error, register
from harness.tracking import liveness
from harness.tracking.links import ui_lines
from harness.tracking.run import RunStopped
from harness.tracking.store import StoreError, TrackingUnreachable, disk_full, unreachable
from harness.tracking.sweep import (
    FAILED_JOBS_FILE,
    FULL_DISK_JOBS_FILE,
    INVALID_JOBS_FILE,
    KILLED_JOBS_FILE,
    UNREACHABLE_JOBS_FILE,
    record_job,
)

if TYPE_CHECKING:
    from harness.lifecycle.identity import MemberOutcome
    from harness.loop import RunResult

# Nothing imported above loads torch or MLflow (3 s together): a config is composed and
# validated (schemas, `+key` typos, the memory check) without them, so bad input is refused
# in well under a second; they load once a job is valid (`train`).

log = logging.getLogger(__name__)
register()

# `harness-train`'s exit status for a run that ended because the tracking server did not
# answer within tracking.wait_s: EX_TEMPFAIL, a transient failure that the same command, run
# again later, resumes.
EXIT_UNREACHABLE = 75


def train(cfg: DictConfig) -> RunResult:
    """Validate the config, build task and model, train, and log everything to MLflow.

    While it runs, the job holds its config's lock (`<checkpoint_dir>/<experiment>/<hash>.lock`,
    harness/tracking/liveness.py): a config another live process is running is skipped, and
    RUNNING runs of this config that no process holds are marked killed.
    """
    job = job_of(cfg, hydra_choices())
    from harness.lifecycle.runs import preflight, run_config, running_elsewhere

    place = placement_of(job.spec)
    preflight(job.spec)
    try:
        with liveness.hold(job.lock), \
                StopRequest(job.spec.train.checkpoint_requeue).installed() as stop:
            result = run_config(job, place, stop)
    except liveness.Busy:
        result = running_elsewhere(job)
    ran(job.name, result)
    return result


def train_batched(cfg: DictConfig) -> list[RunResult]:
    """`batched_seeds=[0,1,2,3]`: these seeds trained as one batched model, each logged as its
    own run (harness/lifecycle/runs.py, imported once the job is known to need it)."""
    from harness.lifecycle.runs import train_batched as batched

    return batched(cfg)


def train_batch_file(cfg: DictConfig) -> list[MemberOutcome]:
    """A sweep's batched job (`train.batch_members=auto`, harness/lifecycle/runs.py)."""
    from harness.lifecycle.runs import train_batch_file as batch_file

    return batch_file(cfg)


@hydra.main(version_base="1.3", config_path=str(PROJECT_ROOT / "conf"), config_name="config")
def main(cfg: DictConfig) -> float:
    """Console script `harness-train`; returns the final eval loss (the objective an Optuna
    sweep minimizes; with `batched_seeds`, the members' mean; NaN when the job created no
    result).

    In a multirun a job that does not finish does not stop the others: it is logged, listed in
    its kind's file in the sweep folder (`record_job`: failed, invalid, killed, stopped by a
    full disk or an unreachable tracking server), which the sweep's summary and exit status
    report, and returns NaN. A single run exits non-zero: 2, with one line, for an invalid
    config or an unusable store; 143 (128 + SIGTERM) when a stop signal ended it; 75
    (EX_TEMPFAIL) when the tracking server stayed unreachable; 1 on a full disk.
    """
    try:
        if cfg.get("batch_file"):
            return train_batch_file(cfg)  # type: ignore[return-value]  # a batched job's
        results = train_batched(cfg) if cfg.get("batched_seeds") else [train(cfg)]
    except Exception as err:
        if not in_sweep():
            exit_with(err, cfg)
        record_unfinished(err, cfg)
        return math.nan
    if not in_sweep():
        from harness.tracking.store import existing_experiment

        print("\n".join(ui_lines(cfg.tracking.uri,
                                 existing_experiment(cfg.tracking.uri, cfg.experiment_name))))
    losses = [r.final_eval_loss for r in results if not math.isnan(r.final_eval_loss)]
    return sum(losses) / len(losses) if losses else math.nan


def unfinished(err: Exception, cfg: DictConfig) -> tuple[str, str]:
    """What kind of unfinished job `err` makes (its sweep folder file) and its one line."""
    if isinstance(err, RunStopped):
        return KILLED_JOBS_FILE, f"{err}"
    if isinstance(err, (ConfigError, StoreError)):
        return INVALID_JOBS_FILE, f"{err}"
    if isinstance(err, TrackingUnreachable):
        return UNREACHABLE_JOBS_FILE, f"{err}"
    down = unreachable(cfg.tracking.uri)  # a call that did not wait, during an outage
    if down is not None:
        return UNREACHABLE_JOBS_FILE, (f"tracking server {cfg.tracking.uri} unreachable "
                                       f"({down}): {type(err).__name__}")
    full = disk_full(err, cfg.tracking.uri, cfg.train.checkpoint_dir)
    if full is not None:
        return FULL_DISK_JOBS_FILE, (f"disk full: {full}: {type(err).__name__}: "
                                     f"{' '.join(str(err).split())[:200]}")
    return FAILED_JOBS_FILE, f"{type(err).__name__}: {err}"


def record_unfinished(err: Exception, cfg: DictConfig) -> None:
    """A job of a sweep that did not finish: its log line (a traceback only for a failure,
    a bug or out of memory) and its line in its kind's file in the sweep folder."""
    kind, message = unfinished(err, cfg)
    if kind == FAILED_JOBS_FILE:
        log.error("job failed: %s", message, exc_info=True)
    elif kind == INVALID_JOBS_FILE:
        log.error("job invalid: %s", message)
    elif kind == KILLED_JOBS_FILE:
        log.warning("job killed: %s; the same command resumes it", message)
    elif kind == FULL_DISK_JOBS_FILE:
        log.error("job stopped, %s; free space, then the same command resumes it", message)
    else:
        log.error("job stopped, %s; once it is back, the same command resumes it", message)
    record_job(Path(HydraConfig.get().sweep.dir), err, kind,
               message if kind in (FULL_DISK_JOBS_FILE, UNREACHABLE_JOBS_FILE) else None)
    did_not_finish(cfg, message)


def exit_with(err: Exception, cfg: DictConfig) -> None:
    """A single run that did not finish: one line on stderr and its exit status (a failure,
    a bug or out of memory, is raised with its traceback)."""
    kind, message = unfinished(err, cfg)
    if kind == KILLED_JOBS_FILE:
        print(f"harness-train: {message}; the same command resumes the run", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)
    if isinstance(err, ConfigError):
        print(f"harness-train: invalid config: {message}", file=sys.stderr)
        sys.exit(2)
    if kind == INVALID_JOBS_FILE:
        print(f"harness-train: {message}", file=sys.stderr)
        sys.exit(2)
    if kind == UNREACHABLE_JOBS_FILE:
        print(f"harness-train: {message}; once it is back, the same command resumes the run",
              file=sys.stderr)
        sys.exit(EXIT_UNREACHABLE)
    if kind == FULL_DISK_JOBS_FILE:
        print(f"harness-train: {message}; free space there, then the same command resumes "
              "the run", file=sys.stderr)
        sys.exit(1)
    raise err


HELP_FLAGS = {"--help", "-h", "--hydra-help"}


def list_groups_once() -> None:
    """Hydra's `--help` lists the config groups with one deep copy of the whole config
    repository (files and the structured schemas) per group and kind: about 210 copies, 3 s
    of a 3.5 s answer on the 2-core machine. Within one process the copies are identical, so
    each (config, overrides) pair is made once; the help text is byte for byte the same
    (tests/test_fail_fast.py)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    make = ConfigLoaderImpl._parse_overrides_and_create_caching_repo
    made: dict[tuple[int, str | None, tuple[str, ...]], Any] = {}

    def once(self: ConfigLoaderImpl, config_name: str | None, overrides: list[str]) -> Any:
        key = (id(self), config_name, tuple(overrides))
        if key not in made:
            made[key] = make(self, config_name, overrides)
        return made[key]

    ConfigLoaderImpl._parse_overrides_and_create_caching_repo = once  # type: ignore[method-assign]


def cli() -> None:
    """Console script `harness-train`: Hydra's main, with a config that does not compose (an
    unknown key such as `frontier.foo=1`, a value not among an enum's choices, a missing
    option) refused in one line naming the key, exit 2, before any run exists. Hydra prints
    such errors over several lines and exits 1; with HYDRA_FULL_ERROR they reach us as
    exceptions instead. A user who set HYDRA_FULL_ERROR gets Hydra's full trace."""
    if HELP_FLAGS.intersection(sys.argv[1:]):
        list_groups_once()
    if "HYDRA_FULL_ERROR" in os.environ:
        main()
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except (ConfigCompositionException, OverrideParseException, OmegaConfBaseException) as err:
        print(f"harness-train: invalid config: {composition_error(err)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()
