"""The variable-gap frontier (harness/report/variable_gap.py) on a synthetic MLflow store whose
answers are known.

Experiment `vgap-test`: copy trained on gaps 1..60 mixed (`task.gap_min` 1, `task.gap` 60),
criterion `eval accuracy >= 0.99`, bins at gaps 1, 10, 20, 30, 40, 50, 60:
- lstm: seed 0 meets every bin (held 60); seed 1 fails bin 50 but meets 60 (held 40: every
  bin up to the gap must hold); seed 2 fails from 50 on (held 40). Every seed: 40; one: 60.
- rnn: seed 0 meets bin 1 only (held 1); seed 1 fails bin 1 (held none); seed 2 meets 1 and
  10 (held 10). Every seed: none; one: 10 (1/3).
- gru seed 0 has bins but no success_criterion tag: left out, and counted.
Adding trained on 50..100, criterion `eval loss / chance loss <= 0.06`, chance 1/6: bin losses
0.005, 0.009, 0.02 are 0.03, 0.054 and 0.12 of chance: held 75.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from harness import names
from harness.report import build_report, variable_gap

EXPERIMENT = "vgap-test"
BINS = (1, 10, 20, 30, 40, 50, 60)
ACCURACY = "eval accuracy >= 0.99"
LOSS = "eval loss / chance loss <= 0.06"
COPY_ACC = {
    ("lstm", 0): [1.0] * 7,
    ("lstm", 1): [1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 1.0],
    ("lstm", 2): [1.0, 1.0, 1.0, 1.0, 1.0, 0.9, 0.9],
    ("rnn", 0): [1.0, 0.5, 0.5, 0.2, 0.2, 0.2, 0.2],
    ("rnn", 1): [0.8] * 7,
    ("rnn", 2): [1.0, 1.0, 0.5, 0.2, 0.2, 0.2, 0.2],
    ("gru", 0): [1.0] * 7,
}
COPY_SENTENCE = (
    "On copy, trained on gaps 1..60 mixed, lstm-tanh-noclip held up to gap 40 in every seed "
    "(3/3; up to 60 in 1/3); rnn-tanh-noclip held up to gap 10 in 1/3 seeds, not in every "
    "seed.")


def _run(client: MlflowClient, exp_id: str, root: Path, task: str, model: str, seed: int,
         gap: int, gap_min: int, rule: str | None, chance: float,
         bins: list[tuple[int, int, float, float]]) -> None:
    name = names.run_name(task, model, "tanh", "none", 1.0, gap, seed)
    tags = {names.STATUS: names.UNSOLVED}
    if rule is not None:
        tags[names.SUCCESS_CRITERION] = rule
    run_id = client.create_run(exp_id, run_name=name, tags=tags).info.run_id
    params = {names.TASK: task, names.GAP: gap, names.GAP_MIN: gap_min, names.MODEL: model,
              names.ACTIVATION: "tanh", names.CLIP_MODE: "none", names.SEED: seed}
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()],
                     metrics=[Metric(names.CHANCE_LOSS, chance, 0, 100),
                              Metric(names.FINAL_EVAL_ACCURACY, 0.5, 0, 100)])
    path = root / run_id / names.EVAL_BY_GAP_ARTIFACT
    path.parent.mkdir(parents=True)
    lines = [",".join(names.EVAL_BY_GAP_COLUMNS)] + [",".join(map(str, b)) for b in bins]
    path.write_text("\n".join(lines) + "\n")
    client.log_artifact(run_id, str(path))
    client.set_terminated(run_id)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("vgap-store")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment(EXPERIMENT, artifact_location=(root / "a").as_uri())
    for (model, seed), accuracies in COPY_ACC.items():
        bins = [(g, 4 + g % 3, 0.1, a) for g, a in zip(BINS, accuracies, strict=True)]
        _run(client, exp_id, root / "staging", "copy", model, seed, 60, 1,
             None if model == "gru" else ACCURACY, 0.17, bins)
    _run(client, exp_id, root / "staging", "adding", "lstm", 0, 100, 50, LOSS, 1 / 6,
         [(50, 80, 0.005, 0.9), (75, 90, 0.009, 0.8), (100, 86, 0.02, 0.5)])
    return uri


@pytest.fixture(scope="module")
def report(store: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_report(EXPERIMENT, store, tmp_path_factory.mktemp("reports"), workers=1)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_each_configuration_held_up_to_the_known_gap(report: Path) -> None:
    rows = {(r[names.TASK_LABEL], r["label"]): r
            for r in _rows(report.parent / variable_gap.VARIABLE_GAP_CSV)}
    assert set(rows) == {("copy", "lstm-tanh-noclip"), ("copy", "rnn-tanh-noclip"),
                         ("adding", "lstm-tanh-noclip")}
    lstm, rnn = rows[("copy", "lstm-tanh-noclip")], rows[("copy", "rnn-tanh-noclip")]
    assert (lstm["trained_gaps"], lstm["held_per_seed"], lstm["held_by_every_seed"],
            lstm["held_by_one_seed"], lstm["seeds_held_any"]) == ("1..60", "[60, 40, 40]",
                                                                  "40", "60", "1")
    assert (rnn["held_per_seed"], rnn["held_by_every_seed"], rnn["held_by_one_seed"],
            rnn["seeds_held_any"], rnn["n_seeds"]) == ("[1, none, 10]", "none", "10", "1", "3")
    assert (lstm["criterion"], lstm["bins"], lstm["min_sequences_per_bin"]) == (ACCURACY, "7",
                                                                                 "4")
    adding = rows[("adding", "lstm-tanh-noclip")]
    assert (adding["trained_gaps"], adding["held_per_seed"], adding["criterion"]) == (
        "50..100", "[75]", LOSS)


def test_headline_and_frontier_section_say_what_it_is(report: Path) -> None:
    summary = (report.parent / "summary.md").read_text()
    # a task trained on mixed gaps opens with how far each configuration held, not rows
    assert summary.split("\n\n")[1] == "**adding**"
    assert summary.split("\n\n")[2].startswith(
        "On adding, trained on gaps 50..100 mixed, lstm-tanh-noclip held up to gap 75 in "
        "every seed (1/1). Of the 1 run that did not solve")
    assert COPY_SENTENCE in summary.split("## Overview")[0]  # the headline, before anything
    assert "## Frontier" in summary and "### Variable-gap runs: held up to which gap" in summary
    assert ("1 run(s) logged eval_by_gap.csv without a readable success_criterion tag"
            in summary)
    html = report.read_text()
    assert '<h2 id="frontier">2 Frontier</h2>' in html
    assert "trained on gaps 1..60 mixed" in html and "curriculum" in html
    assert "frontier_table.csv" not in html  # no frontier sweep: only the variable-gap part


def test_rebuild_is_byte_identical(store: str, report: Path, tmp_path: Path) -> None:
    again = build_report(EXPERIMENT, store, tmp_path, workers=2)
    for name in ("index.html", "summary.md", variable_gap.VARIABLE_GAP_CSV):
        assert (again.parent / name).read_bytes() == (report.parent / name).read_bytes()


@pytest.mark.parametrize(("rule", "parsed"), [
    ("eval accuracy >= 0.99", ("accuracy", 0.99)),
    ("eval loss / chance loss <= 0.06", ("loss_ratio", 0.06)),
    ("eval accuracy > 0.99", None), ("", None), (None, None)])
def test_criterion_parses_only_the_tags_training_writes(rule: object, parsed: object) -> None:
    assert variable_gap.criterion(rule) == parsed


def test_held_gap_needs_every_bin_up_to_it() -> None:
    bins = pd.DataFrame({"gap": [30, 10, 20], "eval_accuracy": [1.0, 1.0, 0.5],
                         "eval_loss": [0.0, 0.0, 0.0]})
    assert variable_gap.held_gap(bins, "accuracy", 0.99, None) == 10
    assert variable_gap.held_gap(bins.assign(eval_accuracy=0.2), "accuracy", 0.99, None) is None
    assert variable_gap.held_gap(bins, "loss_ratio", 0.06, None) is None  # no chance loss
    assert variable_gap.held_gap(bins, "loss_ratio", 0.06, 1.0) == 30
