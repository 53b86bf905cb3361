"""The model variants go through the same commands: config, run, MLflow, report label."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

import tasks
from harness import names
from harness.cells import GATE_BLOCKS
from harness.models import build_model
from harness.report import build_report
from harness.schema import ConfigError, validate
from harness.train import train

# (overrides, the label the report must show)
VARIANTS = [
    (["model=rnn"], "rnn-tanh-noclip"),
    (["model=rnn_relu"], "rnn-relu-noclip"),
    (["model=irnn"], "rnn-relu-identity-noclip"),
    (["model=orth_rnn"], "orth_rnn-modrelu-orthogonal-noclip"),
    (["model=rnn", "model.activation=leaky_relu"], "rnn-leaky_relu-noclip"),
    (["model=rnn", "model.activation=hard_tanh", "clip=norm"], "rnn-hard_tanh-norm1"),
    (["model=lstm_chrono"], "lstm-tanh-chrono-noclip"),
    (["model=gru_chrono", "model.num_layers=2", "model.bidirectional=true"],
     "gru-tanh-chrono-l2-bi-noclip"),
]


def test_default_labels_are_unchanged_and_variants_are_distinct() -> None:
    assert names.config_label("lstm", "tanh", "norm", 1.0) == "lstm-tanh-norm1"
    assert names.run_name("copy", "lstm", "tanh", "norm", 1.0, 100, 0) == \
        "copy-lstm-tanh-norm1-gap100-s0"
    assert names.run_name("copy", "lstm", "tanh", "none", 1.0, 100, 0, init="orthogonal",
                          chrono=True, num_layers=3, bidirectional=True) == \
        "copy-lstm-tanh-orthogonal-chrono-l3-bi-noclip-gap100-s0"
    assert len({label for _, label in VARIANTS}) == len(VARIANTS)


@pytest.mark.parametrize(("overrides", "field"), [
    (["model=rnn", "model.chrono=true"], "model.chrono"),
    (["model=orth_rnn", "model.chrono=true"], "model.chrono"),
    (["model=lstm", "model.chrono=true", "model.chrono_t_max=2"], "model.chrono_t_max"),
    (["model=lstm", "model.chrono_t_max=50"], "model.chrono_t_max"),
    (["model=gru", "model.activation=modrelu"], "model.activation"),
    (["model=lstm", "model.init=identity"], "model.init"),
])
def test_bad_variants_name_the_field(make_cfg: Callable[..., DictConfig], overrides: list[str],
                                     field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}: "):
        validate(make_cfg(*overrides))


def test_chrono_t_max_comes_from_the_task(make_cfg: Callable[..., DictConfig]) -> None:
    """T_max = the task's sequence length (copy: gap + 20), unless chrono_t_max is set."""
    for extra, t_max in (([], 50 + 20), (["model.chrono_t_max=7"], 7)):
        spec = validate(make_cfg("task=copy", "task.gap=50", "model=lstm_chrono",
                                 "model.hidden_size=3000", *extra))
        task = tasks.make_task("copy", gap=50)
        forget = build_model(spec.model, task).layer_weights(0)[2][3000:6000].detach().exp()
        assert float(forget.max()) <= t_max - 1 + 1e-3 and float(forget.max()) > t_max - 2


def test_every_variant_runs_and_shows_in_the_report(make_cfg: Callable[..., DictConfig],
                                                    store_uri: str, tmp_path: Path) -> None:
    for overrides, _ in VARIANTS:
        train(make_cfg("task=copy", "task.gap=4", "experiment_name=variants",
                       "train.steps=10", *overrides))
    client = MlflowClient(store_uri)
    runs = client.search_runs([client.get_experiment_by_name("variants").experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    assert set(by_name) == {f"copy-{label}-gap4-s0" for _, label in VARIANTS}
    assert all(r.data.tags[names.STATUS] in names.STATUSES[:3] for r in runs)
    bi = by_name["copy-gru-tanh-chrono-l2-bi-noclip-gap4-s0"].data.metrics
    for layer in range(2):
        for reverse in (False, True):
            for block in GATE_BLOCKS["gru"]:
                assert names.block_key(names.SPECTRAL_RADIUS, layer, block,
                                       reverse=reverse) in bi
    orth = by_name["copy-orth_rnn-modrelu-orthogonal-noclip-gap4-s0"].data.metrics
    assert orth[names.block_key(names.SPECTRAL_RADIUS, 0, "hh")] == pytest.approx(1, abs=1e-4)

    index = build_report("variants", store_uri, tmp_path / "reports")
    with (index.parent / "runs.csv").open() as handle:
        labels = {row["label"] for row in csv.DictReader(handle)}
    assert labels == {label for _, label in VARIANTS}
