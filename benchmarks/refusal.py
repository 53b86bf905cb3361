"""How long `harness-train` takes to refuse bad input, and to answer `--help` and `--cfg job`,
against the time Python takes to `import hydra` alone.

    python -m benchmarks.refusal                              # 5 rounds
    python -m benchmarks.refusal --baseline /tmp/base --rounds 3   # and an older checkout

Each case is `python -m harness.train ARGS` in a fresh interpreter, as a user types it, its
store and Hydra folders in a temporary folder (no case creates a run): a value out of range, a
`+key` typo, a model too big for memory (the memory check), a sweep with an invalid job (the
sweeper's checks), `--help` and `--cfg job`. Each round times `python -c "import hydra"`, then
every case of every checkout, interleaved, so a noisy neighbour slows them alike; the figures
are the medians over rounds. The goal: every case within 1 s on this project's 2-core machine,
where importing Hydra takes about 0.2 s (`ratio`: the case over `import hydra`, which carries
to other machines). Rows go to benchmarks/results/refusal.csv.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.checkouts import Code, baseline_arguments, codes
from benchmarks.common import Sitting, load_average, results_argument

GOAL_S = 1.0

# case -> (arguments after `python -m harness.train`, the exit status it must end with)
CASES: dict[str, tuple[list[str], int]] = {
    "task.gap=0": (["task.gap=0"], 2),
    "+trian.steps=5": (["+trian.steps=5"], 2),
    "memory": (["model=rnn", "model.hidden_size=1000000"], 2),
    "sweep check": (["-m", "model.hidden_size=0", "seed=0,1"], 2),
    "--help": (["--help"], 0),
    "--cfg job": (["--cfg", "job"], 0),
}


def case_args(case: str, folder: Path) -> list[str]:
    """The command line of `case`, with everything it could write under `folder`."""
    args, _ = CASES[case]
    if args[0].startswith("--"):
        return ["-m", "harness.train", *args]
    multirun = args[:1] == ["-m"]
    return ["-m", "harness.train", *args[:multirun],
            f"tracking.uri=sqlite:///{folder}/mlflow.db", f"hydra.run.dir={folder}/run",
            f"hydra.sweep.dir={folder}/sweep", *args[multirun:]]


def measure(checkouts: list[Code], cases: list[str], rounds: int) -> list[dict[str, object]]:
    """Per checkout and case: the median wall seconds over `rounds` and its ratio to the
    median of `import hydra` in the same rounds."""
    seconds: dict[tuple[str, str], list[float]] = {}
    hydra: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-refusal-") as tmp:
        folder = Path(tmp)
        for _ in range(rounds):
            hydra.append(checkouts[0].timed(["-c", "import hydra"], folder)[0])
            for code in checkouts:
                for case in cases:
                    elapsed, done = code.timed(case_args(case, folder), folder)
                    if done.returncode != CASES[case][1]:
                        raise RuntimeError(f"{code.label}, {case}: exit {done.returncode}, "
                                           f"expected {CASES[case][1]}\n{done.stderr[-2000:]}")
                    seconds.setdefault((code.label, case), []).append(elapsed)
    hydra_s = statistics.median(hydra)
    rows: list[dict[str, object]] = []
    for (label, case), times in seconds.items():
        median = statistics.median(times)
        rows.append({"code": label, "case": case, "rounds": rounds,
                     "seconds": round(median, 3), "seconds_min": round(min(times), 3),
                     "import_hydra_s": round(hydra_s, 3), "ratio": round(median / hydra_s, 2),
                     "goal_s": GOAL_S, "met": median <= GOAL_S})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.refusal",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    baseline_arguments(parser)
    results_argument(parser)
    args = parser.parse_args(argv)
    sitting = Sitting.start("refusal", 1)
    for row in measure(codes(args), args.cases, args.rounds):
        sitting.add(row)
        print(f"{row['code']:>24}  {row['case']:<16} {row['seconds']:6.2f} s "
              f"(min {row['seconds_min']:.2f}) = {row['ratio']:5.2f} x import hydra "
              f"({row['import_hydra_s']:.2f} s)  goal {GOAL_S:g} s: "
              f"{'met' if row['met'] else 'missed'}", flush=True)
    print(f"load average {load_average()}", flush=True)
    sitting.write(args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
