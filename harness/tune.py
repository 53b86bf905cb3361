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


def is_list(override: str) -> bool:
    """`key=a,b` is a list to expand; Hydra's own syntax (`hydra.*`, `tag(...)`, `[...]`) is
    passed through."""
    key, _, value = override.partition("=")
    return ("," in value and not key.startswith(("hydra.", "hydra/", "+hydra", "~"))
            and not any(c in value for c in "()[]{}"))


def combinations(overrides: list[str]) -> list[list[str]]:
    """Every combination of the comma lists, each with the other overrides."""
    axes = [[f"{o.partition('=')[0]}={v}" for v in o.partition("=")[2].split(",")]
            for o in overrides if is_list(o)]
    fixed = [o for o in overrides if not is_list(o)]
    return [[*fixed, *combo] for combo in itertools.product(*axes)]


def main(argv: list[str] | None = None) -> int:
    overrides = list(sys.argv[1:] if argv is None else argv)
    if any(o in ("-h", "--help") for o in overrides):
        print(__doc__)
        return 0
    if not any(o.startswith("experiment=") for o in overrides):
        overrides.insert(0, PRESET)
    studies = combinations(overrides)
    worst = 0
    for number, study in enumerate(studies, 1):
        print(f"harness-tune: study {number}/{len(studies)}: {' '.join(study)}", flush=True)
        done = subprocess.run([sys.executable, "-m", "harness.train", "-m", *study], check=False)
        worst = max(worst, done.returncode if done.returncode >= 0 else 1)  # < 0: a signal
    return worst


if __name__ == "__main__":
    sys.exit(main())
