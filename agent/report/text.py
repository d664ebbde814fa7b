"""The terminal report (`--format text`, the default): a header; one line per finding that is not a
pass, failures first and worst first, each failure followed by its remediation; one summary row per
measure with its counts and a plain-language verdict; and a last line saying where to read more
(`vmaudit explain ID`, the HTML report).

Colour only when the caller says the output is a terminal (`color=True`) and `NO_COLOR` is not set
(https://no-color.org): piped or written to a file, the report is plain text. Every string that may
come from a guest (names, metadata, messages quoting them) is stripped of control characters, so a
guest named with an escape sequence cannot drive the reader's terminal.
"""

from __future__ import annotations

import os

from .view import (
    COUNT_KEYS,
    MEASURE_TITLES,
    measure_counts,
    measures_of,
    outcome,
    printable,
    verdict,
    worst_first_key,
)

# SGR codes per outcome; verdict keys reuse them.
_SGR = {"fail": "1;31", "error": "1;35", "warn": "33", "waived": "36", "skip": "2", "pass": "32",
        "none": "2", "bold": "1"}


# What the first line adds about libvirt (CONTRACT 1.1: a host without libvirt is said so once).
LIBVIRT_HEADLINE = {
    "absent": ": libvirt is not installed on this host, its checks are skipped",
    "offline": ": guests read from the image's definition files, no libvirt contacted",
    "unreachable": ": libvirt could not be reached, its checks are errors",
}


def use_color(color: bool) -> bool:
    return bool(color) and not os.environ.get("NO_COLOR")


def render(report: dict, *, color: bool = False) -> str:
    paint = _painter(use_color(color))
    host = report.get("host", {})
    policy = report.get("policy", {})
    sha = str(policy.get("sha256") or "")
    lines = [
        paint("bold", f"vmaudit {printable(report.get('tool', {}).get('version', '?'))} audit of "
                      f"{printable(host.get('hostname') or '?')}{LIBVIRT_HEADLINE.get(host.get('libvirt'), '')}"),
        f"zone {printable(host.get('zone') or '-')}  libvirt {printable(host.get('libvirt_uri') or '-')}  "
        f"root {printable(host.get('root') or '/')}",
        f"started {printable(report.get('started_at', '?'))}  finished {printable(report.get('finished_at', '?'))}",
        f"policy {printable(policy.get('source', '?'))}" + (f" (sha256 {printable(sha[:12])})" if sha else ""),
        "",
    ]
    rows = sorted((f for f in report.get("findings", []) if f.get("status") != "pass"), key=worst_first_key)
    if rows:
        idw = max(len(str(f.get("check_id", ""))) for f in rows)
        for f in rows:
            key = outcome(f)
            line = (f"{str(f.get('severity', '?')):<8} {printable(f.get('check_id', '?')):<{idw}} "
                    f"{printable(f.get('resource', '?'))}: {printable(f.get('message', ''))}")
            waiver = f.get("waiver")
            if isinstance(waiver, dict):
                ticket = f", {printable(waiver['ticket'])}" if waiver.get("ticket") else ""
                line += (f" [waived until {printable(waiver.get('expires', '?'))}{ticket}: "
                         f"{printable(waiver.get('reason', ''))}]")
            lines.append(paint(key, f"{key.upper():<6}") + " " + line)
            if key == "fail" and f.get("remediation"):
                lines.append(f"{'':<{17 + idw}}fix: {printable(f['remediation'])}")
        lines.append("")
    width = max(len(MEASURE_TITLES.get(m, m)) for m in measures_of(report)) + 5
    lines.append(f"{'measure':<{width}}" + "".join(f"{k:>7}" for k in COUNT_KEYS) + "  verdict")
    total = dict.fromkeys(COUNT_KEYS, 0)
    for m in measures_of(report):
        counts = measure_counts(report, m)
        for k in COUNT_KEYS:
            total[k] += counts[k]
        key, sentence = verdict(counts)
        label = f"{m:<3} {MEASURE_TITLES.get(m, m)}"
        lines.append(f"{printable(label):<{width}}" + "".join(_count(paint, k, counts[k]) for k in COUNT_KEYS)
                     + "  " + paint(key, sentence))
    lines.append(f"{'total':<{width}}" + "".join(_count(paint, k, total[k]) for k in COUNT_KEYS))

    expired = report.get("expired_waivers") or []
    if expired:
        lines.append("")
        for w in expired:
            lines.append(paint("warn", "expired waiver") +
                         f" {printable(w.get('check', '?'))} {printable(w.get('resource', '?'))} "
                         f"(expired {printable(w.get('expires', '?'))}): {printable(w.get('reason', ''))}")
    errors = report.get("collector_errors") or []
    if errors:
        lines.append("")
        for e in errors:
            lines.append(paint("error", "not collected") +
                         f" {printable(e.get('collector', '?'))}: {printable(e.get('reason', ''))}")
    lines += ["", _next_steps(rows)]
    return "\n".join(lines) + "\n"


def _next_steps(rows: list[dict]) -> str:
    """The last line: how to learn more about a check, and the report with the evidence."""
    worst = next((f for f in rows if outcome(f) in ("fail", "error", "warn")), None)
    example = printable(worst.get("check_id", "ID")) if worst else "ID"
    return (f"More: `vmaudit explain {example}` (any check ID: why it matters, how it decides); the HTML "
            "report with the evidence: `vmaudit run --format html --output report.html`")


def _count(paint, key: str, n: int) -> str:
    cell = f"{n:>7}"
    # colour a count only where it asks for attention; zeros and passes stay plain
    return paint(key, cell) if n and key in ("fail", "error", "warn") else cell


def _painter(on: bool):
    if not on:
        return lambda key, text: text
    return lambda key, text: f"\x1b[{_SGR.get(key, '0')}m{text}\x1b[0m"
