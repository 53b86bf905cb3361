"""Hydra callbacks for multiruns: create the store before the jobs start, and end the sweep
with its report.

Registered in `conf/config.yaml` under `hydra.callbacks`; they run in the launching process.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from harness.schema import register
from harness.tracking import ensure_store

log = logging.getLogger(__name__)


class SweepCallback(Callback):
    """Creates the tracking store once, then writes the sweep's report when it ends."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        register()
        # Parallel jobs must not race on creating and migrating a new SQLite store.
        ensure_store(config.tracking.uri)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.report.on_multirun_end:
            return
        from harness.report import build_report

        uri = config.tracking.uri
        index = build_report(config.experiment_name, uri, Path(config.report.out_dir))
        print(f"\nReport: {index}\n"
              f"Open it: xdg-open {index}   (or any browser)\n"
              f"MLflow UI on the same store: mlflow ui --backend-store-uri {uri}")
