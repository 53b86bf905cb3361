"""Command line for the report: `harness-report --experiment NAME [--compare OTHER]
[--claims FILE] [--pool AXIS[,AXIS]] [--tracking-uri URI] [--out DIR]`.

Also runnable as `python -m harness.report.cli`. Exit code 0 on success, 2 when the store or
experiment cannot be reported on (one-line message on stderr, no traceback). A missing SQLite
store or experiment is refused before the report's modules (pandas, MLflow, matplotlib) are
imported (`preflight`), so the answer comes at once; nothing here imports them before that.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from harness.report import preflight
from harness.report.ui import ui_command

# harness.schema.PROJECT_ROOT, which cannot be imported here: harness.schema loads torch
PROJECT_ROOT = Path(__file__).resolve().parents[2]
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
    for experiment in filter(None, (args.experiment, args.compare)):
        refused = preflight.refusal(experiment, tracking_uri)
        if refused:
            return _refuse(refused)
    # Imported here so `--help`, argument errors and the refusals above answer without
    # loading pandas, MLflow and matplotlib.
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
        return _refuse(str(err))
    print(f"report written: {index.resolve()}")
    for experiment in filter(None, (args.experiment, args.compare)):
        print(f"{experiment} in the MLflow UI: {_runs_url(experiment, tracking_uri)}")
    if ui_command(tracking_uri):
        print(f"start the UI on this store first: {ui_command(tracking_uri)}")
    return 0


def _runs_url(experiment: str, tracking_uri: str) -> str:
    """The experiment's runs table in the MLflow UI (`links.experiment_url`)."""
    from mlflow.tracking import MlflowClient

    from harness.tracking.links import experiment_url

    found = MlflowClient(tracking_uri).get_experiment_by_name(experiment)
    assert found is not None  # the report was just built from it
    return experiment_url(tracking_uri, found.experiment_id)


def _refuse(message: str) -> int:
    """Say why in one line, whatever the message holds, so scripts can grep or log it."""
    print(f"{PROG}: error: {' '.join(message.splitlines())}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
