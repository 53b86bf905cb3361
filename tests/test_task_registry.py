"""The task registry: every module of `tasks/` is a registered task, the allowed `task.name`
values and the `task` group's Hydra schemas are derived from the registry, and a new task is
one module plus one YAML file: a toy task written to a temporary folder is composed,
validated, refused a bad value, and run through `train()` into MLflow like the others."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from helpers.cli import TRAIN
from hydra.core.config_store import ConfigStore
from hydra.errors import ConfigCompositionException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

import tasks
import tasks.base
from harness import names
from harness.lifecycle.identity import job_of
from harness.schema import PROJECT_ROOT, ConfigError, register, validate
from harness.train import train
from tasks import TASKS, make_task
from tasks.base import ClassificationTask
from tasks.copy import CopyConfig

# the task modules of the package: every one but base registers one task, named as itself
MODULES = {m.name for m in pkgutil.iter_modules(tasks.__path__)} - {"base"}


def test_registry() -> None:
    assert MODULES and set(TASKS) == MODULES
    # one task per module of the package, registered by importing it
    assert sorted(cls.__module__ for cls in TASKS.values()) == sorted(
        f"tasks.{m}" for m in MODULES)
    for name, cls in TASKS.items():
        assert cls.name == name
        assert cls.config_class.task is cls and cls.config_class().name == name
        assert isinstance(make_task(name), cls)


def test_unknown_task_lists_names() -> None:
    with pytest.raises(ValueError, match="parity") as info:
        make_task("parity", gap=5)
    for name in TASKS:
        assert name in str(info.value)


def test_names_and_schemas_derive_from_the_registry() -> None:
    register()
    assert [member.value for member in tasks.base.TaskName] == list(TASKS)
    schemas = ConfigStore.instance().repo["task"]
    for name, cls in TASKS.items():
        assert schemas[f"base_{name}.yaml"].node._metadata.object_type is cls.config_class
        assert (PROJECT_ROOT / "conf" / "task" / f"{name}.yaml").exists()  # its option


def test_a_taken_name_or_config_is_refused() -> None:
    with pytest.raises(TypeError, match="the name 'copy' belongs to tasks.copy.CopyTask"):
        type("OtherCopy", (ClassificationTask,), {"name": "copy", "config_class": CopyConfig,
                                                  "_generate": None})
    with pytest.raises(TypeError, match="the config tasks.copy.CopyConfig belongs to"):
        type("Twin", (ClassificationTask,), {"name": "twin", "config_class": CopyConfig,
                                             "_generate": None})
    assert set(TASKS) == MODULES and tasks.base.TaskName.__members__.keys() == MODULES


def test_hydra_refuses_an_unregistered_task_name_listing_the_registered_ones(
        make_cfg: Callable[..., DictConfig]) -> None:
    with pytest.raises(ConfigCompositionException, match="task.name") as info:
        make_cfg("task.name=parity")
    message = str(info.value.__cause__ or info.value)
    assert "Invalid value 'parity', expected one of [" in message
    assert all(name in message for name in TASKS)


def test_cli_unregistered_task_name_fails_at_composition_listing_the_tasks(
        tmp_path: Path, cli_env: dict[str, str]) -> None:
    db = tmp_path / "mlflow.db"
    done = subprocess.run([*TRAIN, "task.name=parity",
                           f"tracking.uri=sqlite:///{db}"], cwd=tmp_path, env=cli_env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert f"expected one of [{', '.join(TASKS)}]" in done.stderr
    assert not db.exists()


# --- a new task: one module, one YAML -------------------------------------------------------

TOY_MODULE = '''\
"""Toy recall: a symbol, `gap` blanks, a cue; answer the symbol at the cue."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tasks.base import Batch, Chance, ClassificationTask, TaskConfig, one_hot


@dataclass
class ToyRecallConfig(TaskConfig):
    gap: int = 6
    vocab: int = 2

    def check_values(self) -> None:
        super().check_values()
        self.require(self.vocab >= 2, "vocab", f"must be >= 2, got {self.vocab}")


class ToyRecallTask(ClassificationTask):
    name = "toy_recall"
    config_class = ToyRecallConfig
    vocab: int

    def __init__(self, config: ToyRecallConfig) -> None:
        super().__init__(config)
        self.seq_len = self.gap + 2
        self.input_size = self.vocab + 2  # the symbols, the blank, the cue
        self.output_size = self.vocab
        self.chance = Chance(loss=math.log(self.vocab), accuracy=1 / self.vocab)

    def _generate(self, batch_size: int, generator: torch.Generator, split: str) -> Batch:
        symbol = torch.randint(self.vocab, (batch_size,), generator=generator)
        tokens = torch.full((batch_size, self.seq_len), self.vocab)
        tokens[:, 0], tokens[:, -1] = symbol, self.vocab + 1
        targets = torch.zeros((batch_size, self.seq_len), dtype=torch.int64)
        targets[:, -1] = symbol
        mask = torch.zeros((batch_size, self.seq_len), dtype=torch.bool)
        mask[:, -1] = True
        gaps = self.draw_gaps(batch_size, generator)
        return Batch(one_hot(tokens, self.input_size), targets, mask, gaps)
'''

TOY_OPTION = """\
# Toy recall with three symbols. Parameters and defaults: ToyRecallConfig.
defaults:
  - base_toy_recall
  - _self_
vocab: 3
"""


@pytest.fixture
def toy_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """tasks/toy_recall.py (in a folder added to the package) and conf/task/toy_recall.yaml
    (in a config folder added to Hydra's search path, which this returns); the registry, the
    package and Hydra's ConfigStore are restored afterwards."""
    package = tmp_path / "package"
    package.mkdir()
    (package / "toy_recall.py").write_text(TOY_MODULE)
    (tmp_path / "conf" / "task").mkdir(parents=True)
    (tmp_path / "conf" / "task" / "toy_recall.yaml").write_text(TOY_OPTION)
    registered, names_before = dict(TASKS), tasks.base.TaskName
    monkeypatch.setattr(tasks, "__path__", [*tasks.__path__, str(package)])
    try:
        yield tmp_path / "conf"
    finally:
        TASKS.clear()
        TASKS.update(registered)
        tasks.base.TaskName = names_before
        sys.modules.pop("tasks.toy_recall", None)
        vars(tasks).pop("toy_recall", None)
        ConfigStore.instance().repo["task"].pop("base_toy_recall.yaml", None)


def test_a_new_task_is_one_module_and_one_yaml(toy_task: Path, make_cfg: Callable[..., DictConfig],
                                                store_uri: str) -> None:
    tasks.import_modules()  # what `import tasks` does: every module of the package
    register()  # what harness-train does at start: the task group's schemas
    assert "toy_recall" in TASKS and "toy_recall" in tasks.base.TaskName.__members__
    search = f"hydra.searchpath=[file://{toy_task}]"

    def toy(*overrides: str) -> DictConfig:
        return make_cfg(search, "task=toy_recall", "experiment_name=toy", *overrides)

    spec = validate(toy())
    assert type(spec.task).__name__ == "ToyRecallConfig"
    assert (spec.task.name.value, spec.task.gap, spec.task.vocab) == ("toy_recall", 6, 3)
    with pytest.raises(ConfigError, match=r"^task.vocab: must be >= 2, got 1$"):
        validate(toy("task.vocab=1"))
    with pytest.raises(ConfigError, match=r"^task.gap_min: must be in \[1, task.gap=6\], got 7$"):
        validate(toy("task.gap_min=7"))
    # the path every run takes: a job (validated, its task built, its memory checked), then
    # train() into MLflow
    job = job_of(toy("task.gap=4", "task.gap_min=2"))
    assert {k: v for k, v in job.params.items() if k.startswith("task.")} == {
        "task.name": "toy_recall", "task.gap": "4", "task.gap_min": "2", "task.gap_max": "None",
        "task.vocab": "3"}
    task = job.spec.task.build()
    batch = task.sample(64, torch.Generator().manual_seed(0))
    assert batch.inputs.shape == (64, 6, 5) and bool(batch.mask[:, -1].all())
    assert torch.equal(batch.targets[:, -1], batch.inputs[:, 0].argmax(-1))
    assert set(batch.gaps.tolist()) == {2, 3, 4}
    result = train(toy("task.gap=4"))
    client = MlflowClient(store_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("toy").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags[names.STATUS] == result.status
    assert run.data.params["task.name"] == "toy_recall" and run.data.params["task.vocab"] == "3"
    assert run.data.metrics[names.CHANCE_ACCURACY] == pytest.approx(1 / 3)
