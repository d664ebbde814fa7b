"""`vmaudit diff OLD.json NEW.json` (or `--last`): what changed between two reports.

Exit status: 0 nothing got worse, 1 something got worse (a new fail or error, a raised severity,
warn -> fail, a waiver that stopped applying), 2 bad input (a file that is unreadable or not a
vmaudit report: a one-line message naming it).
"""

from __future__ import annotations

import argparse
import sys

from .common import write_output


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("old", nargs="?", metavar="OLD.json", help="the earlier JSON report")
    p.add_argument("new", nargs="?", metavar="NEW.json", help="the later JSON report")
    p.add_argument("--last", action="store_true",
                   help="compare the last two runs kept in the state directory instead of two files")
    p.add_argument("--state-dir", metavar="DIR", default=None,
                   help="state directory for --last (default: the policy's [agent] state_dir, "
                        "else /var/lib/vmaudit)")
    p.add_argument("--policy", metavar="FILE", help="policy TOML, read for [agent] state_dir only (--last)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="text (default) or json")
    p.add_argument("--output", metavar="PATH", default="-", help="file for the diff ('-': standard output)")


def main(args: argparse.Namespace) -> int:
    from vmaudit.errors import UsageError
    from vmaudit.policy import load_policy
    from vmaudit.report.diff import ReportError, compute, load, render_json, render_text, validate, worse

    try:
        if args.last:
            if args.old or args.new:
                raise UsageError("--last compares the state directory's last two runs: give no files")
            from vmaudit.state import last_two_reports, resolve_state_dir

            # the same directory `vmaudit run --state-dir`/the agent wrote to, as `vmaudit history` finds it
            state_dir = resolve_state_dir(args.state_dir, None if args.state_dir else load_policy(args.policy))
            old, new = last_two_reports(state_dir)
            old = validate(old, f"{state_dir}: previous run")
            new = validate(new, f"{state_dir}: last run")
        else:
            if args.state_dir or args.policy:
                raise UsageError("--state-dir and --policy only go with --last")
            if not (args.old and args.new):
                raise UsageError("give two reports (OLD.json NEW.json) or --last")
            old, new = load(args.old), load(args.new)
    except ReportError as exc:
        raise UsageError(str(exc)) from None
    diff = compute(old, new)
    if args.format == "json":
        text = render_json(diff)
    else:
        text = render_text(diff, color=sys.stdout.isatty() and args.output == "-")
    write_output(text, args.output)
    return 1 if worse(diff) else 0
