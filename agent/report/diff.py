"""Drift between two reports (`vmaudit diff OLD.json NEW.json`): what got worse, what got better and
what changed, finding by finding, keyed by check ID and resource.

A finding's level: fail > error > warn > ok, where pass, skip and a waived finding are ok (a waived
finding is accepted, not acted on; an expiring waiver brings its failure back, which is "worse").
Between OLD and NEW, per (check ID, resource):

* worse:   level rose (a new fail or error, pass -> warn, warn -> fail, error -> fail, a waiver that
           no longer applies), or the same problem's severity rose;
* better:  level fell (fixed, newly waived), a problem that is no longer reported, or severity fell;
* changed: same level and severity, but the status (pass <-> skip), message, evidence, expected
           or actual differ; also fail -> error (the failure is not known to be fixed) and findings
           that are ok on both sides but appear or disappear (a new guest's passes).

A check may report the same resource twice; such findings are told apart by their order.
The diff's JSON form is `vmaudit-diff/1` (docs/reports.md).
"""

from __future__ import annotations

import json
from typing import Any

from vmaudit.engine import SEVERITIES, STATUSES
from vmaudit.fsutil import read_json

from .view import outcome, printable, severity_rank

DIFF_SCHEMA = "vmaudit-diff/1"
REPORT_SCHEMA = "vmaudit-report/1"
_LEVEL = {"fail": 3, "error": 2, "warn": 1, "pass": 0, "skip": 0, "waived": 0}
_COMPARED = ("message", "evidence", "expected", "actual")
# Evidence that records when a run happened, not what it found: two runs of an unchanged host differ
# only there, and that is no change.
PER_RUN_EVIDENCE = frozenset({"collected_at"})


def _comparable(value: Any) -> Any:
    """value without the per-run evidence keys, at any depth."""
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items() if k not in PER_RUN_EVIDENCE}
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


class ReportError(ValueError):
    """Not a vmaudit report; str() is a one-line reason naming the file."""


def validate(data: Any, name: str) -> dict:
    """The report, or ReportError if `data` is not a vmaudit-report/1 with usable findings."""
    if not isinstance(data, dict):
        raise ReportError(f"{name}: not a vmaudit report (a JSON object is expected)")
    if data.get("schema") != REPORT_SCHEMA:
        raise ReportError(f"{name}: not a vmaudit report (schema {data.get('schema')!r}, "
                          f"expected {REPORT_SCHEMA!r})")
    findings = data.get("findings")
    if not isinstance(findings, list):
        raise ReportError(f"{name}: not a vmaudit report (no findings list)")
    for i, f in enumerate(findings):
        if not isinstance(f, dict) or not all(isinstance(f.get(k), str) for k in ("check_id", "resource")):
            raise ReportError(f"{name}: finding {i + 1} has no check_id/resource")
        if f.get("status") not in STATUSES or f.get("severity") not in SEVERITIES:
            raise ReportError(f"{name}: finding {i + 1} ({f['check_id']} {f['resource']}) has a bad "
                              f"status or severity")
    return data


def load(path: str) -> dict:
    return validate(read_json(path, "report", ReportError), path)


def _keyed(findings: list[dict]) -> dict[tuple, dict]:
    out: dict[tuple, dict] = {}
    seen: dict[tuple, int] = {}
    for f in findings:
        base = (f["check_id"], f["resource"])
        n = seen.get(base, 0)
        seen[base] = n + 1
        out[base + (n,)] = f
    return out


def _state(f: dict | None) -> dict | None:
    if f is None:
        return None
    out = {"status": f["status"], "severity": f["severity"], "waived": "waiver" in f,
           "message": f.get("message", "")}
    for k in ("expected", "actual"):
        if k in f:
            out[k] = f[k]
    out["evidence"] = f.get("evidence", {})
    if "waiver" in f:
        out["waiver"] = f["waiver"]
    return out


def _evidence_changes(old: Any, new: Any) -> dict:
    old, new = _comparable(old), _comparable(new)
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return {} if old == new else {"": {"old": old, "new": new}}
    return {k: {"old": old.get(k), "new": new.get(k)}
            for k in sorted(set(old) | set(new), key=str) if old.get(k) != new.get(k)}


def _classify(old: dict | None, new: dict | None) -> tuple[str, str] | None:
    """(category, kind) for one key, or None when nothing changed."""
    if old is None:
        level = _LEVEL[outcome(new)]
        return ("worse", "new") if level > 0 else ("changed", "new")
    if new is None:
        level = _LEVEL[outcome(old)]
        return ("better", "gone") if level > 0 else ("changed", "gone")
    lo, ln = _LEVEL[outcome(old)], _LEVEL[outcome(new)]
    if outcome(old) == "fail" and outcome(new) == "error":
        return "changed", "status"   # not fixed: the evidence is gone, the failure may remain
    if ln > lo:
        return "worse", "status"
    if ln < lo:
        return "better", "status"
    if lo > 0 and old["severity"] != new["severity"]:
        rise = severity_rank(new["severity"]) < severity_rank(old["severity"])
        return ("worse", "severity") if rise else ("better", "severity")
    if old["status"] != new["status"]:
        return "changed", "status"
    if ("waiver" in old) != ("waiver" in new) or old.get("waiver") != new.get("waiver"):
        return "changed", "waiver"
    if any(_comparable(old.get(k)) != _comparable(new.get(k)) for k in _COMPARED):
        return "changed", "evidence"
    return None


def compute(old: dict, new: dict) -> dict:
    """The vmaudit-diff/1 document for two reports."""
    a, b = _keyed(old["findings"]), _keyed(new["findings"])
    out: dict[str, list] = {"worse": [], "better": [], "changed": []}
    for key in sorted(set(a) | set(b)):
        fo, fn = a.get(key), b.get(key)
        verdict = _classify(fo, fn)
        if verdict is None:
            continue
        category, kind = verdict
        ref = fn or fo
        entry = {"check_id": key[0], "resource": key[1], "measure": ref.get("measure"),
                 "title": ref.get("title", ""), "change": kind, "old": _state(fo), "new": _state(fn)}
        if fo is not None and fn is not None:
            ev = _evidence_changes(fo.get("evidence", {}), fn.get("evidence", {}))
            if ev:
                entry["evidence_changes"] = ev
        out[category].append(entry)

    def side(r: dict) -> dict:
        host = r.get("host", {}) if isinstance(r.get("host"), dict) else {}
        return {"hostname": host.get("hostname"), "started_at": r.get("started_at"),
                "policy_sha256": (r.get("policy") or {}).get("sha256"),
                "summary": {k: v for k, v in (r.get("summary") or {}).items() if k != "by_measure"}}

    return {
        "schema": DIFF_SCHEMA,
        "old": side(old), "new": side(new),
        "same_host": side(old)["hostname"] == side(new)["hostname"],
        "counts": {k: len(v) for k, v in out.items()},
        **out,
    }


def worse(diff: dict) -> bool:
    return bool(diff["worse"])


def render_json(diff: dict) -> str:
    return json.dumps(diff, indent=1, ensure_ascii=False) + "\n"


def _short(state: dict | None) -> str:
    if state is None:
        return "absent"
    text = f"{state['status']} {state['severity']}"
    return text + " (waived)" if state.get("waived") else text


def render_text(diff: dict, *, color: bool = False) -> str:
    from .text import use_color

    on = use_color(color)
    paint = (lambda code, s: f"\x1b[{code}m{s}\x1b[0m") if on else (lambda code, s: s)
    o, n = diff["old"], diff["new"]
    lines = [f"old: {printable(o['hostname'])} {printable(o['started_at'])}",
             f"new: {printable(n['hostname'])} {printable(n['started_at'])}"]
    if not diff["same_host"]:
        lines.append(paint("33", "note: the two reports are of different hosts"))
    if o.get("policy_sha256") != n.get("policy_sha256"):
        lines.append("note: the policy changed between the two runs")
    if not any(diff["counts"].values()):
        return "\n".join([*lines, "", "no change: every finding is as it was"]) + "\n"
    titles = {"worse": ("1;31", "Worse"), "better": ("32", "Better"), "changed": ("36", "Changed")}
    for category in ("worse", "better", "changed"):
        entries = diff[category]
        code, title = titles[category]
        lines.append("")
        lines.append(paint(code, f"{title} ({len(entries)})"))
        for e in entries:
            lines.append(f"  {printable(e['check_id'])} {printable(e['resource'])}: {e['change']}: "
                         f"{_short(e['old'])} -> {_short(e['new'])}")
            if category == "changed" and e["change"] in ("new", "gone"):
                continue  # a pass or skip that appeared or went with its resource: one line is enough
            msg = (e["new"] or e["old"])["message"]
            lines.append(f"      {printable(msg)}")
            for k, ch in (e.get("evidence_changes") or {}).items():
                lines.append(f"      evidence {printable(k)}: {printable(_j(ch['old']))} -> "
                             f"{printable(_j(ch['new']))}")
    c = diff["counts"]
    lines.append("")
    lines.append(f"{c['worse']} worse, {c['better']} better, {c['changed']} changed")
    return "\n".join(lines) + "\n"


def _j(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True) if not isinstance(value, str) else value
