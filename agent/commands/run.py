"""`vmaudit run`: collect (or load) facts, evaluate every check, print and write the reports."""

from __future__ import annotations

import argparse
import sys

from .common import add_collect_arguments, add_report_arguments, log, output_targets, write_output


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_collect_arguments(p)
    add_report_arguments(p)
    p.add_argument("--facts", metavar="FILE", help="evaluate a saved snapshot instead of collecting")


def main(args: argparse.Namespace) -> int:
    from vmaudit.audit import build_report, collect_facts, load_snapshot, now_rfc3339
    from vmaudit.engine import exit_status
    from vmaudit.policy import load_policy
    from vmaudit.report import render

    policy = load_policy(args.policy)   # bad policy: exit 2 before anything is collected
    targets = output_targets(args.formats or ["text"], args.output)
    started = now_rfc3339()
    if args.facts:
        facts = load_snapshot(args.facts)
    else:
        facts = collect_facts(root=args.root, uri=args.connect, online=args.online)
        libvirt = facts["sources"].get("libvirt")
        if isinstance(libvirt, dict) and "unavailable" in libvirt:
            log.warning("libvirt could not be reached (%s); its checks are reported as errors",
                        libvirt["unavailable"])
    report = build_report(facts, policy, started_at=started)
    color = sys.stdout.isatty()
    for fmt, path in targets:
        write_output(render(fmt, report, color=color and path == "-"), path)
    return exit_status(report["findings"], args.fail_on)
