"""The benchmarks package (benchmarks/) on tiny sizes: each mode runs and measures what it says,
and results files keep their rows when a benchmark brings new columns."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from benchmarks import __main__ as entry
from benchmarks import batched, common, frontier, overhead, profile, sweep

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_overhead_rows_have_every_variant_and_ratio() -> None:
    (row,) = overhead.measure(gap=3, hidden=8, batch_size=4, steps=2, rounds=1,
                              models=(("gru", "tanh"),))
    for variant in overhead.VARIANTS:
        assert row[f"steps_per_s_{variant}"] > 0, variant
    assert row["harness_over_bare"] == pytest.approx(
        row["steps_per_s_harness"] / row["steps_per_s_bare"], rel=0.01, abs=1e-3)


def test_batched_rows_are_consistent() -> None:
    rows = batched.table(hidden=8, batch=4, per_round=1, rounds=2, cells=("gru",), gaps=(3,),
                         ks=(2,), variants=("eager",))
    assert [row["k"] for row in rows] == [2]
    (row,) = rows
    for key in ("ms_separate", "ms_eager", "sgemm_gflops"):
        assert row[key] > 0, key
    assert 0 <= row["sgemm_share_eager"] < 1  # rounded to 0.001: tiny here
    assert row["factor_eager_min"] <= row["factor_eager"] <= row["factor_eager_max"]
    assert row["factor_eager"] == pytest.approx(row["ms_separate"] / row["ms_eager"], rel=0.02)


def test_batched_driver_rows_time_both_layouts_with_and_without_evaluations() -> None:
    rows = batched.driver_table(hidden=8, batch=4, steps=3, rounds=1, cells=("rnn",),
                                gaps=(3,), ks=(2,))
    assert [row["eval"] for row in rows] == [100, "none"]
    for row in rows:
        assert row["ms_separate"] > 0 and row["ms_batched"] > 0
        assert row["factor"] == pytest.approx(row["ms_separate"] / row["ms_batched"], rel=0.02)


def test_profile_times_every_part_once() -> None:
    row = profile.profile_run("lstm", "tanh", gap=5, hidden=8, batch_size=4, steps=20,
                              mlflow=False)
    shares = {part: row[f"share_{part}"] for part in (*profile.PROFILE_PARTS, "python")}
    # Every part of the loop was reached through its wrapper...
    for part in profile.PROFILE_PARTS:
        assert shares[part] > 0, part
    # ...and nested calls (the evaluator's forward, the diagnostics' backward) are counted
    # once, in the outer part: the parts never add up to more than the wall time.
    assert shares["python"] >= 0
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-3)


def test_op_profile_shows_fewer_ops_when_batched() -> None:
    """K separate RNN runs issue the per-time-step ops K times; the batched model once."""
    row = batched.op_profile("rnn", gap=5, hidden=8, batch=4, k=4, steps=2)
    assert row["ops_per_step_batched"] < row["ops_per_step_separate"] / 2
    assert row["top_op_separate"].startswith("aten::")


def test_frontier_cost_counts_runs_against_the_grid() -> None:
    rows = frontier.frontier_cost(trials=20)
    assert len(rows) == 12
    for row in rows:
        assert row["grid_runs"] == 24
        assert 0 < row["share_of_grid"] < 1
        assert 0.5 <= row["same_answer"] <= 1


def test_frontier_labels_match_the_sweeper() -> None:
    assert frontier.configuration_label("rnn,gru", "gru") == "model=gru"
    assert frontier.configuration_label("rnn", "rnn") == "(defaults)"


def test_sweep_layouts_and_disagreements() -> None:
    assert sweep.layout_overrides("off") == ["train.batch_members=off"]
    assert sweep.layout_overrides("auto/8") == ["train.batch_members=auto",
                                                "train.batch_max=8"]
    with pytest.raises(ValueError):
        sweep.layout_overrides("auto")
    a = {"h1": ("solved", "rnn", "10", "0"), "h2": ("unsolved", "gru", "20", "1")}
    b = {"h1": ("solved", "rnn", "10", "0"), "h2": ("solved", "gru", "20", "1")}
    assert sweep.disagreements(a, a) == []
    assert sweep.disagreements(a, b) == ["model=gru gap=20 seed=1: unsolved vs solved"]
    assert sweep.disagreements(a, {}) == [
        "model=rnn gap=10 seed=0: solved vs missing",
        "model=gru gap=20 seed=1: unsolved vs missing"]


def test_sweep_flops_count_the_runs_steps() -> None:
    runs = [{"cell": "rnn", "gap": "10", "steps_run": "100.0"},
            {"cell": "lstm", "gap": "20", "steps_run": "50"}]
    expected = 100 * sweep.run_flops("rnn", 10, 64, 32) + 50 * sweep.run_flops("lstm", 20, 64, 32)
    assert sweep.sweep_flops(runs, hidden=64, batch=32) == pytest.approx(expected)
    # 4 gate blocks against 1; the readout is the same
    assert 3 < sweep.run_flops("lstm", 20, 64, 32) / sweep.run_flops("rnn", 20, 64, 32) < 4


def test_results_rows_keep_old_columns(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    common.append_rows(path, [{"a": 1, "b": 2}])
    common.append_rows(path, [{"a": 3, "b": 4}])
    common.append_rows(path, [{"a": 5, "c": 6}])
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [list(row.values()) for row in rows] == [["1", "2", ""], ["3", "4", ""],
                                                    ["5", "", "6"]]


def test_sitting_writes_machine_columns_first(tmp_path: Path) -> None:
    sitting = common.Sitting.start("tiny", 1)
    assert sitting.sgemm_gflops > 0
    sitting.add({"x": 1})
    path = sitting.write(tmp_path)
    assert path == tmp_path / "tiny.csv"
    with path.open(newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert list(row)[:3] == ["threads", "date", "commit"]
    assert row["x"] == "1" and float(row["load"]) >= 0
    assert common.Sitting.start("tiny", 1).write(None) is None


def test_entry_point_lists_and_refuses(capsys: pytest.CaptureFixture[str]) -> None:
    assert entry.main([]) == 0
    assert "python -m benchmarks.overhead" in capsys.readouterr().out
    assert entry.main(["nonesuch"]) == 2
    for module in entry.BENCHMARKS.values():
        __import__(module)
