"""`vmaudit run`: collect (or load) facts, evaluate every check, print and write the reports.

With `--state-dir DIR` the run also stores its JSON and HTML reports, `latest.json` and a history row in
DIR (vmaudit.state), holding DIR's lock while it audits; this is what vmaudit.service runs. Without it the
behaviour is CONTRACT.md's, unchanged.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Any

from .common import add_collect_arguments, add_report_arguments, log, output_targets, write_output


def add_state_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", metavar="SECONDS", type=float, default=60.0,
                   help="with a state directory: how long to wait for another run holding its lock "
                        "before giving up with exit status 4 (default: 60; 0: do not wait)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_collect_arguments(p)
    add_report_arguments(p)
    p.add_argument("--facts", metavar="FILE", help="evaluate a saved snapshot instead of collecting")
    p.add_argument("--state-dir", metavar="DIR",
                   help="also store the JSON and HTML reports, latest.json and a history row in DIR "
                        "(as vmaudit.service does; no report is printed unless --format is given)")
    add_state_arguments(p)


@dataclass
class Outcome:
    """One stored run: what `vmaudit run --state-dir` and each cycle of `vmaudit agent` log."""

    report: dict
    status: int
    run_id: int
    run_dir: str
    seconds: float

    def line(self) -> str:
        s = self.report["summary"]
        counts = ", ".join(f"{s[k]} {k}" for k in ("pass", "fail", "warn", "error", "skip", "waived"))
        return (f"run {self.run_id} of {self.report['host'].get('hostname')}: exit status {self.status}: "
                f"{counts} in {self.seconds:.1f} s; reports in {self.run_dir}")


TREND_RUNS = 20  # runs of the state directory the HTML report's trend chart shows


def stored_renders(state: Any = None) -> dict:
    """The formats a state directory keeps, rendered with the product's renderers. With `state`, the
    HTML report of a run being recorded gets the trend of the directory's last runs (that run included:
    record() renders it after the run is in the history)."""
    from vmaudit.report import html, render

    def render_html(report: dict) -> str:
        return html.render(report, trend=trend_of(state) if state is not None else None)

    return {"json": lambda report: render("json", report), "html": render_html}


def trend_of(state: Any, current: dict | None = None) -> list[dict]:
    """Fails and warnings of the state directory's last runs, oldest first, for the HTML trend chart;
    `current`, a report not recorded yet, is added as the newest run."""
    runs = [{"label": r["started_at"], "fail": r["summary"]["fail"], "warn": r["summary"]["warn"]}
            for r in reversed(state.runs(limit=TREND_RUNS - (current is not None)))]
    if current is not None:
        summary = current.get("summary", {})
        runs.append({"label": current.get("started_at", ""), "fail": summary.get("fail", 0),
                     "warn": summary.get("warn", 0)})
    return runs


def audit_into_state(state_dir: str, *, policy_path: str | None, root: str = "/",
                     uri: str | None = None, online: bool = False, facts_path: str | None = None,
                     fail_on: str = "low", wait: float = 60.0, emit: Any = None) -> Outcome:
    """Audit under the state directory's lock and store the run (vmaudit.state).

    Raises an InputError (exit 2: nothing audited), LockTimeout (4) or StateError (5). `emit(report)`,
    when given, writes the reports the user asked for on the command line, before the run is stored.
    """
    from vmaudit.audit import build_report, collect_facts, load_snapshot, now_rfc3339
    from vmaudit.engine import exit_status
    from vmaudit.policy import load_policy
    from vmaudit.state import StateDir

    policy = load_policy(policy_path)  # a bad policy is exit 2 before anything is locked or collected
    state = StateDir(state_dir)
    renders = stored_renders()
    t0 = time.monotonic()
    with state.lock(wait):
        state.repair(renders)
        started = now_rfc3339()
        if facts_path:
            facts = load_snapshot(facts_path)
        else:
            facts = collect_facts(root=root, uri=uri, online=online)
            libvirt = facts["sources"].get("libvirt")
            if isinstance(libvirt, dict) and "unavailable" in libvirt:
                log.warning("libvirt could not be reached (%s); its checks are reported as errors",
                            libvirt["unavailable"])
        report = build_report(facts, policy, started_at=started)
        status = exit_status(report["findings"], fail_on)
        if emit is not None:
            emit(report)
        run_id, run_dir = state.record(report, status, stored_renders(state),
                                       history_days=policy.get("agent", "history_days"))
    return Outcome(report, status, run_id, str(run_dir), time.monotonic() - t0)


def main(args: argparse.Namespace) -> int:
    from vmaudit.audit import build_report, collect_facts, load_snapshot, now_rfc3339
    from vmaudit.engine import exit_status
    from vmaudit.policy import load_policy
    from vmaudit.report import render_chunks

    if args.state_dir is not None:
        return _main_state(args)
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
    del facts  # the report is all that is needed from here on
    color = sys.stdout.isatty()
    for fmt, path in targets:
        write_output(render_chunks(fmt, report, color=color and path == "-"), path)
    return exit_status(report["findings"], args.fail_on)


def _main_state(args: argparse.Namespace) -> int:
    from vmaudit.errors import UsageError
    from vmaudit.report import render
    from vmaudit.state import StateError

    if not args.state_dir.strip():  # e.g. ${STATE_DIRECTORY} unset: never fall back to the cwd
        raise UsageError("--state-dir: empty path")
    # Printed reports only when asked for (a timer's journal gets the one summary line instead).
    formats = args.formats or (["text"] if args.output != "-" else [])
    targets = output_targets(formats, args.output) if formats else []
    color = sys.stdout.isatty()

    def emit(report: dict) -> None:
        from vmaudit.report import html
        from vmaudit.state import StateDir

        for fmt, path in targets:
            if fmt == "html":  # the same page as the state directory's: with the trend of its runs
                text = html.render(report, trend=trend_of(StateDir(args.state_dir), current=report))
            else:
                text = render(fmt, report, color=color and path == "-")
            write_output(text, path)

    try:
        outcome = audit_into_state(args.state_dir, policy_path=args.policy, root=args.root, uri=args.connect,
                                   online=args.online, facts_path=args.facts, fail_on=args.fail_on,
                                   wait=args.wait, emit=emit)
    except StateError as exc:
        log.error("%s", exc)
        return exc.exit_status
    log.info("%s", outcome.line())
    return outcome.status
