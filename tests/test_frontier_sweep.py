"""`harness-train -m hydra/sweeper=frontier` end to end: real jobs through the joblib launcher,
the answer on the sweep's parent run, reuse on a rerun, resume after a kill, bad input."""

from __future__ import annotations

import csv
import io
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from helpers.cli import TRAIN
from mlflow.tracking import MlflowClient

from harness import names
from harness.frontier import solve_curve
from hydra_plugins.frontier_sweeper._impl import fitted

TINY = ["task=delayed_recall", "model=rnn", "model.hidden_size=8", "train.steps=20",
        "train.batch_size=8", "train.eval_every=10", "train.log_every=5",
        "train.eval_batch_size=32", "train.profile_batch_size=4", "train.threads=1",
        "frontier.gap_min=2", "frontier.gap_max=8", "report.on_multirun_end=false"]
# Two configurations with known outcomes: a threshold every run meets at its first
# evaluation (held up to the top rung), and one no run meets in 20 steps (fails at once).
AXES = ["train.solve_threshold=0.01,1.0"]
EXPECTED = {  # configuration -> (gap_held, held k/n, gap_failed, probed levels)
    "train.solve_threshold=0.01": ("8", "3/3", "", "2:SS 8:SSS"),
    "train.solve_threshold=1.0": ("", "/", "2", "2:FFF"),  # confirmed with all 3 seeds
}


def command(tmp_path: Path, *extra: str) -> list[str]:
    return [*TRAIN, "-m", "hydra/sweeper=frontier", *TINY,
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"hydra.sweep.dir={tmp_path}/sweep",
            f"train.checkpoint_dir={tmp_path}/ckpt", *extra]


def run(tmp_path: Path, env: dict[str, str], *extra: str, expect: int = 0
        ) -> subprocess.CompletedProcess:
    done = subprocess.run(command(tmp_path, *extra), cwd=tmp_path, env=env, text=True,
                          capture_output=True, timeout=600)
    assert done.returncode == expect, (done.stdout + done.stderr)[-3000:]
    return done


def all_runs(tmp_path: Path) -> list:
    if not (tmp_path / "mlflow.db").exists():
        return []
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("default")
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


def job_runs(tmp_path: Path) -> list:
    return [r for r in all_runs(tmp_path) if r.data.tags.get(names.RUN_KIND) != names.SWEEP_KIND]


def answer(table: str) -> dict[str, tuple[str, str, str, str]]:
    return {row["configuration"]: (row["gap_held"], f"{row['held_solved']}/{row['held_seeds']}",
                                   row["gap_failed"], row["probes"])
            for row in csv.DictReader(io.StringIO(table))}


def parent_table(tmp_path: Path) -> tuple[str, dict[str, float], dict[str, str]]:
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run_id = (tmp_path / "sweep" / "sweep_run_id").read_text().strip() \
        if (tmp_path / "sweep" / "sweep_run_id").exists() else None
    experiment = client.get_experiment_by_name("default")
    sweeps = [r for r in client.search_runs([experiment.experiment_id])
              if r.data.tags.get(names.RUN_KIND) == names.SWEEP_KIND]
    parent = next(r for r in sweeps if run_id is None or r.info.run_id == run_id) \
        if run_id else sorted(sweeps, key=lambda r: r.info.start_time)[-1]
    path = client.download_artifacts(parent.info.run_id, names.FRONTIER_ARTIFACT,
                                     str(tmp_path))
    return Path(path).read_text(), parent.data.metrics, parent.data.tags


@pytest.mark.slow
def test_frontier_sweep_through_joblib_and_rerun_reuses_every_probe(
        tmp_path: Path, cli_env: dict[str, str]) -> None:
    first = run(tmp_path, cli_env, *AXES, "hydra.launcher.n_jobs=2")
    assert answer((tmp_path / "sweep" / "frontier.csv").read_text()) == EXPECTED
    rows = list(csv.DictReader(io.StringIO((tmp_path / "sweep" / "frontier.csv").read_text())))
    assert tuple(rows[0]) == names.FRONTIER_COLUMNS
    # all solved / all failed: no P(solved) = 0.5 gap to fit, and the table says so by blanks
    assert all(row["p50_gap"] == row["p50_low"] == row["p50_high"] == "" for row in rows)
    assert "every outcome solved from gap 2 to 8" in first.stdout
    table, metrics, tags = parent_table(tmp_path)
    assert answer(table) == EXPECTED
    assert metrics[names.FRONTIER_RUNS] == 8 and metrics[names.FRONTIER_GRID_RUNS] == 18
    assert "2 of 3 seeds" in tags[names.FRONTIER_RULE]
    assert "8 of the full grid's 18" in first.stdout
    assert len(job_runs(tmp_path)) == 8
    # training seconds / (2 workers x wall): logged on the parent run and printed at the end
    assert 0 < metrics[names.FRONTIER_UTILIZATION] <= 1
    assert re.search(r"workers: 2, busy \d+% \(\d+ s of training in \d+ s\)", first.stdout)
    again = run(tmp_path, cli_env, *AXES, "hydra.launcher.n_jobs=2")
    assert "0 launched now, 0 continued, 8 reused" in again.stdout
    assert len(job_runs(tmp_path)) == 8  # nothing ran twice
    assert answer((tmp_path / "sweep" / "frontier.csv").read_text()) == EXPECTED


@pytest.mark.slow
def test_frontier_sweep_through_submitit_local(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """The same search through submitit's local executor, its units launched from the
    sweeper's worker threads: the same answer, and the progress lines come from the sweeper as
    each unit returns (the jobs' output goes to submitit's log files)."""
    done = run(tmp_path, cli_env, *AXES, "hydra/launcher=local")
    assert answer((tmp_path / "sweep" / "frontier.csv").read_text()) == EXPECTED
    assert "8 of the full grid's 18" in done.stdout
    assert re.search(r"^\[8\] delayed_recall-", done.stdout, re.M)


def test_the_table_gives_the_fitted_p50_gap_only_within_the_probed_gaps() -> None:
    separated = solve_curve([(5, True), (5, True), (10, False), (10, False)])
    gap, low, high = fitted(separated)
    assert gap == "7.071" and float(low) <= 7.071 <= float(high)
    assert fitted(solve_curve([(5, True), (10, True), (20, True)])) == ("", "", "")
    assert fitted(solve_curve([(5, False), (5, False), (40, True), (40, True)])) == ("", "", "")
    assert fitted(None) == ("", "", "")


@pytest.mark.slow
def test_killed_search_resumes_without_rerunning_a_finished_probe(
        tmp_path: Path, cli_env: dict[str, str]) -> None:
    victim = subprocess.Popen(
        command(tmp_path, *AXES, "hydra.launcher.n_jobs=1", "hydra.sweeper.max_batch_size=1"),
        cwd=tmp_path, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    assert victim.stdout is not None
    for line in victim.stdout:
        if line.startswith("[3] "):  # the third probe ended
            break
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=60)
    finished = {r.data.tags[names.CONFIG_HASH] for r in job_runs(tmp_path)
                if r.data.tags.get(names.STATUS) in (names.SOLVED, names.UNSOLVED)}
    assert 3 <= len(finished) < 8
    resumed = run(tmp_path, cli_env, *AXES, "hydra.launcher.n_jobs=2")
    assert f"{len(finished)} reused" in resumed.stdout
    hashes = [r.data.tags[names.CONFIG_HASH] for r in job_runs(tmp_path)
              if r.data.tags.get(names.STATUS) in (names.SOLVED, names.UNSOLVED)]
    assert len(hashes) == len(set(hashes)) == 8  # every probe finished exactly once
    assert answer((tmp_path / "sweep" / "frontier.csv").read_text()) == EXPECTED


@pytest.mark.parametrize("extra, key", [
    (["frontier.m=4"], "frontier.m"),
    (["task=sequential_digits"], "task.gap"),
    (["model.hidden_size=range(8,8)"], "model.hidden_size"),  # an empty axis
    (["seed=0,1"], "seed"),
    (["train.solve_threshold=1.01"], "train.solve_threshold"),  # every probe would be invalid
    (["+trian.steps=5"], "trian"),  # an unknown key
    (["batched_seeds=[0,1]"], "batched_seeds"),
])
def test_bad_frontier_sweeps_are_refused_in_one_line(
        tmp_path: Path, cli_env: dict[str, str], extra: list[str], key: str) -> None:
    done = run(tmp_path, cli_env, *extra, expect=2)
    lines = [line for line in done.stderr.splitlines() if line.startswith("harness-train:")]
    assert len(lines) == 1 and key in lines[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert all_runs(tmp_path) == []  # not even the sweep's parent run
