"""The manual stays true to the tree: every relative link in README.md and docs/ resolves, and
every project path the docs name (`harness/…`, `tasks/…`, `conf/…`, `tests/…`) exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.schema import PROJECT_ROOT

PAGES = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
PATH = re.compile(r"`((?:harness|tasks|conf|tests|benchmarks|hydra_plugins)/[\w./-]*\w)`")


def rel(page: Path) -> str:
    return str(page.relative_to(PROJECT_ROOT))


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_relative_link_resolves(page: Path) -> None:
    text = page.read_text()
    broken = [target for target in LINK.findall(text)
              if not target.startswith(("http://", "https://", "mailto:"))
              and not (page.parent / target).exists()]
    assert not broken, f"{rel(page)} links to missing files: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_named_project_path_exists(page: Path) -> None:
    missing = [path for path in PATH.findall(page.read_text())
               if "*" not in path and "<" not in path
               and not (PROJECT_ROOT / path).exists()
               and not (PROJECT_ROOT / path).with_suffix(".py").exists()]
    assert not missing, f"{rel(page)} names paths that do not exist: {missing}"
