"""The findings tests' MLflow store, whose answers are known (tests/test_report_findings.py
says what it holds): experiments `A` and `B` (grid sweeps), `C` (a frontier sweep), their runs
and sweeps, and `build`, which logs them. The `findings_store` fixture (tests/conftest.py)
builds it once per test module."""

from __future__ import annotations

from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from harness import names
from harness.frontier import Rule
from harness.tracking.run import csv_text

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
    build_frontier(client, root)
    return uri


# --- C: a frontier sweep (hydra/sweeper=frontier), 2 of 3 seeds, ladder 5..160 --------------

C = "findings-frontier"
NOISE, ADDING = "delayed_recall_noise", "adding"
GRU, IRNN, IRNN_CLIP = ("gru", "tanh", "none", 1.0), ("rnn", "relu", "none", 1.0), (
    "rnn", "relu", "norm", 1.0)
RNN_CLIP = ("rnn", "tanh", "norm", 10.0)
LR_C, LR_OTHER = 0.01, 0.003  # the lr the search chose, and the one it tried at gap 5
RULE_C = Rule(m=2, n=3).describe() + f"; lr: best of {LR_OTHER:g}, {LR_C:g} at the lowest gap"
LOSS_RULE = "eval loss / chance loss <= 0.06"
ACCURACY_RULE = "eval accuracy >= 0.99"
CHANCE_ADDING = 1 / 6
# probe letters: S solved, F failed (plateau), U still improving, D diverged (at step 1)
# configuration key -> (task, model config, init, probes, gap_held, k, n, gap_failed, censored)
FRONTIER_C = {
    # every seed solved only gap 10, but 2 of 3 held up to 80: the frontier says 80
    "model=gru": (NOISE, GRU, "default", "5:SSF 10:SSS 20:SFS 40:FSS 80:SSF 160:FFF", 80, 2, 3,
                  160, ""),
    "model=rnn": (NOISE, RNN, "default", "5:SS 10:SSS 20:FFF", 10, 3, 3, 20, ""),
    # clipping at 10 never fires: this tanh RNN's gradients vanish (pre-clip norms < 0.5)
    "model=rnn clip=norm clip.threshold=10": (NOISE, RNN_CLIP, "default", "5:SS 10:SSS 20:FFF",
                                              10, 3, 3, 20, ""),
    # exploding gradients: the IRNN diverges at step 1 unclipped and holds 20 clipped at 1
    "model=irnn": (NOISE, IRNN, "identity", "5:DDD", None, None, None, 5, ""),
    "model=irnn clip=norm clip.threshold=1": (NOISE, IRNN_CLIP, "identity",
                                              "5:SS 20:SSS 40:FUF", 20, 3, 3, 40, ""),
    "task=adding model=lstm": (ADDING, LSTM, "default", "5:SS 20:SS 80:SSS", 80, 3, 3, None, ""),
    "task=adding model=rnn": (ADDING, RNN, "default", "5:SSS 10:FFF", 5, 3, 3, 10, ""),
}
PARAMETERS = {"gru": 12_993, "rnn": 4_353, "lstm": 17_217}  # model.hidden_size 64
# (clip rate, largest pre-clip norm) of a run, by configuration key and seed
CLIP_STATS = {
    "model=irnn clip=norm clip.threshold=1": lambda seed: (0.4 + 0.25 * seed, 50.0 * 4 ** seed),
    "model=rnn clip=norm clip.threshold=10": lambda seed: (0.0, 0.3 + 0.05 * seed),
    "model=rnn": lambda seed: (0.0, 0.3 + 0.05 * seed),
    # a run that diverges at step 1 logs the maximum over no step (harness/loop.py)
    "model=irnn": lambda seed: (0.0, 0.0),
}


def c_loss(task: str, letter: str, gap: int, seed: int) -> float:
    """A probe's final eval loss; on adding, solved runs end below 6% of the chance MSE."""
    if task == ADDING:
        ratio = 0.02 + 0.001 * seed if letter == "S" else 0.9 + gap / 1000
        return round(ratio * CHANCE_ADDING, 9)
    return 0.05 if letter == "S" else 1.5


def _c_probe(client: MlflowClient, exp_id: str, parent: str, key: str, lr: float, gap: int,
             seed: int, letter: str) -> tuple:
    """One probe run of C, and its row of frontier_probes.csv."""
    task, (model, activation, mode, threshold), init = FRONTIER_C[key][:3]
    status = {"S": names.SOLVED, "D": names.DIVERGED}.get(letter, names.UNSOLVED)
    end = {"S": names.SOLVED, "F": names.PLATEAU, "U": names.IMPROVING,
           "D": names.DIVERGED}[letter]
    base = "adding" if task == ADDING else "delayed_recall"
    tags = {names.STATUS: status, names.STATUS_REASON: "ok", names.END_STATE: end,
            names.SWEEP_ID: parent, names.PARENT_RUN_ID: parent,
            names.SUCCESS_CRITERION: LOSS_RULE if task == ADDING else ACCURACY_RULE}
    run_id = client.create_run(exp_id, run_name=names.run_name(
        base, model, activation, mode, threshold, gap, seed, init=init), tags=tags).info.run_id
    params = {names.TASK: base, names.GAP: gap, names.MODEL: model, names.ACTIVATION: activation,
              names.INIT: init, names.CLIP_MODE: mode, names.CLIP_THRESHOLD: threshold,
              names.SEED: seed, names.LR: lr, names.HIDDEN_SIZE: 64}
    if task == NOISE:
        params["task.filler"] = "noise"
    chance = CHANCE_ADDING if task == ADDING else 2.0
    metrics = {names.CHANCE_LOSS: chance, names.CHANCE_ACCURACY: 0.0784 if task == ADDING
               else 0.125, names.STEPS_RUN: 1.0 if letter == "D" else 500.0,
               names.WALL_TIME_S: WALL, names.PARAMETER_COUNT: float(PARAMETERS[model])}
    if letter == "D":
        metrics[names.DIVERGED_STEP] = 1.0
    else:
        metrics |= {names.FINAL_EVAL_LOSS: c_loss(task, letter, gap, seed),
                    names.FINAL_EVAL_ACCURACY: 1.0 if letter == "S" else 0.3}
    if letter == "S":
        metrics[names.STEPS_TO_SOLVE] = 100.0 + gap
    if key in CLIP_STATS:
        rate, norm = CLIP_STATS[key](seed)
        metrics |= {names.CLIP_RATE_TOTAL: rate, names.GRAD_NORM_PRE_CLIP_MAX: norm}
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()],
                     metrics=[Metric(k, v, 0, 500) for k, v in metrics.items()])
    client.set_terminated(run_id, "FAILED" if letter == "D" else "FINISHED")
    return (key, base, lr, gap, seed, status, end,
            {"S": "solved", "U": "undecided"}.get(letter, "failed"), run_id)


def build_frontier(client: MlflowClient, root: Path) -> None:
    """Experiment C: a frontier sweep's parent run (frontier.csv, frontier_probes.csv, the
    frontier_rule tag) and its probes; the lr choice's probes at LR_OTHER ran at gap 5 only."""
    exp_id = client.create_experiment(C, artifact_location=(root / C).as_uri())
    parent = client.create_run(exp_id, run_name="frontier-c", start_time=1000,
                               tags={names.RUN_KIND: names.SWEEP_KIND}).info.run_id
    client.log_param(parent, names.SWEEP_OVERRIDES, "hydra/sweeper=frontier experiment=demo")
    rows, probes = [], []
    for key, (task, _, _, levels, held, k, n, failed, censored) in FRONTIER_C.items():
        runs = 0
        for level in levels.split():
            gap, letters = level.split(":")
            for seed, letter in enumerate(letters):
                probes.append(_c_probe(client, exp_id, parent, key, LR_C, int(gap), seed,
                                       letter))
                runs += 1
        if key == "model=gru":  # the lr the search did not choose, at the lowest gap
            probes += [_c_probe(client, exp_id, parent, key, LR_OTHER, 5, seed, "F")
                       for seed in range(2)]
        base = "adding" if task == ADDING else "delayed_recall"
        rows.append((key, base, LR_C, "" if held is None else held, "" if k is None else k,
                     "" if n is None else n, "" if failed is None else failed, censored,
                     levels.replace("D", "F"), runs, 18, "", "", ""))  # diverged: failed
    client.log_text(parent, csv_text(names.FRONTIER_COLUMNS, rows), names.FRONTIER_ARTIFACT)
    client.log_text(parent, csv_text(names.FRONTIER_PROBE_COLUMNS, probes),
                    names.FRONTIER_PROBES_ARTIFACT)
    client.set_tag(parent, names.FRONTIER_RULE, RULE_C)
    client.set_terminated(parent)
