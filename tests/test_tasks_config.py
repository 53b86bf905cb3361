"""The task configs: parameters, their defaults and checks (one implementation, whether a task
is built in Python or its config composed by Hydra), every task option through validation (in
process and through the real CLI), the option files, the params each option logs (pinned),
and one short run of every task option through the loop and through `train()` into an SQLite
store (params, chance, gradient profile and its lags, eval_by_gap.csv), and (slow) a sweep
over the newer tasks with its report."""

from __future__ import annotations

import csv
import subprocess
from collections.abc import Callable
from enum import Enum
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from helpers.cli import TRAIN, harness_train
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

import tasks
from harness import names
from harness.clipping import Clipper
from harness.lifecycle.identity import job_of
from harness.loop import MemoryTracker, train_loop
from harness.models import RecurrentModel
from harness.optimizers import make_optimizer
from harness.schema import (
    PROJECT_ROOT,
    ConfigError,
    OptimConfig,
    TrainConfig,
    validate,
)
from harness.tracking.run import config_hash, flatten
from harness.train import train
from tasks import TASKS, Batch, ParameterError, TaskConfig, make_task
from tasks.adding import AddingConfig
from tasks.copy import CopyConfig, CopyTask
from tasks.sequential_digits import SequentialDigitsConfig, SequentialDigitsTask

TASK_DIR = PROJECT_ROOT / "conf" / "task"
TASK_OPTIONS = sorted(p.stem for p in TASK_DIR.glob("*.yaml"))


def build(spec_task: TaskConfig) -> tasks.Task:
    return spec_task.build()


# --- parameters, in Python ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params", "parameter"),
    [
        ("copy", {"gap": 0}, "gap"),
        ("copy", {"gap": -3}, "gap"),
        ("copy", {"gap": 2.5}, "gap"),
        ("copy", {"gap": True}, "gap"),
        ("copy", {"gap": 10, "n_symbols": 1}, "n_symbols"),
        ("copy", {"gap": 10, "n_recall": 0}, "n_recall"),
        ("copy", {"gap": 10, "vocab": 4}, "vocab"),
        ("adding", {"gap": 1}, "gap"),
        ("adding", {"gap": 10, "filler": "noise"}, "filler"),
        ("delayed_recall", {"gap": 0}, "gap"),
        ("delayed_recall", {"gap": 5, "vocab": 1}, "vocab"),
        ("delayed_recall", {"gap": 5, "filler": "zeros"}, "filler"),
        ("delayed_recall", {"gap": 5, "distractor_vocab": 0}, "distractor_vocab"),
        ("delayed_recall", {"gap": 5, "seed": 1}, "seed"),
    ],
)
def test_bad_params_raise_naming_the_parameter(name: str, params: dict, parameter: str) -> None:
    with pytest.raises(ValueError, match=parameter):
        make_task(name, **params)


@pytest.mark.parametrize(("name", "params", "parameter"), [
    ("copy", {"gap": 10, "gap_min": 11}, "gap_min"),
    ("copy", {"gap": 10, "gap_min": 0}, "gap_min"),
    ("copy", {"gap": 10, "gap_max": 12}, "gap_max"),
    ("copy", {"gap": 10, "gap_min": 2.0}, "gap_min"),
    ("adding", {"gap": 10, "gap_min": 1}, "gap_min"),
    ("adding", {"gap": 10, "variant": "median"}, "variant"),
    ("adding", {"gap": 19, "variant": "hochreiter1997"}, "gap"),
    ("adding", {"gap": 30, "variant": "hochreiter1997", "gap_min": 25}, "gap_min"),
    ("temporal_order", {"gap": 9}, "gap"),
    ("temporal_order", {"gap": 20, "n_relevant": 4}, "n_relevant"),
    ("selective_copy", {"gap": 5, "n_tokens": 0}, "n_tokens"),
    ("selective_copy", {"gap": 5, "vocab": 1}, "vocab"),
    ("associative_recall", {"gap": 5, "vocab": 15}, "vocab"),
    ("associative_recall", {"gap": 5, "vocab": 8, "n_pairs": 5}, "n_pairs"),
    ("sequential_digits", {"gap": 100}, "gap"),
    ("sequential_digits", {"gap": 64, "gap_min": 10}, "gap_min"),
    ("sequential_digits", {"gap": 64, "permuted": "yes"}, "permuted"),
    ("sequential_digits", {"gap": 64, "split_seed": -1}, "split_seed"),
])
def test_bad_params_of_each_task_name_the_parameter(name: str, params: dict,
                                                    parameter: str) -> None:
    with pytest.raises(ParameterError, match=f"^{parameter} of task") as info:
        make_task(name, **params)
    assert info.value.key == parameter


def test_bad_value_message_says_what_is_allowed() -> None:
    with pytest.raises(ValueError,
                       match=r"^gap of task 'adding' must be >= 2 \(one marker per half\), got 1$"):
        make_task("adding", gap=1)
    with pytest.raises(ValueError, match=r"^gap of task 'copy' must be an integer, got 2\.5$"):
        make_task("copy", gap=2.5)
    with pytest.raises(ValueError, match=r"gap_min of task 'copy' must be an integer or None"):
        make_task("copy", gap_min="3")
    with pytest.raises(ValueError, match="'blank', 'noise'"):
        make_task("delayed_recall", gap=5, filler="zeros")
    with pytest.raises(ValueError, match="allowed: gap, gap_min, gap_max, n_symbols, n_recall$"):
        make_task("copy", gap=5, symbols=8)


def test_str_enum_filler_is_accepted_as_plain_string() -> None:
    # Mirrors a Hydra-schema enum; str() of such a member is "Filler.noise", not "noise".
    class Filler(str, Enum):  # noqa: UP042
        noise = "noise"

    task = make_task("delayed_recall", gap=5, filler=Filler.noise)
    assert task.filler == "noise" and type(task.filler) is str


@pytest.mark.parametrize("name", sorted(TASKS))
def test_parameters_left_out_take_the_config_defaults(name: str) -> None:
    """One set of defaults: the config's fields; make_task, a config built in Python and a
    composed option all start from them."""
    config = TASKS[name].config_class
    task = make_task(name)
    assert task.config == config()
    for key, value in config().params().items():
        if key not in ("gap_min", "gap_max"):  # the task holds the bounds they resolve to
            assert getattr(task, key) == value
    assert task.gap_min == task.gap_max == task.gap
    assert make_task("copy").gap == 100 and make_task("adding").variant == "sum"


def test_a_task_is_built_from_its_config() -> None:
    config = CopyConfig(gap=30, n_recall=3)
    task = config.build()
    assert isinstance(task, CopyTask) and task.config is config
    assert (task.gap, task.n_recall, task.seq_len, task.name) == (30, 3, 36, "copy")
    assert CopyTask(config).seq_len == 36
    assert config.name == "copy" and config.params() == {
        "gap": 30, "gap_min": None, "gap_max": None, "n_symbols": 8, "n_recall": 3}
    with pytest.raises(TypeError, match="CopyTask is built from a CopyConfig, got AddingConfig"):
        CopyTask(AddingConfig())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name"):
        CopyConfig(name="adding")  # type: ignore[call-arg]  # the name comes with the class
    # A config is checked when its task is built, with the same checks as a composed config.
    with pytest.raises(ParameterError, match=r"^n_recall of task 'copy' must be >= 1, got 0$"):
        CopyConfig(n_recall=0).build()


# --- task options, composed by Hydra --------------------------------------------------------


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


@pytest.mark.parametrize(("overrides", "message"), BAD)
def test_bad_task_values_fail_validation_naming_the_field(
        make_cfg: Callable[..., DictConfig], overrides: list[str], message: str) -> None:
    cfg = make_cfg(*overrides)
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert str(info.value).startswith(message)
    # the task itself refuses the same value with the same words: one implementation, so a
    # config that validated cannot fail later
    with pytest.raises(ParameterError) as refused:
        build(OmegaConf.to_object(cfg.task))  # type: ignore[arg-type]
    assert f"task.{refused.value.key}: {refused.value.message}" == str(info.value)


def test_a_task_name_its_option_does_not_have_is_refused(
        make_cfg: Callable[..., DictConfig]) -> None:
    with pytest.raises(ConfigError, match=r"^task.name: must be 'copy', the task of CopyConfig "
                       r"\(another task is another config: task=<option>\), got 'adding'$"):
        validate(make_cfg("task=copy", "task.name=adding"))


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


def keys_set(option: str) -> tuple[str, dict]:
    """The schema a task option's file extends (directly or through other options) and the
    keys it sets, its own over those of the options it extends."""
    own = yaml.safe_load((TASK_DIR / f"{option}.yaml").read_text())
    parent, *rest = own.pop("defaults")
    assert rest == ["_self_"], option
    if parent.startswith("base_"):
        return parent, own
    schema, inherited = keys_set(parent)
    return schema, {**inherited, **own}


@pytest.mark.parametrize("option", TASK_OPTIONS)
def test_option_files_state_only_what_differs_from_the_defaults(
        make_cfg: Callable[..., DictConfig], option: str) -> None:
    """A task option's file extends its task's schema (or another option) and sets nothing
    the config's defaults already say; the composed task holds the defaults and what it sets."""
    schema, keys = keys_set(option)
    spec = validate(make_cfg(f"task={option}"))
    assert schema == f"base_{spec.task.name.value}"
    defaults = type(spec.task)().params()
    for key, value in keys.items():
        assert value != defaults[key], f"{option}.yaml restates the default {key}: {value}"
    assert spec.task.params() == {**defaults, **keys}


def test_task_label_names_the_option(make_cfg: Callable[..., DictConfig]) -> None:
    """The report tells task variants apart by the label computed from a run's params."""
    for option in TASK_OPTIONS:
        params = flatten(OmegaConf.to_container(make_cfg(f"task={option}"), resolve=True))
        assert names.task_label(params[names.TASK], params) == option, option


@pytest.mark.parametrize(("overrides", "line"), [
    (["task=temporal_order", "task.n_relevant=4"], "task.n_relevant: must be 2 or 3, got 4"),
    (["task=sequential_digits", "task.gap=100"], "task.gap: must be 64 for sequential_digits "
     "(one step per pixel of an 8x8 image), got 100"),
    (["task=copy", "task.gap_min=200"], "task.gap_min: must be in [1, task.gap=100], got 200"),
    (["task=copy", "task.name=adding"], "task.name: must be 'copy', the task of CopyConfig "
     "(another task is another config: task=<option>), got 'adding'"),
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


# --- every task option runs -------------------------------------------------------------------


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
    result = train_loop(task, model, make_optimizer(model, OptimConfig(lr=1e-2)),
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


def test_the_loop_evaluates_digits_on_the_test_split() -> None:
    class Recording(SequentialDigitsTask):
        splits: list[str] = []

        def sample(self, batch_size: int, generator: torch.Generator,
                   split: str = "train") -> Batch:
            self.splits.append(split)
            return super().sample(batch_size, generator, split)

    task = Recording(SequentialDigitsConfig())
    model = RecurrentModel("gru", task.input_size, task.output_size, 8)
    cfg = TrainConfig(steps=3, eval_every=10, eval_batch_size=16, batch_size=4,
                      profile_batch_size=2)
    train_loop(task, model, make_optimizer(model, OptimConfig(lr=1e-3)), Clipper("none", 1.0), cfg,
               MemoryTracker(), seed=0)
    assert task.splits == ["eval", "train", "train", "train"]


def test_final_evaluation_by_gap_adds_up_to_the_whole() -> None:
    task = make_task("copy", gap=12, gap_min=3)
    model = RecurrentModel("lstm", task.input_size, task.output_size, 8)
    cfg = TrainConfig(steps=5, eval_every=5, eval_batch_size=200, batch_size=8,
                      profile_batch_size=2)
    tracker = MemoryTracker()
    result = train_loop(task, model, make_optimizer(model, OptimConfig(lr=1e-2)),
                        Clipper("none", 1.0), cfg, tracker, seed=0)
    gaps = [row[0] for row in result.eval_by_gap]
    assert gaps == sorted(gaps) and set(gaps) <= set(range(3, 13)) and len(gaps) >= 8
    sequences = sum(row[1] for row in result.eval_by_gap)
    assert sequences == 200
    # every sequence has the same number of scored items and of loss terms, so the
    # sequence-weighted means per gap are the whole batch's figures
    loss = sum(row[1] * row[2] for row in result.eval_by_gap) / sequences
    accuracy = sum(row[1] * row[3] for row in result.eval_by_gap) / sequences
    assert loss == pytest.approx(result.final_eval_loss, rel=1e-5)
    assert accuracy == pytest.approx(result.final_eval_accuracy, rel=1e-5)
    fixed = make_task("copy", gap=12)
    model = RecurrentModel("lstm", fixed.input_size, fixed.output_size, 8)
    result = train_loop(fixed, model, make_optimizer(model, OptimConfig(lr=1e-2)),
                        Clipper("none", 1.0), cfg, MemoryTracker(), seed=0)
    assert result.eval_by_gap == []
    assert names.EVAL_BY_GAP_COLUMNS == ("gap", "sequences", "eval_loss", "eval_accuracy")


@pytest.mark.slow
def test_sweep_over_the_new_tasks_reports_each(tmp_path: Path, cli_env: dict[str, str]) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    options = "temporal_order,selective_copy,associative_recall,sequential_digits"
    command = [*TRAIN, "-m", f"task={options}",
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


