"""`python -m benchmarks <name> [options]`: run one benchmark (`make bench` runs `overhead`)."""

from __future__ import annotations

import importlib
import sys

import benchmarks

BENCHMARKS = {
    "overhead": "benchmarks.overhead",
    "scaling": "benchmarks.scaling",
    "batched": "benchmarks.batched",
    "sweep": "benchmarks.sweep",
    "frontier": "benchmarks.frontier",
    "profile": "benchmarks.profile",
    "report": "benchmarks.report",
    "cells": "benchmarks.cells",
    "refusal": "benchmarks.refusal",
    "fixed_cost": "benchmarks.fixed_cost",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHMARKS:
        print(benchmarks.__doc__)
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(BENCHMARKS[argv[0]])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
