"""`harness-tune`: one Optuna study per combination of the comma lists on its command line.

    harness-tune model=rnn,lstm task=copy task.gap=50,100          # 4 studies of 8 trials

Each combination runs `harness-train -m experiment=tune_lr <its values> <the other
overrides>` in turn, a multirun of its own with its own sweep run in MLflow (tag
`sweep_tuning`, metrics `tuning_best` and `tuning_median`). Comma lists are expanded here
because within one Optuna multirun they would become a search dimension of a single study.
Any other override passes through (`train.steps=500`, `hydra.sweeper.n_trials=16`,
`experiment=...` for another tuning preset).
"""

from __future__ import annotations

import itertools
import subprocess
import sys

PRESET = "experiment=tune_lr"


def combinations(overrides: list[str]) -> list[list[str]]:
    """Every combination of the swept overrides (comma lists, `range(...)`, as Hydra's own
    parser reads them), each with the other overrides; `hydra.*` overrides and the tuned
    search space (`tag(...)`, `interval(...)`) pass through unexpanded."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    axes, fixed = [], []
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        if override.is_sweep_override() and not key.lstrip("+~").startswith(("hydra.",
                                                                               "hydra/")):
            if override.is_interval_sweep():
                fixed.append(override.input_line)  # the tuned dimension itself
                continue
            axes.append([f"{key}={v}" for v in override.sweep_string_iterator()])
        else:
            fixed.append(override.input_line)
    return [[*fixed, *combo] for combo in itertools.product(*axes)]


def main(argv: list[str] | None = None) -> int:
    overrides = list(sys.argv[1:] if argv is None else argv)
    if any(o in ("-h", "--help") for o in overrides):
        print(__doc__)
        return 0
    if not any(o.startswith("experiment=") for o in overrides):
        overrides.insert(0, PRESET)
    from hydra.errors import OverrideParseException

    try:
        studies = combinations(overrides)
    except OverrideParseException as err:
        print(f"harness-tune: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    worst = 0
    for number, study in enumerate(studies, 1):
        print(f"harness-tune: study {number}/{len(studies)}: {' '.join(study)}", flush=True)
        done = subprocess.run([sys.executable, "-m", "harness.train", "-m", *study], check=False)
        worst = max(worst, done.returncode if done.returncode >= 0 else 1)  # < 0: a signal
    return worst


if __name__ == "__main__":
    sys.exit(main())
