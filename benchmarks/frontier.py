"""The frontier search against the full grid of the same ladder and seeds: runs, wall time, and
whether both give the same answer.

    python -m benchmarks.frontier            # real multiruns: frontier and grid (minutes)
    python -m benchmarks.frontier --oracle   # the search alone on synthetic oracles (seconds)

**Real** (issue #15): in one sitting, on one machine, two real multiruns of the same jobs
(`python -m harness.train -m ...` in subprocesses, each into its own SQLite store, 2 jobs x 1
thread):

- the frontier: `hydra/sweeper=frontier`, delayed recall with noise filler,
  `model=rnn,lstm,gru` (`--models`), ladder 5, 10, 20, 40, 80 (`frontier.gap_min=5
  frontier.gap_max=80`), a gap held when 2 of 3 seeds solve it (`frontier.m=2 frontier.n=3`),
  hidden 64, at most 1,000 steps, lr 1e-2 (`--overrides`; the lr the demo's search chose for
  all three cells on this task);
- the grid: the default sweeper with `task.gap=5,10,20,40,80 seed=0,1,2`, every other setting
  the same (45 runs).

It prints the runs and wall time of each, the frontier's share of the grid's runs (aim
<= 40%) and of its wall time, and per configuration the frontier's answer (`gap_held` in
`frontier.csv` in the sweep folder) beside the grid's under the same rule, computed from the
grid's statuses in its store: a run is solved, failed, or undecided (unsolved but still
improving: end state `improving`), and a level holds when at least 2 of its 3 seeds solved
it (`harness.frontier.verdict`). The grid's answer is its largest gap held; its boundary, the
largest gap held below the first gap not held, is printed beside it (the search brackets and
bisects, so on a non-monotone grid it finds a boundary, not necessarily the largest gap held).

**Oracle**: runs the search spends against the full grid, and how often both give the same
answer, on noisy synthetic oracles (no training): each seed solves gap g with probability
1 / (1 + (g / g50)^slope), drawn once per (seed, gap).

**Rounds** (`--rounds --baseline PATH`, issue #29 item 3): the same frontier multirun with this
checkout's code and with a baseline checkout's (e.g. the synchronous rounds before the
asynchronous ones: `git archive <commit> | tar -x -C /tmp/base`), one after the other in one
sitting: a small demo-shaped frontier (`--models` on delayed recall with noise filler and on
adding, ladder 5..`--gap-max`, `--steps` steps, hidden `--hidden`, the rate chosen from
`--lrs`, 2 jobs x 1 thread). Per code: wall seconds, runs, the answers, and the workers'
utilization, training seconds (the runs' `wall_time_s`, read from its store) / (2 x the
multirun's wall time, start-up included, so the two codes are measured alike).

**Every level** (`--lr-every-level`): the same frontier with `frontier.lr_every_level` false
and true, this checkout's code (the cost of the best rate per level against the rate chosen at
the lowest rung).

**Gaps** (`--gaps`): the frontier with `frontier.gaps=fixed` and `variable` on delayed recall
(`task=delayed_recall`), the same seeds and budget, this checkout's code.

Rows go to benchmarks/results/frontier.csv (real), frontier-oracle.csv, frontier-rounds.csv,
frontier-levels.csv and frontier-gaps.csv.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from benchmarks.checkouts import Code, baseline_arguments, codes
from benchmarks.common import (
    Sitting,
    load_average,
    multirun,
    results_argument,
    runs_of,
    sgemm_gflops,
    store_uri,
)
from harness import names
from harness.frontier import (
    FAILED,
    HELD,
    SOLVED,
    Probe,
    Result,
    Rule,
    Search,
    ladder,
    run_search,
    verdict,
)

GAP_MIN, GAP_MAX = 5, 80


# ---- real multiruns ----------------------------------------------------------------------


def common_overrides(models: str, steps: int, hidden: int, batch_members: str,
                     extra: list[str] | None = None) -> list[str]:
    return ["task=delayed_recall_noise", f"model={models}", f"model.hidden_size={hidden}",
            "train.batch_size=32", f"train.steps={steps}", "train.eval_every=100",
            "hydra.launcher.n_jobs=2", "train.threads=1",
            f"train.batch_members={batch_members}", *(extra or [])]


def frontier_overrides(gap_min: int, gap_max: int, m: int, n: int) -> list[str]:
    return ["hydra/sweeper=frontier", f"frontier.gap_min={gap_min}",
            f"frontier.gap_max={gap_max}", f"frontier.m={m}", f"frontier.n={n}"]


def grid_overrides(gaps: list[int], n: int) -> list[str]:
    return ["task.gap=" + ",".join(map(str, gaps)), "seed=" + ",".join(map(str, range(n)))]


def configuration_label(models: str, model: str) -> str:
    """The frontier sweeper's label of the configuration of `model`: `model=<option>` when
    the models are a swept axis, `(defaults)` when there is a single one (not an axis)."""
    return f"model={model}" if "," in models else "(defaults)"


def grid_answers(folder: Path, rule: Rule, gaps: list[int],
                 models: str) -> dict[str, dict[str, object]]:
    """Per configuration (labelled as the frontier labels it): the grid's largest gap held
    under `rule`, its
    boundary (the largest gap held below the first not held), and every level's outcomes
    (S solved, F failed, U undecided), read from the grid's store as the frontier sweeper
    reads a run (`outcome_of`)."""
    from mlflow.tracking import MlflowClient

    from hydra_plugins.frontier_sweeper._impl import outcome_of

    client = MlflowClient(store_uri(folder))
    experiment = client.get_experiment_by_name("bench")
    assert experiment is not None, f"no runs in {folder}"
    outcomes: dict[str, dict[int, dict[int, str]]] = defaultdict(lambda: defaultdict(dict))
    for run in client.search_runs([experiment.experiment_id], max_results=50000):
        params = run.data.params
        if run.data.tags.get(names.RUN_KIND) == names.SWEEP_KIND:
            continue
        level = outcomes[configuration_label(models, params["model"])][int(params[names.GAP])]
        level[int(params[names.SEED])] = outcome_of(run).outcome
    answers: dict[str, dict[str, object]] = {}
    for key, levels in sorted(outcomes.items()):
        verdicts = [verdict([levels[gap].get(s) for s in range(rule.n)], rule)[0]
                    for gap in gaps]
        held = [gap for gap, v in zip(gaps, verdicts, strict=True) if v == HELD]
        boundary = None
        for gap, v in zip(gaps, verdicts, strict=True):
            if v != HELD:
                break
            boundary = gap
        answers[key] = {"gap_held": max(held) if held else None, "boundary": boundary,
                        "levels": " ".join(f"{gap}:" + "".join(
                            levels[gap].get(s, "?")[0].upper() for s in range(rule.n))
                            for gap in gaps)}
    return answers


def frontier_answers(folder: Path) -> dict[str, dict[str, str]]:
    """frontier.csv from the frontier sweep's folder, by configuration."""
    with (folder / "sweep" / "frontier.csv").open(newline="") as handle:
        return {row["configuration"]: row for row in csv.DictReader(handle)}


@dataclass
class Timed:
    """One real multirun: wall seconds, runs in its store, the machine just before it."""

    seconds: float
    runs: int
    sgemm: float
    load: float


def timed_multirun(name: str, overrides: list[str], folder: Path) -> Timed:
    sgemm, load = sgemm_gflops(repeats=3), load_average()
    seconds = multirun(overrides, folder)
    timed = Timed(seconds, len(runs_of(folder)), round(sgemm, 1), load)
    print(f"{name:>8}: {timed.runs} runs in {seconds:.1f} s | sgemm {timed.sgemm} GFLOP/s, "
          f"load {load} -> {load_average()}", flush=True)
    return timed


def frontier_vs_grid(models: str, steps: int, hidden: int, m: int, n: int,
                     gap_min: int = GAP_MIN, gap_max: int = GAP_MAX,
                     batch_members: str = "off", extra: list[str] | None = None,
                     sitting: Sitting | None = None) -> list[dict[str, object]]:
    """The frontier and the grid as real multiruns, one after the other; one row per
    configuration with both answers, the runs and the wall times."""
    gaps, rule = ladder(gap_min, gap_max, 2.0), Rule(m, n)
    base = common_overrides(models, steps, hidden, batch_members, extra)
    with tempfile.TemporaryDirectory(prefix="bench-frontier-") as root:
        folder = Path(root)
        f = timed_multirun("frontier", [*base, *frontier_overrides(gap_min, gap_max, m, n)],
                           folder / "frontier")
        g = timed_multirun("grid", [*base, *grid_overrides(gaps, n)], folder / "grid")
        front = frontier_answers(folder / "frontier")
        grid = grid_answers(folder / "grid", rule, gaps, models)
    run_share, time_share = f.runs / g.runs, f.seconds / g.seconds
    print(f"frontier: {f.runs} of the grid's {g.runs} runs ({run_share:.0%}; aim <= 40%), "
          f"{f.seconds:.0f} of {g.seconds:.0f} s ({time_share:.0%} of the grid's wall time)",
          flush=True)
    rows = []
    for key in sorted(set(front) | set(grid)):
        held = front.get(key, {}).get("gap_held") or ""
        answer = grid.get(key, {})
        same = (int(held) if held else None) == answer.get("gap_held")
        row: dict[str, object] = {
            "configuration": key, "ladder": " ".join(map(str, gaps)), "m": m, "n": n,
            "steps": steps, names.HIDDEN_SIZE: hidden, "batch_members": batch_members,
            "overrides": " ".join(extra or []),
            "frontier_gap_held": held, "frontier_probes": front.get(key, {}).get("probes", ""),
            "grid_gap_held": answer.get("gap_held") or "",
            "grid_boundary": answer.get("boundary") or "",
            "grid_levels": answer.get("levels", ""), "same_answer": same,
            "frontier_runs": f.runs, "grid_runs": g.runs, "run_share": round(run_share, 3),
            "frontier_s": round(f.seconds, 1), "grid_s": round(g.seconds, 1),
            "time_share": round(time_share, 3), "sgemm_gflops": f.sgemm, "load": f.load,
            "grid_sgemm_gflops": g.sgemm, "grid_load": g.load}
        rows.append(row)
        print(f"  {key}: frontier held {held or 'none'} (probes {row['frontier_probes']}); "
              f"grid held {row['grid_gap_held'] or 'none'} (boundary "
              f"{row['grid_boundary'] or 'none'}; levels {row['grid_levels']}): "
              + ("same answer" if same else "DIFFERENT answers"), flush=True)
        if sitting is not None:
            sitting.add(row)
    return rows


# ---- one frontier, measured per variant -------------------------------------------------


def demo_shaped(models: str, gap_max: int, steps: int, hidden: int, lrs: str) -> list[str]:
    """A small frontier shaped like the demo's (conf/experiment/demo.yaml): each model on
    delayed recall with noise filler and on adding, the rate chosen per configuration."""
    return ["hydra/sweeper=frontier", "task=delayed_recall_noise,adding", f"model={models}",
            f"model.hidden_size={hidden}", "train.batch_size=32", f"train.steps={steps}",
            "train.eval_every=100", "hydra.launcher.n_jobs=2", "train.threads=1",
            "frontier.gap_min=5", f"frontier.gap_max={gap_max}", f"frontier.lrs=[{lrs}]"]


def training_seconds(folder: Path) -> float:
    """The runs' `wall_time_s` in a multirun's store, added up (its parent run left out)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store_uri(folder))
    experiment = client.get_experiment_by_name("bench")
    if experiment is None:
        return 0.0
    return sum(run.data.metrics.get(names.WALL_TIME_S, 0.0)
               for run in client.search_runs([experiment.experiment_id], max_results=50000)
               if run.data.tags.get(names.RUN_KIND) != names.SWEEP_KIND)


def measured(code: Code, label: str, overrides: list[str], folder: Path) -> dict[str, object]:
    """One frontier multirun with `code`: its wall, runs, training seconds, utilization of
    the 2 workers over the whole multirun, and its answers (`configuration: gap_held`)."""
    sgemm, load = round(sgemm_gflops(repeats=3), 1), load_average()
    args = ["-m", "harness.train", "-m", *overrides, "experiment_name=bench",
            f"tracking.uri={store_uri(folder)}", f"train.checkpoint_dir={folder}/checkpoints",
            "report.on_multirun_end=false", f"hydra.sweep.dir={folder}/sweep"]
    seconds, done = code.timed(args, folder, timeout=3600)
    (folder / "multirun.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"{label}: exit {done.returncode}\n"
                           + (done.stdout + done.stderr)[-3000:])
    trained = training_seconds(folder)
    answers = frontier_answers(folder)
    row: dict[str, object] = {
        "variant": label, "code": code.label, "overrides": " ".join(overrides),
        "runs": len(runs_of(folder)), "wall_s": round(seconds, 1),
        "trained_s": round(trained, 1), "utilization": round(trained / (2 * seconds), 3),
        "answers": "; ".join(f"{k}: {r['gap_held'] or '-'}"
                             + (f" ({r['level_lrs']})" if r.get("level_lrs") else "")
                             for k, r in answers.items()),
        "sgemm_gflops": sgemm, "load": load}
    print(f"{label:>10} ({code.label}): {row['runs']} runs in {seconds:.1f} s, "
          f"{trained:.0f} s of training: utilization {row['utilization']:.0%} | sgemm {sgemm} "
          f"GFLOP/s, load {load} -> {load_average()}\n    {row['answers']}", flush=True)
    return row


def variants(sitting: Sitting, runs: list[tuple[Code, str, list[str]]]) -> None:
    """Each (code, label, overrides) as one multirun in its own folder, in order; the wall
    ratio of each to the first."""
    with tempfile.TemporaryDirectory(prefix="bench-frontier-") as root:
        rows = [sitting.add(measured(code, label, overrides, Path(root) / str(i)))
                for i, (code, label, overrides) in enumerate(runs)]
    for row in rows[1:]:
        ratio = float(row["wall_s"]) / float(rows[0]["wall_s"])  # type: ignore[arg-type]
        row["wall_ratio_to_first"] = round(ratio, 3)
        print(f"{row['variant']}: {ratio:.2f}x the wall of {rows[0]['variant']}", flush=True)


# ---- synthetic oracles -------------------------------------------------------------------


def frontier_cost(trials: int = 300, slope: float = 3.0) -> list[dict[str, object]]:
    """Runs the frontier search spends against the full grid of the same ladder and seeds, and
    how often both give the same answer, on noisy synthetic oracles (no training: the search's
    cost is counted in runs)."""
    gaps, rows = ladder(5, 640, 2.0), []
    for stride in (1, 2, 3):
        for g50 in (7, 28, 112, 450):
            rule, runs, agree = Rule(2, 3, stride=stride), 0, 0
            for stream in range(trials):
                def call(p: Probe, stream: int = stream, g50: int = g50) -> Result:
                    rate = 1 / (1 + (p.gap / g50) ** slope)
                    draw = random.Random(f"{stream}-{p.seed}-{p.gap}").random()
                    return Result(SOLVED if draw < rate else FAILED)
                search = Search(["cfg"], gaps, rule)
                (front,) = run_search(search, call)
                runs += len(front.probes)
                # The grid's answer: every level run with all seeds, the largest level held.
                grid = [g for g in gaps if verdict(
                    [call(Probe("cfg", None, g, s)).outcome for s in range(3)],
                    rule)[0] == HELD]
                agree += (max(grid) if grid else None) == front.gap_held
            row = {"stride": stride, "g50": g50, "trials": trials,
                   "frontier_runs": runs / trials, "grid_runs": search.grid_runs(),
                   "share_of_grid": round(runs / trials / search.grid_runs(), 4),
                   "same_answer": agree / trials}
            print(f"frontier vs grid: stride {stride}, 50% gap {g50:>3}: "
                  f"{row['frontier_runs']:.1f} of {row['grid_runs']} runs "
                  f"({100 * row['share_of_grid']:.0f}%), same answer as the grid in "
                  f"{100 * row['same_answer']:.0f}% of {trials} oracles", flush=True)
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.frontier",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--oracle", action="store_true",
                        help="instead: the search on synthetic oracles (no training)")
    parser.add_argument("--models", default="rnn,lstm,gru")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--m", type=int, default=2)
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--batch-members", default="off", choices=("off", "auto"),
                        help="train.batch_members of both multiruns")
    parser.add_argument("--overrides", nargs="*", default=["optim.lr=0.01"],
                        help="more single-valued overrides for both multiruns, e.g. "
                             "optim.lr=0.01")
    parser.add_argument("--rounds", action="store_true",
                        help="instead: a demo-shaped frontier with this code and --baseline's")
    parser.add_argument("--lr-every-level", action="store_true",
                        help="instead: the demo-shaped frontier, frontier.lr_every_level "
                             "false and true")
    parser.add_argument("--gaps", action="store_true",
                        help="instead: fixed against variable gaps on delayed recall")
    parser.add_argument("--gap-max", type=int, default=GAP_MAX)
    parser.add_argument("--lrs", default="0.003,0.01",
                        help="frontier.lrs of --rounds and --lr-every-level")
    baseline_arguments(parser)
    results_argument(parser)
    args = parser.parse_args(argv)
    shaped = demo_shaped(args.models, args.gap_max, args.steps, args.hidden, args.lrs)
    if args.rounds:
        sitting = Sitting.start("frontier-rounds", 1)
        # no continuations: the synchronous sweeper before them did not continue runs, so
        # both codes run the same probes and must give the same answers
        variants(sitting, [(code, "rounds", [*shaped, "frontier.max_steps=0"])
                           for code in reversed(codes(args))])
    elif args.lr_every_level:
        sitting = Sitting.start("frontier-levels", 1)
        here = codes(args)[0]
        variants(sitting, [(here, f"every_level={flag}",
                            [*shaped, f"frontier.lr_every_level={flag}"])
                           for flag in ("false", "true")])
    elif args.gaps:
        sitting = Sitting.start("frontier-gaps", 1)
        here = codes(args)[0]
        base = [*shaped[:1], "task=delayed_recall", *shaped[2:-1], *args.overrides]
        variants(sitting, [(here, f"gaps={mode}", [*base, f"frontier.gaps={mode}"])
                           for mode in ("fixed", "variable")])
    elif args.oracle:
        sitting = Sitting.start("frontier-oracle", 1)
        for row in frontier_cost():
            sitting.add(row)
    else:
        sitting = Sitting.start("frontier", 1)
        started = time.perf_counter()
        frontier_vs_grid(args.models, args.steps, args.hidden, args.m, args.n,
                         batch_members=args.batch_members, extra=args.overrides,
                         sitting=sitting)
        print(f"{time.perf_counter() - started:.0f} s in all", flush=True)
    sitting.write(args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
