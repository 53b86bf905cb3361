"""Hydra callbacks for multiruns: create the store and the sweep's parent MLflow run before
the jobs start; end the sweep with its report, attached to the parent run with the jobs'
counts by status.

Registered in `conf/config.yaml` under `hydra.callbacks`; they run in the launching process.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from harness.schema import register
from harness.tracking import FAILED_JOBS_FILE, end_sweep, start_sweep

log = logging.getLogger(__name__)


class SweepCallback(Callback):
    """Creates the tracking store once, then writes the sweep's report when it ends."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        register()
        # start_sweep creates the store first: parallel jobs must not race on creating and
        # migrating a new SQLite store.
        params = OmegaConf.select(config, "hydra.sweeper.params")  # None without a preset
        space = OmegaConf.to_container(params, resolve=True) if params is not None else {}
        start_sweep(config.tracking.uri, config.experiment_name, Path(config.hydra.sweep.dir),
                    list(config.hydra.overrides.task), space)  # type: ignore[arg-type]

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        uri = config.tracking.uri
        index = None
        if config.report.on_multirun_end:
            from harness.report import build_report

            index = build_report(config.experiment_name, uri, Path(config.report.out_dir))
        sweep_dir = Path(config.hydra.sweep.dir)
        counts = end_sweep(uri, sweep_dir, index.parent if index else None)
        print("\nSweep: " + ", ".join(f"{n} {status}" for status, n in counts.items())
              + " (runs this sweep created; configs that had already finished were skipped)")
        if index is not None:
            print(f"Report: {index}\n"
                  f"Open it: xdg-open {index}   (or any browser)")
        print(f"MLflow UI on the same store: mlflow ui --backend-store-uri {uri}")
        failures = sweep_dir / FAILED_JOBS_FILE
        if failures.exists():
            lines = failures.read_text().splitlines()
            print(f"\n{len(lines)} job(s) failed (details: {failures}):", *lines, sep="\n",
                  file=sys.stderr)
            # Hydra turns a callback's exceptions into warnings; SystemExit sets the status.
            raise SystemExit(1)
