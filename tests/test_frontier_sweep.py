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
from harness.frontier import solve_curve, top_gaps
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
    (["frontier.gaps=sometimes"], "frontier.gaps"),
    (["frontier.lr_every_level=true"], "frontier.lr_every_level"),  # without frontier.lrs
    (["frontier.gaps=variable", "task.gap_min=1"], "task.gap_min"),  # the sweeper sets it
])
def test_bad_frontier_sweeps_are_refused_in_one_line(
        tmp_path: Path, cli_env: dict[str, str], extra: list[str], key: str) -> None:
    done = run(tmp_path, cli_env, *extra, expect=2)
    lines = [line for line in done.stderr.splitlines() if line.startswith("harness-train:")]
    assert len(lines) == 1 and key in lines[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert all_runs(tmp_path) == []  # not even the sweep's parent run


@pytest.mark.slow
def test_variable_gap_frontier_end_to_end(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """frontier.gaps=variable: each probe trains on gaps from the task's smallest (1) up to its
    level, and its outcome is its final evaluation's longest tenth of gaps (eval_by_gap.csv)
    against the task's criterion, not its status."""
    done = run(tmp_path, cli_env, *AXES, "hydra.launcher.n_jobs=2", "frontier.gaps=variable",
               "train.eval_batch_size=256")
    rows = answer((tmp_path / "sweep" / "frontier.csv").read_text())
    assert rows["train.solve_threshold=1.0"] == EXPECTED["train.solve_threshold=1.0"]
    assert "variable gaps" in done.stdout
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    _, _, tags = parent_table(tmp_path)
    assert "variable gaps" in tags[names.FRONTIER_RULE]
    judged = 0
    for run_ in job_runs(tmp_path):
        params = run_.data.params
        assert params["task.gap_min"] == "1"
        gap = int(params[names.GAP])
        path = client.download_artifacts(run_.info.run_id, names.EVAL_BY_GAP_ARTIFACT,
                                         str(tmp_path))
        bins = [(int(r["gap"]), int(r["sequences"]), float(r["eval_loss"]),
                 float(r["eval_accuracy"])) for r in csv.DictReader(open(path))]
        assert {g for g, *_ in bins} <= set(range(1, gap + 1)) and len(bins) > 1
        accuracy, _ = top_gaps(bins, gap, 1)
        threshold = float(params["train.solve_threshold"])
        outcome = "S" if accuracy >= threshold else "F"
        level = rows[f"train.solve_threshold={params['train.solve_threshold']}"][3]
        seeds = dict(part.split(":") for part in level.split())[str(gap)]
        assert seeds[int(params[names.SEED])] == outcome
        judged += 1
    assert judged >= 6


@pytest.mark.slow
def test_every_rate_at_every_level_trains_the_rates_as_one_batch(
        tmp_path: Path, cli_env: dict[str, str]) -> None:
    """frontier.lr_every_level: both rates run at every probed level, a level's rates (and
    seeds) as members of one stacked model (tag `batch`), and the table says which rate each
    level was read at."""
    done = run(tmp_path, cli_env, *AXES, "hydra.launcher.n_jobs=2", "frontier.lrs=[0.001,0.01]",
               "frontier.lr_every_level=true")
    table = (tmp_path / "sweep" / "frontier.csv").read_text()
    rows = {row["configuration"]: row for row in csv.DictReader(io.StringIO(table))}
    assert answer(table)["train.solve_threshold=1.0"] == ("", "/", "2", "2:FFF")
    assert rows["train.solve_threshold=0.01"]["gap_held"] == "8"
    assert "at every probed level" in done.stdout
    levels: dict[tuple[str, str], set[str]] = {}
    for run_ in job_runs(tmp_path):
        params = run_.data.params
        level = (params["train.solve_threshold"], params[names.GAP])
        levels.setdefault(level, set()).add(params[names.LR])
        if params[names.SEED] in ("0", "1"):  # a level's first round: 2 rates x 2 seeds
            assert len(run_.data.tags[names.BATCH].split(",")) == 4
    assert levels == {("0.01", "2"): {"0.001", "0.01"}, ("0.01", "8"): {"0.001", "0.01"},
                      ("1.0", "2"): {"0.001", "0.01"}}
    assert len(job_runs(tmp_path)) == 9 + 6  # 2x2 + 2x2 + 1 confirmation; 2x3 failing
    for row in rows.values():  # blank where one rate was read at every level
        assert all(float(part.split(":")[1]) in (0.001, 0.01)
                   for part in row["level_lrs"].split())
