"""Overview, findings, comparison and variable-gap figure of the report, on a synthetic
MLflow store whose answers are known (tests/helpers/findings_store.py; the `findings_store`
fixture of tests/conftest.py).

Experiment `findings-a` (task delayed_recall, gaps 10/50/200, seeds 0-2):
- lstm-tanh-noclip solves every gap with every seed;
- rnn-tanh-noclip solves gap 10 with every seed and gap 50 with seed 0 only;
- rnn-relu-noclip solves gap 10 only, and diverges at gap 200 with seed 0 (step 398);
- rnn-relu-norm1 solves gaps 10 and 50 with every seed: clipping raises 10 to 50.
On copy (gaps 10/50) nothing is solved; the best final accuracy is 0.169 (lstm, gap 10,
seed 2); one copy run failed. Solved runs have accuracy 1.0, unsolved delayed-recall runs 0.3.
Two sweep parent runs launched them (the second a tuning sweep) and one run was started alone.
`findings-b` holds rnn-tanh-noclip solving up to gap 50 and an rnn-relu-noclip that ran only
there, for the comparison; some of its runs log `eval_by_gap.csv`.

`findings-frontier` (C) is a frontier sweep, 2 of 3 seeds (tests/helpers/findings_store.py,
FRONTIER_C): on delayed recall with noise the GRU holds 80 with 2 of 3 seeds while every seed
solved only gap 10; the IRNN diverges at step 1 at gap 5 without clipping and holds 20 clipped
at 1 (clip rates 40-90%, pre-clip norms 50-800; the diverged runs logged a largest pre-clip
norm of 0, as a run that diverges at step 1 does); the tanh RNN holds 10 with and without
clipping at 10, which never fires (pre-clip norms 0.3-0.4). On adding (a regression task,
solved when eval MSE / the memoryless MSE <= 0.06) the LSTM holds 80 (the top of the ladder)
and the tanh RNN 5. The GRU also ran at the lr the search did not choose, at gap 5 only.
"""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from helpers.findings_store import (
    ADDING,
    BY_GAP_ROWS,
    CHANCE_ADDING,
    COPY,
    DR,
    NOISE,
    PARAMETERS,
    RULE_C,
    SWEEP_A,
    SWEEP_B,
    TUNING,
    A,
    B,
    C,
    c_loss,
)
from mlflow.tracking import MlflowClient

from harness import names
from harness.cells import CELLS
from harness.report import build_report, configs, criteria, headline, held
from harness.report import findings as findings_
from harness.report import frontier as frontier_
from harness.report.cli import main as cli_main
from harness.report.held import frontier_rule_text
from harness.report.load import LABEL
from harness.tracking.links import experiment_url, run_url


@pytest.fixture(scope="module")
def report_a(findings_store: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_report(A, findings_store, tmp_path_factory.mktemp("reports"), workers=1)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _findings(report: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for row in _rows(report.parent / "findings.csv"):
        out.setdefault(row["kind"], []).append(row["text"])
    return out


EVERY = held.EVERY_SEED_TEXT


def test_findings_have_the_known_answers(report_a: Path) -> None:
    found = _findings(report_a)
    assert [t for t in found["gap_held"] if DR in t] == [
        f"LSTM held gap 200 on delayed_recall (3/3 seeds); above it: the largest gap run: what "
        f"lies beyond is untested. Rule: {EVERY}.",
        f"ReLU RNN clipped at 1 held gap 50 on delayed_recall (3/3 seeds); above it: gap 200 "
        f"failed (0/3 seeds solved). Rule: {EVERY}.",
        f"ReLU RNN, no clipping held gap 10 on delayed_recall (3/3 seeds); above it: gap 50 "
        f"failed (0/3 seeds solved). Rule: {EVERY}.",
        f"tanh RNN held gap 10 on delayed_recall (3/3 seeds); above it: gap 50 failed (1/3 "
        f"seeds solved). Rule: {EVERY}.",
    ]
    # configurations with the same answer share one sentence
    assert (f"LSTM and tanh RNN held no gap on copy: gap 10 failed (0/3 seeds solved), the "
            f"lowest gap. Rule: {EVERY}.") in found["gap_held"]
    assert found["clipping"] == [
        "On delayed_recall, clipping (norm 1) raised the gap ReLU RNN held from 10 (3/3 seeds) "
        "to 50 (3/3 seeds) (mean final accuracy over the 3 shared gap(s): 0.533 without, 0.767 "
        f"with clipping); diverged runs: 1 of 9 without, 0 of 9 with clipping; rule: {EVERY}."]
    assert ("On delayed_recall, the best configuration was LSTM (gap held 200 (3/3 seeds), mean "
            "final accuracy 1.000 over 9 runs) and the worst ReLU RNN, no clipping (gap held 10 "
            f"(3/3 seeds), mean final accuracy 0.562 over 8 runs); rule: {EVERY}.") \
        in found["best_worst"]
    assert ("On delayed_recall with clipping none, the gap held by model: LSTM 200 (3/3 seeds; "
            "mean final accuracy 1.000), ReLU RNN 10 (3/3 seeds; mean final accuracy 0.562), "
            f"tanh RNN 10 (3/3 seeds; mean final accuracy 0.611); rule: {EVERY}.") \
        in found["model"]
    assert found["nothing_solved"] == [
        "No run solved copy (13 runs): the best final accuracy was 0.169 (LSTM, gap 10, seed "
        "2), against a chance accuracy of 0.125."]
    assert found["divergence"] == [
        "1 of 49 runs diverged.",
        "ReLU RNN, no clipping diverged on delayed_recall in 1 of 9 runs: gap 200 seed 0 at "
        "step 398."]
    assert found["not_results"] == [
        "Not results: 1 failed run(s); at their gap and seed they count as not solved, and "
        "they add no accuracy or loss."]
    summary = (report_a.parent / "summary.md").read_text()
    html = report_a.read_text()
    for texts in found.values():
        for text in texts:
            assert f"- {text}" in summary
            assert text.replace("'", "&#39;") in html


def test_overview_axes_commands_and_compute(report_a: Path) -> None:
    axes = {r["axis"]: r["values"] for r in _rows(report_a.parent / "swept_axes.csv")}
    assert axes == {names.TASK: "copy, delayed_recall", names.GAP: "10, 50, 200",
                    names.ACTIVATION: "relu, tanh", names.MODEL: "lstm, rnn",
                    names.CLIP_MODE: "none, norm", names.SEED: "0, 1, 2",
                    names.LR: "0.001, 0.003"}  # nor are tracking.uri and task.n_symbols
    summary = (report_a.parent / "summary.md").read_text()
    assert f"- `harness-train -m {SWEEP_A}` (sweep-0, 36 runs)" in summary
    assert f"- `harness-train -m {SWEEP_B}` (sweep-1, 12 runs)" in summary
    assert f"  - tuning: {TUNING}" in summary
    assert "- 1 run(s) were started outside any sweep" in summary
    # 48 runs logged wall_time_s = 10 s; the failed run logged nothing.
    assert "- compute: 8 min 00 s of training in total (sum of `wall_time_s` over the 48 of " \
           "49 runs that logged it)" in summary
    assert "`optim.lr` also vary but are not part of the configuration label" in summary
    assert "| failed | 1 |" in summary and "| diverged | 1 |" in summary
    html = report_a.read_text()
    assert f"harness-train -m {SWEEP_A}" in html and TUNING in html
    for section in ("1 Overview", "2 Findings", "3 Accuracy vs gap", "4 Largest solved gap",
                    "5 Gradients", "6 Clipping", "7 All runs"):
        assert f">{section}</h2>" in html


def test_result_figures_data(report_a: Path) -> None:
    folder = report_a.parent
    steps = {(r[names.TASK_LABEL], r["label"], r[names.GAP]): r
             for r in _rows(folder / "steps_to_solve_vs_gap.csv")}
    rnn50 = steps[(DR, "rnn-tanh-noclip", "50")]
    assert (rnn50["n_solved"], rnn50["n_runs"], rnn50["mean"]) == ("1", "3", "150.0")
    lstm = steps[(DR, "lstm-tanh-noclip", "10")]
    assert float(lstm["mean"]) == pytest.approx(111.0)  # 110, 111, 112
    # Student-t 95% CI of (110, 111, 112): 111 ± 4.303 · 1 / sqrt(3)
    assert float(lstm["ci95_high"]) == pytest.approx(111 + 4.302653 / 3**0.5, rel=1e-5)
    heat = {(r["model_variant"], r["clip_setting"], r[names.GAP]): float(r["mean"])
            for r in _rows(folder / "clip_activation_heatmap.csv") if r[names.TASK_LABEL] == DR}
    assert heat[("rnn-relu", "norm 1", "50")] == 1.0 and heat[("rnn-relu", "none", "50")] == 0.3
    facets = _rows(folder / "accuracy_by_activation_clip.csv")
    assert {(r[names.ACTIVATION], r["clip_setting"]) for r in facets if r[names.TASK_LABEL] == DR} \
        == {("tanh", "none"), ("relu", "none"), ("relu", "norm 1")}
    loss = {(r["label"], r[names.GAP]): float(r["mean"])
            for r in _rows(folder / "normalized_loss_vs_gap.csv") if r[names.TASK_LABEL] == DR}
    assert loss[("rnn-relu-norm1", "200")] == pytest.approx(1.1 - 0.3)  # loss 2(1.1-a) / 2
    for png in ("accuracy_by_activation_clip.png", "normalized_loss_vs_gap.png",
                "steps_to_solve_vs_gap.png", "clip_activation_heatmap.png",
                "solve_rate_vs_gap.png"):
        assert (folder / png).read_bytes().startswith(b"\x89PNG")
    assert not (folder / "accuracy_by_gap_variable.png").exists()  # no run logged eval_by_gap
    # the solve rate with its Wilson interval; copy's failed job at gap 50 is not a trial
    rates = {(r[names.TASK_LABEL], r["label"], r[names.GAP]): r
             for r in _rows(folder / "solve_rate_vs_gap.csv")}
    rate = rates[(DR, "rnn-tanh-noclip", "50")]
    assert (rate["n_solved"], rate["n_runs"]) == ("1", "3")
    assert (float(rate["solve_rate_low"]), float(rate["solve_rate_high"])) == pytest.approx(
        (0.0615, 0.7923), abs=5e-4)
    assert rates[(COPY, "rnn-tanh-noclip", "50")]["n_runs"] == "3"
    assert steps[(COPY, "rnn-tanh-noclip", "50")]["n_runs"] == "3"
    html = (folder / "index.html").read_text()
    assert "Solve rate vs gap" in html and "Wilson 95% score interval" in html


def test_variable_gap_runs_get_their_figure(findings_store: str, tmp_path: Path) -> None:
    index = build_report(B, findings_store, tmp_path, workers=2)
    rows = _rows(index.parent / "accuracy_by_gap_variable.csv")
    assert [(r["gap_bin"], r["n"]) for r in rows] == [("150", "3"), ("200", "3"), ("250", "3")]
    for row, (_, sequences, _, acc) in zip(rows, BY_GAP_ROWS, strict=True):
        assert float(row["mean"]) == pytest.approx(acc - 0.1)  # seeds shift it by 0, .1, .2
        assert int(float(row["sequences"])) == 3 * sequences
    assert (index.parent / "accuracy_by_gap_variable.png").is_file()
    assert "Accuracy by gap within variable-gap runs" in index.read_text()


def test_comparison_side_by_side(findings_store: str, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["--experiment", A, "--compare", B, "--tracking-uri", findings_store,
                     "--out", str(tmp_path)]) == 0
    index = tmp_path / f"{A}_vs_{B}" / "index.html"
    assert str(index) in capsys.readouterr().out
    folder = index.parent
    solved = {(r[names.TASK_LABEL], r["label"]): r
              for r in _rows(folder / "largest_solved_gap.csv")}
    rnn = solved[(DR, "rnn-tanh-noclip")]
    assert (rnn[f"largest_solved_gap ({A})"], rnn[f"largest_solved_gap ({B})"],
            rnn["change"]) == ("10", "50", "+40")
    assert solved[(DR, "lstm-tanh-noclip")]["change"] == f"only in {A}"
    assert solved[(DR, "rnn-relu-norm1")]["change"] == "+0"
    counts = {r["status"]: r for r in _rows(folder / "runs_by_status.csv")}
    assert (counts["solved"][A], counts["solved"][B], counts["solved"]["change"]) == (
        "22", "12", "-10")  # A: lstm 9, rnn 4, relu 3, relu-norm1 6
    texts = [r["text"] for r in _rows(folder / "findings.csv")]
    assert ("rnn-tanh-noclip on delayed_recall: largest gap solved in every seed 10 in "
            f"{A}, 50 in {B}; mean final accuracy over the 3 shared gap(s) 0.611 → 0.800 "
            "(+0.189).") in texts
    experiments = {r["experiment"] for r in _rows(folder / "accuracy_by_gap.csv")}
    assert experiments == {A, B}
    html = index.read_text()
    assert html.count('src="data:image/png;base64,') == 1 and "+40" in html
    # Rebuilt from the store alone, byte for byte.
    first = {f.name: f.read_bytes() for f in folder.iterdir()}
    shutil.rmtree(folder)
    assert cli_main(["--experiment", A, "--compare", B, "--tracking-uri", findings_store,
                     "--out", str(tmp_path)]) == 0
    assert {f.name: f.read_bytes() for f in folder.iterdir()} == first


def test_every_run_and_the_header_link_into_the_mlflow_ui(findings_store: str,
                                                         report_a: Path) -> None:
    """Each run's name links to its MLflow page and the header to the experiment's runs
    table, in the page and in summary.md (a SQLite store: where `make ui` serves it)."""
    html = report_a.read_text()
    summary = (report_a.parent / "summary.md").read_text()
    experiment = MlflowClient(findings_store).get_experiment_by_name(A).experiment_id
    runs = _rows(report_a.parent / "runs.csv")
    for run in runs:
        url = run_url(findings_store, experiment, run["run_id"])
        assert f'<a href="{url}">{run["run_name"]}</a>' in html
    runs_url = experiment_url(findings_store, experiment)
    assert runs_url.endswith(f"/#/experiments/{experiment}/runs")
    assert f'<a href="{runs_url}">' in html and f"[{runs_url}]({runs_url})" in summary
    assert f"mlflow ui --backend-store-uri {findings_store} --host" in summary


# --- the headline (harness/report/headline.py), on small synthetic runs frames ---


def _runs(rows: list[tuple[str, int, int, str, str | None]], task: str = "copy",
          steps: int = 2000, criterion: str | None = None) -> pd.DataFrame:
    """rows: (label, gap, seed, status, end_state)."""
    return pd.DataFrame({
        names.TASK_LABEL: [task] * len(rows),
        LABEL: [r[0] for r in rows],
        names.GAP: [r[1] for r in rows],
        names.SEED: [r[2] for r in rows],
        names.STATUS: [r[3] for r in rows],
        names.END_STATE: pd.Series([r[4] for r in rows], dtype="string"),
        names.SUCCESS_CRITERION: [criterion] * len(rows),
        names.STEPS_RUN: [float(steps)] * len(rows),
        names.DIVERGED_STEP: [3.0 if r[3] == names.DIVERGED else None for r in rows],
    })


def _answers(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs' answers by the every-seed rule (no frontier), named by their labels."""
    return configs.named(held.held_table(runs, frontier_.no_frontiers()),
                         pd.DataFrame(columns=list(configs.COLUMNS)))


def _lead(runs: pd.DataFrame) -> headline.Lead:
    (lead,) = headline.headline(runs, _answers(runs), {}, {})
    return lead


def test_nothing_learned_all_at_chance() -> None:
    rows = [(lab, 10, s, names.UNSOLVED, names.CHANCE)
            for lab in ("lstm-tanh-noclip", "rnn-tanh-noclip") for s in range(3)]
    lead = _lead(_runs(rows))
    assert lead.task == "copy"
    assert lead.header == ("configuration", "gap held (seeds)", "what stopped it")
    assert lead.rows == tuple((lab, "none", "gap 10 failed (0/3 seeds solved), the lowest gap")
                              for lab in ("lstm-tanh-noclip", "rnn-tanh-noclip"))
    assert lead.sentences == (
        f"Gap held: {EVERY}.",
        "Of the 6 runs that did not solve within 2,000 steps, 6 were still at the memoryless "
        "loss (chance): lstm-tanh-noclip and rnn-tanh-noclip 3 of 3 each.")


def test_rows_say_what_stopped_each_configuration() -> None:
    rows = []
    for s in range(3):  # lstm: all seeds solve 10 and 20; seed 0 alone solves 40
        rows += [("lstm", 10, s, names.SOLVED, names.SOLVED),
                 ("lstm", 20, s, names.SOLVED, names.SOLVED),
                 ("lstm", 40, s, names.SOLVED if s == 0 else names.UNSOLVED,
                  names.SOLVED if s == 0 else names.IMPROVING)]
        rows += [("gru", 10, s, names.SOLVED, names.SOLVED),
                 ("gru", 20, s, names.SOLVED, names.SOLVED),
                 ("gru", 40, s, names.UNSOLVED, names.IMPROVING)]
        rows += [("rnn", 10, s, names.UNSOLVED, names.CHANCE),
                 ("rnn", 20, s, names.DIVERGED, names.DIVERGED),
                 ("rnn", 40, s, names.UNSOLVED, None)]  # an old run: no end_state tag
        rows += [("irnn", 10, s, names.DIVERGED, names.DIVERGED)]
    lead = _lead(_runs(rows, criterion="accuracy >= 0.99"))
    assert len(lead.sentences) <= headline.MAX_SENTENCES
    # largest gap held first, then by name; censored (still improving) is "not yet", never
    # "failed"
    assert lead.rows == (
        ("gru", "20 (3/3)", "gap 40 censored: still improving at the budget's end (0/3 seeds "
                            "solved)"),
        ("lstm", "20 (3/3)", "gap 40 censored: still improving at the budget's end (1/3 seeds "
                             "solved)"),
        ("irnn", "none", "gap 10 diverged (3/3 seeds, at step 3), the lowest gap"),
        ("rnn", "none", "gap 10 failed (0/3 seeds solved), the lowest gap"))
    assert lead.labels == ("gru", "lstm", "irnn", "rnn")
    limits = lead.sentences[1]
    assert limits.startswith("Of the 17 runs that did not solve within 2,000 steps, ")
    assert "3 were still at the memoryless loss (chance): rnn 3 of 9; " in limits
    assert ("5 were still improving at the end of the budget (improving): gru 3 of 3, "
            "lstm 2 of 2 (budget-limited, not evidence of failure); ") in limits
    assert "; 6 diverged: irnn 3 of 3, rnn 3 of 9; " in limits
    assert limits.endswith("; 3 had no end_state tag (the store predates it: end state "
                           "unknown): rnn 3 of 9.")
    assert lead.sentences[2] == "Solved means: accuracy >= 0.99."


def test_missing_end_state_column_is_unknown_and_markdown_joins() -> None:
    runs = _runs([("lstm", 10, 0, names.UNSOLVED, None), ("lstm", 10, 1, names.SOLVED, None)])
    runs = runs.drop(columns=[names.END_STATE, names.SUCCESS_CRITERION])
    lead = _lead(runs)
    assert lead.rows == (("lstm", "none", "gap 10 failed (1/2 seeds solved), the lowest gap"),)
    assert "1 had no end_state tag" in lead.sentences[1]
    assert headline.markdown([lead]) == (
        "**copy**\n\n| configuration | gap held (seeds) | what stopped it |\n| --- | --- | --- |"
        "\n| lstm | none | gap 10 failed (1/2 seeds solved), the lowest gap |\n\n"
        + " ".join(lead.sentences) + "\n")


def test_a_failed_job_leaves_its_gap_undecided() -> None:
    """A job that raised is not a result: its gap is censored (undecided), not failed."""
    lead = _lead(_runs([("lstm", 10, 0, names.SOLVED, names.SOLVED),
                        ("lstm", 10, 1, names.FAILED, None)]))
    assert lead.rows == (("lstm", "none", "gap 10 censored: job failed (1/2 seeds solved), the "
                                          "lowest gap"),)
    assert lead.sentences == (f"Gap held: {EVERY}.",)  # no result run failed to solve


def test_headline_columns_lr_units_and_parameters_only_where_they_say_something() -> None:
    answers = pd.DataFrame({
        names.TASK_LABEL: ["copy"] * 3, LABEL: ["a", "b", "c"],
        held.RULE: [held.RULE_EVERY_SEED] * 3, held.LR: [0.01, 0.01, 0.003],
        held.GAP_HELD: pd.array([20, 40, None], dtype="Int64"),
        held.HELD_SOLVED: pd.array([3, 3, None], dtype="Int64"),
        held.HELD_SEEDS: pd.array([3, 3, None], dtype="Int64"),
        held.STOPPED: [held.TOP, held.TOP, held.FAILED],
        held.GAP_STOPPED: pd.array([None, None, 5], dtype="Int64"),
        held.STOPPED_SOLVED: pd.array([None, None, 0], dtype="Int64"),
        held.STOPPED_SEEDS: pd.array([None, None, 3], dtype="Int64"),
        held.STOPPED_WHY: ["", "", ""], held.SWEEP: ["", "", ""],
        configs.NAME: ["GRU", "LSTM", "tanh RNN"], configs.SHORT_NAME: ["GRU", "LSTM", "tanh RNN"],
        names.HIDDEN_SIZE: pd.array([64, 64, 64], dtype="Int64"),
        names.PARAMETER_COUNT: pd.array([12_993, 17_217, None], dtype="Int64")})
    header, rows = headline.rows_of(held.ranked(answers), {})
    assert header == ("configuration", "lr", "parameters", "gap held (seeds)",
                      "what stopped it")  # the hidden size is the same everywhere
    assert rows == [("LSTM", "0.01", "17.2k", "40 (3/3)", held.TOP_TEXT[held.RULE_EVERY_SEED]),
                    ("GRU", "0.01", "13k", "20 (3/3)", held.TOP_TEXT[held.RULE_EVERY_SEED]),
                    ("tanh RNN", "0.003", "", "none",
                     "gap 5 failed (0/3 seeds solved), the lowest gap")]
    same = answers.assign(**{held.LR: 0.01, names.PARAMETER_COUNT: pd.NA,
                             names.HIDDEN_SIZE: pd.array([64, 128, 64], dtype="Int64")})
    header, _ = headline.rows_of(same, {})
    assert header == ("configuration", "units", "gap held (seeds)", "what stopped it")


def test_held_sentences_group_configurations_with_the_same_answer() -> None:
    rows = [(lab, gap, s, names.SOLVED if gap <= 20 else names.UNSOLVED, names.PLATEAU)
            for lab in ("a", "b") for gap in (10, 20, 40) for s in range(3)]
    # c solves 40 in every seed but not 20 in seed 1: held 40, with a failure below it
    rows += [("c", gap, s, names.UNSOLVED if (gap, s) == (20, 1) else names.SOLVED, None)
             for gap in (10, 20, 40) for s in range(3)]
    runs = _runs(rows)
    answers = _answers(runs)
    task = findings_.Task("copy", runs, criteria.FINAL_ACCURACY, answers, {}, {})
    assert findings_.held_sentences(task) == [
        f"c held gap 40 on copy (3/3 seeds); above it: the largest gap run: what lies beyond "
        f"is untested; below it, not every seed solved gap 20. Rule: {EVERY}.",
        f"a and b held gap 20 on copy (3/3 seeds each); above it: gap 40 failed (0/3 seeds "
        f"solved). Rule: {EVERY}.",
    ]


# --- one answer per configuration, by the frontier's rule (experiment C) ---------------------


@pytest.fixture(scope="module")
def report_c(findings_store: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_report(C, findings_store, tmp_path_factory.mktemp("frontier"), workers=1)


M_OF_N = frontier_rule_text(RULE_C)


def test_one_answer_per_configuration_where_the_rules_disagree(report_c: Path) -> None:
    """The GRU holds 80 with 2 of 3 seeds at the frontier while every seed solved only gap 10:
    the headline, the findings and the table say 80, and the every-seed 10 appears only under
    its own label."""
    folder = report_c.parent
    summary = (folder / "summary.md").read_text()
    head = summary.split("## Overview")[0]
    assert "| GRU | 13k | 80 (2/3) | gap 160 failed (0/3 seeds solved) |" in head
    assert f"Gap held: {M_OF_N} (frontier sweep frontier-c)." in head
    # one row per configuration, not one for the lr choice's probes at the rate it did not
    # choose; the lr is the same in every row, so no lr column
    table = head[head.index(f"**{NOISE}**"):].split("Gap held")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ")][2:]
    assert [r.split(" | ")[0] for r in rows] == [
        "| GRU", "| IRNN clipped at 1", "| tanh RNN, no clipping", "| tanh RNN clipped at 10",
        "| IRNN, no clipping"]
    assert "lr" not in table
    found = _findings(report_c)
    assert (f"GRU held gap 80 on {NOISE} (2/3 seeds); above it: gap 160 failed (0/3 seeds "
            f"solved). Rule: {M_OF_N}.") in found["gap_held"]
    assert any("best configuration was GRU (gap held 80 (2/3 seeds)" in t
               for t in found["best_worst"])
    assert any("the gap held by model: GRU 80 (2/3 seeds;" in t for t in found["model"])
    # and no finding gives the GRU another gap
    assert not [t for texts in found.values() for t in texts
                if re.search(r"\bGRU\b[^.;]*\b10\b", t)]
    # every finding about a gap held names its rule
    for kind in ("gap_held", "best_worst", "model", "clipping"):
        for text in found.get(kind, []):
            assert "rule: " in text.lower(), text
    rows = {r[LABEL]: r for r in _rows(folder / "largest_solved_gap.csv")}
    gru = rows["gru-tanh-noclip-lr=0.01"]
    assert (gru["configuration"], gru["gap_held"], gru["held_solved"], gru["held_seeds"],
            gru["rule"], gru["largest_solved_gap"]) == ("GRU", "80", "2", "3", "2 of 3 seeds",
                                                        "10")
    assert rows["gru-tanh-noclip-lr=0.003"]["gap_held"] == ""  # the lr choice's probes
    html = report_c.read_text()
    assert "every-seed view: largest gap all seeds solved" in html
    assert ("<td>GRU</td><td>gru-tanh-noclip-lr=0.01</td><td>80 (2/3 seeds)</td>"
            "<td>2 of 3 seeds</td><td>10</td>") in html


def _mean(task: str, letters: dict[int, str]) -> float:
    """The mean normalized MSE of findings_store's probes on adding: {gap: letters}."""
    values = [c_loss(task, letter, gap, seed) / CHANCE_ADDING
              for gap, text in letters.items() for seed, letter in enumerate(text)]
    return sum(values) / len(values)


def test_a_regression_task_is_summarized_by_normalized_mse(report_c: Path) -> None:
    found = _findings(report_c)
    adding = [t for texts in found.values() for t in texts if f"on {ADDING}" in t]
    assert adding and not [t for t in adding if "accuracy" in t]
    lstm, rnn = _mean(ADDING, {5: "SS", 20: "SS", 80: "SSS"}), _mean(ADDING, {5: "SSS",
                                                                         10: "FFF"})
    assert (f"On {ADDING}, the best configuration was LSTM (gap held 80 (3/3 seeds), mean "
            f"normalized MSE {lstm:.3f} over 7 runs) and the worst tanh RNN (gap held 5 (3/3 "
            f"seeds), mean normalized MSE {rnn:.3f} over 6 runs); rule: {M_OF_N}; normalized "
            "MSE: final eval MSE / the memoryless predictor's MSE; 1 is chance.") \
        in found["best_worst"]
    heat = [r for r in _rows(report_c.parent / "clip_activation_heatmap.csv")
            if r[names.TASK_LABEL] == ADDING]
    assert {r["measure"] for r in heat} == {"final_eval_normalized_loss"}
    framed = {(r["model_variant"], r[names.GAP]) for r in heat if r["gap_held"] == "True"}
    assert framed == {("lstm-tanh", "80"), ("rnn-tanh", "5")}


def test_clipping_per_threshold_where_it_acts_and_where_it_never_fires(report_c: Path) -> None:
    rows = {(r["model"], r["clip_setting"]): r for r in _rows(report_c.parent / "clipping.csv")}
    assert set(rows) == {("IRNN", "none"), ("IRNN", "norm 1"), ("tanh RNN", "none"),
                         ("tanh RNN", "norm 10")}
    irnn, clipped = rows[("IRNN", "none")], rows[("IRNN", "norm 1")]
    # its runs diverged before any step's norm entered their maxima: no norm to show
    assert (irnn["diverged"], irnn["diverged_step_min"], irnn["gap_held"],
            irnn["grad_norm_pre_clip_max_n"]) == ("3", "1", "", "0")
    rates = [0.4, 0.65, 0.4, 0.65, 0.9, 0.4, 0.65, 0.9]  # seeds of 5:SS 20:SSS 40:FUF
    assert float(clipped["clip_rate_total_mean"]) == pytest.approx(sum(rates) / 8)
    assert (clipped["grad_norm_pre_clip_max_min"], clipped["grad_norm_pre_clip_max_max"],
            clipped["diverged"], clipped["gap_held"]) == ("50.0", "800.0", "0", "20")
    summary = (report_c.parent / "summary.md").read_text()
    part = summary[summary.index("## Clipping"):summary.index("## All runs")]
    assert ("| delayed_recall_noise | IRNN | norm 1 | 8 | 62% (40-90%) | 50-800 | 0 of 8 | "
            "20 (3/3 seeds) | 2 of 3 seeds | none |") in part
    assert ("| delayed_recall_noise | IRNN | no clipping | 3 | – | – | 3 of 3 (from step 1) | "
            "none | 2 of 3 seeds | – |") in part
    assert ("- IRNN on delayed_recall_noise, norm 1: clipping fired on 62% (40-90%) of training "
            "steps; the largest pre-clip norms of the runs that did not diverge: 50-800; 0 of 8 "
            "runs diverged (without clipping 3 of 3 (from step 1)); the gap held rose from none "
            "to 20 (3/3 seeds) (rule: 2 of 3 seeds).") in part
    assert ("- tanh RNN on delayed_recall_noise, norm 10: clipping never fired (clip rate 0 in "
            "all 8 runs: the largest pre-clip norm, 0.4, stayed below the threshold 10); 0 of 8 "
            "runs diverged (without clipping 0 of 8); the gap held stayed at 10 (3/3 seeds) "
            "(rule: 2 of 3 seeds).") in part


def test_parameter_count_in_the_runs_table_and_the_headline(report_c: Path) -> None:
    runs = _rows(report_c.parent / "runs.csv")
    assert {(r[names.MODEL], r[names.PARAMETER_COUNT], r[names.HIDDEN_SIZE]) for r in runs} == {
        (model, str(n), "64") for model, n in PARAMETERS.items()}
    html = report_c.read_text()
    assert f"<th>{names.PARAMETER_COUNT}</th>" in html
    head = (report_c.parent / "summary.md").read_text().split("## Overview")[0]
    assert "| LSTM | 17.2k | 80 (3/3) | the top of the ladder: the frontier lies beyond it |" \
        in head
    assert "units" not in head  # every configuration has 64


def test_plain_names_of_every_cell_and_clipping() -> None:
    assert all(cell.title for cell in CELLS.values())  # every cell has its plain name
    cases = {("rnn", "tanh", "default"): "tanh RNN", ("rnn", "relu", "default"): "ReLU RNN",
             ("rnn", "relu", "identity"): "IRNN", ("rnn", "tanh", "identity"):
             "tanh RNN, identity init", ("lstm", "tanh", "default"): "LSTM",
             ("gru", "tanh", "default"): "GRU",
             ("orth_rnn", "modrelu", "orthogonal"): "orthogonal RNN",
             ("orth_rnn", "tanh", "orthogonal"): "tanh orthogonal RNN",
             ("urnn", "modrelu", "default"): "uRNN",
             ("lstm_peephole", "tanh", "default"): "peephole LSTM"}
    for (model, activation, init), name in cases.items():
        assert configs.model_name(model, activation, init) == name
    assert configs.model_name("gru", "tanh", chrono=True, num_layers=2,
                              bidirectional=True) == "GRU, chrono init, 2 layers, bidirectional"
    assert (configs.clip_name("norm", 1.0), configs.clip_name("value", 0.5),
            configs.clip_name("none", 1.0)) == ("clipped at 1", "value-clipped at 0.5", "")
    assert [configs.size_text(n) for n in (135, 4_353, 10_400, 1_234_567)] == [
        "135", "4.35k", "10.4k", "1.23M"]
