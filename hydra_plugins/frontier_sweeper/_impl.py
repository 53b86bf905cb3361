"""The frontier sweeper: the ask -> `launcher.launch` -> read loop of Hydra's optuna and
nevergrad sweepers, around the search of harness/frontier.py, launched asynchronously
(`_schedule`: a worker that frees takes the next probe at once).

Every combination of the non-gap axes is a configuration. The sweeper owns `task.gap` and
`seed` (and `optim.lr` with `frontier.lrs`, `task.gap_min` with `frontier.gaps=variable`);
each probe is an ordinary job of the launcher (joblib, submitit, SLURM), so the jobs train,
skip and resume as any sweep's. Outcomes are read back from the MLflow store by config hash,
never from the job's return value: a probe that already finished in an earlier sweep is
reused without launching, so a rerun of the same command costs nothing and an interrupted
search resumes where it stopped. A run still improving at its budget that a level's verdict
hinges on is continued, in its own run, up to `frontier.max_steps` (`frontier.continue_to` on
its job, harness/lifecycle/runs.py).
"""

from __future__ import annotations

import itertools
import logging
import re
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from harness import names
from harness.frontier import (
    FAILED,
    SOLVED,
    UNDECIDED,
    Frontier,
    Probe,
    Result,
    Rule,
    Search,
    SolveCurve,
    ladder,
    solve_curve,
    top_gaps,
)
from harness.resources import cpu_count
from harness.schema import ConfigError, FrontierConfig
from harness.sweeping import HarnessSweeper

from ._schedule import Unit, Usage, run_async

log = logging.getLogger(__name__)

OWNED = ("task.gap", "seed")  # the sweeper sets these in every probe
GAP_MIN = "task.gap_min"  # ... and this one with frontier.gaps=variable
SUMMARY_FILE = "frontier.csv"  # in the sweep folder, beside multirun.yaml


def refuse(message: str) -> None:
    """One line, exit 2: a sweep that cannot be searched starts no job."""
    print(f"harness-train: frontier sweep refused: {message}", file=sys.stderr)
    sys.exit(2)


def outcome_of(run: Any, solved: bool | None = None) -> Result:
    """A finished run as the search sees it (harness/frontier.py: improving is undecided).
    `solved`: whether the run counts as solved (None: its status says; a variable-gap probe
    is judged on its longest gaps, `FrontierSweeperImpl.top_solved`)."""
    tags, metrics = run.data.tags, run.data.metrics
    if solved is None:
        solved = tags.get(names.STATUS) == names.SOLVED
    if solved:
        outcome = SOLVED
    elif tags.get(names.STATUS) != names.DIVERGED and tags.get(names.END_STATE) == names.IMPROVING:
        outcome = UNDECIDED
    else:
        outcome = FAILED
    return Result(outcome, metrics.get(names.STEPS_TO_SOLVE, metrics.get(names.STEPS_RUN)),
                  metrics.get(names.EVAL_NORMALIZED_LOSS))


def metric_key(label: str) -> str:
    """An MLflow-safe metric suffix for a configuration label."""
    return re.sub(r"[^\w\-. /]", "_", label)


LETTER = {SOLVED: "S", FAILED: "F", UNDECIDED: "U"}


def curve_of(search: Search, front: Frontier) -> SolveCurve | None:
    """P(solved) against ln gap over the configuration's decided probes at its chosen lr."""
    return solve_curve([(p.gap, search.results[p].outcome == SOLVED) for p in front.probes
                        if p.lr == front.lr and search.results[p].outcome != UNDECIDED])


def fitted(curve: SolveCurve | None) -> tuple[str, str, str]:
    """The frontier table's p50_gap, p50_low, p50_high: the fit's gap at P(solved) = 0.5 and
    its bootstrap interval, only where that gap lies within the probed gaps."""
    if curve is None or curve.gap50 is None or not (
            curve.lowest <= curve.gap50 <= curve.highest) or curve.solved in (0, curve.points):
        return "", "", ""
    interval = ("", "") if curve.low is None or curve.high is None else (
        f"{curve.low:.4g}", f"{curve.high:.4g}")
    return f"{curve.gap50:.4g}", *interval


def probed_levels(search: Search, front: Frontier) -> str:
    """Every probed level with its seed outcomes in seed order, at the rate the level's
    verdict is read at (`Frontier.level_lrs`): `5:SS 20:SS 80:FF 40:SSF` (S solved, F failed,
    U undecided)."""
    levels: dict[int, str] = {}
    for p in sorted(front.probes, key=lambda p: (p.gap, p.seed)):
        if p.gap in front.level_lrs and p.lr == front.level_lrs[p.gap]:
            levels[p.gap] = levels.get(p.gap, "") + LETTER[search.results[p].outcome]
    return " ".join(f"{gap}:{seeds}" for gap, seeds in levels.items())


def level_rates(front: Frontier) -> str:
    """Which rate each probed level was read at, `5:0.01 20:0.003` (blank: one rate)."""
    if len({lr for lr in front.level_lrs.values()}) <= 1:
        return ""
    return " ".join(f"{gap}:{lr:g}" for gap, lr in sorted(front.level_lrs.items())
                    if lr is not None)


def abort_joblib() -> None:
    """Stop the joblib launcher's worker processes (Ctrl-C or SIGTERM to the sweep), as its own
    `Parallel` does when interrupted in the thread that called it: their runs are then closed
    as killed (harness.callbacks) and resume from their checkpoints."""
    from joblib.externals.loky import reusable_executor

    executor = getattr(reusable_executor, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=False, kill_workers=True)


class FrontierSweeperImpl(HarnessSweeper):
    """Checks, the sweep's parent run and per-job progress lines come from HarnessSweeper;
    the search decides which jobs each batch holds."""

    def fixed_by_sweeper(self, key: str) -> bool:
        """The probes' own keys (gap, seed), the frontier's settings, and the lr and smallest
        gap where the sweeper sets them."""
        return super().fixed_by_sweeper(key) or self.owned(key) or key.startswith("frontier.")

    def owned(self, key: str) -> bool:
        """Whether the sweeper sets `key` in every probe (module docstring)."""
        return key in OWNED or (key == "optim.lr" and bool(self.settings.lrs)) or (
            key == GAP_MIN and self.settings.gaps == "variable")

    # --- the configurations ---

    def axes(self, arguments: list[str]) -> tuple[list[list[str]], list[str]]:
        """(one list of `key=value` per swept axis, the fixed overrides)."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()]
                                           + list(arguments))
        swept, fixed = [], []
        for override in overrides:
            key = override.get_key_element()
            if self.owned(key):
                refuse(f"{key} is set by the frontier sweeper (frontier.gap_min/gap_max/ratio, "
                       f"frontier.n, frontier.lrs, frontier.gaps); remove "
                       f"{override.input_line}")
            if key == "batched_seeds":
                refuse("batched_seeds: the frontier sweeper adds seeds one job at a time, only "
                       f"where outcomes disagree; remove {override.input_line}")
            if key.startswith("frontier."):
                continue  # already in the composed config
            if override.is_sweep_override():
                values = list(override.sweep_string_iterator())
                if not values or any(v == "" for v in values):
                    refuse(f"{key}: an empty axis ({override.input_line})")
                swept.append([f"{key}={v}" for v in values])
            else:
                value = override.get_value_element_as_str()
                if value == "":
                    refuse(f"{key}: an empty axis ({override.input_line})")
                fixed.append(override.input_line)
        return swept, fixed

    def probe_overrides(self, probe: Probe, continue_to: int = 0) -> list[str]:
        """A probe's job: its configuration at the probe's gap (variable gaps: from the task's
        smallest, `floors`), seed and lr; `continue_to`: a continuation's budget."""
        overrides = [*self.configurations[probe.key], f"task.gap={probe.gap}",
                     f"seed={probe.seed}"]
        if probe.key in self.floors:
            overrides.append(f"{GAP_MIN}={min(self.floors[probe.key], probe.gap)}")
        if probe.lr is not None:
            overrides.append(f"optim.lr={probe.lr}")
        return overrides + ([f"frontier.continue_to={continue_to}"] if continue_to else [])

    def check(self, overrides: Sequence[str]) -> Any:
        """The job's identity, or a one-line refusal naming the field and the overrides."""
        return self.checked_job(overrides)

    # --- the loop ---

    def sweep(self, arguments: list[str]) -> Any:
        from harness.lifecycle.identity import varying_keys

        assert self.config is not None
        settings = OmegaConf.to_object(self.config.frontier)
        assert isinstance(settings, FrontierConfig)
        try:
            settings.validate()
        except ConfigError as err:
            refuse(f"frontier.{err}")
        self.settings = settings
        if self.config.get("batched_seeds"):
            refuse("batched_seeds: the frontier sweeper adds seeds one job at a time, only "
                   "where outcomes disagree; use a preset or overrides without batched_seeds")
        self.steps = int(self.config.train.steps)
        self.cap = self.steps * 2 if settings.max_steps is None else settings.max_steps
        if 0 < self.cap < self.steps:
            refuse(f"frontier.max_steps: must be 0 (never continue), null (2 x train.steps) or "
                   f">= train.steps ({self.steps}), got {self.cap}")
        swept, fixed = self.axes(arguments)
        sets = self.configuration_sets([axis[0].partition("=")[0].lstrip("+~")
                                        for axis in swept])
        combos = [[*chosen, *c] for chosen in sets
                  for c in (itertools.product(*swept) if swept else [()])]
        self.configurations = {" ".join(c) or "(defaults)": [*fixed, *c] for c in combos}
        gaps = ladder(settings.gap_min, settings.gap_max, settings.ratio)
        rule = Rule(settings.m, settings.n, settings.stride, settings.confirm)
        search = Search(self.configurations, gaps, rule, settings.lrs, settings.lr_every_level)
        # Every configuration must accept both ends of the ladder before any job starts.
        self.floors: dict[str, int] = {}
        lr = settings.lrs[0] if settings.lrs else None
        ends = []
        for key in self.configurations:
            if settings.gaps == "variable":  # the task's smallest gap, from a fixed-gap check
                fixed_gap = self.check(self.probe_overrides(Probe(key, lr, gaps[-1], 0)))
                self.floors[key] = type(fixed_gap.spec.task).min_gap
            for gap in (gaps[0], gaps[-1]):
                ends.append(self.check(self.probe_overrides(Probe(key, lr, gap, settings.n - 1))))
        self.declare_axes([*varying_keys(ends),
                           *([names.LR] if settings.lrs and len(settings.lrs) > 1 else [])])
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        self.start_parent_run()  # only once every configuration passed its checks
        print(f"Frontier: {len(self.configurations)} configuration(s) x ladder {gaps} x "
              f"{rule.n} seeds; {rule.describe()}", flush=True)
        self.search, self.started = search, time.perf_counter()
        self.counts = {"launched": 0, "continued": 0, "reused": 0, "failed": 0}
        self.jobs: dict[Probe, Any] = {}
        self.successes: dict[str, Any] = {}
        self.looked_up: set[Probe] = set()  # not in the store when the search first wanted them
        self.continued: set[Probe] = set()
        self.walls: dict[Probe, float] = {}  # each probe's run's wall_time_s so far
        self.returns: list[Any] = []
        self.lock = threading.Lock()
        self.job_idx = 0
        self.decided: set[str] = set()
        usage = run_async(search, self.workers(), self.ready, self.units, self.launch_unit,
                          self.unit_done, self.abort)
        self.record(search, search.frontiers(), sweep_dir, usage)
        return self.returns

    def workers(self) -> int:
        """Units in flight at once: `max_batch_size`, else the launcher's parallel jobs
        (joblib's n_jobs, -1 or null: every core; SLURM's array_parallelism), else every
        core."""
        assert self.config is not None
        if self.max_batch_size:
            return int(self.max_batch_size)
        for key in ("n_jobs", "array_parallelism"):
            value = OmegaConf.select(self.config, f"hydra.launcher.{key}", default=None)
            if value is not None or key == "n_jobs" and self.joblib():
                return cpu_count() if value is None or int(value) < 1 else int(value)
        return cpu_count()

    def joblib(self) -> bool:
        assert self.config is not None
        return str(OmegaConf.select(self.config, "hydra.launcher._target_",
                                    default="")).endswith("JoblibLauncher")

    def abort(self) -> None:
        if self.joblib():
            abort_joblib()

    def plan(self, batch_size: int | None = None) -> dict[str, Any]:
        """Progress lines without batches (`[23] <run> solved ...`): units start as workers
        free, not in batches."""
        return {**super().plan(batch_size), "batch": None}

    def job_of(self, probe: Probe) -> Any:
        """The probe's job (its identity), checked once."""
        if probe not in self.jobs:
            self.jobs[probe] = self.check(self.probe_overrides(probe))
        return self.jobs[probe]

    def hash_of(self, probe: Probe) -> str:
        return self.job_of(probe).hash_

    def ready(self, asked: list[Probe]) -> list[Probe]:
        """The probes of `asked` that need a launch: continuations (known to the search), and
        new ones the store does not hold (those it holds are told to the search, reused)."""
        from harness.tracking.run import finished_run

        assert self.config is not None
        uri, experiment = self.config.tracking.uri, self.config.experiment_name
        out = []
        for probe in asked:
            if probe in self.search.results or probe in self.looked_up:
                out.append(probe)
                continue
            done = finished_run(uri, experiment, self.hash_of(probe))
            if done is None:
                self.looked_up.add(probe)
                out.append(probe)
            else:
                self.search.tell(probe, self.outcome(probe, done))
                self.counts["reused"] += 1
        return out

    def units(self, probes: list[Probe]) -> list[Unit]:
        """The launch units of `probes`: grouped as whole-sweep batching groups them
        (`HarnessSweeper.group`), each with its cost, members x sequence length x steps."""
        budgets = [self.cap if p in self.search.results else 0 for p in probes]
        batch = [self.probe_overrides(p, budget) for p, budget in zip(probes, budgets,
                                                                      strict=True)]
        self.check_jobs(batch)
        units = []
        for group in self.group(batch):
            members, budget = tuple(probes[i] for i in group), budgets[group[0]]
            steps = budget - self.steps if budget else self.steps
            units.append(Unit(members, len(members) * self.job_of(members[0]).seq_len * steps,
                              budget))
        return units

    def launch_unit(self, unit: Unit) -> tuple[dict[Probe, Result], float]:
        """In a worker thread: launch the unit's job and read its probes' outcomes from the
        store; with the training seconds its runs took (their `wall_time_s` added now)."""
        from harness.tracking.run import finished_run

        assert self.config is not None
        uri, experiment = self.config.tracking.uri, self.config.experiment_name
        with self.lock:
            idx, self.job_idx = self.job_idx, self.job_idx + 1
            self.counts["continued" if unit.continue_to else "launched"] += len(unit.probes)
            if unit.continue_to:
                self.continued.update(unit.probes)
        batch = [self.probe_overrides(p, unit.continue_to) for p in unit.probes]
        returns = self.launch_batch(batch, initial_job_idx=idx)
        results, seconds = {}, 0.0
        for probe in unit.probes:
            done = finished_run(uri, experiment, self.hash_of(probe))
            if done is None:  # the job failed or was stopped: not a result
                with self.lock:
                    self.counts["failed"] += 1
                results[probe] = Result(UNDECIDED)
                continue
            wall = done.data.metrics.get(names.WALL_TIME_S, 0.0)
            seconds += wall - self.walls.get(probe, 0.0)
            results[probe] = self.outcome(probe, done)
        with self.lock:
            self.returns.append(returns)
        return results, seconds

    def outcome(self, probe: Probe, run: Any) -> Result:
        """A probe's finished run as the search sees it (`outcome_of`; variable gaps: judged
        on its longest gaps), and whether it may be continued: still improving below the
        budget cap, with its checkpoint, and not continued already in this sweep."""
        from harness.tracking.run import budget_reached

        self.walls[probe] = run.data.metrics.get(names.WALL_TIME_S, 0.0)
        solved = self.top_solved(probe, run) if probe.key in self.floors else None
        result = outcome_of(run, solved)
        go_on = (result.outcome == UNDECIDED and budget_reached(run) < self.cap
                 and probe not in self.continued and self.job_of(probe).checkpoint.exists())
        return Result(result.outcome, result.steps_to_solve, result.final_loss, go_on)

    def top_solved(self, probe: Probe, run: Any) -> bool:
        """Whether a variable-gap probe's final evaluation meets its task's criterion on the
        longest tenth of its gaps (`harness.frontier.top_gaps`: eval_by_gap.csv)."""
        from harness.tracking.run import run_csv

        assert self.config is not None
        if run.data.tags.get(names.STATUS) == names.DIVERGED:
            return False
        rows = run_csv(self.config.tracking.uri, run.info.run_id, names.EVAL_BY_GAP_ARTIFACT)
        top = top_gaps([(int(r["gap"]), int(r["sequences"]), float(r["eval_loss"]),
                         float(r["eval_accuracy"])) for r in rows], probe.gap,
                       min(self.floors[probe.key], probe.gap))
        if top is None:
            return False
        accuracy, loss = top
        spec = self.job_of(probe).spec
        if probe.key not in self.successes:
            self.successes[probe.key] = spec.task.build().success
        chance = run.data.metrics.get(names.CHANCE_LOSS) or 1.0
        return self.successes[probe.key].met(accuracy, loss / chance,
                                             spec.train.solve_threshold)

    def unit_done(self, unit: Unit) -> None:
        """After a unit's outcomes are told: one line per configuration it decided."""
        search = self.search
        for key in dict.fromkeys(p.key for p in unit.probes):
            front = search.frontier(key)[0]
            if not front.done or key in self.decided:
                continue
            self.decided.add(key)
            c = self.counts
            print(f"[frontier] {key}: {answer_text(search, front)} · "
                  f"{len(self.configurations) - len(self.decided)} of "
                  f"{len(self.configurations)} configurations open · {c['launched']} launched, "
                  f"{c['continued']} continued, {c['reused']} reused, {c['failed']} failed · "
                  f"{time.perf_counter() - self.started:.0f} s", flush=True)

    # --- the result ---

    def rule_text(self, search: Search, base_lr: float) -> str:
        """The decision rule in words: the parent run's tag `frontier_rule`."""
        lrs = list(search.lrs)
        if search.every_level:
            lr = (f"each of {lrs} at every probed level (members of one stacked model), a level"
                  " held when it holds at some rate, read at the best (solved, then steps to "
                  "solve, then final loss)")
        elif search.lrs != [None]:
            lr = (f"each of {lrs} on the first {search.rule.m} seeds at gap {search.gaps[0]}, "
                  "the best (solved, then steps to solve, then final loss) carried up the "
                  "ladder")
        else:
            lr = f"optim.lr fixed at {base_lr:g}"
        budget = (f"runs still improving at train.steps={self.steps} that a level's verdict "
                  f"hinges on are continued from their checkpoints, in their own runs, up to "
                  f"frontier.max_steps={self.cap} steps; censored only there"
                  if self.cap > self.steps else f"no continuation: a level hinging on runs "
                  f"still improving at train.steps={self.steps} is censored")
        gaps = ("" if not self.floors else "; variable gaps: a probe at level g trains on gaps "
                "drawn from the task's smallest up to g and is solved when its final "
                "evaluation meets the task's criterion on the longest tenth of them")
        return f"{search.rule.describe()}; lr: {lr}; budget: {budget}{gaps}"

    def record(self, search: Search, frontiers: list[Frontier], sweep_dir: Path,
               usage: Usage) -> None:
        from mlflow.entities import Metric

        from harness.tracking.run import csv_text, finished_run
        from harness.tracking.store import client
        from harness.tracking.sweep import sweep_run_id

        assert self.config is not None
        uri, experiment = self.config.tracking.uri, self.config.experiment_name
        task = str(self.config.task.name)
        base_lr = float(self.config.optim.lr)
        rows, probe_rows, extra_steps = [], [], 0
        curves: dict[str, SolveCurve | None] = {}
        for f in frontiers:
            task_of = next((o.partition("=")[2] for o in self.configurations[f.key]
                            if o.startswith("task=")), task)
            curve = curve_of(search, f)
            curves[f.key] = curve
            rows.append((f.key, task_of, f.lr if f.lr is not None else base_lr, f.gap_held,
                         f.held_solved, f.held_seeds, f.gap_failed,
                         " ".join(map(str, f.censored_gaps)), probed_levels(search, f),
                         len(f.probes), search.grid_runs() // len(frontiers),
                         *fitted(curve), level_rates(f)))
            for p in f.probes:
                run = finished_run(uri, experiment, self.hash_of(p))
                tags = run.data.tags if run else {}
                if run is not None:
                    steps_run = int(run.data.metrics.get(names.STEPS_RUN, 0))
                    extra_steps += max(0, steps_run - int(run.data.params[names.TRAIN_STEPS]))
                probe_rows.append((f.key, task_of, p.lr if p.lr is not None else base_lr,
                                   p.gap, p.seed, tags.get(names.STATUS, names.FAILED),
                                   tags.get(names.END_STATE, ""), search.results[p].outcome,
                                   run.info.run_id if run else ""))
        table = csv_text(names.FRONTIER_COLUMNS, rows)
        (sweep_dir / SUMMARY_FILE).write_text(table)
        rule = self.rule_text(search, base_lr)
        parent = sweep_run_id(sweep_dir)
        if parent is not None:
            mlflow_client = client(uri)
            mlflow_client.log_text(parent, table, names.FRONTIER_ARTIFACT)
            mlflow_client.log_text(parent, csv_text(names.FRONTIER_PROBE_COLUMNS, probe_rows),
                                   names.FRONTIER_PROBES_ARTIFACT)
            mlflow_client.set_tag(parent, names.FRONTIER_RULE, rule[:5000])
            now = int(time.time() * 1000)
            metrics = [Metric(names.FRONTIER_RUNS, sum(len(f.probes) for f in frontiers), now, 0),
                       Metric(names.FRONTIER_GRID_RUNS, search.grid_runs(), now, 0),
                       Metric(names.FRONTIER_EXTRA_STEPS, extra_steps, now, 0),
                       Metric(names.FRONTIER_UTILIZATION, usage.utilization, now, 0)]
            for f in frontiers:
                if f.gap_held is not None:
                    metrics.append(Metric(f"frontier_gap_held/{metric_key(f.key)}",
                                          f.gap_held, now, 0))
            mlflow_client.log_batch(parent, metrics=metrics)
        print(f"\nFrontier ({rule}):")
        width = max(len(f.key) for f in frontiers)
        for f in frontiers:
            curve = curves[f.key]
            fit = f"; {curve.describe()}" if curve is not None else ""
            rates = f"; rate per level {level_rates(f)}" if level_rates(f) else ""
            note = f"  [non-monotone: {'; '.join(f.anomalies)}]" if f.anomalies else ""
            print(f"  {f.key:<{width}}  {answer_text(search, f)}{fit}{rates}{note}")
        used, c = sum(len(f.probes) for f in frontiers), self.counts
        print(f"  runs: {used} of the full grid's {search.grid_runs()} "
              f"({c['launched']} launched now, {c['continued']} continued, {c['reused']} reused "
              f"from the store, {c['failed']} failed); {extra_steps} steps past train.steps in "
              f"continued runs\n  workers: {usage.workers}, busy {usage.utilization:.0%} "
              f"({usage.trained_s:.0f} s of training in {usage.wall_s:.0f} s)"
              f"\n  table: {sweep_dir / SUMMARY_FILE}", flush=True)
        if c["failed"]:
            print(f"  {c['failed']} probe job(s) failed and count as undecided; their errors "
                  f"are in {sweep_dir / 'failed_jobs.txt'}", flush=True)


def answer_text(search: Search, f: Frontier) -> str:
    """`held gap 40 (3/3), gap 80 censored`."""
    held = (f"held gap {f.gap_held} ({f.held_solved}/{f.held_seeds})"
            if f.gap_held is not None else f"not even gap {search.gaps[0]}")
    return held + ("" if f.gap_failed is None else
                   f", gap {f.gap_failed} {'censored' if f.failed_censored else 'failed'}")
