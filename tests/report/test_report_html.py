"""The HTML report: structure and escaping of the rendered page, then the page in a real headless
Chromium (Debian's /usr/bin/chromium over the DevTools protocol): no network request, no console
error, filters that work, hostile guest names / metadata / waiver reasons / paths shown as text."""

from __future__ import annotations

import html as htmlmod
import os
import re

import pytest
from markupsafe import escape
from report_browser import Browser, find_chromium
from report_helpers import HOSTILE_FILE, HOSTILE_GUESTS, HOSTILE_ROOT_NAME, hostile_report, load_sample
from vmtest import REQUIRE_REAL

from vmaudit.report import render

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not REQUIRE_REAL and os.environ.get("CI") != "true",
    reason="chromium is not installed (it is required in CI)")


# --- the rendered page, without a browser -----------------------------------------------------------

def test_page_is_self_contained():
    page = render("html", load_sample("sample-new.json"))
    assert page.startswith("<!DOCTYPE html>")
    # nothing refers outside the file: no src/href other than in-page anchors and the empty data: icon
    refs = re.findall(r'\b(?:src|href|action)="([^"]*)"', page)
    assert all(r.startswith("#") or r == "data:," for r in refs), refs
    assert "@import" not in page and "url(" not in page
    assert page.count("<script") == 1 and page.count("<style") == 1
    csp = htmlmod.unescape(re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1))
    assert "default-src 'none'" in csp and "'unsafe-inline'" not in csp


def test_page_shows_header_measures_findings_waivers_errors():
    sample = load_sample("sample-new.json")
    page = render("html", sample)
    text = htmlmod.unescape(re.sub(r"<[^>]+>", " ", page))
    for needle in ("vm", "dmz", sample["host"]["libvirt_uri"], "2025-01-01T00:00:00Z", "test-policy.toml",
                   sample["policy"]["sha256"], "VERSION"):
        assert needle in text, needle
    for m in ("M1", "M2", "M3", "M4", "M5", "M6", "M7", "M8"):
        assert f'id="measure-{m}"' in page
    assert "Not met: 2 failures to fix" in text
    # every finding is a row, exactly once
    assert page.count('<tr class="finding') == len(sample["findings"])
    # the waiver with reason, ticket and expiry
    assert re.search(r"appliance image without an agent</td><td>SEC-42</td><td>2099-06-30", page)
    # collector errors in their own section
    errors = page.split('id="collector-errors"', 1)[1]
    for e in sample["collector_errors"]:
        assert htmlmod.escape(e["collector"]) in errors


def test_findings_worst_first_within_a_measure():
    page = render("html", load_sample("sample-new.json"))
    m2 = page.split('id="measure-M2"', 1)[1].split('<section class="measure"', 1)[0]
    worst = re.findall(r'<article class="check" id="check-([^"]+)">\s*<h3><span class="badge o-(\w+)">', m2)
    rank = {"fail": 0, "error": 1, "warn": 2, "waived": 3, "skip": 4, "pass": 5}
    assert [rank[o] for _, o in worst] == sorted(rank[o] for _, o in worst)
    assert worst[0][1] == "fail"
    # passes sit in a collapsed <details>, problems are in the open
    tcg = m2.split('id="check-M2-TCG-GUEST"', 1)[1].split("</article>", 1)[0]
    assert re.search(r'<details class="passes">\s*<summary>2 passing</summary>', tcg)
    assert tcg.index('data-status="fail"') < tcg.index("<details")


def test_hostile_strings_are_escaped(tmp_path):
    report = hostile_report(tmp_path)
    page = render("html", report)
    for guest in HOSTILE_GUESTS:
        assert str(escape(guest)) in page
    for raw in ("<img src=x", "<svg", "<iframe", "<b>", "<i>", "<u>", "<em>", "alert(13)</script>"):
        assert raw not in page, raw
    assert page.count("<script") == 1
    assert str(escape(HOSTILE_ROOT_NAME)) in page


# --- in Chromium ------------------------------------------------------------------------------------

VISIBLE_ROWS = """(function(){var n=0;document.querySelectorAll('tr.finding').forEach(function(tr){
  if(!tr.hidden && !tr.closest('article').hidden) n++;});return n;})()"""
RENDERED_ROWS = """(function(){var n=0;document.querySelectorAll('tr.finding').forEach(function(tr){
  if(tr.checkVisibility()) n++;});return n;})()"""


@pytest.fixture
def browser():
    if CHROMIUM is None:
        pytest.fail("chromium is required (CI=true) but not installed")
    b = Browser(CHROMIUM)
    yield b
    b.close()


def _write(tmp_path, report, name="report.html"):
    path = tmp_path / name
    path.write_text(render("html", report), encoding="utf-8")
    return path


def _assert_quiet(b, path):
    assert b.requests() == [path.as_uri()], "the page fetched something besides itself"
    assert b.console_errors() == []
    assert b.dialogs() == []


@needs_chromium
def test_page_loads_offline_without_errors(browser, tmp_path):
    path = _write(tmp_path, load_sample("sample-new.json"))
    browser.open(path.as_uri())
    _assert_quiet(browser, path)
    total = len(load_sample("sample-new.json")["findings"])
    assert browser.eval("document.getElementById('filters').hidden") is False
    assert browser.eval("document.getElementById('shown').textContent") == f"{total} of {total} findings shown"
    assert browser.eval(VISIBLE_ROWS) == total
    shot = tmp_path / "report.png"
    browser.screenshot(shot)
    assert shot.stat().st_size > 10_000
    if os.environ.get("VMAUDIT_SCREENSHOT"):
        browser.screenshot(os.environ["VMAUDIT_SCREENSHOT"])


@needs_chromium
def test_filters_by_status_severity_and_guest(browser, tmp_path):
    sample = load_sample("sample-new.json")
    findings = sample["findings"]

    def outcome(f):
        return "waived" if "waiver" in f else f["status"]

    path = _write(tmp_path, sample)
    browser.open(path.as_uri())
    # untick pass: every pass row is hidden, nothing else
    browser.click("input[name=status][value=pass]")
    assert browser.eval(VISIBLE_ROWS) == sum(1 for f in findings if outcome(f) != "pass")
    # leave only fail
    for k in ("error", "warn", "waived", "skip"):
        browser.click(f"input[name=status][value={k}]")
    fails = [f for f in findings if outcome(f) == "fail"]
    assert browser.eval(VISIBLE_ROWS) == len(fails) == browser.eval(RENDERED_ROWS)
    # and only high severity among them
    for k in ("critical", "medium", "low", "info"):
        browser.click(f"input[name=severity][value={k}]")
    assert browser.eval(VISIBLE_ROWS) == sum(1 for f in fails if f["severity"] == "high")
    # checks with nothing left to show are hidden entirely
    assert browser.eval("document.querySelectorAll('article.check:not([hidden])').length") == \
        len({f["check_id"] for f in fails if f["severity"] == "high"})
    # everything back on, then search one guest: its rows only, passes included and opened
    for k in ("pass", "error", "warn", "waived", "skip"):
        browser.click(f"input[name=status][value={k}]")
    for k in ("critical", "medium", "low", "info"):
        browser.click(f"input[name=severity][value={k}]")
    assert browser.eval(VISIBLE_ROWS) == len(findings)
    browser.type_text("#search", "app04")
    app04 = [f for f in findings if "app04" in f["resource"]]
    assert app04 and browser.eval(VISIBLE_ROWS) == len(app04) == browser.eval(RENDERED_ROWS)
    assert browser.eval("document.getElementById('shown').textContent") == \
        f"{len(app04)} of {len(findings)} findings shown"
    assert browser.console_errors() == [] and browser.dialogs() == []


@needs_chromium
def test_everything_shown_without_javascript(browser, tmp_path):
    sample = load_sample("sample-new.json")
    path = _write(tmp_path, sample)
    targets = browser.call("Target.getTargets", session=None)["targetInfos"]
    page = next(t for t in targets if t["type"] == "page")
    browser.session = browser.call("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True},
                                   session=None)["sessionId"]
    browser.call("Emulation.setScriptExecutionDisabled", {"value": True})
    for domain in ("Page", "Network", "Runtime", "Log"):
        browser.call(f"{domain}.enable")
    browser.call("Page.navigate", {"url": path.as_uri()})
    browser.wait_event("Page.loadEventFired")
    # Runtime.evaluate still works with page scripts disabled: it inspects the DOM as loaded
    assert browser.eval("document.getElementById('filters').hidden") is True
    assert browser.eval("document.querySelectorAll('tr.finding[hidden], article[hidden]').length") == 0
    problems = sum(1 for f in sample["findings"] if f["status"] not in ("pass", "skip"))
    assert browser.eval(RENDERED_ROWS) == problems      # passes and skips are one click away in <details>
    assert browser.eval("document.querySelectorAll('tr.finding').length") == len(sample["findings"])


@needs_chromium
def test_hostile_strings_show_as_text_and_run_nothing(browser, tmp_path):
    report = hostile_report(tmp_path)
    path = _write(tmp_path, report)
    browser.open(path.as_uri())
    browser.pump(0.5)
    _assert_quiet(browser, path)
    # no injected element: the page has exactly its own script, no img/svg/iframe/b/i/u/em at all
    assert browser.eval("document.scripts.length") == 1
    assert browser.eval("document.querySelectorAll('img,svg,iframe,b,i,u,em,object,embed').length") == 0
    text = browser.eval("document.body.innerText")
    for guest in HOSTILE_GUESTS:
        assert f"guest:{guest}" in text
    assert HOSTILE_FILE in text
    assert "</script><script>alert(9)</script> <img src=x onerror=alert(10)>" in text   # waiver reason
    assert '"><svg onload=alert(11)>' in text                                            # waiver ticket
    assert "<iframe src=javascript:alert(12)></iframe>" in text                          # expired waiver
    assert "</script><script>alert(5)</script>" in text                                  # zone metadata
    assert "cannot read <img src=x onerror=alert(18)>" in text                           # collector error
    assert HOSTILE_ROOT_NAME in text                                                     # --root path
    # searching for a hostile name filters by it as text
    browser.type_text("#search", "<img src=x")
    rows = browser.eval("Array.prototype.map.call(document.querySelectorAll('tr.finding'), function(tr){"
                        "return tr.hidden ? null : tr.getAttribute('data-resource');}).filter(Boolean)")
    assert rows and all("<img src=x" in r for r in rows)
    browser.pump(0.5)
    assert browser.dialogs() == [] and browser.console_errors() == []


# --- what to fix first, per guest, evidence, trend ----------------------------------------------------

def _bad_host_report() -> dict:
    from vmtest import audit, test_uri

    return audit("debian-broken", uri=test_uri("guests-mixed"))


def test_fix_first_lists_every_unwaived_failure_once_by_cause_worst_first():
    from vmaudit.report.html import fix_first
    from vmaudit.report.view import severity_rank

    report = _bad_host_report()
    items = fix_first(report["findings"])
    fails = [(f["check_id"], f["resource"]) for f in report["findings"]
             if f["status"] == "fail" and "waiver" not in f]
    listed = [(f["check_id"], f["resource"]) for i in items for f in i["findings"]]
    assert sorted(listed) == sorted(fails)
    assert [severity_rank(i["severity"]) for i in items] == sorted(severity_rank(i["severity"]) for i in items)
    # one cause, one item: no LSM makes the security driver and every guest's label fail too
    lsm = [i for i in items if "M3-LSM-ENFORCING" in i["checks"]]
    assert len(lsm) == 1 and set(lsm[0]["checks"]) == {"M3-LSM-ENFORCING", "M3-SECURITY-DRIVER",
                                                        "M3-GUEST-SECLABEL"}
    assert lsm[0]["severity"] == "critical" and "SELinux" in lsm[0]["remediation"]
    # one check failing for several guests is one item too
    assert len({tuple(i["checks"]) for i in items}) == len(items)
    assert all(i["remediation"] for i in items)


def test_a_cause_groups_only_when_its_root_check_fails():
    """security_driver = "none" on a host whose SELinux enforces fails the driver and the labels, but
    not for want of an LSM: those stay their own items, never under the "no SELinux/AppArmor" cause."""
    from vmaudit.report.html import fix_first

    def fail(cid, resource, sev):
        return {"check_id": cid, "resource": resource, "status": "fail", "severity": sev, "title": cid,
                "message": "m", "remediation": f"fix {cid}"}

    findings = [fail("M3-SECURITY-DRIVER", "host", "critical"), fail("M3-GUEST-SECLABEL", "guest:a", "high"),
                fail("M3-GUEST-SECLABEL", "guest:b", "high"),
                {**fail("M3-LSM-ENFORCING", "host", "high"), "status": "pass"}]
    items = fix_first(findings)
    assert [i["checks"] for i in items] == [["M3-SECURITY-DRIVER"], ["M3-GUEST-SECLABEL"]]
    assert items[1]["resources"] == ["guest:a", "guest:b"] and items[1]["remediation"] == "fix M3-GUEST-SECLABEL"


def test_waived_failures_are_not_in_fix_first():
    page = render("html", load_sample("sample-new.json"))
    fix = page.split('id="fix-first"', 1)[1].split("</section>", 1)[0]
    assert "M2-TCG-GUEST" in fix and "guest:web01" in fix
    assert "guest:legacy02" not in fix   # its TCG failure is waived


def test_passes_and_skips_are_collapsed_and_guests_have_their_own_view():
    report = _bad_host_report()
    page = render("html", report)
    main = page.split("<main>", 1)[1].split("</main>", 1)[0]
    # outside <details>, only findings to act on
    opened = re.sub(r"<details class=\"passes\">.*?</details>", "", main, flags=re.S)
    assert 'data-status="pass"' not in opened and 'data-status="skip"' not in opened
    assert 'data-status="fail"' in opened
    guests = page.split('id="guests"', 1)[1].split("</section>", 1)[0]
    names = {f["resource"][6:] for f in report["findings"] if f["resource"].startswith("guest:")}
    assert names and all(f"<code>{n}</code>" in guests for n in names)
    # every finding to act on (fail, warn, error), not only failures and warnings
    web02 = [f for f in report["findings"] if f["resource"] == "guest:web02" and f["status"] not in ("pass", "skip")]
    block = guests.split("<code>web02</code>", 1)[1].split("</details>", 1)[0]
    assert block.count("<li>") == len(web02)


def test_evidence_is_a_table_not_json():
    report = _bad_host_report()
    page = render("html", report)
    cells = re.findall(r'<table class="ev">(.*?)</tbody></table>\s*(?:</td>|<p)', page, flags=re.S)
    assert cells
    for cell in cells:
        text = htmlmod.unescape(re.sub(r"<[^>]+>", " ", cell))
        assert '{"' not in text and '["' not in text, text[:300]
    vulns = page.split('id="check-M3-CPU-VULNS"', 1)[1].split("</article>", 1)[0]
    assert '<table class="evkv">' in vulns and "<th scope=\"row\">meltdown</th>" in vulns


def test_trend_chart_from_the_state_directory(tmp_path):
    """Two runs into a state directory: the stored HTML report draws fails and warnings of both as
    inline SVG (the CSP stays strict: nothing is loaded, no inline style attribute is needed)."""
    import subprocess
    import sys

    from vmtest import HOSTS, test_uri

    state = tmp_path / "state"
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-m", "vmaudit", "run", "--root", str(HOSTS / "debian-broken"),
                               "--connect", test_uri("guests-mixed"), "--state-dir", str(state)],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 1, proc.stderr
    page = (state / "latest.html").read_text()
    svg = page.split('<section id="trend">', 1)[1].split("</svg>", 1)[0]
    assert svg.count("<polyline") == 2 and svg.count("<circle") == 4
    assert "over the last 2 runs" in page and ' style="' not in page
    # the report asked for on the command line of such a run is the same page, trend included
    out = tmp_path / "asked.html"
    proc = subprocess.run([sys.executable, "-m", "vmaudit", "run", "--root", str(HOSTS / "debian-broken"),
                           "--connect", test_uri("guests-mixed"), "--state-dir", str(state),
                           "--format", "html", "--output", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "over the last 3 runs" in out.read_text() and "over the last 3 runs" in (state / "latest.html").read_text()
    one_run = render("html", _bad_host_report())
    assert '<section id="trend">' not in one_run  # no history, no chart


@needs_chromium
def test_bad_host_first_screen_is_what_to_fix_first(browser, tmp_path):
    """At 1400 px the first screen of a bad host's report shows "Fix first" and its critical items
    (asserted from the DOM); screenshots kept in the test's tmp_path."""
    report = _bad_host_report()
    path = _write(tmp_path, report)
    browser.open(path.as_uri())
    browser.set_viewport(1400, 900)
    browser.screenshot(tmp_path / "first-screen-1400.png")
    _assert_quiet(browser, path)
    assert browser.eval("window.innerWidth") == 1400
    top = browser.eval("document.getElementById('fix-first').getBoundingClientRect().top")
    assert 0 <= top < 300
    items = browser.eval("""Array.prototype.map.call(document.querySelectorAll('#fix-first li.fix'), function(li){
        var r = li.getBoundingClientRect(); return [li.getAttribute('data-severity'), r.top, r.bottom];})""")
    critical = sum(1 for f in report["findings"] if f["status"] == "fail" and f["severity"] == "critical")
    assert critical and items[0][0] == "critical"
    on_screen = [sev for sev, t, b in items if b <= 900]
    assert len(on_screen) >= 3 and set(on_screen) == {"critical"}, items[:8]
    # nothing about passes is on the first screen
    assert browser.eval("document.querySelector('details.passes').getBoundingClientRect().top") > 900
    for y in (900, 1800):
        browser.eval(f"window.scrollTo(0, {y})")
        browser.pump(0.2)
        browser.screenshot(tmp_path / f"scrolled-{y}-1400.png")
    assert (tmp_path / "first-screen-1400.png").stat().st_size > 20_000
    if os.environ.get("VMAUDIT_SCREENSHOT_DIR"):
        import shutil

        for shot in tmp_path.glob("*.png"):
            shutil.copy(shot, os.environ["VMAUDIT_SCREENSHOT_DIR"])


@needs_chromium
def test_keyboard_reaches_fix_first_and_opens_collapsed_findings(browser, tmp_path):
    path = _write(tmp_path, _bad_host_report())
    browser.open(path.as_uri())
    browser.press("Tab")
    assert browser.eval("document.activeElement.className") == "skip"
    browser.press("Enter")
    assert browser.eval("location.hash") == "#fix-first"
    assert browser.eval("document.activeElement.id") == "fix-first"
    browser.press("Tab")   # the first link inside "Fix first": a check of its first item
    assert browser.eval("document.activeElement.closest('#fix-first') !== null")
    assert browser.eval("document.activeElement.tagName") == "A"
    # a collapsed list of passes opens from the keyboard
    browser.eval("document.querySelector('details.passes > summary').focus()")
    assert browser.eval("document.querySelector('details.passes').open") is False
    browser.press("Enter")
    assert browser.eval("document.querySelector('details.passes').open") is True
    assert browser.console_errors() == []
