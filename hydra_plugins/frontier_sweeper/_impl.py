"""The frontier sweeper: the ask -> `launcher.launch` -> read loop of Hydra's optuna and
nevergrad sweepers, around the search of harness/frontier.py.

Every combination of the non-gap axes is a configuration. The sweeper owns `task.gap` and
`seed` (and `optim.lr` with `frontier.lrs`); each probe is an ordinary job of the launcher
(joblib, submitit, SLURM), so the jobs train, skip and resume as any sweep's. Outcomes are
read back from the MLflow store by config hash, never from the job's return value: a probe
that already finished in an earlier sweep is reused without launching, so a rerun of the
same command costs nothing and an interrupted search resumes where it stopped.
"""

from __future__ import annotations

import itertools
import logging
import re
import sys
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
)
from harness.schema import ConfigError, FrontierConfig
from harness.sweeping import HarnessSweeper

log = logging.getLogger(__name__)

OWNED = ("task.gap", "seed")  # the sweeper sets these in every probe
SUMMARY_FILE = "frontier.csv"  # in the sweep folder, beside multirun.yaml


def refuse(message: str) -> None:
    """One line, exit 2: a sweep that cannot be searched starts no job."""
    print(f"harness-train: frontier sweep refused: {message}", file=sys.stderr)
    sys.exit(2)


def outcome_of(run: Any) -> Result:
    """A finished run as the search sees it (harness/frontier.py: improving is undecided)."""
    tags, metrics = run.data.tags, run.data.metrics
    status = tags.get(names.STATUS)
    if status == names.SOLVED:
        outcome = SOLVED
    elif status == names.UNSOLVED and tags.get(names.END_STATE) == names.IMPROVING:
        outcome = UNDECIDED
    else:
        outcome = FAILED
    return Result(outcome, metrics.get(names.STEPS_TO_SOLVE),
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
    """Every probed level with its seed outcomes in seed order: `5:SS 20:SS 80:FF 40:SSF`
    (S solved, F failed, U undecided)."""
    levels: dict[int, str] = {}
    for p in sorted(front.probes, key=lambda p: (p.gap, p.seed)):
        if p.lr == front.lr:
            levels[p.gap] = levels.get(p.gap, "") + LETTER[search.results[p].outcome]
    return " ".join(f"{gap}:{seeds}" for gap, seeds in levels.items())


class FrontierSweeperImpl(HarnessSweeper):
    """Checks, the sweep's parent run and per-job progress lines come from HarnessSweeper;
    the search decides which jobs each batch holds."""

    def fixed_by_sweeper(self, key: str) -> bool:
        """The probes' own keys (gap, seed), the frontier's settings, and the lr where the
        sweeper chooses it."""
        return super().fixed_by_sweeper(key) or key in OWNED or key.startswith("frontier.") \
            or (key == "optim.lr" and bool(self.settings.lrs))

    # --- the configurations ---

    def axes(self, arguments: list[str]) -> tuple[list[list[str]], list[str]]:
        """(one list of `key=value` per swept axis, the fixed overrides)."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()]
                                           + list(arguments))
        swept, fixed = [], []
        for override in overrides:
            key = override.get_key_element()
            if key in OWNED or (key == "optim.lr" and self.settings.lrs):
                refuse(f"{key} is set by the frontier sweeper (frontier.gap_min/gap_max/ratio, "
                       f"frontier.n, frontier.lrs); remove {override.input_line}")
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

    def probe_overrides(self, probe: Probe) -> list[str]:
        overrides = [*self.configurations[probe.key], f"task.gap={probe.gap}",
                     f"seed={probe.seed}"]
        return overrides + ([f"optim.lr={probe.lr}"] if probe.lr is not None else [])

    def check(self, overrides: Sequence[str]) -> Any:
        """The job's identity, or a one-line refusal naming the field and the overrides."""
        return self.checked_job(overrides)

    # --- the loop ---

    def sweep(self, arguments: list[str]) -> Any:
        from harness.tracking.run import finished_run

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
        swept, fixed = self.axes(arguments)
        sets = self.configuration_sets([axis[0].partition("=")[0].lstrip("+~")
                                        for axis in swept])
        combos = [[*chosen, *c] for chosen in sets
                  for c in (itertools.product(*swept) if swept else [()])]
        self.configurations = {" ".join(c) or "(defaults)": [*fixed, *c] for c in combos}
        gaps = ladder(settings.gap_min, settings.gap_max, settings.ratio)
        rule = Rule(settings.m, settings.n, settings.stride, settings.confirm)
        search = Search(self.configurations, gaps, rule, settings.lrs)
        uri, experiment = self.config.tracking.uri, self.config.experiment_name
        # Every configuration must accept both ends of the ladder before any job starts.
        for key in self.configurations:
            for gap in (gaps[0], gaps[-1]):
                lr = settings.lrs[0] if settings.lrs else None
                self.check(self.probe_overrides(Probe(key, lr, gap, settings.n - 1)))
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        self.start_parent_run()  # only once every configuration passed its checks
        print(f"Frontier: {len(self.configurations)} configuration(s) x ladder {gaps} x "
              f"{rule.n} seeds; {rule.describe()}", flush=True)

        hashes: dict[Probe, str] = {}
        launched = reused = failed = 0
        job_idx, batch_no, returns, started = 0, 0, [], time.perf_counter()
        while True:
            wanted = [p for p in search.plan() if p not in search.results]
            if not wanted:
                break
            to_launch = []
            for probe in wanted:  # reuse what the store already holds
                if probe not in hashes:
                    hashes[probe] = self.check(self.probe_overrides(probe)).hash_
                done = finished_run(uri, experiment, hashes[probe])
                if done is not None:
                    search.tell(probe, outcome_of(done))
                    reused += 1
                else:
                    to_launch.append(probe)
            size = self.max_batch_size or max(1, len(to_launch))
            for start in range(0, len(to_launch), size):
                chunk = to_launch[start:start + size]
                batch_no += 1
                results = self.launch_batch([self.probe_overrides(p) for p in chunk],
                                            initial_job_idx=job_idx)
                job_idx += len(chunk)
                launched += len(chunk)
                returns.append(results)
                for probe in chunk:
                    done = finished_run(uri, experiment, hashes[probe])
                    if done is None:  # the job failed or was stopped: not a result
                        failed += 1
                        search.tell(probe, Result(UNDECIDED))
                    else:
                        search.tell(probe, outcome_of(done))
                open_ = sum(not search.frontier(k)[0].done for k in self.configurations)
                print(f"[frontier batch {batch_no}] {len(chunk)} probes over "
                      f"{len({p.key for p in chunk})} configuration(s) · {launched} launched, "
                      f"{reused} reused, {failed} failed · {open_} of "
                      f"{len(self.configurations)} configurations open · "
                      f"{time.perf_counter() - started:.0f} s", flush=True)
        frontiers = search.frontiers()
        self.record(search, frontiers, hashes, sweep_dir, launched, reused, failed)
        return returns

    # --- the result ---

    def record(self, search: Search, frontiers: list[Frontier], hashes: dict[Probe, str],
               sweep_dir: Path, launched: int, reused: int, failed: int) -> None:
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        from harness.tracking.run import csv_text, finished_run
        from harness.tracking.sweep import sweep_run_id

        assert self.config is not None
        uri, experiment = self.config.tracking.uri, self.config.experiment_name
        task = str(self.config.task.name)
        base_lr = float(self.config.optim.lr)
        rows, probe_rows = [], []
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
                         *fitted(curve)))
            for p in f.probes:
                run = finished_run(uri, experiment, hashes[p]) if p in hashes else None
                tags = run.data.tags if run else {}
                probe_rows.append((f.key, task_of, p.lr if p.lr is not None else base_lr,
                                   p.gap, p.seed, tags.get(names.STATUS, names.FAILED),
                                   tags.get(names.END_STATE, ""), search.results[p].outcome,
                                   run.info.run_id if run else ""))
        table = csv_text(names.FRONTIER_COLUMNS, rows)
        (sweep_dir / SUMMARY_FILE).write_text(table)
        rule = search.rule.describe() + "; lr: " + (
            f"each of {list(search.lrs)} on the first {search.rule.m} seeds at gap "
            f"{search.gaps[0]}, the best (solved, then steps to solve, then final loss) carried"
            " up the ladder" if search.lrs != [None] else f"optim.lr fixed at {base_lr:g}")
        parent = sweep_run_id(sweep_dir)
        if parent is not None:
            client = MlflowClient(uri)
            client.log_text(parent, table, names.FRONTIER_ARTIFACT)
            client.log_text(parent, csv_text(names.FRONTIER_PROBE_COLUMNS, probe_rows),
                            names.FRONTIER_PROBES_ARTIFACT)
            client.set_tag(parent, names.FRONTIER_RULE, rule[:5000])
            now = int(time.time() * 1000)
            metrics = [Metric(names.FRONTIER_RUNS, sum(len(f.probes) for f in frontiers), now, 0),
                       Metric(names.FRONTIER_GRID_RUNS, search.grid_runs(), now, 0)]
            for f in frontiers:
                if f.gap_held is not None:
                    metrics.append(Metric(f"frontier_gap_held/{metric_key(f.key)}",
                                          f.gap_held, now, 0))
            client.log_batch(parent, metrics=metrics)
        print(f"\nFrontier ({rule}):")
        width = max(len(f.key) for f in frontiers)
        for f in frontiers:
            held = (f"held gap {f.gap_held} ({f.held_solved}/{f.held_seeds})"
                    if f.gap_held is not None else f"not even gap {search.gaps[0]}")
            above = ("" if f.gap_failed is None else
                     f", gap {f.gap_failed} {'censored' if f.failed_censored else 'failed'}")
            note = f"  [non-monotone: {'; '.join(f.anomalies)}]" if f.anomalies else ""
            curve = curves[f.key]
            fit = f"; {curve.describe()}" if curve is not None else ""
            print(f"  {f.key:<{width}}  {held}{above}{fit}{note}")
        used = sum(len(f.probes) for f in frontiers)
        print(f"  runs: {used} of the full grid's {search.grid_runs()} "
              f"({launched} launched now, {reused} reused from the store, {failed} failed)"
              f"\n  table: {sweep_dir / SUMMARY_FILE}", flush=True)
        if failed:
            print(f"  {failed} probe job(s) failed and count as undecided; their errors are "
                  f"in {sweep_dir / 'failed_jobs.txt'}", flush=True)


