"""The task config options end to end: validation (in process and through the real CLI), one
short run of every task option through `train()` into an SQLite store (params, chance,
gradient profile and its lags, eval_by_gap.csv), and (slow) a sweep over the new tasks with
its report."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

import tasks
from harness import names
from harness.clipping import Clipper
from harness.loop import MemoryTracker, make_optimizer, train_loop
from harness.models import RecurrentModel
from harness.schema import PROJECT_ROOT, ConfigError, TaskConfig, task_params, validate
from harness.tracking import config_hash, flatten
from harness.train import job_of, train

TASK_OPTIONS = sorted(p.stem for p in (PROJECT_ROOT / "conf" / "task").glob("*.yaml"))

BAD = [
    (["task=temporal_order", "task.n_relevant=4"], "task.n_relevant: must be 2 or 3, got 4"),
    (["task=temporal_order", "task.gap=9"], "task.gap: must be >= 10, got 9"),
    (["task=sequential_digits", "task.gap=100"], "task.gap: must be 64 for sequential_digits"),
    (["task=sequential_digits", "task.gap_min=10"], "task.gap_min: must be 64"),
    (["task=sequential_digits", "task.split_seed=-1"], "task.split_seed: must be >= 0"),
    (["task=copy", "task.gap_min=101"], "task.gap_min: must be in [1, task.gap=100], got 101"),
    (["task=copy", "task.gap_min=0"], "task.gap_min: must be in [1, task.gap=100], got 0"),
    (["task=copy", "task.gap_max=50"], "task.gap_max: must be null or equal task.gap (100"),
    (["task=adding", "task.gap_min=1"], "task.gap_min: must be in [2, task.gap=100], got 1"),
    (["task=adding_hochreiter1997", "task.gap=19"], "task.gap: must be >= 20 with variant"),
    (["task=adding_hochreiter1997", "task.gap_min=25"], "task.gap_min: must be null with"),
    (["task=associative_recall", "task.vocab=15"], "task.vocab: must be even and >= 4"),
    (["task=associative_recall", "task.n_pairs=9"], "task.n_pairs: must be in [1, task.vocab"),
    (["task=selective_copy", "task.n_tokens=0"], "task.n_tokens: must be >= 1, got 0"),
    (["task=selective_copy", "task.vocab=1"], "task.vocab: must be >= 2, got 1"),
    (["task=delayed_recall", "task.gap_min=21"], "task.gap_min: must be in [1, task.gap=20]"),
]


def build(spec_task: TaskConfig) -> tasks.Task:
    return tasks.make_task(spec_task.name.value, **task_params(spec_task))


@pytest.mark.parametrize(("overrides", "message"), BAD)
def test_bad_task_values_fail_validation_naming_the_field(
        make_cfg: Callable[..., DictConfig], overrides: list[str], message: str) -> None:
    cfg = make_cfg(*overrides)
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert str(info.value).startswith(message)
    # the task itself refuses the same values (a config that validated could not fail later)
    with pytest.raises(ValueError, match=message.split(":")[0].removeprefix("task.")):
        build(OmegaConf.to_object(cfg.task))  # type: ignore[arg-type]


@pytest.mark.parametrize("overrides", [
    ["task=temporal_order", "task.gap=10", "task.gap_min=10"],
    ["task=temporal_order3", "task.gap=11", "task.gap_max=11"],
    ["task=adding", "task.gap=2", "task.gap_min=2"],
    ["task=adding_mean", "task.gap_min=50"],
    ["task=adding_hochreiter1997", "task.gap=20"],
    ["task=copy", "task.gap_min=1", "task.gap_max=100"],
    ["task=associative_recall", "task.vocab=4", "task.n_pairs=2", "task.gap_min=1"],
    ["task=selective_copy", "task.gap=1", "task.vocab=2"],
    ["task=sequential_digits", "task.gap_min=64", "task.gap_max=64"],
    *([f"task={option}"] for option in TASK_OPTIONS),
])
def test_valid_task_configs_build_their_task(make_cfg: Callable[..., DictConfig],
                                             overrides: list[str]) -> None:
    spec = validate(make_cfg(*overrides))
    task = build(spec.task)
    assert task.gap == spec.task.gap and task.name == spec.task.name.value


def test_option_files_set_what_their_names_say(make_cfg: Callable[..., DictConfig]) -> None:
    def task_of(option: str) -> tasks.Task:
        return build(validate(make_cfg(f"task={option}")).task)

    assert task_of("temporal_order").output_size == 4
    assert task_of("temporal_order3").output_size == 8
    assert task_of("sequential_digits").permuted is False  # type: ignore[attr-defined]
    assert task_of("sequential_digits_permuted").permuted is True  # type: ignore[attr-defined]
    assert task_of("adding").variant == "sum"  # type: ignore[attr-defined]
    assert task_of("adding_mean").variant == "mean"  # type: ignore[attr-defined]
    assert task_of("adding_hochreiter1997").variant == "hochreiter1997"  # type: ignore[attr-defined]


def test_task_label_names_the_option(make_cfg: Callable[..., DictConfig]) -> None:
    """The report tells task variants apart by the label computed from a run's params."""
    for option in TASK_OPTIONS:
        params = flatten(OmegaConf.to_container(make_cfg(f"task={option}"), resolve=True))
        assert names.task_label(params[names.TASK], params) == option, option


def harness_train(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("overrides", "line"), [
    (["task=temporal_order", "task.n_relevant=4"], "task.n_relevant: must be 2 or 3, got 4"),
    (["task=sequential_digits", "task.gap=100"], "task.gap: must be 64 for sequential_digits "
     "(one step per pixel of an 8x8 image), got 100"),
    (["task=copy", "task.gap_min=200"], "task.gap_min: must be in [1, task.gap=100], got 200"),
])
def test_cli_bad_task_value_is_one_line_exit_2_and_no_store(
        tmp_path: Path, cli_env: dict[str, str], overrides: list[str], line: str) -> None:
    db = tmp_path / "mlflow.db"
    done = harness_train(*overrides, f"tracking.uri=sqlite:///{db}", cwd=tmp_path, env=cli_env)
    assert done.returncode == 2
    assert [x for x in done.stderr.splitlines() if x.strip()] == [
        f"harness-train: invalid config: {line}"]
    assert not db.exists()


def test_cli_unknown_variant_fails_at_composition_listing_the_choices(
        tmp_path: Path, cli_env: dict[str, str]) -> None:
    db = tmp_path / "mlflow.db"
    done = harness_train("task=adding", "task.variant=median", f"tracking.uri=sqlite:///{db}",
                         cwd=tmp_path, env=cli_env)
    assert done.returncode != 0 and "sum, mean, hochreiter1997" in done.stderr
    assert not db.exists()


# Through MLflow: one fixed-gap task, one with gaps drawn per sequence, one with lengths drawn
# by its published definition. The rest run the same loop in memory (below).
MLFLOW_RUNS = [
    ["task=sequential_digits"],
    ["task=temporal_order3", "task.gap=15", "task.gap_min=10"],
    ["task=adding_hochreiter1997", "task.gap=20"],
]
LOOP_RUNS = [
    ["task=temporal_order", "task.gap=12"],
    ["task=selective_copy", "task.gap=6"],
    ["task=selective_copy", "task.gap=6", "task.gap_min=1"],
    ["task=associative_recall", "task.gap=5"],
    ["task=associative_recall", "task.gap=5", "task.gap_min=2"],
    ["task=sequential_digits_permuted"],
    ["task=adding_mean", "task.gap=8", "task.gap_min=3"],
    ["task=copy", "task.gap=6", "task.gap_min=2"],
    ["task=delayed_recall", "task.gap=6", "task.gap_min=1"],
]


def run_id(overrides: list[str]) -> str:
    return "-".join(x.split("=")[1] for x in overrides)


def check_profiles(task: tasks.Task, profiles: list, steps_run: int) -> None:
    """Every time step is profiled; every task here scores its last step: lag = L - 1 - t."""
    assert profiles[0].step == 0 and profiles[-1].step == steps_run
    for profile in profiles:
        assert profile.lag.tolist() == list(range(task.seq_len - 1, -1, -1))
        assert profile.grad_norm.shape == (task.seq_len,)


@pytest.mark.parametrize("overrides", LOOP_RUNS, ids=run_id)
def test_loop_and_diagnostics_run_on_each_task(make_cfg: Callable[..., DictConfig],
                                               overrides: list[str]) -> None:
    spec = validate(make_cfg(*overrides))
    task = build(spec.task)
    model = RecurrentModel("gru", task.input_size, task.output_size, 8)
    tracker = MemoryTracker()
    result = train_loop(task, model, make_optimizer(model, "adam", 1e-2),
                        Clipper("none", 1.0), spec.train, tracker, seed=0)
    check_profiles(task, result.profiles, result.steps_run)
    assert names.GRAD_REACH in tracker.history and names.EVAL_ACCURACY in tracker.history
    assert bool(result.eval_by_gap) == task.variable_gap


@pytest.mark.parametrize("overrides", MLFLOW_RUNS, ids=run_id)
def test_one_run_through_mlflow(make_cfg: Callable[..., DictConfig], store_uri: str,
                                overrides: list[str]) -> None:
    cfg = make_cfg(*overrides, "model=gru", "experiment_name=tasks")
    task = build(validate(cfg).task)
    result = train(cfg)
    client = MlflowClient(store_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tasks").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags[names.STATUS] == result.status
    assert run.data.params[names.TASK] == task.name
    assert run.data.params[names.GAP] == str(task.gap)
    option = names.task_label(task.name, run.data.params)  # e.g. temporal_order3
    assert run.info.run_name.startswith(f"{option}-gru-")
    metrics = run.data.metrics
    assert metrics[names.CHANCE_LOSS] == pytest.approx(task.chance.loss)
    assert metrics[names.CHANCE_ACCURACY] == pytest.approx(task.chance.accuracy)
    assert 0 <= metrics[names.FINAL_EVAL_ACCURACY] <= 1
    assert names.GRAD_DECAY_RATE in metrics and names.GRAD_REACH in metrics
    check_profiles(task, result.profiles, result.steps_run)
    path = client.download_artifacts(run.info.run_id, names.GRAD_PROFILE_ARTIFACT)
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(result.profiles) * task.seq_len
    assert all(int(r["lag"]) == task.seq_len - 1 - int(r["t"]) for r in rows)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert (names.EVAL_BY_GAP_ARTIFACT in artifacts) == task.variable_gap
    if task.variable_gap:
        table = pd.read_csv(client.download_artifacts(run.info.run_id,
                                                      names.EVAL_BY_GAP_ARTIFACT))
        assert tuple(table.columns) == names.EVAL_BY_GAP_COLUMNS
        assert table["sequences"].sum() == cfg.train.eval_batch_size
        assert table["gap"].between(task.gap_min, task.gap_max).all()
        assert table["gap"].is_monotonic_increasing and table["gap"].is_unique
        weighted = (table["sequences"] * table["eval_accuracy"]).sum() / table["sequences"].sum()
        assert weighted == pytest.approx(metrics[names.FINAL_EVAL_ACCURACY], rel=1e-5)


@pytest.mark.slow
def test_sweep_over_the_new_tasks_reports_each(tmp_path: Path, cli_env: dict[str, str]) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    options = "temporal_order,selective_copy,associative_recall,sequential_digits"
    command = [sys.executable, "-m", "harness.train", "-m", f"task={options}",
               "model.hidden_size=8", "train.steps=10", "train.batch_size=8",
               "train.eval_every=10", "train.eval_batch_size=32", "train.profile_batch_size=4",
               "experiment_name=new_tasks", f"tracking.uri={uri}",
               f"report.out_dir={tmp_path}/reports", f"hydra.sweep.dir={tmp_path}/sweep",
               f"train.checkpoint_dir={tmp_path}/checkpoints"]
    done = subprocess.run(command, cwd=tmp_path, env=cli_env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("new_tasks").experiment_id
    jobs = [r for r in client.search_runs([experiment])
            if r.data.tags.get(names.RUN_KIND) != names.SWEEP_KIND]
    assert len(jobs) == 4 and all(r.info.status == "FINISHED" for r in jobs)
    accuracy = pd.read_csv(tmp_path / "reports" / "new_tasks" / "accuracy_by_gap.csv")
    assert set(accuracy[names.TASK_LABEL]) == set(options.split(","))


# The task params of one config per task option (and two with variable-gap keys set), pinned
# to what they were before the task configs moved beside their generators: their names, values
# and order, and the hash of the task's part of the config hash. A run's MLflow params and its
# identity (the config hash that skips finished configs and resumes killed ones) must not
# change with how a task is defined.
PINNED_TASK_PARAMS = [
    ("task=adding", "5ec0bd84ff09", "name=adding gap=100 gap_min=None gap_max=None variant=sum"),
    ("task=adding_hochreiter1997", "d3fdce029303",
     "name=adding gap=100 gap_min=None gap_max=None variant=hochreiter1997"),
    ("task=adding_mean", "b4279f4f0485",
     "name=adding gap=100 gap_min=None gap_max=None variant=mean"),
    ("task=associative_recall", "a177462b5341",
     "name=associative_recall gap=20 gap_min=None gap_max=None vocab=16 n_pairs=4"),
    ("task=copy", "cb4b042ab4e9",
     "name=copy gap=100 gap_min=None gap_max=None n_symbols=8 n_recall=10"),
    ("task=delayed_recall", "6b650c182ac4",
     "name=delayed_recall gap=20 gap_min=None gap_max=None vocab=8 filler=blank "
     "distractor_vocab=8"),
    ("task=delayed_recall_noise", "76e65d21b44e",
     "name=delayed_recall gap=20 gap_min=None gap_max=None vocab=8 filler=noise "
     "distractor_vocab=8"),
    ("task=selective_copy", "11556817decb",
     "name=selective_copy gap=100 gap_min=None gap_max=None vocab=8 n_tokens=4"),
    ("task=sequential_digits", "ab65b38cdffb",
     "name=sequential_digits gap=64 gap_min=None gap_max=None permuted=False "
     "permutation_seed=0 split_seed=0"),
    ("task=sequential_digits_permuted", "751cc92d2db6",
     "name=sequential_digits gap=64 gap_min=None gap_max=None permuted=True "
     "permutation_seed=0 split_seed=0"),
    ("task=temporal_order", "8782eca1f8ce",
     "name=temporal_order gap=100 gap_min=None gap_max=None n_relevant=2"),
    ("task=temporal_order3", "9e215ec546b6",
     "name=temporal_order gap=100 gap_min=None gap_max=None n_relevant=3"),
    ("task=copy task.gap=40 task.gap_min=5", "c1c524f40222",
     "name=copy gap=40 gap_min=5 gap_max=None n_symbols=8 n_recall=10"),
    ("task=adding_mean task.gap=30 task.gap_max=30", "ccaf5945f41a",
     "name=adding gap=30 gap_min=None gap_max=30 variant=mean"),
]


def test_pinned_cases_cover_every_task_option() -> None:
    pinned = {overrides.split()[0].removeprefix("task=") for overrides, _, _ in PINNED_TASK_PARAMS}
    assert pinned == set(TASK_OPTIONS)


@pytest.mark.parametrize(("overrides", "digest", "params"), PINNED_TASK_PARAMS,
                         ids=[case[0] for case in PINNED_TASK_PARAMS])
def test_task_params_and_hash_are_pinned(make_cfg: Callable[..., DictConfig], overrides: str,
                                         digest: str, params: str) -> None:
    job = job_of(make_cfg(*overrides.split()))  # the params a run logs
    task = [(key, value) for key, value in job.params.items() if key.startswith("task.")]
    assert task == [(f"task.{key}", value) for key, value in
                    (item.split("=", 1) for item in params.split())]
    assert config_hash(dict(task)) == digest
