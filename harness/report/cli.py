"""Command line for the report: `harness-report --experiment NAME [--compare OTHER]
[--claims FILE] [--pool AXIS[,AXIS]] [--tracking-uri URI] [--out DIR]`.

Also runnable as `python -m harness.report.cli`. Exit code 0 on success, 2 when the store or
experiment cannot be reported on (one-line message on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from harness.schema import PROJECT_ROOT

PROG = "harness-report"
EXIT_USAGE = 2  # same code argparse uses for bad arguments: "you asked for something absent"


def default_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else the project's `mlflow.db`: harness-train's default.

    The path is absolute so the printed `mlflow ui` command works from any directory.
    """
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Build a static HTML/CSV/markdown report of one sweep."
    )
    parser.add_argument("--experiment", required=True, help="MLflow experiment (one sweep)")
    parser.add_argument(
        "--compare", default=None, metavar="OTHER",
        help="a second experiment: write both side by side to <out>/<experiment>_vs_<OTHER>/",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store; default: $MLFLOW_TRACKING_URI, else the project's mlflow.db",
    )
    parser.add_argument(
        "--claims", type=Path, default=None, metavar="FILE",
        help="claims to score (default: the paper preset's claims file that names the "
        "experiment, conf/experiment/paper/claims/)",
    )
    parser.add_argument(
        "--pool", default="", metavar="AXIS[,AXIS]",
        help="swept params to pool over on purpose (e.g. optim.lr): left out of the "
        "configuration labels, so tables and figures mix their values; the report says so",
    )
    parser.add_argument(
        "--out", type=Path, default=PROJECT_ROOT / "reports",
        help="report root (default: the project's reports/)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Build the report and print where it is; return the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.compare is not None and (args.pool or args.claims is not None):
        parser.error("--pool and --claims apply to one experiment's report, not to --compare")
    tracking_uri = args.tracking_uri or default_tracking_uri()
    # Imported here so `--help` and argument errors answer without loading mlflow/matplotlib.
    from harness.report import ReportError, build_report
    from harness.report.compare import build_comparison

    try:
        if args.compare is not None:
            index = build_comparison(args.experiment, args.compare, tracking_uri, args.out)
        else:
            pool = [axis.strip() for axis in args.pool.split(",") if axis.strip()]
            index = build_report(args.experiment, tracking_uri, args.out,
                                 claims_path=args.claims, pool=pool)
    except ReportError as err:
        # One line, whatever the message holds, so scripts can grep or log it as a unit.
        message = " ".join(str(err).splitlines())
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    print(f"report written: {index.resolve()}")
    print(f"MLflow UI on the same store: mlflow ui --backend-store-uri {tracking_uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
