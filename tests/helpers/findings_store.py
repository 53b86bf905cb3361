"""The findings tests' MLflow store, whose answers are known (tests/test_report_findings.py
says what it holds): experiments `A` and `B`, their runs and sweeps, and `build`, which logs
them. The `findings_store` fixture (tests/conftest.py) builds it once per test module."""

from __future__ import annotations

from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from harness import names

A, B = "findings-a", "findings-b"
DR, COPY = "delayed_recall", "copy"
LSTM, RNN = ("lstm", "tanh", "none", 1.0), ("rnn", "tanh", "none", 1.0)
RELU, RELU_CLIP = ("rnn", "relu", "none", 1.0), ("rnn", "relu", "norm", 1.0)
SWEEP_A = "task=delayed_recall task.gap=10,50,200 model=lstm,rnn,rnn_relu clip=none,norm seed=0,1,2"
SWEEP_B = "task=copy task.gap=10,50 model=lstm,rnn seed=0,1,2"
TUNING = "Optuna TPE, 20 trials, maximising best_eval_accuracy"
WALL = 10.0


def solved_a(config: tuple, gap: int, seed: int) -> bool:
    if config == LSTM:
        return True
    if config == RNN:
        return gap == 10 or (gap == 50 and seed == 0)
    if config == RELU:
        return gap == 10
    return gap in (10, 50)


def runs_a() -> list[dict]:
    runs = []
    for config in (LSTM, RNN, RELU, RELU_CLIP):
        for gap in (10, 50, 200):
            for seed in (0, 1, 2):
                run = {"task": DR, "config": config, "gap": gap, "seed": seed, "sweep": 0}
                if config == RELU and gap == 200 and seed == 0:
                    run |= {"status": names.DIVERGED, "accuracy": None}
                elif solved_a(config, gap, seed):
                    run |= {"status": names.SOLVED, "accuracy": 1.0}
                else:
                    run |= {"status": names.UNSOLVED, "accuracy": 0.3}
                runs.append(run)
    for config in (LSTM, RNN):
        for gap in (10, 50):
            for seed in (0, 1, 2):
                acc = 0.15 + 0.01 * seed - gap / 10_000 if config == LSTM else 0.12
                runs.append({"task": COPY, "config": config, "gap": gap, "seed": seed,
                             "status": names.UNSOLVED, "accuracy": round(acc, 6), "sweep": 1})
    runs.append({"task": COPY, "config": RNN, "gap": 50, "seed": 0, "status": names.FAILED,
                 "accuracy": None, "sweep": None})
    return runs


def runs_b() -> list[dict]:
    runs = []
    for config in (RNN, RELU_CLIP):
        for gap in (10, 50, 200):
            for seed in (0, 1, 2):
                solved = gap <= 50
                runs.append({"task": DR, "config": config, "gap": gap, "seed": seed,
                             "status": names.SOLVED if solved else names.UNSOLVED,
                             "accuracy": 1.0 if solved else 0.4, "sweep": 0,
                             "by_gap": config == RNN and gap == 200})
    return runs


BY_GAP_ROWS = ((150, 40, 1.0, 0.9), (200, 30, 1.5, 0.6), (250, 30, 2.0, 0.3))


def log_run(client: MlflowClient, exp_id: str, run: dict, parents: list[str],
            staging: Path) -> None:
    model, activation, mode, threshold = run["config"]
    name = names.run_name(run["task"], model, activation, mode, threshold, run["gap"],
                          run["seed"])
    tags = {names.STATUS: run["status"], names.STATUS_REASON: "ok"}
    if run["sweep"] is not None:
        parent = parents[run["sweep"]]
        tags |= {names.SWEEP_ID: parent, names.PARENT_RUN_ID: parent}
    run_id = client.create_run(exp_id, run_name=name, tags=tags).info.run_id
    params = {names.TASK: run["task"], names.GAP: run["gap"], names.MODEL: model,
              names.ACTIVATION: activation, names.INIT: "default", names.CLIP_MODE: mode,
              names.CLIP_THRESHOLD: threshold, names.SEED: run["seed"],
              names.LR: 0.003 if run["task"] == DR else 0.001,
              "tracking.uri": f"sqlite:///somewhere/{run['seed']}.db", names.HIDDEN_SIZE: 64}
    if run["task"] == COPY:  # comes with the task: not an axis
        params["task.n_symbols"] = 8
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
    if run["status"] != names.FAILED:
        metrics = {names.CHANCE_ACCURACY: 0.125, names.CHANCE_LOSS: 2.0,
                   names.WALL_TIME_S: WALL, names.STEPS_RUN: 500.0}
        if run["accuracy"] is not None:
            metrics |= {names.FINAL_EVAL_ACCURACY: run["accuracy"],
                        names.FINAL_EVAL_LOSS: 2.0 * (1.1 - run["accuracy"])}
        if run["status"] == names.SOLVED:
            metrics[names.STEPS_TO_SOLVE] = 100.0 + run["gap"] + run["seed"]
        if run["status"] == names.DIVERGED:
            metrics[names.DIVERGED_STEP] = 398.0
        client.log_batch(run_id, metrics=[Metric(k, v, 0, 500) for k, v in metrics.items()])
    if run.get("by_gap"):
        path = staging / run_id / names.EVAL_BY_GAP_ARTIFACT
        path.parent.mkdir(parents=True)
        shift = 0.1 * run["seed"]
        lines = [",".join(names.EVAL_BY_GAP_COLUMNS)] + [
            f"{g},{n},{loss},{acc - shift}" for g, n, loss, acc in BY_GAP_ROWS]
        path.write_text("\n".join(lines) + "\n")
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, "FAILED" if run["status"] == names.FAILED else "FINISHED")


def build(root: Path) -> str:
    """Log the store under `root` (an empty folder); its `sqlite:///` URI."""
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    for experiment, runs, sweeps in ((A, runs_a(), (SWEEP_A, SWEEP_B)), (B, runs_b(),
                                                                         (SWEEP_A,))):
        exp_id = client.create_experiment(experiment,
                                          artifact_location=(root / experiment).as_uri())
        parents = []
        for i, overrides in enumerate(sweeps):
            tags = {names.RUN_KIND: names.SWEEP_KIND}
            if i == 1:
                tags[names.SWEEP_TUNING] = TUNING
            parent = client.create_run(exp_id, run_name=f"sweep-{i}", start_time=1000 + i,
                                       tags=tags).info.run_id
            client.log_batch(parent, params=[Param(names.SWEEP_OVERRIDES, overrides)],
                             tags=[RunTag("x", "y")])
            client.set_terminated(parent)
            parents.append(parent)
        for run in runs:
            log_run(client, exp_id, run, parents, root / "staging")
    return uri
