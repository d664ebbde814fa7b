"""`vmaudit explain ID`: one check's rationale, rule, fact sources and remediation."""

from __future__ import annotations

import argparse

from vmaudit.errors import UsageError

MEASURES = {
    "M1": "Keep guests with different security needs apart: one security zone per host.",
    "M2": "Run a low-complexity VMM: hardware virtualization, an IOMMU, nothing else on the host, "
          "statically allocated resources.",
    "M3": "Harden the VMM host like any exposed OS: patched, minimal, strongly isolated guests.",
    "M4": "Limit consolidation: the host is a single point of failure.",
    "M5": "Keep the security measures inside guests: each is patched, hardened and monitored.",
    "M6": "Few administrators: whoever administers the VMM owns every guest on it.",
    "M7": "Restrict mobility: guests move only between equal hosts, over authenticated, encrypted channels.",
    "M8": "Processes for deployment and maintenance: every guest registered, no forgotten guests or "
          "snapshots.",
    "F": "Fleet view: what only the collection of many hosts can show.",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("check_id", metavar="ID", help="a check ID, e.g. M2-IOMMU")


def main(args: argparse.Namespace) -> int:
    from vmaudit.engine import load_checks

    checks = load_checks()
    spec = checks.get(args.check_id.upper())
    if spec is None:
        raise UsageError(f"no check {args.check_id!r} (see `vmaudit checks`)")
    print(f"{spec.id}: {spec.title}")
    print(f"measure {spec.measure} ({MEASURES.get(spec.measure, '')})")
    print(f"default severity {spec.severity}; one finding per {'guest' if spec.scope == 'guest' else 'host or resource'}")
    print()
    print(spec.doc)
    print()
    print("Remediation: " + spec.remediation)
    return 0
