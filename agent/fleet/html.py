"""The fleet HTML page (report_templates/fleet.html.j2): hosts by measure, worst first, the fleet checks'
findings, the trend of past runs and a link to each host's own report.

Rendered by Jinja2 with autoescape on: host names, guest names, reasons and messages are data, never
markup. The page is self-contained (its CSS inlined and allowed by hash in a Content-Security-Policy
that forbids scripts altogether) and works from the file system: links are relative.
"""

from __future__ import annotations

import json

from vmaudit.engine import MEASURES, SEVERITIES
from vmaudit.report.html import csp_hash, environment

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1b1b1b}
h1{font-size:1.5em;margin:0 0 .3em}h2{font-size:1.2em;margin:1.6em 0 .5em}
table{border-collapse:collapse;width:100%;margin:.4em 0}
th,td{border:1px solid #ccc;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.n{text-align:right;white-space:nowrap}
.meta{color:#555}.banner{background:#fff3cd;border:1px solid #e0c060;padding:.5em;margin:.5em 0}
.b{display:inline-block;padding:0 .45em;border-radius:3px;font-weight:600;font-size:.9em}
.s-fail{background:#d9534f;color:#fff}.s-error{background:#6f42c1;color:#fff}
.s-warn{background:#f0ad4e;color:#000}.s-pass{background:#5cb85c;color:#fff}.s-skip{background:#aaa;color:#fff}
.s-waived{background:#ddd;color:#000}.s-unreached{background:#343a40;color:#fff}
td.m{text-align:center;white-space:nowrap;font-size:.9em}
td.m.fail{background:#f8d7da}td.m.error{background:#e2d9f3}td.m.warn{background:#fff3cd}td.m.pass{background:#dff0d8}
code{font-size:.92em;word-break:break-all}.ev{color:#444;font-size:.9em}
"""


def _cell(by_measure: dict, m: str) -> dict:
    c = by_measure.get(m) or {}
    parts = [f"{c[k]} {k}" for k in ("fail", "error", "warn") if c.get(k)]
    cls = next((k for k in ("fail", "error", "warn") if c.get(k)), "pass" if c.get("pass") else "")
    return {"text": ", ".join(parts) or ("ok" if c.get("pass") else "-"), "cls": cls}


def _evidence(ev: object) -> str:
    text = json.dumps(ev, sort_keys=True, default=str)
    return text if len(text) <= 400 else text[:400] + " ..."


def context(report: dict) -> dict:
    hosts = []
    for h in report["hosts"]:
        summary = h.get("summary") or {}
        by_measure = summary.get("by_measure") or {}
        if not h["reached"]:
            state, label = "unreached", "not audited"
        elif h.get("worst"):
            state, label = "fail", f"fail ({h['worst']})"
        elif summary.get("error"):
            state, label = "error", "errors"
        elif summary.get("warn"):
            state, label = "warn", "warnings"
        else:
            state, label = "pass", "pass"
        hosts.append({
            "name": h["name"], "address": h.get("address") or "", "zone": h.get("zone") or "",
            "hostname": h.get("hostname") or "", "state": state, "label": label, "reason": h.get("reason") or "",
            "mode": h.get("mode") or "", "seconds": h.get("seconds"),
            "cells": [_cell(by_measure, m) for m in MEASURES],
            "counts": {k: summary.get(k, 0) for k in ("fail", "error", "warn", "pass", "waived")},
            "html": h.get("html"), "json": h.get("report"),
        })
    order = {s: i for i, s in enumerate(("fail", "error", "warn", "skip", "pass"))}
    findings = sorted(report["findings"], key=lambda f: (
        "waiver" in f, order.get(f["status"], 9), SEVERITIES.index(f["severity"]), f["check_id"], f["resource"]))
    rows = [{"status": "waived" if "waiver" in f else f["status"], "severity": f["severity"],
             "check_id": f["check_id"], "resource": f["resource"], "message": f["message"],
             "evidence": _evidence(f.get("evidence"))} for f in findings]
    trend = report.get("trend") or []
    peak = max([t.get("fail", 0) or 0 for t in trend] + [1])
    return {"r": report, "hosts": hosts, "findings": rows, "measures": MEASURES, "trend": trend,
            "peak": peak, "css": CSS, "csp": f"default-src 'none'; style-src '{csp_hash(CSS)}'; img-src data:; "
                                             f"base-uri 'none'; form-action 'none'"}


def render(report: dict) -> str:
    return "".join(render_chunks(report))


def render_chunks(report: dict):
    """The page as pieces (Jinja's generate()), for writing a page of thousands of hosts without
    holding it whole."""
    from markupsafe import Markup

    ctx = context(report)
    ctx["css"] = Markup(ctx["css"])  # our own constant, allowed by its hash
    return environment().get_template("fleet.html.j2").generate(ctx)


__all__ = ["render", "render_chunks", "context", "CSS"]
