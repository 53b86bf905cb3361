"""The frontier section of the report, on a real MLflow SQLite store whose answers are known.

Experiment `frontier-exp` holds what a frontier sweep leaves (hydra/sweeper=frontier): the
probe runs, and a parent run with frontier.csv, frontier_probes.csv (written by the sweeper's
own CSV writer) and the frontier_rule tag. Task delayed_recall with noise filler (report task
label `delayed_recall_noise`; the sweep's own `task` column says `delayed_recall`, so the
label can only come from the probes' runs), ladder 5..160, 2 of 3 seeds, lr 0.01:

- `model=gru` (gru-tanh-noclip): 5:SS 20:SS 80:SSS 160:FFF -> held 80 (3/3), 160 failed;
- `model=lstm` (lstm-tanh-noclip): 5:SS 10:SSS 20:SUF -> held 10 (3/3), 20 censored (its
  seed 1 was still improving);
- `model=rnn` and `model=rnn model.activation=relu`: 5:SS 10:SSS 20:FFF -> held 10, 20 failed.

An older frontier sweep (no probes artifact) answered `model=gru` too (held 20: replaced by
the newer answer) and `model=gru clip=norm` (only it did: kept, named by its overrides).
Experiment `plain-exp` has a grid sweep and no frontier: no frontier section at all.
Experiment `frontier-grads-exp` (GRAD_CONFIGS) is a frontier whose probes logged gradient
profiles of known values (`_profile`): the ReLU RNN without clipping (held 10, 20 failed) and
with norm clipping (held 20, 40 failed), and the GRU (held 20; its probes at 40 logged none).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from markupsafe import escape
from matplotlib.figure import Figure
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from harness import names
from harness.report import build_report, frontier_grads, held
from harness.report import frontier as frontier_
from harness.report.load import LABEL
from harness.report.plotting import DPI, save_png
from harness.report.sections import frontier as frontier_section
from harness.tracking.links import run_url
from harness.tracking.run import csv_text

EXP, PLAIN, BEYOND, GRADS = "frontier-exp", "plain-exp", "beyond-exp", "frontier-grads-exp"
TASK, LABEL_TASK = "delayed_recall", "delayed_recall_noise"
LR = 0.01
RULE = ("a gap holds when >= 2 of 3 seeds solve it (seeds added only while undecided); bracket "
        "up 2 rung(s) at a time, then bisect; targets per-seed success rate 0.50; boundary "
        "levels confirmed with all seeds; lr: optim.lr fixed at 0.01")
OLD_RULE = "a gap holds when >= 1 of 1 seeds solve it; lr: optim.lr fixed at 0.01"
GRU, LSTM = ("gru", "tanh", "none", 1.0), ("lstm", "tanh", "none", 1.0)
RNN, RELU = ("rnn", "tanh", "none", 1.0), ("rnn", "relu", "none", 1.0)
# configuration key -> (model config, probed levels, gap_held, k, n, gap_failed, censored)
CONFIGS = {
    "model=gru": (GRU, "5:SS 20:SS 80:SSS 160:FFF", 80, 3, 3, 160, ""),
    "model=lstm": (LSTM, "5:SS 10:SSS 20:SUF", 10, 3, 3, 20, "20"),
    "model=rnn": (RNN, "5:SS 10:SSS 20:FFF", 10, 3, 3, 20, ""),
    "model=rnn model.activation=relu": (RELU, "5:SS 10:SSS 20:FFF", 10, 3, 3, 20, ""),
}
CLIPPED = ("rnn", "relu", "norm", 1.0)
# Experiment `frontier-grads-exp`: the ReLU RNN without and with clipping, and the GRU, whose
# probes logged gradient profiles (`_profile`) decaying at these rates per step of lag.
GRAD_CONFIGS = {
    "model=rnn_relu": (RELU, "5:SS 10:SSS 20:FFF", 10, 3, 3, 20, ""),
    "model=rnn_relu clip=norm": (CLIPPED, "5:SS 10:SS 20:SSS 40:FFF", 20, 3, 3, 40, ""),
    "model=gru": (GRU, "5:SS 20:SSS 40:FFF", 20, 3, 3, 40, ""),
}
GRAD_RATES = {"model=rnn_relu": 0.2, "model=rnn_relu clip=norm": 0.05, "model=gru": 0.01}
PROFILE_STEP = 500
GRID = 18  # 6 rungs x 3 seeds
P50 = {"model=gru": ("113.1", "90.52", "141.2")}  # the sweeper's fitted P(solved) = 0.5 gap
OUTCOME = {"S": "solved", "F": "failed", "U": "undecided"}
# The headline's rows: largest gap held first, plain names, each row's rule (the two sweeps'
# rules differ): the frontier's answers, never the every-seed rule's.
HEADLINE = (
    f"**{LABEL_TASK}**\n\n"
    "| configuration | gap held (seeds) | what stopped it | rule |\n"
    "| --- | --- | --- | --- |\n"
    "| GRU | 80 (3/3) | gap 160 failed (0/3 seeds solved) | 2 of 3 seeds |\n"
    "| model=gru clip=norm | 40 (2/3) | gap 80 failed (0/3 seeds solved) | 1 of 1 seed |\n"
    "| LSTM | 10 (3/3) | gap 20 censored: still improving at the budget's end (1/3 seeds "
    "solved) | 2 of 3 seeds |\n"
    "| ReLU RNN | 10 (3/3) | gap 20 failed (0/3 seeds solved) | 2 of 3 seeds |\n"
    "| tanh RNN | 10 (3/3) | gap 20 failed (0/3 seeds solved) | 2 of 3 seeds |\n\n"
    "Gap held: 2 of 3 seeds: a gap holds when >= 2 of 3 seeds solve it (seeds added only while "
    "undecided) (frontier sweep frontier-new); 1 of 1 seed: a gap holds when >= 1 of 1 seeds "
    "solve it (frontier sweep frontier-old).")


def _probe_run(client: MlflowClient, exp_id: str, parent: str, config: tuple, gap: int,
               seed: int, letter: str) -> str:
    model, activation, mode, threshold = config
    status = names.SOLVED if letter == "S" else names.UNSOLVED
    end_state = {"S": names.SOLVED, "F": names.PLATEAU, "U": names.IMPROVING}[letter]
    run_id = client.create_run(
        exp_id, run_name=names.run_name(TASK, *config, gap, seed),
        tags={names.STATUS: status, names.STATUS_REASON: "ok", names.END_STATE: end_state,
              names.SWEEP_ID: parent, names.PARENT_RUN_ID: parent}).info.run_id
    params = {names.TASK: TASK, "task.filler": "noise", names.GAP: gap, names.MODEL: model,
              names.ACTIVATION: activation, names.INIT: "default", names.CLIP_MODE: mode,
              names.CLIP_THRESHOLD: threshold, names.SEED: seed, names.LR: LR}
    accuracy = 1.0 if letter == "S" else (0.6 if letter == "U" else 0.2)
    metrics = {names.FINAL_EVAL_ACCURACY: accuracy, names.FINAL_EVAL_LOSS: 2.0 * (1.1 - accuracy),
               names.CHANCE_ACCURACY: 0.125, names.CHANCE_LOSS: 2.0, names.STEPS_RUN: 500.0,
               names.WALL_TIME_S: 3.0}
    if letter == "S":
        metrics[names.STEPS_TO_SOLVE] = 100.0 + gap
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()],
                     metrics=[Metric(k, v, 0, 500) for k, v in metrics.items()])
    client.set_terminated(run_id)
    return run_id


def _parent(client: MlflowClient, exp_id: str, name: str, start: int,
            overrides: str = "hydra/sweeper=frontier task=delayed_recall_noise") -> str:
    run_id = client.create_run(exp_id, run_name=name, start_time=start,
                               tags={names.RUN_KIND: names.SWEEP_KIND}).info.run_id
    client.log_batch(run_id, params=[Param(names.SWEEP_OVERRIDES, overrides)])
    return run_id


def _frontier_sweep(client: MlflowClient, exp_id: str, name: str, start: int,
                    configs: dict[str, tuple],
                    profile: Callable[[str, str, int, int], None] | None = None) -> str:
    """A frontier sweep's parent run with its probe runs, frontier.csv and probes artifact;
    `profile(run_id, configuration key, gap, seed)` logs what else a probe run should carry."""
    parent = _parent(client, exp_id, name, start)
    rows, probe_rows = [], []
    for key, (config, levels, gap_held, k, n, failed, censored) in configs.items():
        runs = 0
        for level in levels.split():
            gap, letters = level.split(":")
            for seed, letter in enumerate(letters):
                run_id = _probe_run(client, exp_id, parent, config, int(gap), seed, letter)
                if profile is not None:
                    profile(run_id, key, int(gap), seed)
                end_state = {"S": names.SOLVED, "F": names.PLATEAU, "U": names.IMPROVING}[letter]
                probe_rows.append((key, TASK, LR, int(gap), seed,
                                   names.SOLVED if letter == "S" else names.UNSOLVED,
                                   end_state, OUTCOME[letter], run_id))
                runs += 1
        rows.append((key, TASK, LR, gap_held, k, n, failed, censored, levels, runs, GRID,
                     *P50.get(key, ("", "", ""))))
    client.log_text(parent, csv_text(names.FRONTIER_COLUMNS, rows), names.FRONTIER_ARTIFACT)
    client.log_text(parent, csv_text(names.FRONTIER_PROBE_COLUMNS, probe_rows),
                    names.FRONTIER_PROBES_ARTIFACT)
    client.set_tag(parent, names.FRONTIER_RULE, RULE)
    client.set_terminated(parent)
    return parent


def _profile(client: MlflowClient, run_id: str, key: str, gap: int, seed: int) -> None:
    """grad_profile.csv of a probe of GRAD_CONFIGS: at PROFILE_STEP, on the last layer (1),
    (1 + seed) * exp(-rate * lag) for lags 0..gap + 5 (two positions per lag, both that
    value); step 0 and layer 0 hold other values, which the section must not use. A gru
    probe at gap 40 logs no profile; every probe logs its final grad_decay_rate, -rate."""
    rate = GRAD_RATES[key]
    if key == "model=gru" and gap == 40:
        return
    rows = []
    for step, layer in ((0, 1), (PROFILE_STEP, 0), (PROFILE_STEP, 1)):
        for lag in range(gap + 6):
            value = (1 + seed) * math.exp(-rate * lag) if (step, layer) == (PROFILE_STEP, 1) \
                else 7.0
            for t in (2 * (gap + 5 - lag), 2 * (gap + 5 - lag) + 1):
                rows.append((step, layer, t, lag, value, 0.0, 1.0))
    client.log_text(run_id, csv_text(names.PROFILE_COLUMNS, rows), names.GRAD_PROFILE_ARTIFACT)
    client.log_metric(run_id, names.GRAD_DECAY_RATE, -rate, step=PROFILE_STEP)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("frontier-store")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment(EXP, artifact_location=(root / EXP).as_uri())
    old = _parent(client, exp_id, "frontier-old", 1000)
    old_rows = [("model=gru", LABEL_TASK, LR, 20, 2, 3, 40, "", "5:SS 20:SSF 40:FFF", 8, GRID),
                ("model=gru clip=norm", LABEL_TASK, LR, 40, 2, 3, 80, "",
                 "5:SS 20:SS 40:SSF 80:FFF", 10, GRID)]
    # the older sweep's table predates the P(solved) fit columns: it must still be read
    client.log_text(old, csv_text(frontier_.REQUIRED, old_rows), names.FRONTIER_ARTIFACT)
    client.set_tag(old, names.FRONTIER_RULE, OLD_RULE)
    client.set_terminated(old)
    _frontier_sweep(client, exp_id, "frontier-new", 2000, CONFIGS)

    plain_id = client.create_experiment(PLAIN, artifact_location=(root / PLAIN).as_uri())
    grid = _parent(client, plain_id, "grid", 1000, "task=delayed_recall_noise task.gap=10,20")
    client.set_terminated(grid)
    for config in (GRU, RNN):
        for gap in (10, 20):
            for seed in (0, 1):
                _probe_run(client, plain_id, grid, config, gap, seed,
                           "S" if config == GRU or gap == 10 else "F")

    # the top of the ladder held: gap_failed is empty ("beyond the ladder")
    beyond_id = client.create_experiment(BEYOND, artifact_location=(root / BEYOND).as_uri())
    top = _parent(client, beyond_id, "frontier-top", 3000)
    top_probes = [("model=gru", TASK, LR, gap, seed, names.SOLVED, names.SOLVED, "solved",
                   _probe_run(client, beyond_id, top, GRU, gap, seed, "S"))
                  for gap, seeds in ((5, 2), (20, 3)) for seed in range(seeds)]
    client.log_text(top, csv_text(names.FRONTIER_COLUMNS, [
        ("model=gru", TASK, LR, 20, 3, 3, "", "", "5:SS 20:SSS", 5, 6, "", "", "")]),
        names.FRONTIER_ARTIFACT)
    client.log_text(top, csv_text(names.FRONTIER_PROBE_COLUMNS, top_probes),
                    names.FRONTIER_PROBES_ARTIFACT)
    client.set_tag(top, names.FRONTIER_RULE, RULE)
    client.set_terminated(top)

    grads_id = client.create_experiment(GRADS, artifact_location=(root / GRADS).as_uri())
    _frontier_sweep(client, grads_id, "frontier-grads", 4000, GRAD_CONFIGS,
                    lambda run_id, key, gap, seed: _profile(client, run_id, key, gap, seed))
    return uri


def test_a_frontier_beyond_the_ladder_renders(store: str, tmp_path: Path) -> None:
    """An empty gap_failed (the top rung held) in the table, the headline and the figure, with
    the figures drawn in worker processes (where an empty Int64 cell arrives as None)."""
    index = build_report(BEYOND, store, tmp_path, workers=2)
    summary = (index.parent / "summary.md").read_text()
    assert ("| gru-tanh-noclip | model=gru | 0.01 | 20 (3/3 seeds) | beyond the ladder (its top "
            "gap held) | - | - "
            "| 5 of 6 |") in summary
    assert (index.parent / frontier_.FRONTIER_PNG).read_bytes().startswith(b"\x89PNG")


@pytest.fixture(scope="module")
def report(store: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_report(EXP, store, tmp_path_factory.mktemp("reports"), workers=1)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_frontier_table_has_the_known_answers(report: Path) -> None:
    rows = {r[LABEL]: r for r in _rows(report.parent / frontier_.FRONTIER_CSV)}
    assert list(rows) == ["gru-tanh-noclip", "lstm-tanh-noclip", "model=gru clip=norm",
                          "rnn-relu-noclip", "rnn-tanh-noclip"]
    assert {r[names.TASK_LABEL] for r in rows.values()} == {LABEL_TASK}
    picked = ("overrides", "gap_held", "held_solved", "held_seeds", "gap_failed", "above",
              "censored_why", "censored_gaps", "runs", "grid_runs", "sweep")
    got = {label: tuple(r[c] for c in picked) for label, r in rows.items()}
    assert got == {
        # the newer sweep's answer replaced the older one (held 20)
        "gru-tanh-noclip": ("model=gru", "80", "3", "3", "160", "failed", "", "", "10", "18",
                            "frontier-new"),
        "lstm-tanh-noclip": ("model=lstm", "10", "3", "3", "20", "censored",
                             frontier_.IMPROVING_TEXT, "20", "8", "18", "frontier-new"),
        # only the older sweep answered it, and it left no probes: named by its overrides
        "model=gru clip=norm": ("model=gru clip=norm", "40", "2", "3", "80", "failed", "", "",
                                "10", "18", "frontier-old"),
        "rnn-relu-noclip": ("model=rnn model.activation=relu", "10", "3", "3", "20", "failed",
                            "", "", "8", "18", "frontier-new"),
        "rnn-tanh-noclip": ("model=rnn", "10", "3", "3", "20", "failed", "", "", "8", "18",
                            "frontier-new"),
    }
    assert float(rows["gru-tanh-noclip"]["lr"]) == LR
    assert rows["lstm-tanh-noclip"]["probes"] == "5:SS 10:SSS 20:SUF"


def test_frontier_section_figure_and_summary(store: str, report: Path) -> None:
    folder = report.parent
    assert (folder / frontier_.FRONTIER_PNG).read_bytes().startswith(b"\x89PNG")
    html = report.read_text()
    assert '<h2 id="frontier">2 Frontier</h2>' in html
    for section in ("1 Overview", "3 Findings", "4 Accuracy vs gap", "5 Largest solved gap",
                    "6 Gradients", "7 Clipping", "8 All runs"):
        assert f">{section}</h2>" in html  # the others numbered after it
    assert '<a href="#frontier">2 Frontier</a>' in html
    assert "Combined from 2 of 2 frontier sweeps (frontier-old, frontier-new)" in html
    assert "<td>80 (3/3 seeds)</td><td>160 failed</td>" in html
    assert "<td>20 censored (still improving at the budget&#39;s end)</td>" in html
    # each row's sweep links to that sweep's run in the MLflow UI
    (row,) = [r for r in _rows(folder / frontier_.FRONTIER_CSV) if r[LABEL] == "gru-tanh-noclip"]
    experiment = MlflowClient(store).get_experiment_by_name(EXP).experiment_id
    sweep = run_url(store, experiment, row[frontier_.SWEEP_RUN_ID])
    assert f'<td>10 of 18</td><td><a href="{sweep}">frontier-new</a></td>' in html
    assert f"| 10 of 18 | [frontier-new]({sweep}) |" in (folder / "summary.md").read_text()
    # both sweeps' rules, since they differ, in the section
    section = html[html.index('<h2 id="frontier">'):html.index('<h2 id="findings">')]
    assert str(escape(f"Decision rules: frontier-old: {OLD_RULE}; frontier-new: {RULE}.")) \
        in section
    # the figure stands beside the headline's rows, not in the section
    lead = html[html.index('<section class="headline with-figure">'):html.index("</section>")]
    assert 'alt="Gap frontier per configuration"' in lead
    assert html.count('alt="Gap frontier per configuration"') == 1
    assert frontier_.FRONTIER_PNG in html and frontier_.FRONTIER_CSV in html  # files list
    summary = (folder / "summary.md").read_text()
    assert "## Frontier" in summary
    assert summary.index("## Overview") < summary.index("## Frontier") < summary.index(
        "## Findings")
    assert (f"| {LABEL_TASK} | gru-tanh-noclip | model=gru | 0.01 | 80 (3/3 seeds) | 160 failed "
            f"| - | 113 (90.5-141) | 10 of 18 | [frontier-new]({sweep}) |") in summary
    assert (f"| {LABEL_TASK} | rnn-tanh-noclip | model=rnn | 0.01 | 10 (3/3 seeds) | 20 failed "
            "| - | - |") in summary  # no fit: blank in the sweeper's table
    assert f"![Gap frontier per configuration]({frontier_.FRONTIER_PNG})" in summary
    assert RULE in summary


def test_headline_says_each_configurations_frontier(report: Path) -> None:
    html = report.read_text()
    summary = (report.parent / "summary.md").read_text()
    assert summary.startswith(f"# Report: {EXP}\n\n{HEADLINE} Of the 11 runs that did not "
                              "solve within 500 steps")
    assert ("1 was still improving at the end of the budget (improving): LSTM 1 of 2") \
        in summary.split("## Overview")[0]
    # on the page: each row's label beside its plain name
    assert ('<tr><td title="gru-tanh-noclip">GRU</td><td>80 (3/3)</td><td>gap 160 failed (0/3 '
            "seeds solved)</td><td>2 of 3 seeds</td></tr>") in html


def test_other_sections_survive_uneven_seeds(report: Path) -> None:
    """Frontier probes have 2 seeds at some gaps and 3 at others: every section renders."""
    folder = report.parent
    accuracy = {(r[LABEL], r[names.GAP]): r for r in _rows(folder / "accuracy_by_gap.csv")}
    assert accuracy[("gru-tanh-noclip", "5")]["n_seeds"] == "2"
    assert accuracy[("gru-tanh-noclip", "80")]["n_seeds"] == "3"
    assert float(accuracy[("lstm-tanh-noclip", "20")][
        f"{names.FINAL_EVAL_ACCURACY}_mean"]) == pytest.approx((1.0 + 0.6 + 0.2) / 3)
    # "every seed" = the three seeds the configuration ran with: gaps probed with two of them
    # do not count, so the table agrees with the frontier's confirmed levels here
    solved = {r[LABEL]: r for r in _rows(folder / "largest_solved_gap.csv")}
    assert solved["gru-tanh-noclip"]["largest_solved_gap"] == "80"
    assert solved["lstm-tanh-noclip"]["largest_solved_gap"] == "10"
    steps = {(r[LABEL], r[names.GAP]): r for r in _rows(folder / "steps_to_solve_vs_gap.csv")}
    assert (steps[("lstm-tanh-noclip", "20")]["n_solved"],
            steps[("lstm-tanh-noclip", "20")]["n_runs"]) == ("1", "3")
    for png in ("accuracy_vs_gap.png", "accuracy_by_activation_clip.png",
                "normalized_loss_vs_gap.png", "steps_to_solve_vs_gap.png", "grad_profile.png"):
        assert (folder / png).read_bytes().startswith(b"\x89PNG")
    assert len(_rows(folder / "runs.csv")) == 10 + 8 + 8 + 8  # every probe run, no parent
    # the frontier's answer, by its rule, not the every-seed rule's
    assert (f"GRU held gap 80 on {LABEL_TASK} (3/3 seeds); above it: gap 160 failed (0/3 seeds "
            "solved). Rule: a gap holds when >= 2 of 3 seeds solve it (seeds added only while "
            "undecided).") in [r["text"] for r in _rows(folder / "findings.csv")]
    assert (solved["gru-tanh-noclip"]["gap_held"], solved["gru-tanh-noclip"]["rule"]) == (
        "80", "2 of 3 seeds")


def test_rebuild_is_byte_identical_and_drops_nothing(store: str, report: Path,
                                                     tmp_path: Path) -> None:
    again = build_report(EXP, store, tmp_path, workers=2)
    for name in (frontier_.FRONTIER_CSV, frontier_.FRONTIER_PNG, "summary.md"):
        assert (again.parent / name).read_bytes() == (report.parent / name).read_bytes(), name


def test_no_frontier_no_section(store: str, tmp_path: Path) -> None:
    index = build_report(PLAIN, store, tmp_path, workers=1)
    folder = index.parent
    assert not (folder / frontier_.FRONTIER_PNG).exists()
    assert not (folder / frontier_.FRONTIER_CSV).exists()
    html = index.read_text()
    assert "Frontier" not in html and 'id="frontier"' not in html
    for section in ("1 Overview", "2 Findings", "7 All runs"):
        assert f">{section}</h2>" in html
    assert '<section class="headline">' in html  # no figure beside the rows
    summary = (folder / "summary.md").read_text()
    assert "## Frontier" not in summary
    assert ("| GRU | 20 (2/2) | the largest gap run: what lies beyond is untested |\n"
            "| tanh RNN | 10 (2/2) | gap 20 failed (0/2 seeds solved) |\n\n"
            f"Gap held: {held.EVERY_SEED_TEXT}.") in summary


def test_a_stale_frontier_is_removed_on_rebuild(store: str, tmp_path: Path) -> None:
    index = build_report(PLAIN, store, tmp_path, workers=1)
    stale = (frontier_.FRONTIER_PNG, frontier_.FRONTIER_CSV,
             frontier_.FORMER_CSV,  # the table's name before
             frontier_grads.FRONTIER_GRAD_PNG, frontier_grads.FRONTIER_GRAD_CSV,
             frontier_grads.FRONTIER_GRAD_CURVES_CSV)
    for name in stale:
        (index.parent / name).write_bytes(b"old")
    build_report(PLAIN, store, tmp_path, workers=1)
    for name in stale:
        assert not (index.parent / name).exists(), name


def test_the_report_table_is_not_named_like_the_sweep_artifact(report: Path) -> None:
    """The sweep's frontier.csv and the report's table have different columns: one name each."""
    assert frontier_.FRONTIER_CSV != names.FRONTIER_ARTIFACT
    assert (report.parent / frontier_.FRONTIER_CSV).is_file()
    assert not (report.parent / names.FRONTIER_ARTIFACT).exists()


# --- the words, on synthetic frontier tables -----------------------------------------------


def _table(rows: list[tuple]) -> pd.DataFrame:
    """rows: (label, gap_held, k, n, gap_failed, above, censored_why)."""
    frame = pd.DataFrame(rows, columns=[LABEL, "gap_held", "held_solved", "held_seeds",
                                        "gap_failed", frontier_.ABOVE, frontier_.CENSORED_WHY])
    for column in ("gap_held", "held_solved", "held_seeds", "gap_failed"):
        frame[column] = frame[column].astype("Int64")
    return frame.assign(**{names.TASK_LABEL: "copy"})


def test_what_stopped_each_configuration_in_words() -> None:
    """Every way a frontier row can end, as the headline and the findings say it."""
    def row(gap_held: int | None, stopped: str, gap: int | None = None, k: int = 0,
            why: str = "") -> dict[str, object]:
        return {held.RULE: held.RULE_FRONTIER, held.GAP_HELD: gap_held, held.HELD_SOLVED: 2,
                held.HELD_SEEDS: 3, held.STOPPED: stopped, held.GAP_STOPPED: gap,
                held.STOPPED_SOLVED: k, held.STOPPED_SEEDS: 3, held.STOPPED_WHY: why}

    assert frontier_.held_text(row(640, held.TOP)) == "640 (2/3 seeds)"
    assert held.stopped_text(row(640, held.TOP)) == (
        "the top of the ladder: the frontier lies beyond it")
    assert held.stopped_text(row(40, held.CENSORED, 80, 1, frontier_.JOB_FAILED_TEXT)) == (
        "gap 80 censored: job failed (1/3 seeds solved)")
    assert held.stopped_text(row(40, held.FAILED, 80)) == "gap 80 failed (0/3 seeds solved)"
    assert frontier_.held_text(row(None, held.FAILED, 5)) == "none"
    assert held.stopped_text(row(None, held.FAILED, 5)) == (
        "gap 5 failed (0/3 seeds solved), the lowest gap")
    assert held.stopped_text(row(None, held.DIVERGED, 5, 0, "at step 1")) == (
        "gap 5 diverged (3/3 seeds, at step 1), the lowest gap")
    assert held.rule_mark(row(40, held.TOP) | {held.SWEEP: "s"}, {"s": RULE}) == "2 of 3 seeds"
    assert held.rule_mark(row(40, held.TOP) | {held.SWEEP: "s"}, {}) == "sweep s"


def test_probes_text_parses_into_seed_outcomes() -> None:
    assert frontier_.parse_probes("5:SS 10:SUF") == [
        (5, 0, "solved"), (5, 1, "solved"), (10, 0, "solved"), (10, 1, "undecided"),
        (10, 2, "failed")]
    assert frontier_.parse_probes(float("nan")) == []


def test_long_configuration_labels_fit_in_the_figure(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A label as long as the overrides of a clipped ReLU RNN (twice over) stays inside the
    saved figure: constrained layout alone gave up and cut it."""
    long = "model=rnn model.activation=relu clip=norm clip.threshold=10.0 " * 2
    table = _table([(long.strip(), 10, 3, 3, 20, frontier_.ABOVE_FAILED, ""),
                    ("gru-tanh-noclip", 10, 3, 3, 20, frontier_.ABOVE_FAILED, "")])
    levels = pd.DataFrame([("copy", label, gap, seed, outcome) for label in table[LABEL]
                           for gap, seed, outcome in frontier_.parse_probes("5:SS 10:SSS 20:FFF")],
                          columns=list(frontier_.LEVEL_COLUMNS))
    saved: list[Figure] = []

    def keep(fig: Figure, path: Path) -> None:
        save_png(fig, path)
        saved.append(fig)

    monkeypatch.setattr(frontier_section, "save_png", keep)
    frontier_section.frontier_figure(table, levels, {}, {}, "exp",
                                     tmp_path / frontier_.FRONTIER_PNG)
    (fig,) = saved
    fig.set_dpi(DPI)  # lay it out again at the resolution it was saved with
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    width = fig.bbox.width
    tight = fig.get_tightbbox(renderer)  # in inches
    assert 0 <= tight.x0 and tight.x1 <= fig.get_figwidth()
    texts = [t for ax in fig.axes for t in ax.get_yticklabels()]
    assert len(texts) == 2
    for text in texts:
        box = text.get_window_extent(renderer)
        assert 0 <= box.x0 and box.x1 <= width, text.get_text()


# --- gradients at the frontier ---------------------------------------------------------------


@pytest.fixture(scope="module")
def grads_report(store: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_report(GRADS, store, tmp_path_factory.mktemp("grads"), workers=1)


def _logged(key: str, lag: int) -> list[float]:
    """What `_profile` logged at `lag` on the last layer at PROFILE_STEP, per seed 0, 1, 2."""
    return [(1 + seed) * math.exp(-GRAD_RATES[key] * lag) for seed in range(3)]


def test_frontier_gradients_table_reads_the_logged_profiles(grads_report: Path) -> None:
    """At the gap held and at the first gap not held: the probe runs' final profiles read at
    lag = gap and lag 0, exactly as logged, with the runs' final grad_decay_rate."""
    g = frontier_grads
    rows = {(r[LABEL], r[g.LEVEL]): r for r in _rows(grads_report.parent / g.FRONTIER_GRAD_CSV)}
    assert list(rows) == [("gru-tanh-noclip", g.HELD), ("gru-tanh-noclip", g.NOT_HELD),
                          ("rnn-relu-noclip", g.HELD), ("rnn-relu-noclip", g.NOT_HELD),
                          ("rnn-relu-norm1", g.HELD), ("rnn-relu-norm1", g.NOT_HELD)]
    expected = {("gru-tanh-noclip", g.HELD): ("model=gru", 20, 3),
                ("rnn-relu-noclip", g.HELD): ("model=rnn_relu", 10, 3),
                ("rnn-relu-noclip", g.NOT_HELD): ("model=rnn_relu", 20, 0),
                ("rnn-relu-norm1", g.HELD): ("model=rnn_relu clip=norm", 20, 3),
                ("rnn-relu-norm1", g.NOT_HELD): ("model=rnn_relu clip=norm", 40, 0)}
    for (label, level), (key, gap, solved) in expected.items():
        row = rows[(label, level)]
        at_gap = _logged(key, gap)
        assert (int(row[g.GAP]), int(row[g.N_PROBES]), int(row[g.N_SOLVED]),
                int(row[g.N_PROFILED]), row[g.STEP_MIN], row[g.STEP_MAX]) == (
            gap, 3, solved, 3, str(PROFILE_STEP), str(PROFILE_STEP)), (label, level)
        assert float(row[g.AT_GAP]) == pytest.approx(sum(at_gap) / 3, rel=1e-12)
        assert float(row[g.AT_GAP_MIN]) == pytest.approx(min(at_gap), rel=1e-12)
        assert float(row[g.AT_GAP_MAX]) == pytest.approx(max(at_gap), rel=1e-12)
        assert float(row[g.AT_LOSS]) == pytest.approx(sum(_logged(key, 0)) / 3, rel=1e-12)
        assert float(row[g.RATIO]) == pytest.approx(math.exp(-GRAD_RATES[key] * gap), rel=1e-12)
        assert float(row[g.DECAY_MEAN]) == pytest.approx(-GRAD_RATES[key], rel=1e-12)
        assert int(row[g.DECAY_N]) == 3
    # the gru's probes at gap 40 logged no profile: counted, nothing made up
    bare = rows[("gru-tanh-noclip", g.NOT_HELD)]
    assert (bare[g.N_PROBES], bare[g.N_PROFILED], bare[g.AT_GAP], bare[g.RATIO],
            bare[g.DECAY_N]) == ("3", "0", "", "", "0")


def test_frontier_gradients_figure_and_its_curves(grads_report: Path) -> None:
    g = frontier_grads
    folder = grads_report.parent
    assert (folder / g.FRONTIER_GRAD_PNG).read_bytes().startswith(b"\x89PNG")
    curves = _rows(folder / g.FRONTIER_GRAD_CURVES_CSV)
    held = [r for r in curves if (r[LABEL], r[g.LEVEL]) == ("rnn-relu-noclip", g.HELD)]
    assert [int(r["lag"]) for r in held] == list(range(10 + 6))
    for r in held:  # the mean over seeds of the last layer at the last profiled step
        assert float(r["grad_norm"]) == pytest.approx(
            sum(_logged("model=rnn_relu", int(r["lag"]))) / 3, rel=1e-12)
        assert (r["n_runs"], r["layer"]) == ("3", "1")
    assert not [r for r in curves if (r[LABEL], r[g.LEVEL]) == ("gru-tanh-noclip", g.NOT_HELD)]
    html = grads_report.read_text()
    start, end = html.index('<h2 id="frontier">'), html.index('<h2 id="findings">')
    section = html[start:end]
    assert f"<h3>{g.TITLE}</h3>" in section and f'alt="{g.FIGURE_TITLE}"' in section
    assert ("<td>delayed_recall_noise</td><td>rnn-relu-noclip</td><td>held</td><td>10</td>"
            "<td>3 (3 solved)</td><td>3 (step 500)</td><td>0.271 (0.135-0.406)</td><td>2</td>"
            "<td>0.135</td><td>-0.2 (3)</td>") in section
    note = ("No gradient profile after step 0 (grad_profile.csv) was logged by the runs of "
            "gru-tanh-noclip at gap 40 (first not held).")
    summary = (folder / "summary.md").read_text()
    for text in (str(escape(note)), CLIP_LINE):
        assert str(escape(text)) in section
    assert note in summary and f"- {CLIP_LINE}" in summary
    assert f"![{g.FIGURE_TITLE}]({g.FRONTIER_GRAD_PNG})" in summary
    assert summary.index("## Frontier") < summary.index(f"### {g.TITLE}") < summary.index(
        "## Findings")
    for name in (g.FRONTIER_GRAD_PNG, g.FRONTIER_GRAD_CSV, g.FRONTIER_GRAD_CURVES_CSV):
        assert name in html  # files list


# From the measured numbers only: gaps held from frontier.csv, shares and rates from the logs.
CLIP_LINE = (
    f"On {LABEL_TASK}, clipping norm 1 (rnn-relu-norm1 against rnn-relu-noclip) raised the gap "
    "held from 10 (3/3 seeds) to 20 (3/3 seeds). At the distance of the gap held, ‖∂L/∂h_t‖ as "
    f"a share of its value at lag 0: {math.exp(-1):.3g} (lag 20) with clipping, "
    f"{math.exp(-2):.3g} (lag 10) without; final grad_decay_rate: -0.05 (gap 20) with, -0.2 "
    "(gap 10) without.")


def test_frontier_gradients_without_profiles_say_so_in_one_line(report: Path) -> None:
    """frontier-exp's probes logged no profiles, and its older sweep no probes artifact."""
    g = frontier_grads
    folder = report.parent
    assert not (folder / g.FRONTIER_GRAD_PNG).exists()
    assert not (folder / g.FRONTIER_GRAD_CURVES_CSV).exists()
    assert {r[g.N_PROFILED] for r in _rows(folder / g.FRONTIER_GRAD_CSV)} == {"0"}
    notes = ["No probe runs are known for model=gru clip=norm (frontier-old): the sweep logged "
             "no frontier_probes.csv.",
             "No probe run at these gaps logged a gradient profile after step 0 "
             "(grad_profile.csv): there is no profile to show."]
    summary = (folder / "summary.md").read_text()
    part = summary[summary.index(f"### {g.TITLE}"):summary.index("## Findings")]
    # no table of dashes; the notes in italics, as the page greys them
    assert part == f"### {g.TITLE}\n\n" + "\n\n".join(f"*{n}*" for n in notes) + "\n\n"
    html = report.read_text()
    for note in notes:
        assert f'<p class="none">{escape(note)}</p>' in html


def test_frontier_gradients_rebuild_is_byte_identical(store: str, grads_report: Path,
                                                      tmp_path: Path) -> None:
    g = frontier_grads
    again = build_report(GRADS, store, tmp_path, workers=2)
    for name in (g.FRONTIER_GRAD_PNG, g.FRONTIER_GRAD_CSV, g.FRONTIER_GRAD_CURVES_CSV):
        assert (again.parent / name).read_bytes() == (grads_report.parent / name).read_bytes()
