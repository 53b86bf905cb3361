"""Every config composes; bad values fail before any run, naming the field."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.cli import harness_train
from omegaconf import DictConfig

from harness.resources import cpu_count
from harness.schema import PROJECT_ROOT, ConfigError, validate

GROUPS = ["task", "model", "optim", "clip", "tracking"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (PROJECT_ROOT / "conf" / group).glob("*.yaml"))


@pytest.mark.parametrize(("group", "option"),
                         [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes_and_validates(make_cfg: Callable[..., DictConfig],
                                                   group: str, option: str) -> None:
    spec = validate(make_cfg(f"{group}={option}"))
    assert spec is not None


@pytest.mark.parametrize("preset", options("experiment"))
def test_every_experiment_preset_composes(make_cfg: Callable[..., DictConfig],
                                          preset: str) -> None:
    cfg = make_cfg(f"experiment={preset}", shrink=False)
    validate(cfg)
    assert cfg.experiment_name == preset


@pytest.mark.parametrize(("override", "field"), [
    ("task.gap=0", "task.gap"),
    ("model.hidden_size=0", "model.hidden_size"),
    ("clip.threshold=-1", "clip.threshold"),
    ("optim.lr=0", "optim.lr"),
    ("train.steps=0", "train.steps"),
    ("seed=-3", "seed"),
])
def test_out_of_range_values_name_the_field(make_cfg: Callable[..., DictConfig], override: str,
                                            field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}: "):
        validate(make_cfg(override))


@pytest.mark.parametrize("uri", ["mlflow.db", "file:///tmp/mlruns"])
def test_tracking_uri_must_be_a_store_uri(make_cfg: Callable[..., DictConfig], uri: str) -> None:
    cfg = make_cfg()
    cfg.tracking.uri = uri
    with pytest.raises(ConfigError, match="^tracking.uri: "):
        validate(cfg)


def test_gated_models_refuse_relu(make_cfg: Callable[..., DictConfig]) -> None:
    with pytest.raises(ConfigError, match="^model.activation: "):
        validate(make_cfg("model=lstm", "model.activation=relu"))


def test_cli_bad_value_exits_nonzero_with_one_line_and_creates_no_run(
        tmp_path: Path, cli_env: dict[str, str]) -> None:
    db = tmp_path / "mlflow.db"
    done = harness_train("task.gap=0", f"tracking.uri=sqlite:///{db}", cwd=tmp_path, env=cli_env)
    assert done.returncode == 2
    message = [line for line in done.stderr.splitlines() if line.strip()]
    assert message == ["harness-train: invalid config: task.gap: must be >= 1, got 0"]
    assert not db.exists()  # validation happens before the store is even opened


def test_cli_unreachable_server_fails_in_seconds_naming_the_url(
        tmp_path: Path, cli_env: dict[str, str]) -> None:
    with socket.socket() as sock:  # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    start = time.monotonic()
    done = harness_train(f"tracking.uri={url}", cwd=tmp_path, env=cli_env)
    assert done.returncode == 2 and time.monotonic() - start < 30
    assert done.stderr.strip().splitlines() == [
        f"harness-train: tracking.uri: MLflow server {url} unreachable ([Errno 111] "
        "Connection refused)"]


def test_cli_unwritable_store_path_is_one_line(tmp_path: Path, cli_env: dict[str, str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = harness_train(f"tracking.uri=sqlite:///{blocker}/sub/mlflow.db", cwd=tmp_path,
                         env=cli_env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"harness-train: tracking.uri: cannot create the store's folder {blocker}/sub: "
        "Not a directory"]


def test_cpu_count_without_sched_getaffinity(monkeypatch: pytest.MonkeyPatch) -> None:
    """macOS has no os.sched_getaffinity: every core the OS reports (1 if it reports none)."""
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    assert not hasattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert cpu_count() == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert cpu_count() == 1


def test_cpu_count_respects_the_affinity_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert cpu_count() == 2
