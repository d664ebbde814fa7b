"""The plan's HTML page in a real headless Chromium: self-contained (no request besides itself, no
console error: the CSP allows its style by hash), hostile guest names shown as text, hosts by zone."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from fleetgen import G, H, write_fleet
from planrun import plan

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))

from report_browser import Browser, find_chromium  # noqa: E402
from vmtest import REQUIRE_REAL  # noqa: E402

CHROMIUM = find_chromium()
HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.mark.skipif(CHROMIUM is None and not REQUIRE_REAL and os.environ.get("CI") != "true",
                    reason="chromium is not installed (it is required in CI)")
def test_plan_page_in_chromium(tmp_path):
    if CHROMIUM is None:
        pytest.fail("chromium is required (CI=true) but not installed")
    f = write_fleet(tmp_path / "f", [
        H("a", zone="dmz", group="g", ram=4096, guests=[G("d1", zone="dmz", mem=2048), G(HOSTILE, zone="int", mem=2048)]),
        H("b", zone="int", group="g", ram=4096, guests=[G("i2", zone="int", mem=2048), G("d2", zone="dmz", mem=2048)]),
    ], collect=False)
    rc, page = plan(f, fmt="html")
    assert rc == 0
    path = tmp_path / "f-plan.html"
    b = Browser(CHROMIUM)
    try:
        b.open(path.as_uri())
        assert b.requests() == [path.as_uri()] and b.console_errors() == [] and b.dialogs() == []
        assert b.eval("document.querySelectorAll('#moves tbody tr').length") == 2
        assert b.eval("document.querySelectorAll('img').length") == 0
        assert HOSTILE in b.eval("document.getElementById('moves').textContent")
        assert b.eval("document.querySelectorAll('table.zone').length") == 2   # zones dmz and int
        assert "needs spare room" in b.eval("document.getElementById('moves').textContent")
        # the stylesheet applied (a CSP that blocked it would leave the default cell padding)
        assert b.eval("getComputedStyle(document.querySelector('th')).backgroundColor") == "rgb(240, 240, 240)"
    finally:
        b.close()
