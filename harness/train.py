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

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import (
    ConfigCompositionException,
    OverrideParseException,
)
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from harness.lifecycle.identity import hydra_choices, job_of
from harness.lifecycle.runs import run_config, running_elsewhere, train_batch_file, train_batched
from harness.lifecycle.signals import StopRequest
from harness.loop import RunResult
from harness.resources import placement_of
from harness.schema import PROJECT_ROOT, ConfigError, composition_error, register
from harness.tracking import liveness
from harness.tracking.run import RunStopped
from harness.tracking.store import StoreError, disk_full, ensure_store
from harness.tracking.sweep import (
    FAILED_JOBS_FILE,
    FULL_DISK_JOBS_FILE,
    INVALID_JOBS_FILE,
    KILLED_JOBS_FILE,
    record_job,
)

log = logging.getLogger(__name__)
register()


def train(cfg: DictConfig) -> RunResult:
    """Validate the config, build task and model, train, and log everything to MLflow.

    While it runs, the job holds its config's lock (`<checkpoint_dir>/<experiment>/<hash>.lock`,
    harness/tracking/liveness.py): a config another live process is running is skipped, and
    RUNNING runs of this config that no process holds are marked killed.
    """
    job = job_of(cfg, hydra_choices())
    place = placement_of(job.spec)
    ensure_store(job.spec.tracking.uri)
    try:
        with liveness.hold(job.lock), \
                StopRequest(job.spec.train.checkpoint_requeue).installed() as stop:
            return run_config(job, place, stop)
    except liveness.Busy:
        return running_elsewhere(job)


@hydra.main(version_base="1.3", config_path=str(PROJECT_ROOT / "conf"), config_name="config")
def main(cfg: DictConfig) -> float:
    """Console script `harness-train`; returns the final eval loss (the objective an Optuna
    sweep minimizes; with `batched_seeds`, the members' mean; NaN when the job created no
    result).

    In a multirun a failing job does not stop the others: its error is logged, written to
    the sweep folder's `failed_jobs.txt` (which the sweep's summary and exit status report),
    and the job returns NaN; a job stopped by SIGTERM/SIGUSR2 likewise goes to
    `killed_jobs.txt`. A single run exits non-zero: 2, with one line, for an invalid config
    or an unusable store; 143 (128 + SIGTERM) when a stop signal ended it.
    """
    in_sweep = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        if cfg.get("batch_file"):
            return train_batch_file(cfg)  # type: ignore[return-value]  # a batched job's
        results = train_batched(cfg) if cfg.get("batched_seeds") else [train(cfg)]
    except Exception as err:
        stopped = isinstance(err, RunStopped)
        invalid = isinstance(err, (ConfigError, StoreError))
        full = None if stopped or invalid else \
            disk_full(err, cfg.tracking.uri, cfg.train.checkpoint_dir)
        if full is not None:
            message = (f"disk full: {full}: {type(err).__name__}: "
                       f"{' '.join(str(err).split())[:200]}")
            if in_sweep:
                log.error("job stopped, %s; free space, then the same command resumes it",
                          message)
                record_job(Path(HydraConfig.get().sweep.dir), err, FULL_DISK_JOBS_FILE,
                           message)
                return math.nan
            print(f"harness-train: {message}; free space there, then the same command "
                  "resumes the run", file=sys.stderr)
            sys.exit(1)
        if in_sweep:
            if stopped:
                log.warning("job killed: %s; the same command resumes it", err)
            elif invalid:
                log.error("job invalid: %s", err)
            else:
                log.error("job failed: %s: %s", type(err).__name__, err, exc_info=True)
            record_job(Path(HydraConfig.get().sweep.dir), err,
                       KILLED_JOBS_FILE if stopped else
                       INVALID_JOBS_FILE if invalid else FAILED_JOBS_FILE)
            return math.nan
        if stopped:
            print(f"harness-train: {err}; the same command resumes the run", file=sys.stderr)
            sys.exit(128 + signal.SIGTERM)
        if isinstance(err, ConfigError):
            print(f"harness-train: invalid config: {err}", file=sys.stderr)
            sys.exit(2)
        if isinstance(err, StoreError):
            print(f"harness-train: {err}", file=sys.stderr)
            sys.exit(2)
        raise
    if not in_sweep:
        print(f"MLflow store: {cfg.tracking.uri}\n"
              f"Open the UI:  mlflow ui --backend-store-uri {cfg.tracking.uri}")
    losses = [r.final_eval_loss for r in results if not math.isnan(r.final_eval_loss)]
    return sum(losses) / len(losses) if losses else math.nan


def cli() -> None:
    """Console script `harness-train`: Hydra's main, with a config that does not compose (an
    unknown key such as `frontier.foo=1`, a value not among an enum's choices, a missing
    option) refused in one line naming the key, exit 2, before any run exists. Hydra prints
    such errors over several lines and exits 1; with HYDRA_FULL_ERROR they reach us as
    exceptions instead. A user who set HYDRA_FULL_ERROR gets Hydra's full trace."""
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
