"""Another checkout's code measured beside this one's, in one sitting (`--baseline PATH`): a
before-and-after figure is only worth comparing when both were measured on the same machine
under the same load.

A `Code` is a checkout's root; its commands run in a fresh interpreter (`python -m
harness.train ...`, or `python -c ...`) with that root first on PYTHONPATH, so they import that
checkout's `harness`, `tasks` and `hydra_plugins` whichever checkout the environment's editable
install points at. A baseline can be any copy of the project, e.g. `git archive <commit> | tar
-x -C /tmp/base`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import ROOT, commit


@dataclass(frozen=True)
class Code:
    """The code of one checkout, named in the results by `label`."""

    label: str
    root: Path

    def env(self) -> dict[str, str]:
        """The environment of a command that runs this checkout's code, without a stray
        MLflow run."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env["PYTHONPATH"] = os.pathsep.join([str(self.root),
                                             *filter(None, [os.environ.get("PYTHONPATH")])])
        return env

    def timed(self, args: list[str], cwd: Path,
              timeout: float = 600) -> tuple[float, subprocess.CompletedProcess[str]]:
        """`python ARGS` with this code, in `cwd` (created if missing): its wall seconds and
        what it printed."""
        cwd.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, *args], cwd=cwd, env=self.env(),
                              capture_output=True, text=True, timeout=timeout)
        return time.perf_counter() - start, done


def baseline_arguments(parser: argparse.ArgumentParser) -> None:
    """`--baseline PATH` and `--baseline-label TEXT` on a benchmark's command line."""
    parser.add_argument("--baseline", type=Path, default=None,
                        help="also measure the checkout at PATH, interleaved with this one")
    parser.add_argument("--baseline-label", default=None,
                        help="its name in the results (default: its git commit, or 'baseline')")


def codes(args: argparse.Namespace) -> list[Code]:
    """This checkout's code, then the baseline's if one was given."""
    found = [Code(f"this {commit()}", ROOT)]
    if args.baseline is not None:
        root = args.baseline.resolve()
        if not (root / "harness" / "train.py").is_file():
            raise SystemExit(f"--baseline {root}: not a checkout of this project")
        found.append(Code(args.baseline_label or f"baseline {git_label(root)}", root))
    return found


def git_label(root: Path) -> str:
    """The commit of the checkout at `root`, or `unknown` (an exported copy has none)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=root,
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head = ""
    return head or "unknown"
