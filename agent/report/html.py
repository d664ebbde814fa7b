"""The HTML report (`--format html`): one self-contained page rendered with Jinja2 from
`report_templates/report.html.j2`, autoescape on.

* Self-contained: the CSS and JS of report_templates/ are inlined; nothing is fetched (hypervisor
  networks are often air-gapped). A Content-Security-Policy meta tag allows exactly the page's own
  inline style and script by their SHA-256 hashes and nothing else, so even a markup injection that
  slipped past escaping could neither run script nor load anything.
* Every string of the report is data: guest names, metadata, waiver reasons and file paths are
  escaped by Jinja2; the page's JS never builds markup, it only hides and shows rows rendered here.
* For someone deciding what to fix this week, the page opens with "Fix first": the unwaived failures,
  worst severity first, one item per cause (one check's failures on many guests are one item; causes
  known to produce several checks' failures, such as a host without SELinux/AppArmor, are one item),
  each with its remediation. Then the measures, a per-guest view and, with a state directory, a small
  trend chart of fails and warnings over the last runs (inline SVG: nothing is fetched).
* Without JS everything is shown; with JS, filters by status and severity and a search by guest or
  resource hide rows. Passes and skips are collapsed per check (`<details>`) so a host of 1,000 guests
  stays readable; printing opens them (print CSS + a `beforeprint` handler).
* Evidence is shown as key/value tables (nested values as nested tables or lists), never as JSON.
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
    severity_rank,
    verdict,
    worst_first_key,
)

SEVERITY_KEYS = ("critical", "high", "medium", "low", "info")

# One cause behind several checks' failures: when `root` fails together with others of `checks`, "Fix
# first" shows them as one item, fixed by the remediation of `root`. Without `root` failing the cause is
# not established (security_driver = "none" on an SELinux host fails the others for another reason).
CAUSES = (
    {"title": "Guests are not confined: the host enforces neither SELinux nor AppArmor, so libvirt's sVirt "
              "cannot label them",
     "checks": ("M3-LSM-ENFORCING", "M3-SECURITY-DRIVER", "M3-GUEST-SECLABEL"), "root": "M3-LSM-ENFORCING"},
    {"title": "No usable hardware virtualization: guests run under binary translation",
     "checks": ("M2-HW-VIRT", "M2-TCG-GUEST"), "root": "M2-HW-VIRT"},
)
FIX_FIRST_RESOURCES = 12   # resources named per item; the rest are counted
EVIDENCE_ROWS = 200        # rows of one evidence list or table shown; the JSON report has them all
EVIDENCE_DEPTH = 4         # nesting shown as tables; deeper values as compact text


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


def _scalar(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def evidence_node(value, depth: int = 0) -> dict:
    """A value of evidence as something a person reads: text, a key/value table, a list, or a table of
    rows (a list of records). Never JSON, except below EVIDENCE_DEPTH levels of nesting."""
    if not isinstance(value, (dict, list)):
        return {"kind": "text", "text": _scalar(value)}
    if depth >= EVIDENCE_DEPTH:
        return {"kind": "text", "text": compact(value)}
    if isinstance(value, dict):
        if not value:
            return {"kind": "text", "text": "none"}
        items = list(value.items())
        return {"kind": "table", "items": [(str(k), evidence_node(v, depth + 1)) for k, v in items[:EVIDENCE_ROWS]],
                "more": max(0, len(items) - EVIDENCE_ROWS)}
    if not value:
        return {"kind": "text", "text": "none"}
    more = max(0, len(value) - EVIDENCE_ROWS)
    shown = value[:EVIDENCE_ROWS]
    if all(not isinstance(v, (dict, list)) for v in shown):
        return {"kind": "text", "text": ", ".join(_scalar(v) for v in shown), "more": more}
    if all(isinstance(v, dict) for v in shown):
        columns: list[str] = []
        for v in shown:
            columns += [str(k) for k in v if str(k) not in columns]
        if len(columns) <= 8:
            return {"kind": "rows", "columns": columns, "more": more,
                    "rows": [[evidence_node(v[c], depth + 1) if c in v else {"kind": "text", "text": ""}
                              for c in columns] for v in shown]}
    return {"kind": "list", "items": [evidence_node(v, depth + 1) for v in shown], "more": more}


def _row(f: dict) -> dict:
    evidence = f.get("evidence")
    if isinstance(evidence, dict):
        ev = [(str(k), evidence_node(v, 1)) for k, v in evidence.items()]
    elif evidence in (None, "", [], {}):
        ev = []
    else:
        ev = [("", evidence_node(evidence, 1))]
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
            "problems": [_row(f) for f in group if outcome(f) not in ("pass", "skip")],
            "quiet": [_row(f) for f in group if outcome(f) in ("pass", "skip")],
            "quiet_label": _quiet_label(counts),
        })
    out.sort(key=lambda c: c["sort"])
    return out


def _quiet_label(counts: dict) -> str:
    parts = [f"{counts['pass']} passing"] if counts.get("pass") else []
    if counts.get("skip"):
        parts.append(f"{counts['skip']} skipped")
    return ", ".join(parts)


def fix_first(findings: list[dict]) -> list[dict]:
    """The unwaived failures as items to act on, worst severity first: one item per cause."""
    fails = [f for f in findings if outcome(f) == "fail"]
    by_check: dict[str, list[dict]] = {}
    for f in sorted(fails, key=worst_first_key):
        by_check.setdefault(str(f.get("check_id", "")), []).append(f)
    items = []
    for cause in CAUSES:
        failing = [c for c in cause["checks"] if c in by_check]
        if cause["root"] not in failing or len(failing) < 2:
            continue
        group = [f for c in failing for f in by_check.pop(c)]
        items.append(_fix_item(cause["title"], group, failing, cause["root"]))
    for cid, group in by_check.items():
        first = group[0]
        more = f" (and {len(group) - 1} more)" if len(group) > 1 else ""
        title = f"{first.get('title', '')}: {first.get('message', '')}{more}"
        items.append(_fix_item(title, group, [cid], cid))
    items.sort(key=lambda i: (severity_rank(i["severity"]), -len(i["findings"]), i["checks"][0]))
    return items


def _fix_item(title: str, group: list[dict], checks: list[str], root: str) -> dict:
    worst = min(group, key=lambda f: severity_rank(f.get("severity")))
    remediation = next(str(f.get("remediation", "")) for f in group if f.get("check_id") == root)
    resources = list(dict.fromkeys(str(f.get("resource", "")) for f in group))
    return {
        "title": title,
        "severity": str(worst.get("severity", "")),
        "checks": checks,
        "anchor": checks[0],
        "remediation": remediation,
        "findings": [{"check_id": str(f.get("check_id", "")), "resource": str(f.get("resource", "")),
                      "message": str(f.get("message", ""))} for f in group],
        "resources": resources[:FIX_FIRST_RESOURCES],
        "more_resources": max(0, len(resources) - FIX_FIRST_RESOURCES),
    }


def guests_view(findings: list[dict]) -> list[dict]:
    """Each guest's findings together: counts, and the findings that are not passes, worst first."""
    by_guest: dict[str, list[dict]] = {}
    for f in findings:
        resource = str(f.get("resource", ""))
        if resource.startswith("guest:"):
            by_guest.setdefault(resource[len("guest:"):], []).append(f)
    out = []
    for name, group in by_guest.items():
        group.sort(key=worst_first_key)
        counts = dict.fromkeys(COUNT_KEYS, 0)
        for f in group:
            counts[outcome(f)] += 1
        out.append({"name": name, "counts": counts, "worst": outcome(group[0]), "sort": worst_first_key(group[0]),
                    "problems": [{"outcome": outcome(f), "severity": str(f.get("severity", "")),
                                  "check_id": str(f.get("check_id", "")), "title": str(f.get("title", "")),
                                  "message": str(f.get("message", ""))}
                                 for f in group if outcome(f) not in ("pass", "skip")]})
    out.sort(key=lambda g: (g["sort"], g["name"]))
    return out


def trend_chart(runs: list[dict] | None, width: int = 360, height: int = 110) -> dict | None:
    """Points of a small line chart of fails and warnings over the runs (oldest first), or None with
    fewer than two runs. Coordinates only: the template draws them as inline SVG."""
    if not runs or len(runs) < 2:
        return None
    left, right, top, bottom = 34, 8, 10, 22
    top_value = max(1, *(max(int(r.get("fail", 0)), int(r.get("warn", 0))) for r in runs))
    step = (width - left - right) / (len(runs) - 1)

    def y(v: int) -> float:
        return round(top + (height - top - bottom) * (1 - v / top_value), 1)

    series = []
    for key in ("fail", "warn"):
        points = [(round(left + i * step, 1), y(int(r.get(key, 0))), int(r.get(key, 0)), str(r.get("label", "")))
                  for i, r in enumerate(runs)]
        series.append({"key": key, "points": points,
                       "path": " ".join(f"{x},{yy}" for x, yy, _v, _l in points)})
    return {"width": width, "height": height, "series": series, "top_value": top_value,
            "y_top": y(top_value), "y_zero": y(0), "left": left, "right": width - right,
            "first": str(runs[0].get("label", "")), "last": str(runs[-1].get("label", "")),
            "runs": len(runs), "latest": {k: int(runs[-1].get(k, 0)) for k in ("fail", "warn")}}


def context(report: dict, trend: list[dict] | None = None) -> dict:
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
        "fix_first": fix_first(report.get("findings", [])),
        "guests": guests_view(report.get("findings", [])),
        "trend": trend_chart(trend),
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


def render(report: dict, *, color: bool = False, trend: list[dict] | None = None) -> str:
    """The page; `trend` (oldest first: {"label", "fail", "warn"} per run, this one last) adds the
    trend chart (the state directory passes its last runs)."""
    return environment().get_template("report.html.j2").render(context(report, trend))
