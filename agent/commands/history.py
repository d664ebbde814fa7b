"""`vmaudit history`: the runs kept in the state directory, newest first, with their summary."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", metavar="DIR",
                   help="state directory (default: the policy's [agent] state_dir, else /var/lib/vmaudit)")
    p.add_argument("--policy", metavar="FILE", help="policy TOML, read for [agent] state_dir only")
    p.add_argument("--limit", metavar="N", type=int, default=30, help="show the newest N runs (default: 30; 0: all)")
    p.add_argument("--format", choices=("text", "json"), default="text")


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vmaudit.commands.common import log
    from vmaudit.errors import UsageError
    from vmaudit.policy import load_policy
    from vmaudit.state import StateDir, StateError, resolve_state_dir
    from vmaudit.termsafe import clean

    state_dir = resolve_state_dir(args.state_dir, None if args.state_dir else load_policy(args.policy))
    if not Path(state_dir).is_dir():
        raise UsageError(f"{state_dir}: no such state directory (no run has stored reports there)")
    try:
        runs = StateDir(state_dir).runs(args.limit or None)
    except StateError as exc:
        log.error("%s", exc)
        return exc.exit_status
    if args.format == "json":
        print(json.dumps(runs, indent=1))
        return 0
    if not runs:
        log.info("%s: no run recorded yet", state_dir)
        return 0
    head = ("RUN", "STARTED (UTC)", "HOST", "EXIT", "PASS", "FAIL", "WARN", "ERROR", "SKIP", "WAIVED")
    # the host name is the audited host's: a hostname holding an escape sequence or a newline must not
    # drive the terminal or forge a row
    rows = [(str(r["id"]), clean(r["started_at"]), clean(r["hostname"] or "?"), str(r["exit_status"]),
             *(str(r["summary"][k]) for k in ("pass", "fail", "warn", "error", "skip", "waived")))
            for r in runs]
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    for row in (head, *rows):
        print("  ".join(cell.ljust(w) if i < 3 else cell.rjust(w)
                        for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
    return 0
