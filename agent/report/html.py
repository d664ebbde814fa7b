"""The HTML report (`--format html`): one self-contained page rendered with Jinja2 from
`report_templates/report.html.j2`, autoescape on.

* Self-contained: the CSS and JS of report_templates/ are inlined; nothing is fetched (hypervisor
  networks are often air-gapped). A Content-Security-Policy meta tag allows exactly the page's own
  inline style and script by their SHA-256 hashes and nothing else, so even a markup injection that
  slipped past escaping could neither run script nor load anything.
* Every string of the report is data: guest names, metadata, waiver reasons and file paths are
  escaped by Jinja2; the page's JS never builds markup, it only hides and shows rows rendered here.
* Without JS everything is shown; with JS, filters by status and severity and a search by guest or
  resource hide rows. Passes are collapsed per check (`<details>`) so a host of 1,000 guests stays
  readable; printing opens them (print CSS + a `beforeprint` handler).
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache
from pathlib import Path

from markupsafe import Markup

from .view import (
    COUNT_KEYS,
    MEASURE_TITLES,
    compact,
    measure_counts,
    measures_of,
    outcome,
    verdict,
    worst_first_key,
)

SEVERITY_KEYS = ("critical", "high", "medium", "low", "info")


def _templates_dir() -> Path:
    import vmaudit.report_templates as pkg

    return Path(pkg.__file__).resolve().parent


@lru_cache(maxsize=1)
def environment():
    """The Jinja2 environment of every vmaudit page (host reports and the fleet page)."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_templates_dir())),
        autoescape=True,          # every template, whatever its name: report strings are never markup
        undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )


@lru_cache(maxsize=1)
def _assets() -> tuple[str, str]:
    d = _templates_dir()
    return (d / "report.css").read_text(encoding="utf-8"), (d / "report.js").read_text(encoding="utf-8")


def csp_hash(text: str) -> str:
    """The Content-Security-Policy source that allows exactly this inline style or script."""
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


def _row(f: dict) -> dict:
    evidence = f.get("evidence")
    if isinstance(evidence, dict):
        ev = [(str(k), compact(v)) for k, v in evidence.items()]
    elif evidence in (None, "", [], {}):
        ev = []
    else:
        ev = [("", compact(evidence))]
    waiver = _waiver(f["waiver"]) if isinstance(f.get("waiver"), dict) else None
    return {
        "outcome": outcome(f),
        "status": str(f.get("status", "")),
        "severity": str(f.get("severity", "")),
        "check_id": str(f.get("check_id", "")),
        "resource": str(f.get("resource", "")),
        "message": str(f.get("message", "")),
        "expected": None if f.get("expected") is None else compact(f["expected"]),
        "actual": None if f.get("actual") is None else compact(f["actual"]),
        "evidence": ev,
        "waiver": waiver,
    }


def _waiver(w: dict) -> dict:
    return {k: str(w.get(k) or "") for k in ("check", "resource", "reason", "ticket", "expires")}


def _checks(findings: list[dict]) -> list[dict]:
    """Findings of one measure grouped by check; checks ordered by their worst finding."""
    by_check: dict[str, list[dict]] = {}
    for f in findings:
        by_check.setdefault(str(f.get("check_id", "")), []).append(f)
    out = []
    for cid, group in by_check.items():
        group.sort(key=worst_first_key)
        counts = dict.fromkeys(COUNT_KEYS, 0)
        for f in group:
            counts[outcome(f)] = counts.get(outcome(f), 0) + 1
        first = group[0]
        out.append({
            "id": cid,
            "title": str(first.get("title", "")),
            "remediation": str(first.get("remediation", "")),
            "counts": counts,
            "worst": outcome(first),
            "sort": worst_first_key(first),
            "problems": [_row(f) for f in group if f.get("status") != "pass"],
            "passes": [_row(f) for f in group if f.get("status") == "pass"],
        })
    out.sort(key=lambda c: c["sort"])
    return out


def context(report: dict) -> dict:
    """Everything the template prints, already grouped and ordered."""
    by_measure: dict[str, list[dict]] = {}
    for f in report.get("findings", []):
        by_measure.setdefault(str(f.get("measure", "")), []).append(f)
    measures = []
    for m in measures_of(report):
        counts = measure_counts(report, m)
        key, sentence = verdict(counts)
        measures.append({"key": m, "title": MEASURE_TITLES.get(m, m), "counts": counts,
                         "verdict_key": key, "verdict": sentence, "checks": _checks(by_measure.get(m, []))})
    waived = sorted((f for f in report.get("findings", []) if isinstance(f.get("waiver"), dict)),
                    key=worst_first_key)
    css, js = _assets()
    totals = dict.fromkeys(COUNT_KEYS, 0)
    for m in measures:
        for k in COUNT_KEYS:
            totals[k] += m["counts"][k]
    policy = report.get("policy", {})
    tool = report.get("tool", {})
    host = report.get("host", {})
    return {
        "tool": {k: str(tool.get(k) or "") for k in ("name", "version")},
        "host": {k: str(host.get(k) or "") for k in ("hostname", "zone", "libvirt_uri", "root", "libvirt")},
        "started_at": report.get("started_at", ""),
        "finished_at": report.get("finished_at", ""),
        "policy": {"source": policy.get("source", ""), "sha256": policy.get("sha256") or ""},
        "measures": measures,
        "totals": totals,
        "finding_count": len(report.get("findings", [])),
        "waived": [_row(f) for f in waived],
        "expired_waivers": [_waiver(w) for w in report.get("expired_waivers") or [] if isinstance(w, dict)],
        "collector_errors": [{"collector": str(e.get("collector", "")), "reason": str(e.get("reason", ""))}
                             for e in report.get("collector_errors") or [] if isinstance(e, dict)],
        "count_keys": COUNT_KEYS,
        "severity_keys": SEVERITY_KEYS,
        # our own files, trusted: inlined verbatim, their hashes allowed by the CSP
        "css": Markup(css),
        "js": Markup(js),
        "csp": f"default-src 'none'; style-src '{csp_hash(css)}'; script-src '{csp_hash(js)}'; "
               "img-src data:; base-uri 'none'; form-action 'none'",
    }


def render(report: dict, *, color: bool = False) -> str:
    return environment().get_template("report.html.j2").render(context(report))
