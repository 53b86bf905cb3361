"""Real Hydra multiruns in a subprocess: parallel jobs, one store, nothing lost, a report."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import BIN, OOM_HIDDEN, OOM_LIMIT, address_space_limit
from helpers.chromium import chromium, dom
from helpers.cli import TINY, TRAIN, jobs_and_sweeps, wait_for_first_job
from helpers.servers import mlflow_server, served
from mlflow.tracking import MlflowClient

from harness import names
from harness.tracking.sweep import (
    FAILED_JOBS_FILE,
    INVALID_JOBS_FILE,
    PARENT_RUN_FILE,
    UNREACHABLE_JOBS_FILE,
)

pytestmark = pytest.mark.slow
# virtual time for the MLflow UI's scripts to fetch and draw the runs (about 10 s of it)
BUDGET_MS = 20000

def job_logs(tmp_path: Path) -> str:
    """Every job log under tmp_path (Hydra appends a rerun's lines to the same job's log)."""
    return "".join(log.read_text() for log in sorted(tmp_path.glob("**/train.log")))


def multirun(tmp_path: Path, env: dict[str, str], *overrides: str, expect: int = 0,
             address_space: int | None = None) -> subprocess.CompletedProcess:
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"  # the folder does not exist yet either
    command = [*TRAIN, "-m", *TINY, f"tracking.uri={uri}",
               f"report.out_dir={tmp_path}/reports", f"hydra.sweep.dir={tmp_path}/sweep",
               f"train.checkpoint_dir={tmp_path}/checkpoints", *overrides]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600, preexec_fn=address_space_limit(address_space))
    assert done.returncode == expect, done.stderr[-3000:]
    return done


def test_parallel_sweep_from_a_new_store_loses_nothing(tmp_path: Path,
                                                       cli_env: dict[str, str]) -> None:
    # 8 jobs at once, each writing every 3 steps, into an SQLite store that does not exist yet
    done = multirun(tmp_path, cli_env, "experiment_name=par", "hydra.launcher.n_jobs=8",
                    "task=delayed_recall,adding", "task.gap=3,6", "model=rnn,lstm", "seed=0")
    client = MlflowClient(f"sqlite:///{tmp_path}/store/mlflow.db")
    runs, sweeps = jobs_and_sweeps(client, "par")
    assert len(runs) == 8 and len(sweeps) == 1
    assert len({r.info.run_name for r in runs}) == 8
    sweep = sweeps[0]
    assert sweep.info.status == "FINISHED"
    assert "task=delayed_recall,adding" in sweep.data.params[names.SWEEP_OVERRIDES]
    assert sweep.data.metrics[names.JOBS] == 8
    assert sum(sweep.data.metrics[f"{names.JOBS}_{s}"] for s in names.STATUSES) == 8
    assert any(a.path == "report" for a in client.list_artifacts(sweep.info.run_id))
    assert "Sweep: " in done.stdout
    for run in runs:
        assert run.data.tags[names.PARENT_RUN_ID] == sweep.info.run_id
        assert run.data.tags[names.SWEEP_ID] == sweep.info.run_id
        assert run.info.status == "FINISHED"
        assert run.data.tags[names.STATUS] in names.STATUSES
        steps_run = int(run.data.metrics[names.STEPS_RUN])
        history = client.get_metric_history(run.info.run_id, names.TRAIN_LOSS)
        expected = sorted({*range(3, steps_run + 1, 3), steps_run} - {0})
        assert [m.step for m in history] == expected, run.info.run_name
        evals = client.get_metric_history(run.info.run_id, names.EVAL_LOSS)
        assert [m.step for m in evals] == sorted({*range(0, steps_run + 1, 10), steps_run})
    index = tmp_path / "reports" / "par" / "index.html"
    assert index.exists()
    assert f"Report: {index}" in done.stdout
    experiment = client.get_experiment_by_name("par").experiment_id
    assert f"MLflow runs: http://127.0.0.1:5000/#/experiments/{experiment}/runs" in done.stdout
    assert "mlflow ui --backend-store-uri" in done.stdout  # what serves the SQLite store there
    # the same sweep again: every job already finished, so nothing new is created
    multirun(tmp_path, cli_env, "experiment_name=par", "hydra.launcher.n_jobs=8",
                     "task=delayed_recall,adding", "task.gap=3,6", "model=rnn,lstm", "seed=0")
    rerun, sweeps = jobs_and_sweeps(client, "par")
    assert {r.info.run_id for r in rerun} == {r.info.run_id for r in runs}
    assert len(sweeps) == 2  # the second sweep created no job
    # the jobs' own INFO lines are in their logs, not on the shared terminal
    assert job_logs(tmp_path).count("skipped, this config already finished") == 8


def test_runs_of_an_lr_by_seed_sweep_have_unique_names_showing_the_lr(
        tmp_path: Path, cli_env: dict[str, str]) -> None:
    """A sweep over lr x seed names each run with its lr (`...-lr3e-3-gap4-s0`), in the store
    and in the progress lines; a later run of another config that the sweep's naming would
    call by a taken name gets its config hash's first digits."""
    done = multirun(tmp_path, cli_env, "experiment_name=names", "task.gap=4",
                    "optim.lr=0.003,0.01", "seed=0,1", "report.on_multirun_end=false")
    client = MlflowClient(f"sqlite:///{tmp_path}/store/mlflow.db")
    runs, _ = jobs_and_sweeps(client, "names")
    expected = {f"delayed_recall-lstm-tanh-noclip-lr{lr}-gap4-s{seed}"
                for lr in ("3e-3", "1e-2") for seed in (0, 1)}
    assert {r.info.run_name for r in runs} == expected
    printed = set(re.findall(r"^\[\d/4\] (\S+) ", done.stdout, re.MULTILINE))
    assert printed == expected
    store = [f"tracking.uri=sqlite:///{tmp_path}/store/mlflow.db", "experiment_name=names",
             f"train.checkpoint_dir={tmp_path}/checkpoints", "task.gap=4", *TINY]
    for lr in (0.02, 0.05):  # single runs: nothing varies, so neither name shows its lr
        single = subprocess.run([*TRAIN, *store, f"optim.lr={lr}"], cwd=tmp_path, env=cli_env,
                                capture_output=True, text=True, timeout=300)
        assert single.returncode == 0, single.stderr[-2000:]
    runs, _ = jobs_and_sweeps(client, "names")
    singles = {r.data.params[names.LR]: r for r in runs if r.info.run_name not in expected}
    assert singles["0.02"].info.run_name == "delayed_recall-lstm-tanh-noclip-gap4-s0"
    assert singles["0.05"].info.run_name == "delayed_recall-lstm-tanh-noclip-gap4-s0-" + \
        singles["0.05"].data.tags[names.CONFIG_HASH][:6]


def test_demo_preset_searches_every_configuration(tmp_path: Path,
                                                  cli_env: dict[str, str]) -> None:
    """The demo preset's frontier search over its thirteen configurations (copy, adding with
    the IRNN clipped and not, delayed recall on variable gaps), cut down on the command line to
    one rung and one seed (the real demo: README, "The demo")."""
    done = multirun(tmp_path, cli_env, "experiment=demo", "frontier.gap_min=3",
                    "frontier.gap_max=3", "frontier.m=1", "frontier.n=1", "frontier.lrs=null")
    client = MlflowClient(f"sqlite:///{tmp_path}/store/mlflow.db")
    runs, sweeps = jobs_and_sweeps(client, "demo")
    combos = {(r.data.params[names.TASK], r.data.params[names.MODEL],
               r.data.params[names.ACTIVATION], r.data.params[names.INIT],
               r.data.params[names.CLIP_MODE], float(r.data.params[names.CLIP_THRESHOLD]),
               r.data.params[names.OPTIMIZER]) for r in runs}
    plain = ("default", "none", 1.0, "adam")
    irnn = [("adding", "rnn", "relu", "identity", mode, threshold, "sgd")
            for mode, threshold in (("none", 1.0), ("norm", 1.0), ("norm", 10.0))]
    assert combos == {("copy", "urnn", "modrelu", *plain),
                      *(("copy", model, "tanh", *plain) for model in ("lstm", "rnn")),
                      *(("adding", model, "tanh", *plain) for model in ("rnn", "lstm", "gru")),
                      *irnn, ("delayed_recall", "rnn", "relu", *plain),
                      *(("delayed_recall", model, "tanh", *plain)
                        for model in ("rnn", "lstm", "gru"))}
    assert len(runs) == 13 and {r.data.params[names.GAP] for r in runs} == {"3"}
    # delayed recall draws each sequence's gap from 1 up to the rung: its names say so
    recall = sorted(r.info.run_name for r in runs if r.data.params[names.TASK] == "delayed_recall")
    assert all("-gap1-3-" in name for name in recall), recall
    # the options each job was composed from, as typed in the preset (hydra.runtime.choices)
    assert sorted((r.data.params[names.TASK_LABEL], r.data.params["model"],
                   r.data.params["clip"]) for r in runs) == sorted([
        *(("copy", model, "none") for model in ("urnn", "lstm", "rnn")),
        *(("adding", model, "none") for model in ("rnn", "lstm", "gru", "irnn")),
        ("adding", "irnn", "norm"), ("adding", "irnn", "norm"),
        *(("delayed_recall", model, "none") for model in ("rnn", "rnn_relu", "lstm", "gru"))])
    assert {r.data.params["experiment"] for r in runs} == {"demo"}
    assert len(sweeps) == 1
    table = (tmp_path / "sweep" / "frontier.csv").read_text().splitlines()
    assert len(table) == 1 + 13, table
    assert "Frontier (" in done.stdout
    report = tmp_path / "reports" / "demo"
    for name in ("index.html", "summary.md", "runs.csv", "accuracy_vs_gap.png",
                 "grad_profile.png"):
        assert (report / name).exists(), name


def test_a_shrunken_demo_decides_a_censored_level_by_continuing_its_run(
        tmp_path: Path, cli_env: dict[str, str]) -> None:
    """The demo preset cut to two configurations on one rung and one seed, 40 steps: the GRU
    on adding at lr 0.03 is still improving at 40 steps, so its level hinges on that run, and
    the search continues it, in the same MLflow run, up to frontier.max_steps = 80; only
    there is the level censored. The uRNN's run meets its threshold at once and is left."""
    lines = ["task=adding model=gru optim.lr=0.03 train.solve_threshold=0.001",
             "task=copy model=urnn train.solve_threshold=0.01"]
    done = multirun(tmp_path, cli_env, "experiment=demo", "frontier.gap_min=3",
                    "frontier.gap_max=3", "frontier.m=1", "frontier.n=1", "train.steps=40",
                    "train.eval_every=10", "train.log_every=5", "frontier.max_steps=80",
                    "hydra.sweeper.configurations=[" + ",".join(f'"{line}"' for line in lines)
                    + "]", "report.on_multirun_end=false")
    client = MlflowClient(f"sqlite:///{tmp_path}/store/mlflow.db")
    runs, sweeps = jobs_and_sweeps(client, "demo")
    by_model = {r.data.params[names.MODEL]: r for r in runs}
    assert len(runs) == 2 and set(by_model) == {"gru", "urnn"}
    gru = by_model["gru"]
    assert gru.data.params["train.steps"] == "40"  # its identity: the config it started as
    assert gru.data.tags[names.STEPS_BUDGET] == "80"
    assert gru.data.metrics[names.STEPS_RUN] == 80
    assert gru.data.tags[names.END_STATE] == names.IMPROVING
    assert names.STEPS_BUDGET not in by_model["urnn"].data.tags
    steps = [m.step for m in client.get_metric_history(gru.info.run_id, names.EVAL_LOSS)]
    assert len(steps) == len(set(steps)) and max(steps) == 80  # no point twice
    (parent,) = sweeps
    assert parent.data.metrics[names.FRONTIER_EXTRA_STEPS] == 40
    table = {row["configuration"]: row for row in
             csv.DictReader((tmp_path / "sweep" / "frontier.csv").open())}
    (gru_row,) = [row for key, row in table.items() if "model=gru" in key]
    assert gru_row["censored_gaps"] == "3", gru_row
    assert "1 continued" in done.stdout, done.stdout[-2000:]


def test_the_printed_runs_url_opens_the_sweeps_runs_in_a_fresh_browser(
        tmp_path: Path, cli_env: dict[str, str]) -> None:
    """A real sweep's store under a real `mlflow server`: the runs URL `harness-report` prints
    opens, in headless Chromium with a fresh profile, on the runs table with the sweep's runs
    (the bare experiment link shows MLflow 3's GenAI overview instead), and a run's link in
    the report opens that run's page."""
    browser = chromium()
    multirun(tmp_path, cli_env, "experiment_name=ui", "task=adding", "task.gap=4,8",
             "model=gru", "seed=0", "report.on_multirun_end=false")
    with mlflow_server(tmp_path / "server", cli_env,
                       f"sqlite:///{tmp_path}/store/mlflow.db") as base:
        done = subprocess.run([str(BIN / "harness-report"), "--experiment", "ui",
                               "--tracking-uri", base, "--out", str(tmp_path / "reports")],
                              cwd=tmp_path, env=cli_env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        (url,) = re.findall(r"^ui in the MLflow UI: (\S+)$", done.stdout, flags=re.MULTILINE)
        runs, (sweep,) = jobs_and_sweeps(MlflowClient(base), "ui")
        assert url == f"{base}/#/experiments/{sweep.info.experiment_id}/runs"

        table = dom(browser, url, tmp_path / "profile-runs", BUDGET_MS)
        assert "<title>Runs - Experiment" in table
        assert f"<strong>{len(runs) + 1}</strong> matching runs" in table  # jobs and sweep
        assert f">{sweep.info.run_name}</span></a>" in table  # the jobs nest under it
        bare = dom(browser, url.removesuffix("/runs"), tmp_path / "profile-bare", BUDGET_MS)
        assert "<title>Overview - Experiment" in bare and "matching runs" not in bare

        page = (tmp_path / "reports" / "ui" / "index.html").read_text()
        run = runs[0]
        link = f"{base}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
        assert f'<a href="{link}">{run.info.run_name}</a>' in page
        shown = dom(browser, link, tmp_path / "profile-run", BUDGET_MS)
        assert f"<title>Run {run.info.run_id} - MLflow" in shown
        assert run.info.run_name in shown


def test_parallel_sweep_into_a_tracking_server_loses_nothing(tmp_path: Path,
                                                              cli_env: dict[str, str]) -> None:
    """tracking=server: 4 parallel jobs log through a real server with its own store."""
    with mlflow_server(tmp_path / "server", cli_env,
                       f"sqlite:///{tmp_path}/server/server.db") as base:
        command = [*TRAIN, "-m", *TINY, "tracking=server",
                   f"tracking.uri={base}", f"report.out_dir={tmp_path}/reports",
                   f"hydra.sweep.dir={tmp_path}/sweep", "experiment_name=srv",
                   f"train.checkpoint_dir={tmp_path}/checkpoints",
                   "hydra.launcher.n_jobs=4", "task=delayed_recall", "task.gap=3,5",
                   "model=rnn,gru", "seed=0"]
        done = subprocess.run(command, cwd=tmp_path, env=cli_env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        client = MlflowClient(base)
        runs, sweeps = jobs_and_sweeps(client, "srv")
        assert len(runs) == 4 and len(sweeps) == 1
        for run in runs:
            steps_run = int(run.data.metrics[names.STEPS_RUN])
            history = client.get_metric_history(run.info.run_id, names.TRAIN_LOSS)
            expected = sorted({*range(3, steps_run + 1, 3), steps_run} - {0})
            assert [m.step for m in history] == expected, run.info.run_name
            assert names.GRAD_PROFILE_ARTIFACT in {
                a.path for a in client.list_artifacts(run.info.run_id)}
        assert (tmp_path / "reports" / "srv" / "index.html").exists()


def test_a_job_that_raises_fails_alone_and_the_sweep_says_so(tmp_path: Path,
                                                              cli_env: dict[str, str]) -> None:
    """A real out-of-memory at run time (conftest.OOM_LIMIT): that job's run ends `failed` with
    its traceback; the other job finishes; the sweep exits 1 naming the failure."""
    done = multirun(tmp_path, cli_env, "experiment_name=oom", "model=rnn",
                    f"model.hidden_size=8,{OOM_HIDDEN}", "hydra.launcher.n_jobs=2", expect=1,
                    address_space=OOM_LIMIT)
    assert "1 job(s) failed" in done.stderr and "can't allocate memory" in done.stderr
    assert "a rerun runs them again, so fix the cause first" in done.stderr
    lines = (tmp_path / "sweep" / FAILED_JOBS_FILE).read_text().splitlines()
    assert len(lines) == 1 and f"model.hidden_size={OOM_HIDDEN}" in lines[0]
    assert "[2/2]" in done.stdout  # the progress lines
    client = MlflowClient(f"sqlite:///{tmp_path}/store/mlflow.db")
    runs, sweeps = jobs_and_sweeps(client, "oom")
    by_size = {r.data.params[names.HIDDEN_SIZE]: r for r in runs}
    failed, fine = by_size[str(OOM_HIDDEN)], by_size["8"]
    assert failed.info.status == "FAILED" and failed.data.tags[names.STATUS] == names.FAILED
    assert "traceback.txt" in {a.path for a in client.list_artifacts(failed.info.run_id)}
    assert fine.info.status == "FINISHED" and fine.data.tags[names.STATUS] in names.STATUSES
    assert sweeps[0].data.metrics[f"{names.JOBS}_{names.FAILED}"] == 1
    assert (tmp_path / "reports" / "oom" / "index.html").exists()


def first_run(client: MlflowClient, experiment: str, process: subprocess.Popen) -> None:
    """Wait until `process` has created its run in `experiment` (and is still running)."""
    deadline = time.monotonic() + 120
    while True:
        found = client.get_experiment_by_name(experiment)
        if found is not None and client.search_runs([found.experiment_id]):
            return
        assert process.poll() is None, "the run ended before it was seen"
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_killed_run_resumes_bit_for_bit(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """SIGKILL a run after its first checkpoint, or SIGTERM it between checkpoints (it saves
    one at the end of that step and ends `killed`); start it again: it continues in the same
    MLflow run and ends with exactly the metrics of an uninterrupted run. SIGKILL it after it
    created its run but before its first write (its first checkpoint): the same command takes
    that run over, so the config still has one run."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"

    def command(experiment: str) -> list[str]:
        return [*TRAIN, f"experiment_name={experiment}",
                "task=copy", "task.gap=20", "model=lstm", "model.hidden_size=16",
                "train.steps=1000", "train.eval_every=100", "train.log_every=10",
                "train.checkpoint_every=100", "train.threads=1", "train.batch_size=16",
                f"tracking.uri={uri}", f"train.checkpoint_dir={tmp_path}/ckpt",
                f"hydra.run.dir={tmp_path}/run-{experiment}"]

    clean = subprocess.run(command("clean"), cwd=tmp_path, env=cli_env, capture_output=True,
                           text=True, timeout=600)
    assert clean.returncode == 0, clean.stderr[-2000:]
    victim = subprocess.Popen(command("killed"), cwd=tmp_path, env=cli_env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "ckpt" / "killed").glob("*.pt")):
        assert victim.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    client = MlflowClient(uri)
    (killed,) = client.search_runs([client.get_experiment_by_name("killed").experiment_id])
    assert killed.info.status == "RUNNING" and names.STATUS not in killed.data.tags

    victim = subprocess.Popen(command("stub"), cwd=tmp_path, env=cli_env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_run(client, "stub", victim)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    (stub,) = client.search_runs([client.get_experiment_by_name("stub").experiment_id])
    assert stub.info.status == "RUNNING" and not stub.data.metrics
    assert not list((tmp_path / "ckpt" / "stub").glob("*.pt"))  # inside the window

    # SIGTERM (kill, scancel, a SLURM time limit) after the evaluation at step 200, with no
    # periodic checkpoint before the end (checkpoint_every does not change the config)
    victim = subprocess.Popen(command("term") + ["train.checkpoint_every=1000"], cwd=tmp_path,
                              env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    assert victim.stdout is not None
    for line in victim.stdout:
        if "step 200/1000" in line:
            break
    victim.send_signal(signal.SIGTERM)
    output = victim.communicate(timeout=120)[0]
    assert victim.returncode == 128 + signal.SIGTERM, output[-2000:]
    assert "the same command resumes the run" in output
    (termed,) = client.search_runs([client.get_experiment_by_name("term").experiment_id])
    assert termed.info.status == "KILLED" and termed.data.tags[names.STATUS] == names.KILLED
    assert "SIGTERM" in termed.data.tags[names.STATUS_REASON]
    (saved,) = list((tmp_path / "ckpt" / "term").glob("*.pt"))
    stopped_at = torch.load(saved, weights_only=False)["step"]
    assert 200 <= stopped_at < 1000  # saved when the signal came, not at a periodic step

    (reference,) = client.search_runs([client.get_experiment_by_name("clean").experiment_id])
    for experiment, before in (("killed", killed), ("term", termed), ("stub", stub)):
        resumed = subprocess.run(command(experiment), cwd=tmp_path, env=cli_env,
                                 capture_output=True, text=True, timeout=600)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert ("takes it over" if experiment == "stub" else "resuming run") in \
            resumed.stdout + resumed.stderr
        if experiment == "term":
            assert f"resumed from its checkpoint at step {stopped_at}" in resumed.stdout
        (after,) = client.search_runs([before.info.experiment_id])  # the same run, not a new one
        assert after.info.run_id == before.info.run_id and after.info.status == "FINISHED"
        assert after.data.tags[names.STATUS] == reference.data.tags[names.STATUS]
        for key in (names.FINAL_EVAL_LOSS, names.FINAL_EVAL_ACCURACY, names.STEPS_RUN,
                    names.GRAD_NORM_PRE_CLIP_MAX, names.BEST_EVAL_ACCURACY):
            assert after.data.metrics[key] == reference.data.metrics[key], (experiment, key)
        for key in (names.TRAIN_LOSS, names.EVAL_LOSS, names.GRAD_DECAY_RATE):
            history = [(m.step, m.value)
                       for m in client.get_metric_history(after.info.run_id, key)]
            expected = [(m.step, m.value)
                        for m in client.get_metric_history(reference.info.run_id, key)]
            assert sorted(history) == sorted(expected), (experiment, key)  # no duplicates
    assert not list((tmp_path / "ckpt").rglob("*.pt"))  # finished runs leave no checkpoint


def test_ctrl_c_mid_sweep_then_rerun_resumes_every_job(tmp_path: Path,
                                                       cli_env: dict[str, str]) -> None:
    """SIGINT to the whole sweep after each job has a checkpoint; the same command again
    resumes both jobs in their own runs, with no duplicate metric points."""
    overrides = ["experiment_name=sigint", "task=copy", "task.gap=20", "model=lstm",
                 "model.hidden_size=16", "train.steps=1000", "train.eval_every=100",
                 "train.checkpoint_every=100", "train.log_every=10", "seed=0,1"]
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    command = [*TRAIN, "-m", f"tracking.uri={uri}",
               f"report.out_dir={tmp_path}/reports", f"hydra.sweep.dir={tmp_path}/sweep",
               f"train.checkpoint_dir={tmp_path}/checkpoints", *overrides]
    log = (tmp_path / "interrupted.log").open("w")
    # SIGINT at its default in the sweep even when pytest runs where it is ignored (a
    # background job of a non-interactive shell), so Python turns it into KeyboardInterrupt
    sweep = subprocess.Popen(command, cwd=tmp_path, env=cli_env, start_new_session=True,
                             stdout=log, stderr=subprocess.STDOUT,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while len(list((tmp_path / "checkpoints" / "sigint").glob("*.pt"))) < 2:
        assert sweep.poll() is None, "the sweep ended before both jobs checkpointed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.killpg(sweep.pid, signal.SIGINT)  # Ctrl-C reaches the launcher and every job
    assert sweep.wait(timeout=120) != 0, (tmp_path / "interrupted.log").read_text()[-3000:]
    client = MlflowClient(uri)
    interrupted, parents = jobs_and_sweeps(client, "sigint")
    assert len(interrupted) == 2
    # whether a job handled Ctrl-C or joblib killed it first, nothing is left RUNNING
    for run in interrupted + parents:
        assert run.info.status == "KILLED", run.info.run_name
        assert run.data.tags[names.STATUS] == names.KILLED
    done = subprocess.run(command, cwd=tmp_path, env=cli_env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert job_logs(tmp_path).count("resumed from its checkpoint") == 2
    runs, sweeps = jobs_and_sweeps(client, "sigint")
    assert {r.info.run_id for r in runs} == {r.info.run_id for r in interrupted}
    finished = [s for s in sweeps if s.info.status == "FINISHED"]
    assert len(finished) == 1 and finished[0].data.metrics[names.JOBS] == 2
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.tags[names.STATUS] in names.STATUSES
        steps = [m.step for m in client.get_metric_history(run.info.run_id, names.TRAIN_LOSS)]
        assert steps == sorted(set(steps)) == list(range(10, 1001, 10))


def test_kill_9_of_a_sweep_before_its_jobs_wrote_leaves_one_run_per_config(
        tmp_path: Path, cli_env: dict[str, str]) -> None:
    """SIGKILL to the whole sweep (launcher and workers) once both jobs have created their runs
    and before either wrote anything (with checkpoints every 1,000 steps, a 1,000-step run
    writes its metrics only as it ends). The same command closes the dead sweep and its jobs'
    runs, then each job takes its config's empty run over: one run per config, none beside."""
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    command = [*TRAIN, "-m", f"tracking.uri={uri}", f"report.out_dir={tmp_path}/reports",
               f"hydra.sweep.dir={tmp_path}/sweep", f"train.checkpoint_dir={tmp_path}/ckpt",
               "experiment_name=stubs", "task=copy", "task.gap=20", "model=lstm",
               "model.hidden_size=16", "train.steps=1000", "train.eval_every=100",
               "train.checkpoint_every=1000", "train.log_every=10", "hydra.launcher.n_jobs=2",
               "report.on_multirun_end=false", "seed=0,1"]
    sweep = subprocess.Popen(command, cwd=tmp_path, env=cli_env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (tmp_path / "sweep" / PARENT_RUN_FILE).exists():  # the store exists from here
        assert sweep.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    client = MlflowClient(uri)  # not before: opening a store creates it, racing the sweep
    while True:
        if len(jobs_and_sweeps(client, "stubs")[0]) == 2:
            break
        assert sweep.poll() is None, "the sweep ended before both jobs created their runs"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(sweep.pid, signal.SIGKILL)
    sweep.wait()
    stubs, _ = jobs_and_sweeps(client, "stubs")
    assert all(r.info.status == "RUNNING" and not r.data.metrics for r in stubs), \
        [(r.info.status, sorted(r.data.metrics)) for r in stubs]  # killed inside the window
    done = subprocess.run(command, cwd=tmp_path, env=cli_env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs, sweeps = jobs_and_sweeps(client, "stubs")
    assert {r.info.run_id for r in runs} == {r.info.run_id for r in stubs}
    assert sorted(s.info.status for s in sweeps) == ["FINISHED", "KILLED"]
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.tags[names.STATUS] in names.STATUSES
        steps = [m.step for m in client.get_metric_history(run.info.run_id, names.TRAIN_LOSS)]
        assert steps == list(range(10, int(run.data.metrics[names.STEPS_RUN]) + 1, 10))


def test_a_tracking_server_outage_longer_than_the_wait_is_a_transient_fault(
        tmp_path: Path, cli_env: dict[str, str]) -> None:
    """A real `mlflow server` stopped mid-sweep for longer than tracking.wait_s (2 s), then
    started again on the same port and store. The jobs that met the outage end as "tracking
    server unreachable", one line each, no traceback, listed as such (not as invalid or failed
    jobs); the sweep exits 1 saying a rerun resumes them; the same command then finishes every
    config, each in exactly one run, with no metric point twice."""
    configs = 6
    with served(tmp_path / "server", cli_env, f"sqlite:///{tmp_path}/server/server.db") as server:
        command = [*TRAIN, "-m", "tracking=server", f"tracking.uri={server.url}",
                   "tracking.wait_s=2", f"hydra.sweep.dir={tmp_path}/sweep",
                   f"train.checkpoint_dir={tmp_path}/ckpt", "experiment_name=outage",
                   "report.on_multirun_end=false", "hydra.launcher.n_jobs=2",
                   "model.hidden_size=8", "train.batch_size=8", "train.eval_batch_size=32",
                   "train.profile_batch_size=4", "train.steps=400", "train.eval_every=100",
                   "train.log_every=10", "train.checkpoint_every=50", "train.threads=1",
                   "train.batch_members=off",  # six jobs, so that the outage meets some
                   "seed=" + ",".join(str(seed) for seed in range(configs))]
        sweep = subprocess.Popen(command, cwd=tmp_path, env=cli_env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_for_first_job(sweep, tmp_path / "sweep", timeout=300)
        server.stop()  # after the first job ended: the others meet the outage
        time.sleep(15)  # tracking.wait_s and MLflow's own retries of a call, well past
        server.start()
        out, err = sweep.communicate(timeout=600)
        assert sweep.returncode == 1, err[-3000:]
        assert "Traceback" not in out + err, (out + err)[-3000:]
        stopped = [line for line in out.splitlines()
                   if "job stopped, tracking server" in line and "unreachable" in line]
        assert stopped, out[-3000:]
        listed = (tmp_path / "sweep" / UNREACHABLE_JOBS_FILE).read_text().splitlines()
        assert len(listed) == len(stopped), listed
        assert not (tmp_path / "sweep" / INVALID_JOBS_FILE).exists()
        assert not (tmp_path / "sweep" / FAILED_JOBS_FILE).exists()
        assert f"{len(listed)} job(s) stopped because the tracking server did not answer " \
               "within tracking.wait_s" in err
        assert "once the server is back, the same command resumes them" in err

        again = subprocess.run(command, cwd=tmp_path, env=cli_env, capture_output=True,
                               text=True, timeout=600)
        assert again.returncode == 0, again.stderr[-3000:]
        client = MlflowClient(server.url)
        runs, _ = jobs_and_sweeps(client, "outage")
        assert sorted(Counter(r.data.tags[names.CONFIG_HASH] for r in runs).values()) == \
            [1] * configs
        for run in runs:
            assert run.info.status == "FINISHED" and run.data.tags[names.STATUS] in names.STATUSES
            steps = [m.step for m in client.get_metric_history(run.info.run_id,
                                                               names.TRAIN_LOSS)]
            assert steps == list(range(10, int(run.data.metrics[names.STEPS_RUN]) + 1, 10))
