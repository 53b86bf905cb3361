"""Bad input is refused before anything runs: one stderr line naming the key, exit 2, no MLflow
run; a sweep with a job that did not finish exits non-zero. Real `python -m harness.train`
subprocesses with the store, sweep folder and checkpoints in tmp_path (docs/faults.md)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path

import pytest
from helpers.cli import TRAIN, wait_for_first_job
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf, open_dict

from harness import names, resources
from harness.callbacks import report_unfinished
from harness.resources import check_resources
from harness.schema import (
    Activation,
    ConfigError,
    FrontierConfig,
    check_known_keys,
    validate,
)
from harness.tracking.sweep import (
    FAILED_JOBS_FILE,
    FULL_DISK_JOBS_FILE,
    INVALID_JOBS_FILE,
    KILLED_JOBS_FILE,
    PARENT_RUN_FILE,
)

MODEL_OPTIONS = sorted(path.stem for path in
                       (Path(__file__).parents[1] / "conf" / "model").glob("*.yaml"))
TINY = ["model.hidden_size=8", "train.steps=5", "train.batch_size=4", "train.eval_every=5",
        "train.log_every=5", "train.eval_batch_size=8", "train.profile_batch_size=4",
        "train.threads=1"]


def harness_train(tmp_path: Path, env: dict[str, str], *overrides: str,
                  multirun: bool = False) -> subprocess.CompletedProcess[str]:
    command = [*TRAIN, *(["-m"] if multirun else []), *TINY,
               f"tracking.uri=sqlite:///{tmp_path}/store/mlflow.db",
               f"report.out_dir={tmp_path}/reports", f"train.checkpoint_dir={tmp_path}/ck",
               f"hydra.sweep.dir={tmp_path}/sweep", f"hydra.run.dir={tmp_path}/run",
               "experiment_name=ff", *overrides]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)


def runs_in_store(tmp_path: Path) -> int:
    """How many MLflow runs (jobs or sweeps) the store holds; 0 if it was never created."""
    if not (tmp_path / "store" / "mlflow.db").exists():
        return 0
    client = MlflowClient(f"sqlite:///{tmp_path}/store/mlflow.db")
    experiments = [e.experiment_id for e in client.search_experiments()]
    return len(client.search_runs(experiments)) if experiments else 0


def assert_refused(done: subprocess.CompletedProcess[str], tmp_path: Path, key: str,
                   prefix: str = "harness-train: invalid config: ") -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith(prefix), lines[0]
    assert key in lines[0]
    assert runs_in_store(tmp_path) == 0
    assert not (tmp_path / "sweep" / PARENT_RUN_FILE).exists()
    return lines[0]


def test_multirun_with_one_invalid_job_starts_none(tmp_path: Path,
                                                   cli_env: dict[str, str]) -> None:
    done = harness_train(tmp_path, cli_env, "train.solve_threshold=0.5,1.01", multirun=True)
    line = assert_refused(done, tmp_path, "train.solve_threshold: must be null",
                          prefix="harness-train: invalid job (")
    assert "train.solve_threshold=1.01" in line and "got 1.01" in line
    assert not list((tmp_path / "sweep").glob("*/.hydra"))  # no job folder either


@pytest.mark.parametrize(("overrides", "line"), [
    # the frontier issue's bad input: an unknown frontier.* key (Hydra itself would print
    # five lines and exit 1)
    (["-m", "hydra/sweeper=frontier", "frontier.foo=1", "model=rnn,lstm"],
     "frontier.foo: no such key in frontier; valid keys: "
     f"{', '.join(key.name for key in fields(FrontierConfig))}"),
    # Hydra's list of the conf/model options, and the schema's of the activations
    (["model=transformer"], "model=transformer: no such option; available options in "
     f"'model': {', '.join(MODEL_OPTIONS)}"),
    (["model.activation=sigmoid"], "model.activation: Invalid value 'sigmoid', expected one "
     f"of [{', '.join(a.value for a in Activation)}]"),
])
def test_a_config_that_does_not_compose_is_one_line(
        tmp_path: Path, cli_env: dict[str, str], overrides: list[str], line: str) -> None:
    multirun = overrides[0] == "-m"
    done = harness_train(tmp_path, cli_env, *overrides[multirun:], multirun=multirun)
    assert assert_refused(done, tmp_path, line) == f"harness-train: invalid config: {line}"


def test_an_unknown_key_added_with_plus_is_refused(tmp_path: Path,
                                                   cli_env: dict[str, str]) -> None:
    line = assert_refused(harness_train(tmp_path, cli_env, "+trian.steps=50"), tmp_path,
                          "trian: no such key")
    assert "valid keys: task, model, optim, clip, train" in line


def test_an_unknown_key_in_a_multirun_is_refused(tmp_path: Path,
                                                 cli_env: dict[str, str]) -> None:
    done = harness_train(tmp_path, cli_env, "++train.stepz=50", "seed=0,1", multirun=True)
    line = assert_refused(done, tmp_path, "train.stepz: no such key in train",
                          prefix="harness-train: invalid job (")
    assert "valid keys: steps, batch_size" in line


def test_an_invalid_optuna_trial_is_refused_before_it_starts(tmp_path: Path,
                                                            cli_env: dict[str, str]) -> None:
    """experiment=tune_lr runs hydra/sweeper=harness_optuna: each batch of trials is checked
    as the basic sweeper's jobs are."""
    done = harness_train(tmp_path, cli_env, "experiment=tune_lr", "train.solve_threshold=1.5",
                         "hydra.sweeper.n_trials=2", multirun=True)
    line = assert_refused(done, tmp_path, "train.solve_threshold: must be null",
                          prefix="harness-train: invalid job (optim.lr=")
    assert "train.solve_threshold=1.5" in line


def test_a_step_too_big_for_memory_is_refused(tmp_path: Path, cli_env: dict[str, str]) -> None:
    line = assert_refused(harness_train(tmp_path, cli_env, "task=copy", "task.gap=2000000000"),
                          tmp_path, "task.gap: 2000000000")
    assert "GiB" in line


def test_chrono_on_a_two_step_sequence_is_refused(tmp_path: Path,
                                                  cli_env: dict[str, str]) -> None:
    assert_refused(harness_train(tmp_path, cli_env, "model=lstm_chrono", "task=adding",
                                 "task.gap=2"), tmp_path, "model.chrono: needs a sequence")


# `harness-train ARGS` in a fresh interpreter that reports, after it exits, which of the heavy
# libraries it imported on the way and its exit status.
IMPORTS_PROBE = """
import sys
from harness.train import cli
sys.argv = ["harness-train", *sys.argv[1:]]
try:
    cli()
    status = 0
except SystemExit as done:
    status = done.code
heavy = [name for name in ("torch", "mlflow", "optuna", "pandas") if name in sys.modules]
print(f"probe: status {status} imported {','.join(heavy) or 'none'}", file=sys.stderr)
"""


@pytest.mark.parametrize("overrides", [
    ["task.gap=0"],
    ["+trian.steps=5"],
    ["model=rnn", "model.hidden_size=1000000"],  # the memory check
    ["-m", "model.hidden_size=0", "seed=0,1"],  # a sweep's checks
])
def test_bad_input_is_refused_before_torch_or_mlflow_is_imported(
        tmp_path: Path, cli_env: dict[str, str], overrides: list[str]) -> None:
    """Composing, the schemas, the `+key` check and the memory check need neither torch nor
    MLflow (3 s to import): a refusal comes before either is imported (docs/running.md)."""
    multirun = overrides[:1] == ["-m"]
    command = [*TRAIN[:1], "-c", IMPORTS_PROBE, *overrides[:multirun], *TINY,
               f"tracking.uri=sqlite:///{tmp_path}/store/mlflow.db", "experiment_name=ff",
               f"hydra.sweep.dir={tmp_path}/sweep", f"hydra.run.dir={tmp_path}/run",
               *overrides[multirun:]]
    done = subprocess.run(command, cwd=tmp_path, env=cli_env, capture_output=True, text=True,
                          timeout=120)
    *refusal, probe = done.stderr.strip().splitlines()
    assert probe == "probe: status 2 imported none", done.stderr[-3000:]
    assert len(refusal) == 1 and refusal[0].startswith("harness-train: invalid "), refusal
    assert runs_in_store(tmp_path) == 0


@pytest.mark.parametrize("argument", ["--help", "--cfg=job"])
def test_help_and_the_composed_config_import_neither_torch_nor_mlflow(
        tmp_path: Path, cli_env: dict[str, str], argument: str) -> None:
    done = subprocess.run([*TRAIN[:1], "-c", IMPORTS_PROBE, argument], cwd=tmp_path,
                          env=cli_env, capture_output=True, text=True, timeout=120)
    assert done.stderr.strip().splitlines()[-1] == "probe: status 0 imported none", \
        done.stderr[-3000:]
    assert "model:" in done.stdout and "hidden_size: 64" in done.stdout


HYDRA_OWN_HELP = """
import sys
from harness.train import main  # Hydra's main, without cli()'s faster group listing
sys.argv = ["harness-train", sys.argv[1]]
main()
"""


@pytest.mark.parametrize("argument", ["--help", "--hydra-help"])
def test_help_is_hydras_own_text_byte_for_byte(tmp_path: Path, cli_env: dict[str, str],
                                               argument: str) -> None:
    """`cli()` lists the config groups with one copy of the config repository instead of
    Hydra's 210 (3 s of a 3.5 s `--help`); the text is Hydra's own."""
    ours = subprocess.run([*TRAIN, argument], cwd=tmp_path, env=cli_env, capture_output=True,
                          text=True, timeout=120)
    hydras = subprocess.run([*TRAIN[:1], "-c", HYDRA_OWN_HELP, argument], cwd=tmp_path,
                            env=cli_env, capture_output=True, text=True, timeout=120)
    assert ours.returncode == hydras.returncode == 0, ours.stderr[-2000:] + hydras.stderr
    assert "task: " in hydras.stdout or "hydra/launcher: " in hydras.stdout
    def text(out: str) -> list[str]:  # the shell-completion lines name the calling script
        return [line for line in out.splitlines() if "-sc " not in line]

    assert text(ours.stdout) == text(hydras.stdout)


def test_a_sweep_prints_one_progress_line_per_job_and_keeps_job_lines_in_job_logs(
        tmp_path: Path, cli_env: dict[str, str]) -> None:
    """Each job prints `[k/4] <run name> <status> at step ...` as it ends (joblib workers share
    the terminal); the jobs' own INFO lines stay in their log files."""
    done = harness_train(tmp_path, cli_env, "task=delayed_recall", "task.gap=5", "model=rnn,gru",
                         "seed=0,1", "hydra.launcher.n_jobs=2", "report.on_multirun_end=false",
                         multirun=True)
    assert done.returncode == 0, done.stderr[-3000:]
    progress = [line for line in done.stdout.splitlines() if line.startswith("[")
                and "/4]" in line]
    assert [line.split("]")[0] for line in progress] == ["[1/4", "[2/4", "[3/4", "[4/4"]
    names = {line.split()[1] for line in progress}
    assert names == {f"delayed_recall-{m}-tanh-noclip-gap5-s{s}" for m in ("rnn", "gru")
                     for s in (0, 1)}, progress
    assert all(" at step 5" in line for line in progress), progress
    assert progress[-1].endswith("· done")
    assert "harness.loop" not in done.stdout + done.stderr  # no per-job eval lines
    # whole-sweep batching (the default) trains each cell's two seeds as one job: two job logs
    logs = list((tmp_path / "sweep").glob("*/train.log"))
    assert len(logs) == 2 and all("harness.loop" in log.read_text() for log in logs)


# --- in-process checks of the same rules -------------------------------------------------


def test_known_keys_pass_and_hydra_is_not_checked(make_cfg: Callable[..., DictConfig]) -> None:
    cfg = make_cfg()
    check_known_keys(cfg)
    with open_dict(cfg):
        cfg.hydra = {"anything": 1}
    check_known_keys(cfg)
    OmegaConf.update(cfg, "task.gapp", 3, force_add=True)  # what `+task.gapp=3` does
    with pytest.raises(ConfigError, match=r"^task.gapp: no such key in task; valid keys: name, "):
        validate(cfg)


def test_a_model_too_big_for_memory_is_refused(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """10^6 hidden units: 4 TB of weights, whatever the batch; the key named is the model's."""
    line = assert_refused(harness_train(tmp_path, cli_env, "model=rnn",
                                        "model.hidden_size=1000000"), tmp_path,
                          "model.hidden_size: 1000000 gives 10000")
    assert "parameters; training them" in line and "GiB" in line


def test_memory_check_names_the_biggest_batch(make_cfg: Callable[..., DictConfig]) -> None:
    spec = validate(make_cfg("task=copy", "train.eval_batch_size=32"))
    check_resources(spec, 120, 10, 9, memory=2 ** 40)
    hidden = spec.model.hidden_size
    weights = resources.parameter_bytes(resources.shape_of(spec.model, 10, 9))
    with pytest.raises(ConfigError, match=r"^task.gap: .* train.eval_batch_size=32 needs about"):
        check_resources(spec, 120, 10, 9, memory=weights + 1)  # the weights fit, a step not
    with pytest.raises(ConfigError, match=rf"^model.hidden_size: {hidden} gives "):
        check_resources(spec, 120, 10, 9, memory=weights - 1)


def test_cpu_count_without_sched_getaffinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    assert resources.cpu_count() == (os.cpu_count() or 1)


def test_closing_message_tells_kinds_apart(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert not report_unfinished(tmp_path)
    (tmp_path / INVALID_JOBS_FILE).write_text("job 1 (seed=1): ConfigError: x\n")
    (tmp_path / FAILED_JOBS_FILE).write_text("job 2 (seed=2): RuntimeError: y\n")
    (tmp_path / KILLED_JOBS_FILE).write_text("job 3 (seed=3): RunStopped: z\n")
    assert report_unfinished(tmp_path)
    err = capsys.readouterr().err
    assert "1 job(s) had an invalid config and created no run; a rerun fails the same way" in err
    assert "1 job(s) failed" in err and "fix the cause first" in err
    assert "1 job(s) were stopped by a signal; the same command resumes them" in err


# --- a disk that fills up mid-sweep -------------------------------------------------------

@contextmanager
def small_filesystem(path: Path, size: str = "64m") -> Iterator[Path]:
    """A size-limited tmpfs mounted at `path` (needs root, or CAP_SYS_ADMIN); skips otherwise."""
    path.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root needed): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> None:
    """Write zeros to `path` until its file system is full."""
    with path.open("wb") as handle:
        block = b"\0" * (1 << 20)
        try:
            while True:
                handle.write(block)
                handle.flush()
        except OSError:
            pass


@pytest.mark.slow  # about 40 s
def test_a_disk_that_fills_up_mid_sweep(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """Store and checkpoints on a 64 MB tmpfs; once the first of 3 sequential jobs has ended,
    the test fills it. The other jobs stop with one line naming the full path (no traceback),
    the sweep exits 1 saying to free space, the finished run is intact and readable; once the
    space is freed the same command runs the other two and reuses the finished one. A single
    run on the full disk exits 1 with one line."""
    with small_filesystem(tmp_path / "small") as disk:
        uri = f"sqlite:///{disk}/store/mlflow.db"
        command = [*TRAIN, "-m", *TINY, "train.steps=300",
                   "train.eval_every=100", "train.log_every=5", "train.checkpoint_every=50",
                   f"tracking.uri={uri}", f"train.checkpoint_dir={disk}/ck",
                   f"hydra.sweep.dir={tmp_path}/sweep", "report.on_multirun_end=false",
                   "hydra.launcher.n_jobs=1", "experiment_name=full", "seed=0,1,2",
                   "train.batch_members=off"]  # three jobs, not one batched job
        sweep = subprocess.Popen(command, cwd=tmp_path, env=cli_env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_for_first_job(sweep, tmp_path / "sweep")
        fill(disk / "filler")
        out, err = sweep.communicate(timeout=240)
        assert sweep.returncode == 1, err[-3000:]
        assert "Traceback" not in out + err, (out + err)[-3000:]
        # the jobs' log lines (on the terminal at WARNING and above: Hydra's console is stdout)
        stopped = [line for line in out.splitlines() if "job stopped, disk full: " in line]
        assert len(stopped) == 2, out[-3000:]
        assert all(f"disk full: {disk}" in line for line in stopped), stopped
        assert "job(s) stopped on a full disk (the runs that finished are intact); free space" \
            in err
        assert len((tmp_path / "sweep" / FULL_DISK_JOBS_FILE).read_text().splitlines()) == 2

        client = MlflowClient(uri)  # readable while the disk is still full
        runs = client.search_runs([client.get_experiment_by_name("full").experiment_id])
        finished = [r for r in runs if r.info.status == "FINISHED"
                    and r.data.params.get("seed") in ("0", "1", "2")]
        assert len(finished) == 1, [(r.data.params.get("seed"), r.info.status) for r in runs]
        kept = finished[0]
        assert kept.data.metrics[names.STEPS_RUN] > 0
        assert len(client.get_metric_history(kept.info.run_id, names.TRAIN_LOSS)) > 0

        single = subprocess.run([*command[:3], *(c for c in command[4:] if c != "seed=0,1,2"
                                                 and not c.startswith("hydra.")), "seed=5"],
                                cwd=tmp_path, env=cli_env, capture_output=True, text=True,
                                timeout=300)
        lines = [line for line in single.stderr.splitlines() if line.strip()]
        assert single.returncode == 1 and len(lines) == 1, single.stderr[-3000:]
        assert lines[0].startswith(f"harness-train: disk full: {disk}"), lines

        (disk / "filler").unlink()
        again = subprocess.run(command, cwd=tmp_path, env=cli_env, capture_output=True,
                               text=True, timeout=300)
        assert again.returncode == 0, again.stderr[-3000:]
        runs = client.search_runs([client.get_experiment_by_name("full").experiment_id],
                                  filter_string="attributes.status = 'FINISHED'")
        jobs = [r for r in runs if "seed" in r.data.params]
        assert sorted(r.data.params["seed"] for r in jobs) == ["0", "1", "2"]
        assert kept.info.run_id in {r.info.run_id for r in jobs}  # reused, not rerun
