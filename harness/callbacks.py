"""Hydra callbacks for multiruns: create the store and the sweep's parent MLflow run before
the jobs start; end the sweep with its report, attached to the parent run with the jobs'
counts by status.

Registered in `conf/config.yaml` under `hydra.callbacks`. They run in the launching process,
which holds the sweep folder's lock while the sweep runs, except `on_job_start`/`on_job_end`,
which run in each job's process (the job's console level, its progress line). If the
launching process ends before the sweep does (Ctrl-C, SIGTERM, a launcher error), it marks
killed the parent run and the jobs whose process is gone; a sweep whose launching process
died without that (SIGKILL) is closed the same way by the next sweep of its experiment.
"""

from __future__ import annotations

import atexit
import logging
import signal
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from harness import names
from harness.lifecycle.progress import job_finished, job_started
from harness.schema import register
from harness.tracking import liveness
from harness.tracking.links import ui_lines
from harness.tracking.liveness import close_dead_jobs, close_dead_sweeps
from harness.tracking.store import disk_full, existing_experiment, unreachable
from harness.tracking.sweep import (
    FAILED_JOBS_FILE,
    FULL_DISK_JOBS_FILE,
    INVALID_JOBS_FILE,
    KILLED_JOBS_FILE,
    PARENT_RUN_FILE,
    SWEEP_LOCK_FILE,
    UNREACHABLE_JOBS_FILE,
    end_sweep,
    log_tuning_summary,
    start_sweep,
    sweep_run_id,
)

log = logging.getLogger(__name__)

# Seconds an interrupted sweep waits for each job still holding its lock to close its own run.
JOB_CLOSE_WAIT_S = 10.0


def interrupt(signum: int, frame: Any) -> None:
    """SIGTERM to the launching process: unwind like Ctrl-C, so the sweep gets closed."""
    raise KeyboardInterrupt(f"{signal.Signals(signum).name} to the launching process")


def tuning_rule(config: DictConfig) -> str | None:
    """One line stating how an Optuna sweep tunes (None for other sweepers), e.g. `optuna TPE
    (seed 0, 4 random startup trials) over optim.lr: tag(log, interval(1e-4, 1e-2)), ...`."""
    sweeper = config.hydra.sweeper
    if "optuna" not in str(OmegaConf.select(sweeper, "_target_", default="")):
        return None
    sampler = sweeper.sampler
    details = [f"seed {OmegaConf.select(sampler, 'seed')}"]
    startup = OmegaConf.select(sampler, "n_startup_trials", default=None)
    if startup is not None:
        details.append(f"{startup} random startup trials")
    space = "; ".join(f"{key}: {value}" for key, value in (sweeper.params or {}).items())
    n = sweeper.n_trials
    return (f"optuna {sampler._target_.rsplit('.', 1)[-1].removesuffix('Sampler')} "
            f"({', '.join(details)}) over {space}; {n} trials per study, one study per "
            f"(model, task, gap) with harness-tune; objective: final eval loss of the trial's "
            f"run, minimized; the sweep run holds the best of {n} ({names.TUNING_BEST}) and "
            f"the median ({names.TUNING_MEDIAN})")


class ActiveSweep:
    """The sweep this process launches: its store, folder and folder lock. Module state, not
    the callback's: Hydra pickles its callbacks to the jobs, and a held lock must not travel."""

    held = ExitStack()
    uri = ""
    sweep_dir = Path()
    config: DictConfig | None = None
    started = False  # this sweep's parent run exists
    predecessor: str | None = None  # the parent run an earlier sweep left in this folder

    @classmethod
    def close_interrupted(cls) -> None:
        """At exit before the sweep's end: mark killed the parent run and the jobs whose
        process is gone; jobs still running elsewhere (SLURM) keep their runs."""
        run_id = sweep_run_id(cls.sweep_dir)
        if run_id is None:
            return
        closed, alive = close_dead_jobs(cls.uri, run_id, JOB_CLOSE_WAIT_S)
        end_sweep(cls.uri, cls.sweep_dir, None, killed=True)
        cls.held.close()
        print(f"\nSweep interrupted: its run {run_id} and {len(closed)} job run(s) whose "
              f"process had ended are marked killed"
              + (f"; {len(alive)} job(s) are still running elsewhere" if alive else "")
              + ". The same command resumes the killed and unstarted runs.", file=sys.stderr)
        report_unfinished(cls.sweep_dir)


def lazy_start(config: DictConfig) -> bool:
    """Whether the sweep's sweeper opens the parent run itself, after checking the jobs
    (harness.sweeping.HarnessSweeper, its subclasses and hydra/sweeper=harness_optuna call
    `start_parent_run`: class attribute `opens_parent_run`); other sweepers get it at the
    multirun's start."""
    from hydra.utils import get_class

    target = OmegaConf.select(config, "hydra.sweeper._target_", default=None)
    try:
        return target is not None and getattr(get_class(target), "opens_parent_run", False)
    except Exception:  # an unimportable target fails later, in Hydra, with its own message
        return False


def start_parent_run() -> str:
    """Create the store (once: parallel jobs must not race on creating and migrating a new
    SQLite store) and the sweep's parent MLflow run, unless this sweep already has one; close
    the dead sweeps of the experiment. Returns the parent run's id."""
    existing = sweep_run_id(ActiveSweep.sweep_dir)
    if ActiveSweep.started and existing is not None:
        return existing
    config = ActiveSweep.config
    assert config is not None, "start_parent_run before on_multirun_start"
    params = OmegaConf.select(config, "hydra.sweeper.params")  # None without a preset
    space = OmegaConf.to_container(params, resolve=True) if params is not None else {}
    rule = tuning_rule(config)
    run_id = start_sweep(config.tracking.uri, config.experiment_name, ActiveSweep.sweep_dir,
                         list(config.hydra.overrides.task), space,  # type: ignore[arg-type]
                         {names.SWEEP_TUNING: rule} if rule else None)
    ActiveSweep.started = True
    for sweep in close_dead_sweeps(config.tracking.uri, config.experiment_name,
                                   ActiveSweep.predecessor):
        log.info("sweep run %s had no live launching process: marked killed", sweep)
    return run_id


class SweepCallback(Callback):
    """Holds the sweep folder's lock, opens the parent run (at once, or when the sweeper has
    checked every job: `lazy_start`), then writes the sweep's report when it ends."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        register()
        ActiveSweep.uri, ActiveSweep.sweep_dir = config.tracking.uri, Path(config.hydra.sweep.dir)
        ActiveSweep.config, ActiveSweep.started = config, False
        ActiveSweep.held.enter_context(liveness.hold(ActiveSweep.sweep_dir / SWEEP_LOCK_FILE))
        # A parent-run file, or lists of unfinished jobs, left by an earlier sweep in the same
        # folder are not this sweep's; that sweep's run, if still RUNNING (its launcher was
        # killed), is closed with the dead sweeps once this one's jobs passed their checks.
        ActiveSweep.predecessor = sweep_run_id(ActiveSweep.sweep_dir)
        for stale in (PARENT_RUN_FILE, *(file_name for file_name, _ in UNFINISHED)):
            (ActiveSweep.sweep_dir / stale).unlink(missing_ok=True)
        if not lazy_start(config):
            start_parent_run()
        signal.signal(signal.SIGTERM, interrupt)
        atexit.register(ActiveSweep.close_interrupted)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """In the job's process: its INFO lines go to its log file, not the shared terminal."""
        if OmegaConf.select(config, "hydra.mode", default=None) == RunMode.MULTIRUN:
            job_started(config)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        """In the job's process: one progress line, `[23/64] <run> solved at step 300 ...`."""
        if OmegaConf.select(config, "hydra.mode", default=None) == RunMode.MULTIRUN:
            job_finished(config, job_return)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        uri = config.tracking.uri
        sweep_dir = Path(config.hydra.sweep.dir)
        index, counts, closed = None, None, True
        try:
            index, counts = close_sweep(config, sweep_dir)
        except Exception as err:
            closed = False
            full = disk_full(err, uri, config.train.checkpoint_dir)
            if full is not None:
                print(f"harness-train: disk full: {full}: the sweep's report and summary were "
                      "not written; free space there, then the same command finishes the "
                      "sweep", file=sys.stderr)
            elif unreachable(uri) is not None:
                print(f"harness-train: tracking server {uri} unreachable: the sweep's report "
                      "and summary were not written; once it is back, the same command "
                      "finishes the sweep", file=sys.stderr)
            else:
                raise
        atexit.unregister(ActiveSweep.close_interrupted)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        ActiveSweep.held.close()
        if counts is not None:
            print("\nSweep: " + ", ".join(f"{n} {status}" for status, n in counts.items())
                  + " (runs this sweep created; configs that had already finished were "
                  "skipped)")
        if index is not None:
            print(f"Report: {index}\n"
                  f"Open it: xdg-open {index}   (or any browser)")
        if closed:
            print("\n".join(ui_lines(uri, existing_experiment(uri, config.experiment_name))))
        if report_unfinished(sweep_dir) or not closed:
            # Hydra turns a callback's exceptions into warnings; SystemExit sets the status.
            raise SystemExit(1)


def close_sweep(config: DictConfig, sweep_dir: Path) -> tuple[Path | None, dict[str, int]]:
    """The sweep's report (when asked for), its tuning summary (an Optuna preset), and its
    parent run closed with the counts of its jobs' statuses: (the report's index, counts)."""
    uri = config.tracking.uri
    index = None
    if config.report.on_multirun_end:
        from harness.report import build_report

        index = build_report(config.experiment_name, uri, Path(config.report.out_dir))
    if tuning_rule(config) is not None:
        tuning = log_tuning_summary(uri, sweep_dir, list(config.hydra.sweeper.params or {}))
        if tuning:
            print(f"\nTuning: best {names.TUNING_OBJECTIVE} {tuning[names.TUNING_BEST]:.4g}, "
                  f"median {tuning[names.TUNING_MEDIAN]:.4g} over "
                  f"{tuning[names.TUNING_TRIALS]:.0f} trials")
    return index, end_sweep(uri, sweep_dir, index.parent if index else None)


# What each kind of unfinished job means, and whether rerunning the same command helps.
UNFINISHED = (
    (INVALID_JOBS_FILE, "had an invalid config and created no run; a rerun fails the same "
                        "way: fix these overrides"),
    (FAILED_JOBS_FILE, "failed (their runs keep traceback.txt); a rerun runs them again, so "
                       "fix the cause first unless it was transient (e.g. out of memory)"),
    (KILLED_JOBS_FILE, "were stopped by a signal; the same command resumes them from their "
                       "last checkpoint"),
    (FULL_DISK_JOBS_FILE, "stopped on a full disk (the runs that finished are intact); free "
                          "space there, then the same command runs or resumes them"),
    (UNREACHABLE_JOBS_FILE, "stopped because the tracking server did not answer within "
                            "tracking.wait_s (a transient fault; their checkpoints keep their "
                            "training); once the server is back, the same command resumes "
                            "them"),
)


def report_unfinished(sweep_dir: Path) -> bool:
    """Print, to stderr, the sweep's invalid, failed and killed jobs, each kind with what to
    do about it; whether there were any (the sweep then exits 1)."""
    any_unfinished = False
    for file_name, what in UNFINISHED:
        path = sweep_dir / file_name
        if path.exists():
            lines = path.read_text().splitlines()
            any_unfinished = any_unfinished or bool(lines)
            print(f"\n{len(lines)} job(s) {what} (details: {path}):", *lines, sep="\n",
                  file=sys.stderr)
    return any_unfinished
