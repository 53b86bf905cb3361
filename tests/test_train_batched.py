"""`batched_seeds`: one job trains several seeds as one batched model, each logged as the run
its separate job would log (harness/train.py, harness/batched.py)."""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from helpers.cli import TRAIN
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from harness import names
from harness.batching import read_batch
from harness.schema import ConfigError
from harness.train import train, train_batched

# float32 rounding of the bmm cell vs the fused kernels (tests/test_batched.py measures it)
RTOL = 1e-5
GRU_CLIPPED = ("task=delayed_recall", "task.gap=6", "model=gru", "clip=norm",
               "clip.threshold=0.5")


def runs_by_seed(client: MlflowClient, experiment: str) -> dict[int, Run]:
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return {int(r.data.params[names.SEED]): r for r in runs}


def history(client: MlflowClient, run: Run, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))


def assert_same_logged_run(client: MlflowClient, ours: Run, theirs: Run) -> None:
    """Same name, params (but the experiment) and status; every metric at the same steps with
    values equal to float32 rounding (one eval sequence may flip on a near-tie of the argmax)."""
    assert ours.info.run_name == theirs.info.run_name
    assert {**ours.data.params, names.EXPERIMENT_NAME: ""} == \
        {**theirs.data.params, names.EXPERIMENT_NAME: ""}
    assert ours.data.tags[names.STATUS] == theirs.data.tags[names.STATUS]
    assert set(ours.data.metrics) == set(theirs.data.metrics)
    for key in (names.TRAIN_LOSS, names.EVAL_LOSS, names.GRAD_NORM_PRE_CLIP,
                names.GRAD_NORM_POST_CLIP, names.CLIP_RATE):
        a, b = history(client, ours, key), history(client, theirs, key)
        assert [s for s, _ in a] == [s for s, _ in b], key
        torch.testing.assert_close(torch.tensor([v for _, v in a], dtype=torch.float64),
                                   torch.tensor([v for _, v in b], dtype=torch.float64),
                                   rtol=RTOL, atol=0, msg=key)
    eval_accuracy = names.EVAL_ACCURACY
    a, b = history(client, ours, eval_accuracy), history(client, theirs, eval_accuracy)
    assert [s for s, _ in a] == [s for s, _ in b]
    assert all(abs(x - y) <= 1 / 32 + 1e-6 for (_, x), (_, y) in zip(a, b, strict=True))
    assert {a.path for a in client.list_artifacts(ours.info.run_id)} == \
        {a.path for a in client.list_artifacts(theirs.info.run_id)}


def test_each_member_is_logged_as_its_separate_run(make_cfg: Callable[..., DictConfig],
                                                   store_uri: str) -> None:
    results = train_batched(make_cfg(*GRU_CLIPPED, "batched_seeds=[0,1,2]",
                                     "experiment_name=batched"))
    for seed in (0, 1, 2):
        train(make_cfg(*GRU_CLIPPED, f"seed={seed}", "experiment_name=separate"))
        # the same config as a separate run with this seed: another job skips it
        assert "already finished" in train(make_cfg(*GRU_CLIPPED, f"seed={seed}",
                                                    "experiment_name=batched")).reason
    client = MlflowClient(store_uri)
    batched, separate = runs_by_seed(client, "batched"), runs_by_seed(client, "separate")
    assert sorted(batched) == [0, 1, 2]
    for (seed, run), result in zip(sorted(batched.items()), results, strict=True):
        assert run.info.status == "FINISHED"
        assert run.data.tags[names.BATCHED_SEEDS] == "0,1,2"
        assert run.data.metrics[names.STEPS_RUN] == result.steps_run
        assert_same_logged_run(client, run, separate[seed])
    # not trivially equal: the seeds differ from each other
    losses = {history(client, run, names.TRAIN_LOSS)[-1][1] for run in batched.values()}
    assert len(losses) == 3


def test_finished_members_are_skipped_and_the_rest_trained(make_cfg: Callable[..., DictConfig],
                                                           store_uri: str) -> None:
    """A member's run is the separate run of its seed: reruns and separate jobs skip it."""
    first = train_batched(make_cfg("task.gap=4", "batched_seeds=[0,1]", "experiment_name=re"))
    again = train_batched(make_cfg("task.gap=4", "batched_seeds=[1,2]", "experiment_name=re"))
    alone = train(make_cfg("task.gap=4", "seed=0", "experiment_name=re"))
    client = MlflowClient(store_uri)
    runs = runs_by_seed(client, "re")
    assert sorted(runs) == [0, 1, 2] and len(client.search_runs(
        [client.get_experiment_by_name("re").experiment_id])) == 3
    assert runs[1].info.run_id in again[0].reason  # seed 1: already finished
    assert again[0].final_eval_loss == first[1].final_eval_loss
    assert "already finished" not in again[1].reason  # seed 2: trained, alone in its batch
    assert runs[2].data.tags[names.BATCHED_SEEDS] == "1,2"
    assert runs[0].info.run_id in alone.reason


@pytest.mark.parametrize(("overrides", "message"), [
    (("batched_seeds=[0,0]",), "batched_seeds: must not repeat a seed"),
    (("batched_seeds=[]",), "batched_seeds: must list at least one seed"),
    (("batched_seeds=[0,-1]",), "batched_seeds: each seed must be in"),
    (("model=orth_rnn", "batched_seeds=[0,1]"), "'orth_rnn' is not batched"),
    (("model=gru", "model.bidirectional=true", "batched_seeds=[0,1]"), "bidirectional"),
])
def test_an_unbatchable_config_is_refused_before_any_run(
        make_cfg: Callable[..., DictConfig], store_uri: str, overrides: tuple[str, ...],
        message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        train_batched(make_cfg(*overrides, "experiment_name=bad"))
    assert MlflowClient(store_uri).get_experiment_by_name("bad") is None


@pytest.mark.slow
def test_a_stopped_batch_resumes_every_member_where_it_stopped(
        tmp_path: Path, cli_env: dict[str, str]) -> None:
    """SIGTERM mid-run: every member saves its checkpoint at the end of that step and ends
    `killed` (exit 143); the same command resumes each in its own MLflow run, and they end
    with exactly the metrics of an uninterrupted batched job."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"

    def command(experiment: str) -> list[str]:
        return [*TRAIN, f"experiment_name={experiment}",
                "task=copy", "task.gap=20", "model=rnn", "model.hidden_size=16",
                "batched_seeds=[0,1,2]", "train.steps=600", "train.eval_every=100",
                "train.log_every=10", "train.checkpoint_every=1000", "train.threads=1",
                "train.batch_size=16", f"tracking.uri={uri}",
                f"train.checkpoint_dir={tmp_path}/ckpt", f"hydra.run.dir={tmp_path}/run"]

    clean = subprocess.run(command("clean"), cwd=tmp_path, env=cli_env, capture_output=True,
                           text=True, timeout=600)
    assert clean.returncode == 0, clean.stderr[-2000:]
    victim = subprocess.Popen(command("term"), cwd=tmp_path, env=cli_env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert victim.stdout is not None
    for line in victim.stdout:
        if "step 200/600" in line:
            break
    victim.send_signal(signal.SIGTERM)
    output = victim.communicate(timeout=120)[0]
    assert victim.returncode == 128 + signal.SIGTERM, output[-2000:]
    client = MlflowClient(uri)
    killed = runs_by_seed(client, "term")
    assert sorted(killed) == [0, 1, 2]
    assert {r.data.tags[names.STATUS] for r in killed.values()} == {names.KILLED}
    saved = [torch.load(p, weights_only=False)["step"]
             for p in (tmp_path / "ckpt" / "term").glob("*.pt")]
    assert len(saved) == 3 and len(set(saved)) == 1 and 200 <= saved[0] < 600

    resumed = subprocess.run(command("term"), cwd=tmp_path, env=cli_env, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"3 members in one batch from step {saved[0]}" in resumed.stdout + resumed.stderr
    after, reference = runs_by_seed(client, "term"), runs_by_seed(client, "clean")
    for seed, run in after.items():
        assert run.info.run_id == killed[seed].info.run_id and run.info.status == "FINISHED"
        for key in (names.FINAL_EVAL_LOSS, names.STEPS_RUN, names.GRAD_NORM_PRE_CLIP_MAX):
            assert run.data.metrics[key] == reference[seed].data.metrics[key], (seed, key)
        for key in (names.TRAIN_LOSS, names.EVAL_LOSS):
            assert history(client, run, key) == history(client, reference[seed], key)
    # a checkpoint stays only where a member ended still improving: kept for a continuation
    for experiment, runs in (("clean", reference), ("term", after)):
        kept = {path.stem for path in (tmp_path / "ckpt" / experiment).glob("*.pt")}
        assert kept == {run.data.tags[names.CONFIG_HASH] for run in runs.values()
                        if run.data.tags[names.END_STATE] == names.IMPROVING}, experiment


@pytest.mark.slow
def test_a_sweep_over_batches_logs_every_member(tmp_path: Path,
                                                cli_env: dict[str, str]) -> None:
    """`batched_seeds=[0,1],[2,3]` sweeps two batches per model; the CLI refuses a bad batch
    with one line and exit status 2."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    common = ["model.hidden_size=8", "train.steps=20", "train.batch_size=8",
              "train.eval_every=10", "train.eval_batch_size=32", "train.profile_batch_size=4",
              "task.gap=4", f"tracking.uri={uri}", f"train.checkpoint_dir={tmp_path}/ckpt",
              f"report.out_dir={tmp_path}/reports", "experiment_name=sweep"]
    done = subprocess.run([*TRAIN, "-m", *common,
                           "model=rnn,gru", "batched_seeds=[0,1],[2,3]",
                           f"hydra.sweep.dir={tmp_path}/sweep"], cwd=tmp_path, env=cli_env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(uri)
    runs = [r for r in client.search_runs([client.get_experiment_by_name("sweep").experiment_id])
            if r.data.tags.get(names.RUN_KIND) != names.SWEEP_KIND]
    assert sorted((r.data.params[names.MODEL], r.data.params[names.SEED]) for r in runs) == \
        [(m, str(s)) for m in ("gru", "rnn") for s in range(4)]
    assert (tmp_path / "reports" / "sweep" / "index.html").exists()
    bad = subprocess.run([*TRAIN, *common, "model=lstm",
                          "model.bidirectional=true", "batched_seeds=[0,1]"], cwd=tmp_path,
                         env=cli_env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "harness-train: invalid config: batched_seeds: bidirectional models are not batched; "
        "train these seeds as separate jobs (seed=...)"]


@pytest.mark.slow
def test_train_batch_members_auto_groups_a_real_sweep(tmp_path: Path,
                                                      cli_env: dict[str, str]) -> None:
    """`train.batch_members=auto`: the launcher gets one job per batch; every member lands in
    MLflow as its separate job's run (same params and hash: the same sweep without batching
    creates nothing; metrics bit-identical to the separate runs'); one progress line per
    member."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    common = ["model.hidden_size=8", "train.steps=20", "train.batch_size=8",
              "train.eval_every=10", "train.eval_batch_size=32", "train.profile_batch_size=4",
              "train.log_every=5", "task=delayed_recall", "task.gap=4,5,12",
              "model=rnn,rnn_relu,gru", "seed=0,1", f"tracking.uri={uri}",
              f"train.checkpoint_dir={tmp_path}/ckpt", "report.on_multirun_end=false"]

    def sweep(experiment: str, batching: str, folder: str) -> subprocess.CompletedProcess:
        done = subprocess.run([*TRAIN, "-m", *common,
                               f"experiment_name={experiment}",
                               f"train.batch_members={batching}",
                               f"hydra.sweep.dir={tmp_path}/{folder}"], cwd=tmp_path,
                              env=cli_env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    done = sweep("batched", "auto", "auto")
    # one sequence length per batch: rnn and rnn_relu share one per gap (2 activations x 2
    # seeds), the GRU's 2 seeds one per gap
    assert len(list((tmp_path / "auto").glob("*/.hydra"))) == 6
    assert sorted(len(batch) for batch in (read_batch(p) for p in
                                           (tmp_path / "auto" / "batches").glob("*.json"))) \
        == [2, 2, 2, 4, 4, 4]
    lines = [line for line in done.stdout.splitlines() if re.match(r"\[\d+/18\] ", line)]
    assert len(lines) == 18 and lines[-1].startswith("[18/18]")
    client = MlflowClient(uri)
    batched = jobs_by_name(client, "batched")
    assert len(batched) == 18
    assert all(names.BATCH in r.data.tags and r.info.run_name in r.data.tags[names.BATCH]
               for r in batched.values())
    assert not {"batch_file", "train.batch_members", "train.batch_max"} & \
        set(next(iter(batched.values())).data.params)  # the sweep's settings, not the run's
    # the same sweep without batching, into the same experiment: every run already finished
    again = sweep("batched", "off", "off")
    assert "Sweep: 0 solved, 0 unsolved, 0 diverged, 0 failed, 0 killed" in again.stdout
    assert len(jobs_by_name(client, "batched")) == 18
    # ... and into a fresh experiment: separate runs with the members' metrics
    sweep("separate", "off", "separate")
    separate = jobs_by_name(client, "separate")
    assert set(separate) == set(batched)
    for name, run in batched.items():
        theirs = separate[name]
        assert run.data.tags[names.STATUS] == theirs.data.tags[names.STATUS], name
        params = {k: v for k, v in run.data.params.items() if k != names.EXPERIMENT_NAME}
        assert params == {k: v for k, v in theirs.data.params.items()
                          if k != names.EXPERIMENT_NAME}
        for key in (names.TRAIN_LOSS, names.EVAL_LOSS, names.GRAD_NORM_PRE_CLIP):
            assert history(client, run, key) == history(client, theirs, key), (name, key)


def jobs_by_name(client: MlflowClient, experiment: str) -> dict[str, Run]:
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    return {r.info.run_name: r for r in client.search_runs([found.experiment_id])
            if r.data.tags.get(names.RUN_KIND) != names.SWEEP_KIND}
