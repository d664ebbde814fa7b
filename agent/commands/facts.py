"""`vmaudit facts`: collect one facts snapshot and write it as JSON."""

from __future__ import annotations

import argparse
import json

from .common import add_collect_arguments, log, write_output


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_collect_arguments(p)
    p.add_argument("--output", metavar="PATH", default="-", help="file for the snapshot ('-': standard output)")


def main(args: argparse.Namespace) -> int:
    from vmaudit.audit import collect_facts, collector_errors

    facts = collect_facts(root=args.root, uri=args.connect)
    for err in collector_errors(facts):
        log.info("not collected: %s: %s", err["collector"], err["reason"])
    write_output(json.dumps(facts, indent=1, sort_keys=True), args.output)
    return 0
