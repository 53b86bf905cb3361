"""The latency benchmarks (benchmarks/refusal.py, benchmarks/fixed_cost.py) on the smallest
sizes: they run harness-train as a user would and name what they measured."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from benchmarks import checkouts, fixed_cost, refusal


def this_checkout() -> checkouts.Code:
    return checkouts.codes(argparse.Namespace(baseline=None, baseline_label=None))[0]


def test_a_refusal_is_timed_against_importing_hydra() -> None:
    (row,) = refusal.measure([this_checkout()], ["task.gap=0"], rounds=1)
    assert row["case"] == "task.gap=0" and row["code"].startswith("this ")
    assert row["seconds"] > row["import_hydra_s"] > 0
    assert row["ratio"] == pytest.approx(row["seconds"] / row["import_hydra_s"], rel=0.02)
    assert row["met"] == (row["seconds"] <= refusal.GOAL_S)


def test_every_case_that_composes_a_job_writes_only_under_its_folder(tmp_path: Path) -> None:
    for case in refusal.CASES:
        args = refusal.case_args(case, tmp_path)
        assert args[:2] == ["-m", "harness.train"]
        if case.startswith("--"):  # Hydra's own flags: no job, nothing written
            assert args[2:] == refusal.CASES[case][0]
            continue
        assert {f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"hydra.run.dir={tmp_path}/run",
                f"hydra.sweep.dir={tmp_path}/sweep"} <= set(args)
        assert args[2] == "-m" if case == "sweep check" else args[2] != "-m"


def test_a_baseline_must_be_a_checkout(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="not a checkout of this project"):
        checkouts.codes(argparse.Namespace(baseline=tmp_path, baseline_label=None))
    (tmp_path / "harness").mkdir()
    (tmp_path / "harness" / "train.py").write_text("")
    _, baseline = checkouts.codes(argparse.Namespace(baseline=tmp_path, baseline_label="old"))
    assert baseline.label == "old" and baseline.env()["PYTHONPATH"].startswith(str(tmp_path))


def test_fixed_cost_rows_name_the_median_and_the_goal() -> None:
    code = this_checkout()
    row = fixed_cost.row(code, "in_process", [0.3, 0.05, 0.2], 3)
    assert row["seconds_per_run"] == 0.2 and row["seconds_min"] == 0.05
    assert row["met"] is False and row["goal_s"] == fixed_cost.GOAL_S
    assert fixed_cost.row(code, "cli", [9.0], 1)["met"] == ""  # imports included: no goal
