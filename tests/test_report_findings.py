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
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pandas as pd
import pytest
from helpers.findings_store import BY_GAP_ROWS, COPY, DR, SWEEP_A, SWEEP_B, TUNING, A, B
from mlflow.tracking import MlflowClient

from harness import names
from harness.report import build_report, headline
from harness.report import findings as findings_
from harness.report.cli import main as cli_main
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


def test_findings_have_the_known_answers(report_a: Path) -> None:
    found = _findings(report_a)
    assert [t for t in found["solved_gap"] if DR in t] == [
        "lstm-tanh-noclip solved delayed_recall in every seed (3/3) up to gap 200.",
        "rnn-relu-norm1 solved delayed_recall in every seed (3/3) up to gap 50.",
        "rnn-tanh-noclip solved delayed_recall in every seed (3/3) up to gap 10; beyond it: "
        "1/3 seeds at gap 50.",
        "rnn-relu-noclip solved delayed_recall in every seed (3/3) up to gap 10.",
    ]
    # one sentence for every configuration that solved no gap, with each one's numbers
    assert ("Solved copy at no gap: lstm-tanh-noclip (0 of 6 runs; best mean final accuracy "
            "0.159 at gap 10) and rnn-tanh-noclip (0 of 7 runs; best mean final accuracy 0.120 "
            "at gap 10).") in found["solved_gap"]
    assert found["clipping"] == [
        "On delayed_recall, clipping (norm 1) raised the largest gap rnn-relu solved in every "
        "seed from 10 to 50 (mean final accuracy over the 3 shared gap(s): 0.533 without, "
        "0.767 with clipping); diverged runs: 1 of 9 without, 0 of 9 with clipping."]
    assert ("On delayed_recall, the best configuration was lstm-tanh-noclip (largest gap "
            "solved in every seed 200, mean final accuracy 1.000 over 9 runs) and the worst "
            "rnn-relu-noclip (largest gap solved in every seed 10, mean final accuracy 0.562 "
            "over 8 runs).") in found["best_worst"]
    assert ("On delayed_recall with clipping none, the largest gap solved in every seed, by "
            "model: lstm-tanh 200 (mean final accuracy 1.000), rnn-tanh 10 (mean final "
            "accuracy 0.611), rnn-relu 10 (mean final accuracy 0.562).") in found["model"]
    assert found["nothing_solved"] == [
        "No run solved copy (13 runs): the best final accuracy was 0.169 (lstm-tanh-noclip, "
        "gap 10, seed 2), against a chance accuracy of 0.125."]
    assert found["divergence"] == [
        "1 of 49 runs diverged.",
        "rnn-relu-noclip diverged on delayed_recall in 1 of 9 runs: gap 200 seed 0 at step 398."]
    assert found["not_results"] == [
        "Not results: 1 failed run(s); at their gap and seed they count as not solved, and "
        "they add no accuracy."]
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
                    "5 Gradients", "6 Clipping × activation", "7 All runs"):
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
    })


def test_nothing_learned_all_at_chance() -> None:
    rows = [(lab, 10, s, names.UNSOLVED, names.CHANCE)
            for lab in ("lstm-tanh-noclip", "rnn-tanh-noclip") for s in range(3)]
    (task, sentences), = headline.headline(_runs(rows))
    assert task == "copy"
    assert sentences[0] == ("Nothing learned copy within 2,000 steps: no configuration solved "
                            "any gap (0 of 6 runs).")
    assert sentences[1] == (
        "Of the 6 runs that did not solve within 2,000 steps, 6 were still at the memoryless "
        "loss (chance): lstm-tanh-noclip and rnn-tanh-noclip 3 of 3 each.")


def test_solved_by_every_and_by_one_seed_and_censored_failures() -> None:
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
    (_, sentences), = headline.headline(_runs(rows, criterion="accuracy >= 0.99"))
    assert len(sentences) <= headline.MAX_SENTENCES
    assert sentences[0] == (
        "copy: the largest gap solved by every seed was 20 for gru and lstm (3 of 3 seeds "
        "each); at least one seed solved 40 for lstm (1 of 3 seeds); no gap at all: rnn "
        "(0 of 9 runs).")
    limits = sentences[1]
    assert limits.startswith("Of the 14 runs that did not solve within 2,000 steps, ")
    assert "3 were still at the memoryless loss (chance): rnn 3 of 9; " in limits
    assert ("5 were still improving at the end of the budget (improving): gru 3 of 3, "
            "lstm 2 of 2 (budget-limited, not evidence of failure); ") in limits
    assert "; 3 diverged: rnn 3 of 9; " in limits
    assert limits.endswith("; 3 had no end_state tag (the store predates it: end state "
                           "unknown): rnn 3 of 9.")
    assert sentences[2] == "Solved means: accuracy >= 0.99."


def test_missing_end_state_column_is_unknown_and_markdown_joins() -> None:
    runs = _runs([("lstm", 10, 0, names.UNSOLVED, None), ("lstm", 10, 1, names.SOLVED, None)])
    runs = runs.drop(columns=[names.END_STATE, names.SUCCESS_CRITERION])
    lines = headline.headline(runs)
    (_, sentences), = lines
    assert sentences[0].startswith("copy: no configuration solved a gap with every seed; "
                                   "at least one seed solved 10 for lstm (1 of 2 seeds)")
    assert "1 had no end_state tag" in sentences[1]
    assert headline.markdown(lines) == " ".join(sentences) + "\n"


def test_failed_and_killed_jobs_are_not_results() -> None:
    runs = _runs([("lstm", 10, 0, names.SOLVED, names.SOLVED),
                  ("lstm", 10, 1, names.FAILED, None)])
    (_, sentences), = headline.headline(runs)
    assert sentences == ["copy: the largest gap solved by every seed was 10 for lstm "
                         "(1 of 1 seed)."]


def _result(name: str, largest: int | None, solved_at: dict[int, tuple[int, int]],
            n_runs: int = 6, accuracy_at: dict[int, float] | None = None) -> findings_.Result:
    return findings_.Result(name=name, seeds=(0, 1, 2), solved_at=solved_at, largest=largest,
                            mean_accuracy=None, n_accuracy=0, accuracy_at=accuracy_at or {},
                            diverged=0, n_runs=n_runs)


def test_solved_sentences_group_configurations_with_the_same_numbers() -> None:
    ordered = [
        _result("lstm", 100, {10: (3, 3), 100: (3, 3)}),
        _result("gru", 100, {10: (3, 3), 100: (3, 3)}),
        _result("rnn-relu", 10, {10: (3, 3), 100: (1, 3)}),
        _result("rnn-tanh", None, {10: (1, 3)}),
        _result("orth", None, {10: (0, 3)}, n_runs=8),
        _result("rnn-x", None, {10: (0, 3)}, n_runs=8),
    ]
    assert findings_.solved_sentences("copy", ordered) == [
        "lstm and gru solved copy in every seed (3/3 each) up to gap 100.",
        "rnn-relu solved copy in every seed (3/3) up to gap 10; beyond it: 1/3 seeds at gap 100.",
        "Solved copy at no gap in every seed, but in some seeds: rnn-tanh 1/3 seeds at gap 10.",
        "Solved copy at no gap: orth and rnn-x (0 of 8 runs each).",
    ]
