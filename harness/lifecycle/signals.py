"""Stop signals: SIGTERM (kill, scancel; SLURM at a time limit) and SIGUSR2 (submitit's warning
before a SLURM time limit) stop a run at the end of its step with a checkpoint."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from harness.callbacks import interrupt as launcher_interrupt
from harness.tracking.run import RunStopped

log = logging.getLogger(__name__)


# kill and scancel send SIGTERM (SLURM also at a time limit); submitit asks SLURM for SIGUSR2
# `signal_delay_s` before the time limit.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


class StopRequest:
    """SIGTERM or SIGUSR2 while a job runs. While the loop checkpoints (`deferred`), the run
    finishes its current step, saves a checkpoint and stops (RunStopped); otherwise it stops
    at once (RunStopped from the handler), resuming later from its last checkpoint."""

    def __init__(self, requeue: bool = False) -> None:
        """`requeue`: after SIGUSR2 inside a SLURM job launched by submitit (its warning before
        the time limit), hand the signal on to submitit once the run has stopped with its
        checkpoint: submitit requeues the job, which resumes into the same MLflow run."""
        self.signal: str | None = None
        self.deferred = False
        self.requeue = requeue

    def requested(self) -> bool:
        return self.signal is not None

    def handle(self, signum: int, frame: Any) -> None:
        self.signal = signal.Signals(signum).name
        if not self.deferred:
            raise RunStopped(f"stopped by {self.signal}")
        log.warning("%s received: stopping after this step with a checkpoint", self.signal)

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Handle the stop signals for the block (main thread only: Python's rule)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
        for signum in STOP_SIGNALS:
            signal.signal(signum, self.handle)
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            # Pass it on to the launching process's handler when the job runs inside it (an
            # in-process sweep, joblib n_jobs=1), so the sweep stops too. Not to others: a
            # default handler would kill a joblib worker that has closed its run, and
            # submitit's SIGUSR2 handler would end the job as failed.
            if self.signal is not None and \
                    previous[signal.Signals[self.signal]] is launcher_interrupt:
                os.kill(os.getpid(), signal.Signals[self.signal])
            if self.signal == signal.SIGUSR2.name and self.requeue and \
                    submitit_requeues(previous[signal.SIGUSR2]):
                log.warning("SIGUSR2 (the SLURM time limit is near): checkpoint saved; submitit "
                            "requeues the job, which resumes this run")
                previous[signal.SIGUSR2](signal.SIGUSR2, None)  # requeues, then exits


def submitit_requeues(handler: Any) -> bool:
    """Whether `handler` is submitit's checkpoint-and-requeue handler inside a SLURM job (its
    local executor installs the same handler, but has no queue to go back to)."""
    return getattr(handler, "__name__", "") == "checkpoint_and_try_requeue" and \
        "SLURM_JOB_ID" in os.environ
