"""harness-bench's batched and profile modes, on tiny sizes: they run and measure what they say."""

from __future__ import annotations

import pytest

from harness import bench

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_batched_throughput_rows_are_consistent() -> None:
    rows = bench.batched_throughput(hidden=8, batch_size=4, steps=2, rounds=2,
                                    models=(("gru", "tanh"),), gaps=(3,), ks=(2,))
    assert [row["k"] for row in rows] == [2]
    for row in rows:
        for key in ("cpu_ms_per_step_separate", "cpu_ms_per_step_batched_1t",
                    "wall_ms_per_step_batched_2t", "cpu_ms_per_point_separate",
                    "cpu_ms_per_point_batched"):
            assert row[key] > 0, key
        assert row["step_factor_1t_min"] <= row["step_factor_1t"] <= row["step_factor_1t_max"]
        # runs/hour of the 2 x 1 layout, separate vs batched, differ by the run factor
        assert row["runs_per_hour_2x1_batched"] / row["runs_per_hour_2x1_separate"] == \
            pytest.approx(row["run_factor_1t"], rel=0.02)


def test_profile_times_every_part_once() -> None:
    row = bench.profile_run("lstm", "tanh", gap=5, hidden=8, batch_size=4, steps=20,
                            mlflow=False)
    shares = {part: row[f"share_{part}"] for part in (*bench.PROFILE_PARTS, "python")}
    # Every part of the loop was reached through its wrapper...
    for part in bench.PROFILE_PARTS:
        assert shares[part] > 0, part
    # ...and nested calls (the evaluator's forward, the diagnostics' backward) are counted
    # once, in the outer part: the parts never add up to more than the wall time.
    assert shares["python"] >= 0
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-3)


def test_op_profile_shows_fewer_ops_when_batched() -> None:
    """K separate RNN runs issue the per-time-step ops K times; the batched cell once."""
    row = bench.op_profile("rnn", "tanh", gap=5, hidden=8, batch_size=4, k=4, steps=2)
    assert row["ops_per_step_batched"] < row["ops_per_step_separate"] / 2
    assert row["top_op_separate"].startswith("aten::")


def test_frontier_cost_counts_runs_against_the_grid() -> None:
    from harness.bench import frontier_cost

    rows = frontier_cost(trials=20)
    assert len(rows) == 12
    for row in rows:
        assert row["grid_runs"] == 24
        assert 0 < row["share_of_grid"] < 1
        assert 0.5 <= row["same_answer"] <= 1
