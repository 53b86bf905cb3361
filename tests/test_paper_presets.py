"""The paper presets (conf/experiment/paper/): every one composes, every combination of its
sweep space validates, each names its source and command, and each decisive one runs end to end."""

from __future__ import annotations

import itertools
import re
import subprocess
from pathlib import Path

import pytest
from helpers.cli import TRAIN
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf, open_dict

from harness import names
from harness.schema import PROJECT_ROOT, register, validate

PAPER = PROJECT_ROOT / "conf" / "experiment" / "paper"
PRESETS = sorted(p.stem for p in PAPER.glob("*.yaml"))
FULL = [p for p in PRESETS if not p.endswith("_decisive")]
DECISIVE = [p for p in PRESETS if p.endswith("_decisive")]


def compose_preset(preset: str, *overrides: str) -> DictConfig:
    register()
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"experiment=paper/{preset}", *overrides],
                       return_hydra_config=True)


def job_config(cfg: DictConfig) -> DictConfig:
    """The composed config without Hydra's own node (what a job's `train` receives)."""
    cfg = cfg.copy()
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def sweep_space(cfg: DictConfig) -> dict[str, list[str]]:
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert isinstance(params, dict)
    return {key: str(value).split(",") for key, value in params.items()}


def test_every_full_preset_has_a_decisive_one() -> None:
    assert FULL and sorted(f"{p}_decisive" for p in FULL) == DECISIVE


@pytest.mark.parametrize("preset", PRESETS)
def test_header_cites_the_source_outcome_and_command(preset: str) -> None:
    header = (PAPER / f"{preset}.yaml").read_text().split("\ndefaults:")[0]
    assert header.startswith("# @package _global_\n")
    assert f"# Run: harness-train -m experiment=paper/{preset}" in header.splitlines()
    full = (PAPER / f"{preset.removesuffix('_decisive')}.yaml").read_text()
    assert re.search(r"\b(19|20)\d\d\b", full) and "Published outcome" in full
    if preset.endswith("_decisive"):
        assert "wall time on 2 cores: " in header.lower()  # measured, or estimated
        assert "can show" in header and "cannot show" in header


def configurations(cfg: DictConfig) -> list[list[str]]:
    """The preset's `hydra.sweeper.configurations` (each crossed with its params), or one
    empty set."""
    return [str(c).split() for c in cfg.hydra.sweeper.get("configurations") or []] or [[]]


@pytest.mark.parametrize("preset", PRESETS)
def test_every_combination_of_the_sweep_space_validates(preset: str) -> None:
    """Every configuration with every combination of the axes it does not set itself (each
    gap once, with the other axes' first values)."""
    cfg = compose_preset(preset)
    assert cfg.experiment_name == f"paper_{preset}"
    for chosen in configurations(cfg):
        own = {o.partition("=")[0] for o in chosen}
        space = {k: v for k, v in sweep_space(cfg).items() if k not in own}
        space.pop(names.SEED, None)  # seeds do not change validity
        gaps = space.pop(names.GAP, [])  # every gap once, with the other axes' first values
        combos = [[f"{k}={v}" for k, v in zip(space, values, strict=True)]
                  for values in itertools.product(*space.values())]
        combos += [[f"{names.GAP}={gap}", *combos[0]] for gap in gaps]
        for overrides in combos:
            spec = validate(job_config(compose_preset(preset, *chosen, *overrides)))
            assert spec.experiment_name == f"paper_{preset}", overrides


@pytest.mark.slow
@pytest.mark.parametrize("preset", DECISIVE)
def test_decisive_preset_runs_end_to_end(preset: str, tmp_path: Path,
                                        cli_env: dict[str, str]) -> None:
    """Every model and setting of the decisive sweep, cut to a few steps, one gap, one seed
    (the command line wins over the preset's configurations)."""
    cfg = compose_preset(preset)
    space = sweep_space(cfg)
    gaps = [o.partition("=")[2] for chosen in configurations(cfg) for o in chosen
            if o.startswith(f"{names.GAP}=")] + space.get(names.GAP, [])
    gap = min(int(g) for g in gaps)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    command = [*TRAIN, "-m", f"experiment=paper/{preset}",
               f"task.gap={gap}", "seed=0", "train.steps=3", "train.eval_every=3",
               "train.eval_batch_size=16", "train.profile_batch_size=2",
               "hydra.launcher.n_jobs=1", f"tracking.uri={uri}",
               f"report.out_dir={tmp_path}/reports", f"hydra.sweep.dir={tmp_path}/sweep",
               f"train.checkpoint_dir={tmp_path}/checkpoints"]
    done = subprocess.run(command, cwd=tmp_path, env=cli_env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(f"paper_{preset}")
    runs = [r for r in client.search_runs([experiment.experiment_id])
            if r.data.tags.get(names.RUN_KIND) != names.SWEEP_KIND]
    others = {k: v for k, v in space.items() if k not in (names.GAP, names.SEED)}
    distinct = {tuple(o for o in chosen if not o.startswith(("task.gap=", "train.steps=")))
                for chosen in configurations(cfg)}
    assert len(runs) == len(distinct) * max(1, len(list(itertools.product(*others.values()))))
    assert {r.data.tags[names.STATUS] for r in runs} <= {names.SOLVED, names.UNSOLVED}
    assert (tmp_path / "reports" / f"paper_{preset}" / "index.html").exists()
