"""`vmaudit checks`: the catalogue, one line a check."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("text", "json"), default="text")


def main(args: argparse.Namespace) -> int:
    from vmaudit.engine import load_checks

    checks = load_checks()
    if args.format == "json":
        print(json.dumps([{"id": c.id, "measure": c.measure, "severity": c.severity, "title": c.title,
                           "scope": c.scope, "remediation": c.remediation} for c in checks.values()],
                         indent=1))
        return 0
    for c in checks.values():
        print(f"{c.id:<26} {c.severity:<8} {c.title}")
    return 0
