#!/usr/bin/env python3
"""Benchmark the reports of a big host: size and render time of the HTML report (and the other
formats) for a libvirt test-driver host of N guests, and, when Debian's chromium is installed, how long
the page takes to load and to apply a filter in a real headless browser.

The node XML comes from bench/bench_run.py's generator (realistic guests, a fiftieth under TCG, two
zones, a tenth shut off); the report is made by the real pipeline (collectors -> checks -> report).

    .venv/bin/python bench/bench_html.py            # 1,000 guests
    .venv/bin/python bench/bench_html.py 200 5000   # other sizes
    .venv/bin/python bench/bench_html.py --no-browser 1000
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "bench"), str(REPO / "tests" / "report")]

from bench_run import EMPTY_ROOT, node_xml  # noqa: E402

from vmaudit.audit import build_report, collect_facts  # noqa: E402
from vmaudit.policy import Policy  # noqa: E402
from vmaudit.report import render  # noqa: E402

FORMATS = ("html", "text", "json", "junit", "prometheus")


def best_of(n: int, fn):
    best, out = None, None
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        best = dt if best is None or dt < best else best
    return best, out


def browser_figures(page: Path) -> dict | None:
    try:
        from report_browser import Browser, find_chromium
    except ImportError:
        return None
    exe = find_chromium()
    if exe is None:
        return None
    b = Browser(exe, timeout=300)
    try:
        t0 = time.perf_counter()
        b.open(page.as_uri())
        load = time.perf_counter() - t0
        # one filter change (untick "pass"), timed inside the page including the re-layout
        filt = b.eval("""(function(){var box=document.querySelector("input[name=status][value=pass]");
            var t=performance.now(); box.click(); document.body.offsetHeight; return performance.now()-t;})()""")
        search = b.eval("""(function(){var s=document.getElementById('search'); s.value='bench-00042';
            var t=performance.now(); document.getElementById('filters').dispatchEvent(new Event('change'));
            document.body.offsetHeight; return performance.now()-t;})()""")
        shown = b.eval("document.getElementById('shown').textContent")
        errors = b.console_errors()
        requests = b.requests()
    finally:
        b.close()
    return {"load_s": load, "filter_ms": filt, "search_ms": search, "shown": shown,
            "console_errors": len(errors), "requests": len(requests)}


def main(argv: list[str]) -> None:
    use_browser = "--no-browser" not in argv
    sizes = [int(a) for a in argv if not a.startswith("-")] or [1000]
    with tempfile.TemporaryDirectory(prefix="vmaudit-bench-html-") as tmp:
        for n in sizes:
            node = Path(tmp) / f"node-{n}.xml"
            node.write_text(node_xml(n))
            t0 = time.perf_counter()
            facts = collect_facts(root=str(EMPTY_ROOT), uri=f"test://{node}")
            report = build_report(facts, Policy())
            audit_s = time.perf_counter() - t0
            findings = report["findings"]
            non_pass = sum(1 for f in findings if f["status"] != "pass")
            print(f"{n} guests: {len(findings)} findings ({non_pass} not passing), audit {audit_s:.2f} s")
            print(f"  {'format':<11} {'render s':>9} {'MiB':>8} {'bytes/finding':>14}")
            for fmt in FORMATS:
                secs, text = best_of(3, lambda fmt=fmt, report=report: render(fmt, report))
                size = len(text.encode("utf-8"))
                print(f"  {fmt:<11} {secs:>9.3f} {size / 2**20:>8.2f} {size / max(1, len(findings)):>14.0f}")
                if fmt == "html":
                    page = Path(tmp) / f"report-{n}.html"
                    page.write_text(text, encoding="utf-8")
            if use_browser:
                fig = browser_figures(page)
                if fig is None:
                    print("  chromium: not installed, browser figures skipped")
                else:
                    print(f"  chromium: load {fig['load_s']:.2f} s, untick 'pass' {fig['filter_ms']:.0f} ms, "
                          f"search one guest {fig['search_ms']:.0f} ms ({fig['shown']}); "
                          f"{fig['requests']} request(s), {fig['console_errors']} console error(s)")


if __name__ == "__main__":
    main(sys.argv[1:])
