"""The terminal summary: counts per measure, then one line per finding that is not a pass."""

from __future__ import annotations

from vmaudit.engine import MEASURES, SEVERITIES


def render(report: dict, *, color: bool = False) -> str:
    s = report["summary"]
    host = report["host"]
    lines = [f"vmaudit {report['tool']['version']}  host {host['hostname']}  zone {host.get('zone') or '-'}  "
             f"libvirt {host.get('libvirt_uri')}  root {host.get('root')}",
             f"policy {report['policy']['source']}", ""]
    lines.append(f"{'measure':<8}" + "".join(f"{k:>8}" for k in ("pass", "fail", "warn", "error", "skip", "waived")))
    for m in MEASURES:
        c = s["by_measure"].get(m, {})
        lines.append(f"{m:<8}" + "".join(f"{c.get(k, 0):>8}" for k in ("pass", "fail", "warn", "error", "skip", "waived")))
    lines.append(f"{'total':<8}" + "".join(f"{s.get(k, 0):>8}" for k in ("pass", "fail", "warn", "error", "skip", "waived")))
    lines.append("")
    order = {"fail": 0, "error": 1, "warn": 2, "skip": 3}
    rows = [f for f in report["findings"] if f["status"] != "pass"]
    rows.sort(key=lambda f: (order.get(f["status"], 9), SEVERITIES.index(f["severity"]), f["check_id"], f["resource"]))
    for f in rows:
        tag = "WAIVED" if "waiver" in f else f["status"].upper()
        lines.append(f"{tag:<6} {f['severity']:<8} {f['check_id']:<24} {f['resource']}: {_oneline(f['message'])}")
    for e in report.get("collector_errors", []):
        lines.append(f"not collected: {e['collector']}: {e['reason']}")
    return "\n".join(lines) + "\n"


def _oneline(text: str) -> str:
    # tenants name guests: keep control characters from reaching the terminal
    return "".join(ch if ch.isprintable() else "?" for ch in str(text))
