"""Prometheus node_exporter textfile format (`--format prometheus`): findings counted by status,
severity and measure, plus when the last run finished.

Write it into node_exporter's `--collector.textfile.directory` as `vmaudit.prom`:
`vmaudit run --format prometheus --output /var/lib/node_exporter/textfile_collector/vmaudit.prom`.
vmaudit writes every file atomically (a temporary `.vmaudit.prom.*.tmp` beside it, fsync, rename), and
node_exporter reads only `*.prom`, so it never sees half a file.

Every status x severity x measure combination is written, zeros included: a series that vanishes when
its count drops to zero breaks alerts like `vmaudit_findings{status="fail"} > 0` and rate graphs.
A waived finding is counted under status "waived", as in the JSON summary.
"""

from __future__ import annotations

from datetime import datetime, timezone

from vmaudit.engine import SEVERITIES
from vmaudit.termsafe import clean

from .view import COUNT_KEYS, measures_of, outcome


def _label(value: object) -> str:
    # exposition format: backslash, double quote and line feed are escaped in label values; the format
    # has no escape for any other control character, and a raw carriage return makes the file
    # unparsable: those become "?" (vmaudit.termsafe.clean, after the escapes, which are printable)
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return clean(escaped)


def _epoch(stamp: object) -> float | None:
    try:
        dt = datetime.strptime(str(stamp), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return dt.timestamp()


def render(report: dict, *, color: bool = False) -> str:
    measures = measures_of(report)
    counts = {(s, v, m): 0 for s in COUNT_KEYS for v in SEVERITIES for m in measures}
    for f in report.get("findings", []):
        key = (outcome(f), f.get("severity"), f.get("measure"))
        if key in counts:
            counts[key] += 1
    host = report.get("host", {})
    out = [
        "# HELP vmaudit_findings Findings of the last vmaudit run by status (waived counted apart), severity and measure.",
        "# TYPE vmaudit_findings gauge",
    ]
    for (s, v, m), n in counts.items():
        out.append(f'vmaudit_findings{{status="{s}",severity="{v}",measure="{_label(m)}"}} {n}')
    out += [
        "# HELP vmaudit_collector_errors Facts the last run could not collect (their checks report error).",
        "# TYPE vmaudit_collector_errors gauge",
        f"vmaudit_collector_errors {len(report.get('collector_errors') or [])}",
        "# HELP vmaudit_expired_waivers Waivers in the policy that have expired and no longer apply.",
        "# TYPE vmaudit_expired_waivers gauge",
        f"vmaudit_expired_waivers {len(report.get('expired_waivers') or [])}",
    ]
    finished = _epoch(report.get("finished_at"))
    started = _epoch(report.get("started_at"))
    if finished is not None:
        out += [
            "# HELP vmaudit_last_run_timestamp_seconds When the last vmaudit run finished (Unix time).",
            "# TYPE vmaudit_last_run_timestamp_seconds gauge",
            f"vmaudit_last_run_timestamp_seconds {finished:.0f}",
        ]
        if started is not None:
            out += [
                "# HELP vmaudit_last_run_duration_seconds How long the last vmaudit run took (whole seconds).",
                "# TYPE vmaudit_last_run_duration_seconds gauge",
                f"vmaudit_last_run_duration_seconds {max(0.0, finished - started):.0f}",
            ]
    out += [
        "# HELP vmaudit_info The audited host and the vmaudit version and policy of the last run.",
        "# TYPE vmaudit_info gauge",
        f'vmaudit_info{{version="{_label(report.get("tool", {}).get("version", ""))}",'
        f'hostname="{_label(host.get("hostname") or "")}",zone="{_label(host.get("zone") or "")}",'
        f'policy_sha256="{_label(report.get("policy", {}).get("sha256") or "")}"}} 1',
    ]
    return "\n".join(out) + "\n"
