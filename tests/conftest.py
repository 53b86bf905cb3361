"""Shared fixtures: the real Hydra config, shrunk to seconds, writing only under tmp_path."""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from helpers import findings_store as findings_stores
from helpers import report_store as report_stores
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from harness.schema import PROJECT_ROOT, register

CONF_DIR = str(PROJECT_ROOT / "conf")
BIN = Path(sys.executable).parent

# Tiny but real: every part of a run executes, in about a second.
SHRINK = [
    "model.hidden_size=8",
    "train.steps=20",
    "train.batch_size=8",
    "train.eval_every=10",
    "train.log_every=5",
    "train.eval_batch_size=32",
    "train.profile_batch_size=4",
    "train.threads=1",
]


def address_space_limit(limit: int | None) -> Callable[[], None] | None:
    """A subprocess `preexec_fn` capping its virtual memory at `limit` bytes (RLIMIT_AS, as a
    cluster job's memory limit; a sweep's workers inherit it); None: no limit."""
    if limit is None:
        return None

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


# Under it, a 20,000-unit RNN's 1.6 GB of weights cannot be copied: a real out-of-memory at run
# time, which the up-front check (against the machine's physical memory) lets through.
OOM_LIMIT = 3 * 10 ** 9
OOM_HIDDEN = 20000


@pytest.fixture
def store_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/mlflow.db"


@pytest.fixture
def make_cfg(tmp_path: Path, store_uri: str) -> Callable[..., DictConfig]:
    """Compose conf/config.yaml with overrides, shrunk, with store and reports in tmp_path."""
    register()

    def _make(*overrides: str, shrink: bool = True) -> DictConfig:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("config", overrides=[*(SHRINK if shrink else []), *overrides],
                          return_hydra_config=False)
        with open_dict(cfg):
            cfg.tracking.uri = store_uri
            cfg.report.out_dir = str(tmp_path / "reports")
            cfg.train.checkpoint_dir = str(tmp_path / "checkpoints")
        return cfg

    return _make


@pytest.fixture
def cli_env() -> dict[str, str]:
    """Environment for subprocess runs of the console scripts: no stray MLflow run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread for tests of tiny ops: a second thread only waits for a core (and on a
    busy machine, long)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def report_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """URI of the report tests' SQLite store with known answers (tests/helpers/report_store.py),
    logged once per test module that asks for it."""
    return report_stores.build(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def findings_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """URI of the findings tests' SQLite store with known answers
    (tests/helpers/findings_store.py), logged once per test module that asks for it."""
    return findings_stores.build(tmp_path_factory.mktemp("findings-store"))
