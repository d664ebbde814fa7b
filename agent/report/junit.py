"""JUnit XML (`--format junit`) for CI dashboards (Jenkins, GitLab, ...): one test suite per measure,
one test case per check and resource.

Mapping, chosen so a dashboard's red means "act on this" exactly as vmaudit's exit status does:

| finding        | test case                                                         |
|----------------|-------------------------------------------------------------------|
| fail           | `<failure type="<severity>" message="...">` with details          |
| error          | `<error type="evidence-missing" message="...">`                   |
| skip           | `<skipped message="...">`                                         |
| waived         | `<skipped type="waived" message="waived until ...: reason">`      |
| warn           | passes, with the warning in `<system-out>` (needs review, not a failure) |
| pass           | passes                                                            |

classname is `vmaudit.<measure>.<check ID>`, name is the resource. Timestamps carry no time zone
(the JUnit schema's form); they are UTC. Characters XML 1.0 cannot carry (a guest may be named with
control characters) become U+FFFD.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from .view import compact, measures_of, outcome, xml_safe


def _text(f: dict) -> str:
    lines = [f"{f.get('check_id', '')} {f.get('title', '')}".strip(),
             f"resource: {f.get('resource', '')}",
             f"status: {f.get('status', '')}, severity: {f.get('severity', '')}",
             f"message: {f.get('message', '')}"]
    if f.get("expected") is not None or f.get("actual") is not None:
        lines.append(f"expected: {compact(f.get('expected', '-'))}, actual: {compact(f.get('actual', '-'))}")
    evidence = f.get("evidence")
    if isinstance(evidence, dict):
        lines.extend(f"evidence {k}: {compact(v)}" for k, v in evidence.items())
    if f.get("remediation"):
        lines.append(f"remediation: {f['remediation']}")
    return xml_safe("\n".join(lines))


def _case(f: dict) -> tuple[ET.Element, str]:
    case = ET.Element("testcase", {
        "classname": xml_safe(f"vmaudit.{f.get('measure', '')}.{f.get('check_id', '')}"),
        "name": xml_safe(f.get("resource", "")),
        "time": "0",
    })
    kind = outcome(f)
    message = xml_safe(f.get("message", ""))
    if kind == "fail":
        ET.SubElement(case, "failure", {"type": xml_safe(f.get("severity", "")), "message": message}).text = _text(f)
    elif kind == "error":
        ET.SubElement(case, "error", {"type": "evidence-missing", "message": message}).text = _text(f)
    elif kind == "skip":
        ET.SubElement(case, "skipped", {"message": message})
    elif kind == "waived":
        w = f["waiver"]
        ticket = f" ({w['ticket']})" if w.get("ticket") else ""
        ET.SubElement(case, "skipped", {
            "type": "waived",
            "message": xml_safe(f"waived until {w.get('expires', '?')}{ticket}: {w.get('reason', '')}"),
        }).text = _text(f)
    elif kind == "warn":
        ET.SubElement(case, "system-out").text = "warn: " + _text(f)
    return case, kind


def _duration(report: dict) -> str:
    """Seconds from started_at to finished_at (whole seconds: that is what the report holds)."""
    from datetime import datetime

    try:
        start, end = (datetime.strptime(str(report[k]), "%Y-%m-%dT%H:%M:%SZ")
                      for k in ("started_at", "finished_at"))
    except (KeyError, ValueError):
        return "0"
    return str(max(0, int((end - start).total_seconds())))


def render(report: dict, *, color: bool = False) -> str:
    host = report.get("host", {})
    timestamp = str(report.get("started_at", "")).rstrip("Z")
    root = ET.Element("testsuites", {"name": xml_safe(f"vmaudit {host.get('hostname', '')}")})
    totals = {"tests": 0, "failures": 0, "errors": 0}
    by_measure: dict[str, list[dict]] = {}
    for f in report.get("findings", []):
        by_measure.setdefault(str(f.get("measure", "")), []).append(f)
    for m in measures_of(report):
        suite = ET.SubElement(root, "testsuite", {"name": f"vmaudit.{xml_safe(m)}"})
        props = ET.SubElement(suite, "properties")
        for name, value in (("hostname", host.get("hostname")), ("zone", host.get("zone")),
                            ("libvirt_uri", host.get("libvirt_uri")), ("root", host.get("root")),
                            ("policy", report.get("policy", {}).get("source")),
                            ("policy_sha256", report.get("policy", {}).get("sha256")),
                            ("vmaudit_version", report.get("tool", {}).get("version"))):
            ET.SubElement(props, "property", {"name": name, "value": xml_safe(value or "")})
        counts = {"fail": 0, "error": 0, "skip": 0, "waived": 0}
        findings = by_measure.get(m, [])
        for f in findings:
            case, kind = _case(f)
            suite.append(case)
            if kind in counts:
                counts[kind] += 1
        suite.attrib.update({
            "tests": str(len(findings)), "failures": str(counts["fail"]), "errors": str(counts["error"]),
            "skipped": str(counts["skip"] + counts["waived"]), "time": "0",
            "timestamp": xml_safe(timestamp), "hostname": xml_safe(host.get("hostname") or ""),
        })
        totals["tests"] += len(findings)
        totals["failures"] += counts["fail"]
        totals["errors"] += counts["error"]
    root.attrib.update({k: str(v) for k, v in totals.items()})
    root.attrib["time"] = _duration(report)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
