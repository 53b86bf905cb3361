"""Headless Chromium, as a reader's browser: Debian's `chromium` (CI installs it, .ci/run),
run with a fresh profile and no network of its own, to dump a page's DOM after its scripts
ran or to take a screenshot."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

BROWSERS = ("chromium", "chromium-browser")
INSTALL = "apt-get install -y chromium"


def chromium() -> str:
    """The Chromium binary; the calling test is skipped, saying how to install it, without."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(f"chromium is not installed: {INSTALL} (as root; .ci/run does)")


def headless(browser: str, profile: Path, budget_ms: int = 15000,
             width: int = 1280) -> list[str]:
    """Chromium headless with a fresh profile in `profile`, nothing fetched but the page,
    `budget_ms` of virtual time for the page's scripts to run, in a window `width` px wide."""
    return [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}", f"--window-size={width},2000"]


def dom(browser: str, url: str, profile: Path, budget_ms: int = 15000, width: int = 1280) -> str:
    """The page's DOM as Chromium built it, scripts run, in a window `width` px wide."""
    return subprocess.run([*headless(browser, profile, budget_ms, width), "--dump-dom", url],
                          capture_output=True, text=True, timeout=180, check=True).stdout
