"""Uncertainty that fits the sample: Wilson intervals, clipped bands, seed dots for few seeds."""

from __future__ import annotations

import pandas as pd
import pytest
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.figure import Figure

from harness import names
from harness.report import tables
from harness.report.load import LABEL, RUN_ID
from harness.report.plotting import SEED_POINTS_MAX, ci_lines


@pytest.mark.parametrize(("k", "n", "low", "high"), [
    (0, 3, 0.0, 0.5615),
    (3, 3, 0.4385, 1.0),
    (1, 2, 0.0945, 0.9055),
    (5, 10, 0.2366, 0.7634),
    (0, 0, 0.0, 1.0),
])
def test_wilson_interval_known_values(k: int, n: int, low: float, high: float) -> None:
    got = tables.wilson_interval(k, n)
    assert got == pytest.approx((low, high), abs=5e-4)
    assert 0.0 <= got[0] <= k / max(n, 1) <= got[1] <= 1.0


def test_wilson_interval_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError, match="4 successes out of 3 trials"):
        tables.wilson_interval(4, 3)


def test_mean_ci_clips_to_the_range() -> None:
    frame = pd.DataFrame({"g": ["a"] * 3 + ["b"] * 3,
                          "v": [1.0, 1.0, 0.7, 0.0, 0.0, 0.3]})
    table = tables.mean_ci(frame, ["g"], "v", tables.ACCURACY_BOUNDS)
    assert table["ci95_high"].max() <= 1.0
    assert table["ci95_low"].min() >= 0.0
    unclipped = tables.mean_ci(frame, ["g"], "v")
    assert unclipped["ci95_high"].max() > 1.0  # the t interval itself leaves [0, 1]
    assert unclipped["ci95_low"].min() < 0.0


def _draw(n_seeds: int) -> tuple[int, int]:
    """(bands, dots) that ci_lines draws for one label at two gaps with n_seeds each."""
    raw = pd.DataFrame({
        LABEL: ["m"] * (2 * n_seeds),
        names.GAP: [10] * n_seeds + [20] * n_seeds,
        "v": [0.1 * (i % 5) for i in range(2 * n_seeds)],
    })
    table = tables.mean_ci(raw, [LABEL, names.GAP], "v", tables.ACCURACY_BOUNDS)
    ax = Figure().subplots()
    ci_lines(ax, table, names.GAP, {"m": "red"}, {"m": "o"}, raw=raw, value="v")
    bands = sum(isinstance(c, PolyCollection) for c in ax.collections)
    dots = sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))
    return bands, dots


def test_few_seeds_are_dots_without_band() -> None:
    assert _draw(3) == (0, 6)
    assert _draw(SEED_POINTS_MAX) == (0, 2 * SEED_POINTS_MAX)


def test_many_seeds_get_a_band_without_dots() -> None:
    assert _draw(SEED_POINTS_MAX + 3) == (1, 0)


def test_heatmap_panel_range_is_robust_and_never_empty() -> None:
    import numpy as np

    from harness.report.sections.gradients import panel_range

    values = np.concatenate([np.linspace(-5.0, -1.0, 100), [-300.0, np.nan, -np.inf]])
    low, high = panel_range(values)
    assert -5.0 < low < -4.8 and -1.2 < high < -1.0  # the one extreme cell does not set it
    assert panel_range(np.array([np.nan])) == (0.0, 1.0)
    assert panel_range(np.array([2.0, 2.0])) == (1.5, 2.5)


def test_solve_rate_figure_draws_the_wilson_interval(tmp_path, monkeypatch) -> None:
    """The figure's error bars are the CSV's Wilson bounds; failed jobs are not trials."""
    from matplotlib.collections import LineCollection

    from harness.report.sections import solved

    statuses = {("a", 10): [names.SOLVED] * 3, ("a", 20): [names.SOLVED, names.UNSOLVED,
                                                            names.DIVERGED, names.FAILED],
                ("b", 10): [names.UNSOLVED] * 3, ("b", 20): [names.UNSOLVED, "missing"]}
    runs = pd.DataFrame([{names.TASK_LABEL: "copy", LABEL: label, names.GAP: gap,
                          names.STATUS: status}
                         for (label, gap), listed in statuses.items() for status in listed])
    drawn: list[Figure] = []
    monkeypatch.setattr(solved, "save_png", lambda fig, path: drawn.append(fig))
    table = solved.solve_rate_vs_gap(runs, {"a": "red", "b": "blue"}, {"a": "o", "b": "s"},
                                     "x", tmp_path / "rate.png")
    rows = {(r[LABEL], r[names.GAP]): r for r in table.to_dict("records")}
    assert [(rows[k][tables.N_SOLVED], rows[k][tables.N_RUNS]) for k in sorted(rows)] == [
        (3, 3), (1, 3), (0, 3), (0, 1)]
    assert (rows[("a", 10)][tables.SOLVE_RATE_LOW], rows[("b", 10)][tables.SOLVE_RATE_HIGH]) \
        == pytest.approx((0.4385, 0.5615), abs=5e-4)
    (ax,) = [a for a in drawn[0].axes if a.get_visible()]
    bars = [c for c in ax.collections if isinstance(c, LineCollection)]
    spans = sorted((round(float(s[0][1]), 6), round(float(s[1][1]), 6))
                   for c in bars for s in c.get_segments())
    expected = sorted((round(float(r[tables.SOLVE_RATE_LOW]), 6),
                       round(float(r[tables.SOLVE_RATE_HIGH]), 6)) for r in rows.values())
    assert spans == expected
    assert "Wilson 95% interval" in drawn[0]._suptitle.get_text()


def test_solve_rates_without_a_result_run_are_empty() -> None:
    runs = pd.DataFrame({names.TASK_LABEL: ["copy"], LABEL: ["a"], names.GAP: [10],
                         names.STATUS: [names.FAILED]})
    table = tables.solve_rates(runs, [names.TASK_LABEL, LABEL, names.GAP])
    assert table.empty and list(table.columns)[-5:] == list(tables.SOLVE_RATE_COLUMNS)


@pytest.mark.parametrize("n_seeds", [1, 2])
def test_no_t_band_with_fewer_than_three_seeds(n_seeds: int) -> None:
    """A Student-t interval over one or two values is never drawn: each seed is a dot."""
    bands, dots = _draw(n_seeds)
    assert bands == 0
    assert dots == 2 * n_seeds


def _bands(fig: Figure) -> int:
    """fill_between bands drawn anywhere in the figure (heatmaps draw none: QuadMesh)."""
    return sum(isinstance(c, PolyCollection) for ax in fig.axes for c in ax.collections)


def test_variable_gap_accuracy_has_no_band_with_two_runs(tmp_path, monkeypatch) -> None:
    """Two runs per gap bin: every run's accuracy a dot, no t band (one was drawn at every n)."""
    from harness.report.sections import accuracy

    runs = pd.DataFrame({RUN_ID: ["r0", "r1"], names.TASK_LABEL: ["copy"] * 2,
                         LABEL: ["a"] * 2, names.CHANCE_ACCURACY: [0.1] * 2})
    raw = pd.DataFrame({RUN_ID: ["r0", "r0", "r1", "r1"], "gap": [10, 20, 10, 20],
                        "eval_accuracy": [1.0, 0.5, 0.8, 0.1],
                        accuracy.SEQUENCES: [50, 50, 50, 50]})
    table = accuracy.eval_by_gap_table(runs, raw)
    assert table[tables.N].tolist() == [2, 2]
    drawn: list[Figure] = []
    monkeypatch.setattr(accuracy, "save_png", lambda fig, path: drawn.append(fig))
    accuracy.eval_by_gap(table, raw, runs, {"a": "red"}, {"a": "o"}, "x", tmp_path / "v.png")
    assert _bands(drawn[0]) == 0
    (ax,) = [a for a in drawn[0].axes if a.get_visible()]
    dots = sorted(tuple(map(float, p)) for c in ax.collections
                  if isinstance(c, PathCollection) for p in c.get_offsets())
    assert dots == [(10.0, 0.8), (10.0, 1.0), (20.0, 0.1), (20.0, 0.5)]
