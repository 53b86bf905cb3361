"""One job end to end in-process: config -> task + model -> loop -> MLflow run."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable

import pytest
import torch
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, open_dict

from harness import names
from harness.cells import GATE_BLOCKS
from harness.lifecycle.identity import Job, choices_of, job_of, run_name, varying_keys
from harness.schema import PROJECT_ROOT, register
from harness.train import train


@pytest.mark.parametrize("task", ["copy", "adding", "delayed_recall"])
def test_run_is_logged_with_params_metrics_tags_and_artifacts(
        make_cfg: Callable[..., DictConfig], store_uri: str, task: str) -> None:
    cfg = make_cfg(f"task={task}", "task.gap=6", "model=gru", "clip=norm", "clip.threshold=0.5",
                   "seed=3", "experiment_name=unit")
    result = train(cfg)
    client = MlflowClient(store_uri)
    runs = client.search_runs([client.get_experiment_by_name("unit").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name == f"{task}-gru-tanh-norm0.5-gap6-s3"
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params[names.GAP] == "6" and params[names.MODEL] == "gru"
    assert params[names.CLIP_MODE] == "norm" and params[names.CLIP_THRESHOLD] == "0.5"
    assert params["train.steps"] == "20" and params[names.SEED] == "3"
    tags = run.data.tags
    assert tags[names.STATUS] == result.status
    assert len(tags[names.CONFIG_HASH]) == 12 and tags[names.GIT_COMMIT]
    metrics = run.data.metrics
    assert metrics[names.FINAL_EVAL_ACCURACY] == pytest.approx(result.final_eval_accuracy)
    assert metrics[names.STEPS_RUN] == result.steps_run
    assert metrics[names.CHANCE_ACCURACY] > 0
    # diagnostics: fitted profile summary, spectral radius per GRU gate block, update gate
    for key in (names.GRAD_REACH, names.UPDATE_GATE_MEAN, names.GRAD_NORM_POST_CLIP_MAX,
                *(names.block_key(names.SPECTRAL_RADIUS, 0, b) for b in GATE_BLOCKS["gru"])):
        assert key in metrics, key
    assert metrics[names.GRAD_NORM_POST_CLIP_MAX] <= 0.5 * (1 + 1e-4)
    # every logged point arrived, with its step
    history = client.get_metric_history(run.info.run_id, names.TRAIN_LOSS)
    assert [m.step for m in history] == list(range(5, result.steps_run + 1, 5))
    evals = client.get_metric_history(run.info.run_id, names.EVAL_ACCURACY)
    assert [m.step for m in evals][0] == 0 and len(evals) >= 2
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {names.CONFIG_ARTIFACT, names.GRAD_PROFILE_ARTIFACT} <= artifacts
    profile_text = client.download_artifacts(run.info.run_id, names.GRAD_PROFILE_ARTIFACT)
    with open(profile_text) as handle:
        rows = list(csv.DictReader(io.StringIO(handle.read())))
    assert tuple(rows[0]) == names.PROFILE_COLUMNS
    seq_len = 6 + 20 if task == "copy" else 6 if task == "adding" else 6 + 2
    steps = sorted({int(r["step"]) for r in rows})
    assert steps[0] == 0 and steps[-1] == result.steps_run
    assert len(rows) == len(steps) * seq_len


def test_same_config_same_hash_and_same_result(make_cfg: Callable[..., DictConfig],
                                               store_uri: str) -> None:
    """A seed reproduces a run exactly on CPU; the hash ignores where the run is stored."""
    first = train(make_cfg("task.gap=4", "experiment_name=repeat"))
    second = train(make_cfg("task.gap=4", "experiment_name=repeat", "train.threads=2",
                            "force=true"))
    assert first.final_eval_loss == second.final_eval_loss
    client = MlflowClient(store_uri)
    runs = client.search_runs([client.get_experiment_by_name("repeat").experiment_id])
    assert len({r.data.tags[names.CONFIG_HASH] for r in runs}) == 1


def test_a_finished_config_is_skipped_unless_forced(make_cfg: Callable[..., DictConfig],
                                                    store_uri: str) -> None:
    first = train(make_cfg("task.gap=4", "experiment_name=skip"))
    again = train(make_cfg("task.gap=4", "experiment_name=skip", "train.threads=2"))
    client = MlflowClient(store_uri)
    experiment = client.get_experiment_by_name("skip").experiment_id
    runs = client.search_runs([experiment])
    assert len(runs) == 1  # thread count is not part of a run's identity
    assert again.status == first.status and again.final_eval_loss == first.final_eval_loss
    assert runs[0].info.run_id in again.reason
    train(make_cfg("task.gap=5", "experiment_name=skip"))  # another config: a new run
    train(make_cfg("task.gap=4", "experiment_name=skip", "force=true"))
    assert len(client.search_runs([experiment])) == 3


def test_the_options_a_job_was_composed_from_are_params_outside_its_hash(tmp_path) -> None:
    """`model=irnn task=adding_mean` logs params `model=irnn` and `task=adding_mean` beside the
    flattened config; the same config spelled key by key is the same run (same hash)."""
    register()

    def job(*overrides: str) -> Job:
        with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
        choices = choices_of(cfg.hydra)
        with open_dict(cfg):
            del cfg["hydra"]
        return job_of(cfg, choices)

    by_option = job("model=irnn", "task=adding_mean", "clip=norm", "task.gap=7")
    by_keys = job("model=rnn", "model.activation=relu", "model.init=identity", "task=adding",
                  "task.variant=mean", "clip=norm", "task.gap=7")
    assert (by_option.params["model"], by_option.params[names.TASK_LABEL],
            by_option.params["clip"], by_option.params["optim"]) == \
        ("irnn", "adding_mean", "norm", "adam")
    assert "experiment" not in by_option.params  # no preset chosen
    assert (by_keys.params["model"], by_keys.params[names.TASK_LABEL]) == ("rnn", "adding")
    assert by_option.hash_ == by_keys.hash_
    assert by_option.name == "adding_mean-rnn-relu-identity-norm1-gap7-s0"
    assert {k: v for k, v in by_option.params.items() if k not in names.CHOICE_PARAMS} == \
        {k: v for k, v in by_keys.params.items() if k not in names.CHOICE_PARAMS}


def composed_job(*overrides: str, axes: tuple[str, ...] = ()) -> Job:
    """The job of these overrides as a sweep's check composes it (no store, no training)."""
    register()
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    choices = choices_of(cfg.hydra)
    with open_dict(cfg):
        del cfg["hydra"]
    return job_of(cfg, choices, axes)


def test_a_run_name_shows_its_gap_range_and_its_sweeps_varying_keys() -> None:
    """`task.gap_min=1 task.gap=60` is `gap1-60`, not a fixed gap of 60; the keys a sweep
    varies (lr, hidden size) appear in the name unless it shows them already (the clip
    threshold, the model); keys only another task or cell has are not axes."""
    assert composed_job("task.gap_min=1", "task.gap=60", "model=gru").name == \
        "delayed_recall-gru-tanh-noclip-gap1-60-s0"
    grid = [composed_job(f"optim.lr={lr}", f"seed={seed}", "model.hidden_size=16",
                         f"model={model}", "clip=norm", f"clip.threshold={threshold}")
            for lr in (3e-3, 0.01) for seed in (0, 1) for model in ("rnn", "lstm")
            for threshold in (1, 10)]
    axes = varying_keys(grid)
    assert axes == [names.CLIP_THRESHOLD, names.LR, names.SEED]  # the cell: per task and cell
    named = [run_name(job.spec, job.params, axes) for job in grid]
    assert len(set(named)) == len(grid)
    assert "delayed_recall-rnn-tanh-norm10-lr1e-2-gap20-s1" in named
    # across tasks their own settings differ (adding has no filler), yet only the lr is shown
    mixed = [composed_job(f"task={task}", f"optim.lr={lr}") for task in ("adding",
             "delayed_recall") for lr in (1e-3, 2.5e-4)]
    assert varying_keys(mixed) == [names.LR]
    assert run_name(mixed[1].spec, mixed[1].params, varying_keys(mixed)) == \
        "adding-lstm-tanh-noclip-lr2.5e-4-gap100-s0"
    # an IRNN with SGD beside a tanh RNN with Adam: activation and init tell them apart, so
    # the optimizer and its momentum stay out of the names; two SGD rates bring the lr in
    demo = [composed_job("task=adding", "model=rnn", "optim.lr=3e-3"),
            *(composed_job("task=adding", "model=irnn", "optim=sgd", f"optim.lr={lr}")
              for lr in (0.01, 0.05))]
    axes = varying_keys(demo)
    assert [run_name(job.spec, job.params, axes) for job in demo] == [
        "adding-rnn-tanh-noclip-lr3e-3-gap100-s0",
        "adding-rnn-relu-identity-noclip-lr1e-2-gap100-s0",
        "adding-rnn-relu-identity-noclip-lr5e-2-gap100-s0"]


# Adding with a GRU at lr 0.03 is still learning at 40 steps and at 80 (end state improving):
# a run that keeps its checkpoint at both budgets.
IMPROVING = ("task=adding", "task.gap=3", "model=gru", "optim.lr=0.03",
             "train.solve_threshold=0.001")


def histories(client: MlflowClient, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """Every metric's points of a run as (step, value), in step order."""
    keys = client.get_run(run_id).data.metrics
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
            for key in keys}


def test_a_continued_run_equals_a_longer_run_bit_for_bit(
        make_cfg: Callable[..., DictConfig], store_uri: str, tmp_path) -> None:
    """A run still improving at 40 steps, continued to 80 (`frontier.continue_to=80`) in the
    same MLflow run, logs exactly the points a run given 80 steps from the start logs (and
    none twice), ends with the same weights and optimizer state, and keeps its identity."""
    short = make_cfg(*IMPROVING, "train.steps=40", "experiment_name=continued")
    first = train(short)
    assert first.end_state == names.IMPROVING
    checkpoints = tmp_path / "checkpoints"
    (kept,) = (checkpoints / "continued").glob("*.pt")  # the state at step 40 is kept
    continued = train(make_cfg(*IMPROVING, "train.steps=40", "experiment_name=continued",
                               "frontier.continue_to=80"))
    longer = train(make_cfg(*IMPROVING, "train.steps=80", "experiment_name=longer"))
    assert continued.end_state == longer.end_state == names.IMPROVING
    assert continued.steps_run == longer.steps_run == 80
    client = MlflowClient(store_uri)
    (ours,) = client.search_runs([client.get_experiment_by_name("continued").experiment_id])
    (theirs,) = client.search_runs([client.get_experiment_by_name("longer").experiment_id])
    assert ours.data.params["train.steps"] == "40"  # its identity: the config it started as
    assert ours.data.tags[names.STEPS_BUDGET] == "80" and names.STEPS_BUDGET not in \
        theirs.data.tags
    assert ours.data.tags[names.CONFIG_HASH] == kept.stem
    mine, reference = histories(client, ours.info.run_id), histories(client, theirs.info.run_id)
    for key, points in mine.items():
        assert len({step for step, _ in points}) == len(points), f"{key}: a step twice"
    # Every point at a step equals the longer run's, except the summary the run logged when
    # it first ended at step 40 (its final metrics then; the latest are at step 80).
    summary = set(first.summary_metrics()) | {names.CHANCE_LOSS, names.CHANCE_ACCURACY}
    assert mine.keys() == reference.keys()
    for key in mine.keys() - {names.WALL_TIME_S}:  # a time, not a result
        extra = [(40, v) for s, v in mine[key] if s == 40] if key in summary else []
        assert [p for p in mine[key] if p not in extra] == reference[key], key
    ours_state = torch.load(checkpoints / "continued" / kept.name, weights_only=False)
    (theirs_file,) = (checkpoints / "longer").glob("*.pt")
    theirs_state = torch.load(theirs_file, weights_only=False)
    assert ours_state["step"] == theirs_state["step"] == 80
    for key, value in theirs_state["model"].items():
        assert torch.equal(ours_state["model"][key], value), key
    assert repr(ours_state["optimizer"]) == repr(theirs_state["optimizer"])
    assert torch.equal(ours_state["train_gen"], theirs_state["train_gen"])
    # the same command again: its budget reached, nothing to continue (skipped, no new points)
    again = train(make_cfg(*IMPROVING, "train.steps=40", "experiment_name=continued",
                           "frontier.continue_to=80"))
    assert again.steps_run == 80 and "already finished" in again.reason
    assert histories(client, ours.info.run_id) == mine
