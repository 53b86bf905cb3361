"""The report in a real browser: headless Chromium opens index.html from disk (offline),
takes a screenshot, and the page's own check (templates/browser_check.html) reports that
every image decoded and no script error occurred.

Chromium comes from the system's packages: when it is missing and the test runs as root, the
set-up installs it with apt-get; the test is skipped (with the reason) only when that cannot
be done.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers.findings_store import A

from harness.report import build_report
from harness.report.sections import FIGURES, SECTIONS

BROWSERS = ("chromium", "chromium-browser")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _chromium() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    """The Chromium binary, installed from the system's packages when missing."""
    found = _chromium()
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("chromium is not installed and cannot be installed here "
                    "(needs root and apt-get): apt-get install -y chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
        if done.returncode != 0:
            pytest.skip(f"could not install chromium ({' '.join(command)} exited "
                        f"{done.returncode}: {done.stderr.strip()[-300:]})")
    found = _chromium()
    if not found:
        pytest.skip("apt-get installed chromium but no chromium binary is on PATH")
    return found


def _headless(chromium: str, profile: Path) -> list[str]:
    return [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}",
            "--virtual-time-budget=15000", "--window-size=1280,2000"]


@pytest.mark.slow
def test_report_renders_in_chromium(chromium: str, findings_store: str,
                                    tmp_path: Path) -> None:
    index = build_report(A, findings_store, tmp_path / "reports", workers=2)
    url = index.resolve().as_uri()
    shot = tmp_path / "screenshot.png"
    subprocess.run([*_headless(chromium, tmp_path / "profile-1"), f"--screenshot={shot}", url],
                   capture_output=True, text=True, timeout=180, check=True)
    data = shot.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000  # a real page, not a blank

    attrs, dom = _checked(chromium, url, tmp_path / "profile-2")
    n_images = index.read_text().count('<img src="data:image/png;base64,')
    assert n_images >= 10
    # Every section of the registry this experiment has, in page order, each drawn figure
    # under its own section's heading, as the browser built the page.
    ids = re.findall(r'<h2 id="([a-z]+)">', dom)
    assert ids == [s.id for s in SECTIONS if s.id in ids]
    assert {"overview", "findings", "accuracy", "solved", "gradients", "runs"} <= set(ids)
    pngs = {p.name for p in index.parent.glob("*.png")}
    for fig in FIGURES:
        if fig.png in pngs:
            at = dom.index(f'alt="{fig.title}"')
            assert re.findall(r'<h2 id="([a-z]+)">', dom[:at])[-1] == fig.section, fig.id
    assert attrs["images"] == str(n_images)
    assert attrs["images-broken"] == "0"
    assert attrs["script-errors"] == "0"

    # The check can fail: the same page with one undecodable image and one script error.
    broken = index.parent / "broken.html"
    broken.write_text(index.read_text().replace(
        "</main>", '<img src="data:image/png;base64,AAAA" alt="x">'
                   "<script>notAFunction();</script></main>"))
    attrs, _ = _checked(chromium, broken.resolve().as_uri(), tmp_path / "profile-3")
    assert attrs["images"] == str(n_images + 1)
    assert attrs["images-broken"] == "1" and attrs["script-errors"] == "1"


def _checked(chromium: str, url: str, profile: Path) -> tuple[dict[str, str], str]:
    """The data-* attributes the page's load check wrote on <body>, read from Chromium's DOM,
    and that DOM."""
    dom = subprocess.run([*_headless(chromium, profile), "--dump-dom", url],
                         capture_output=True, text=True, timeout=180, check=True).stdout
    body = re.search(r"<body([^>]*)>", dom)
    assert body is not None, dom[:500]
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1)))
    assert attrs.get("checked") == "true", f"the page's load check did not run: {attrs}"
    return attrs, dom
