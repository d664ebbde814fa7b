"""What every human-facing renderer (terminal, HTML, diff) needs from a report: the measures' names,
a plain-language verdict per measure, "worst first" ordering, and helpers that keep strings written
by tenants (guest names, metadata) from becoming terminal escapes or invalid XML.

Renderers only read the report dict of CONTRACT.md; nothing here looks at facts or policy.
"""

from __future__ import annotations

import json
import re
from typing import Any

from vmaudit.engine import MEASURES, SEVERITIES, STATUSES
from vmaudit.termsafe import clean

# The eight measures, in short (CHECKS.md, "The eight measures").
MEASURE_TITLES = {
    "M1": "Keep guests of different security needs apart",
    "M2": "Run a low-complexity VMM",
    "M3": "Harden the VMM host",
    "M4": "Limit consolidation",
    "M5": "Keep security measures inside guests",
    "M6": "Few administrators",
    "M7": "Restrict mobility",
    "M8": "Processes for deployment and maintenance",
    "F": "Fleet",
}

# Rank of a finding's outcome, worst first. A waived finding is no longer a problem to act on, but it
# stays above passes so a reader sees what was accepted.
_STATUS_RANK = {"fail": 0, "error": 1, "warn": 2, "waived": 3, "skip": 4, "pass": 5}
COUNT_KEYS = ("fail", "error", "warn", "waived", "skip", "pass")


def outcome(f: dict) -> str:
    """'waived' for a waived finding, else its status: the key summary counts use."""
    return "waived" if "waiver" in f else f.get("status", "error")


def severity_rank(sev: Any) -> int:
    return SEVERITIES.index(sev) if sev in SEVERITIES else len(SEVERITIES)


def worst_first_key(f: dict) -> tuple:
    return (_STATUS_RANK.get(outcome(f), 9), severity_rank(f.get("severity")),
            str(f.get("check_id", "")), str(f.get("resource", "")))


def measures_of(report: dict) -> list[str]:
    """M1..M8 always (a measure with nothing to say is itself information), then any other
    measure keys the report holds (fleet checks), in order."""
    seen = {str(f.get("measure")) for f in report.get("findings", [])}
    seen |= set(report.get("summary", {}).get("by_measure", {}))
    return list(MEASURES) + sorted(m for m in seen if m not in MEASURES)


def measure_counts(report: dict, measure: str) -> dict:
    counts = report.get("summary", {}).get("by_measure", {}).get(measure)
    if isinstance(counts, dict):
        return {k: int(counts.get(k, 0)) for k in COUNT_KEYS}
    out = dict.fromkeys(COUNT_KEYS, 0)
    for f in report.get("findings", []):
        if f.get("measure") == measure:
            out[outcome(f)] = out.get(outcome(f), 0) + 1
    return out


def verdict(counts: dict) -> tuple[str, str]:
    """(key, sentence) saying in plain words where a measure stands.

    Missing evidence never reads as "met": one `error` makes the verdict "unknown" unless something
    already fails.
    """
    if counts.get("fail"):
        return "fail", f"Not met: {_n(counts['fail'], 'failure')} to fix"
    if counts.get("error"):
        return "error", f"Unknown: evidence missing for {_n(counts['error'], 'finding')}"
    if counts.get("warn"):
        return "warn", f"Needs review: {_n(counts['warn'], 'warning')}"
    if counts.get("pass"):
        extra = f" ({counts['waived']} waived)" if counts.get("waived") else ""
        return "pass", "Met" + extra
    if counts.get("waived"):
        return "waived", f"Accepted by waiver ({counts['waived']})"
    if counts.get("skip"):
        return "skip", "Not assessed here (not applicable)"
    return "none", "Not assessed: no check reported on it"


def _n(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# the one sanitiser for terminal text (vmaudit.termsafe), under the name the renderers use
printable = clean


# Characters XML 1.0 cannot carry at all, even escaped.
_XML_BAD = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: Any) -> str:
    return _XML_BAD.sub("\ufffd", str(text))


def compact(value: Any) -> str:
    """A value of evidence as short text: strings as they are, everything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(", ", ": "))


def guest_name(resource: str) -> str:
    return resource[len("guest:"):] if resource.startswith("guest:") else ""


__all__ = ["MEASURE_TITLES", "COUNT_KEYS", "STATUSES", "outcome", "severity_rank", "worst_first_key",
           "measures_of", "measure_counts", "verdict", "printable", "xml_safe", "compact", "guest_name"]
