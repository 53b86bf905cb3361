"""Turn one sweep's MLflow experiment into a static report folder (CSV, markdown, PNG, HTML).

`build_report` (`harness.report.build`) writes one experiment's report
(`harness.report.compare.build_comparison` two side by side); `harness.report.cli` wraps both
for the shell. Importing this package is cheap: `build_report` and `ReportError` load the
report's modules (pandas, MLflow, matplotlib) on first use, so the command line can refuse a
missing experiment before it pays for them (`harness.report.preflight`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.report.build import build_report
    from harness.report.load import ReportError

__all__ = ["ReportError", "build_report"]


def __getattr__(name: str) -> object:
    if name == "build_report":
        from harness.report.build import build_report

        return build_report
    if name == "ReportError":
        from harness.report.load import ReportError

        return ReportError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
