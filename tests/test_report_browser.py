"""The report in a real browser: headless Chromium opens index.html from disk (offline),
takes a screenshot, and the page's own check (templates/browser_check.html) reports that
every image decoded, no script error occurred, and which parts scroll sideways: at 1,400 px the
headline (a frontier's rows beside its figure) and every table but the runs table fit.

Chromium comes from the system's packages (tests/helpers/chromium.py; .ci/run installs it);
without it the test is skipped, saying how to install it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from helpers.chromium import chromium, dom, headless
from helpers.findings_store import A, C

from harness.report import build_report
from harness.report.sections import FIGURES, SECTIONS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_report_renders_in_chromium(findings_store: str, tmp_path: Path) -> None:
    browser = chromium()
    index = build_report(A, findings_store, tmp_path / "reports", workers=2)
    url = index.resolve().as_uri()
    shot = tmp_path / "screenshot.png"
    subprocess.run([*headless(browser, tmp_path / "profile-1"), f"--screenshot={shot}", url],
                   capture_output=True, text=True, timeout=180, check=True)
    data = shot.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000  # a real page, not a blank

    attrs, built = _checked(browser, url, tmp_path / "profile-2")
    n_images = index.read_text().count('<img src="data:image/png;base64,')
    assert n_images >= 10
    # Every section of the registry this experiment has, in page order, each drawn figure
    # under its own section's heading, as the browser built the page.
    ids = re.findall(r'<h2 id="([a-z]+)">', built)
    assert ids == [s.id for s in SECTIONS if s.id in ids]
    assert {"overview", "findings", "accuracy", "solved", "gradients", "runs"} <= set(ids)
    pngs = {p.name for p in index.parent.glob("*.png")}
    for fig in FIGURES:
        if fig.png in pngs:
            at = built.index(f'alt="{fig.title}"')
            assert re.findall(r'<h2 id="([a-z]+)">', built[:at])[-1] == fig.section, fig.id
    assert attrs["images"] == str(n_images)
    assert attrs["images-broken"] == "0"
    assert attrs["script-errors"] == "0"

    # The check can fail: the same page with one undecodable image and one script error.
    broken = index.parent / "broken.html"
    broken.write_text(index.read_text().replace(
        "</main>", '<img src="data:image/png;base64,AAAA" alt="x">'
                   "<script>notAFunction();</script></main>"))
    attrs, _ = _checked(browser, broken.resolve().as_uri(), tmp_path / "profile-3")
    assert attrs["images"] == str(n_images + 1)
    assert attrs["images-broken"] == "1" and attrs["script-errors"] == "1"


@pytest.mark.slow
def test_the_headline_reads_at_1400_px_without_sideways_scroll(findings_store: str,
                                                                tmp_path: Path) -> None:
    browser = chromium()
    index = build_report(C, findings_store, tmp_path / "reports", workers=2)
    attrs, built = _checked(browser, index.resolve().as_uri(), tmp_path / "profile-1", 1400)
    assert attrs["page-wider-than-window"] == "false"
    # only the runs table scrolls, inside its own box; the headline and the frontier fit
    assert attrs["scrolls-sideways"].split() == ["runs"]
    lead = built[built.index('<section class="headline with-figure">'):]
    lead = lead[:lead.index("</section>")]
    assert lead.count('<table class="lead">') == 2  # adding and delayed recall
    assert 'alt="Gap frontier per configuration"' in lead  # the figure beside the rows
    # The check can fail: the same page with something too wide in the headline.
    wide = index.parent / "wide.html"
    wide.write_text(index.read_text().replace(
        '<div class="lead-rows">', '<div class="lead-rows"><div style="width:3000px">x</div>'))
    attrs, _ = _checked(browser, wide.resolve().as_uri(), tmp_path / "profile-2", 1400)
    assert "headline" in attrs["scrolls-sideways"].split()


def _checked(browser: str, url: str, profile: Path,
             width: int = 1280) -> tuple[dict[str, str], str]:
    """The data-* attributes the page's load check wrote on <body>, read from Chromium's DOM
    in a window `width` px wide, and that DOM."""
    built = dom(browser, url, profile, width=width)
    body = re.search(r"<body([^>]*)>", built)
    assert body is not None, built[:500]
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1)))
    assert attrs.get("checked") == "true", f"the page's load check did not run: {attrs}"
    return attrs, built
