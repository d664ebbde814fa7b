"""`vmaudit agent`: audit this host on a schedule, for hosts without systemd timers.

Each cycle is one `vmaudit run --state-dir` (same lock, reports, latest.json and history) and logs one
line with its summary. A failing cycle (bad policy edited in, lock held too long, state directory full)
is logged and the next cycle runs as planned. SIGTERM or SIGINT stops the loop: at once when idle,
after the current audit when one is running (a second signal stops at once; the state stays intact
either way, see vmaudit.state).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from .common import add_collect_arguments, log
from .run import add_state_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    from vmaudit.engine import SEVERITIES

    add_collect_arguments(p)
    p.add_argument("--policy", metavar="FILE", help="policy TOML (default: /etc/vmaudit/policy.toml if present); "
                   "read again before every audit")
    p.add_argument("--state-dir", metavar="DIR",
                   help="where reports and history go (default: the policy's [agent] state_dir, "
                        "else /var/lib/vmaudit)")
    p.add_argument("--interval", metavar="TIME",
                   help="time between audits: 90s, 30m, 6h, 1d (default: the policy's [agent] interval, 1d)")
    p.add_argument("--fail-on", metavar="SEV", default="low", choices=SEVERITIES,
                   help="severity threshold for the exit status recorded with each run (default: low)")
    p.add_argument("--online", action="store_true",
                   help="also ask the package manager about pending updates (slow, may use the network)")
    add_state_arguments(p)


def main(args: argparse.Namespace) -> int:
    import schedule

    from vmaudit.errors import InputError, UsageError
    from vmaudit.policy import load_policy, parse_interval
    from vmaudit.state import StateError, resolve_state_dir

    from .run import audit_into_state

    policy = load_policy(args.policy)  # a bad policy at start is bad usage (exit 2)
    try:
        interval = parse_interval(args.interval if args.interval else policy.get("agent", "interval"))
    except ValueError as exc:
        raise UsageError(f"--interval: {exc}") from None
    state_dir = resolve_state_dir(args.state_dir, policy)
    logging.getLogger("schedule").setLevel(logging.WARNING)  # it logs every job at INFO

    stop = threading.Event()
    busy = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            raise KeyboardInterrupt  # second signal: stop now
        stop.set()
        if busy.is_set():
            log.info("%s: stopping after the current audit (send it again to stop now)", name)
        else:
            log.info("%s: stopping", name)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    # audits by exit status (0 clean, 1 failures found, 3 evidence missing, ...) and those that could not run
    statuses: dict[int, int] = {}
    cycles = {"not_run": 0}

    def cycle() -> None:
        busy.set()
        try:
            outcome = audit_into_state(state_dir, policy_path=args.policy, root=args.root, uri=args.connect,
                                       online=args.online, fail_on=args.fail_on, wait=args.wait)
        except (InputError, StateError) as exc:
            cycles["not_run"] += 1
            log.error("audit failed: %s", exc)
        except Exception as exc:  # a defect must not end a long-running agent; the next cycle retries
            cycles["not_run"] += 1
            log.error("audit failed: %s: %s", type(exc).__name__, exc)
            log.debug("audit failure", exc_info=True)
        else:
            statuses[outcome.status] = statuses.get(outcome.status, 0) + 1
            log.info("%s", outcome.line())
        finally:
            busy.clear()

    scheduler = schedule.Scheduler()
    scheduler.every(interval).seconds.do(cycle)
    log.info("agent: auditing every %d s into %s", interval, state_dir)
    try:
        cycle()  # the first audit at start, then every interval after the previous one finished
        while not stop.is_set():
            scheduler.run_pending()
            idle = scheduler.idle_seconds
            stop.wait(timeout=min(max(idle if idle is not None else 1.0, 0.05), 60.0))
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    log.info("agent: stopped: %s", stop_summary(statuses, cycles["not_run"]))
    return 0


def stop_summary(statuses: dict[int, int], not_run: int) -> str:
    """'3 audit(s): 1 found failures (exit 1), 2 clean (exit 0), 1 could not run' — the real outcomes,
    so that an audit that found failures is never counted as a success or left out."""
    meaning = {0: "clean", 1: "found failures", 3: "lacked evidence", 4: "waited for the lock too long",
               5: "could not write the state directory"}
    parts = [f"{statuses[code]} {meaning.get(code, 'ended')} (exit {code})"
             for code in sorted(statuses, key=lambda c: (c == 0, c))]
    if not_run:
        parts.append(f"{not_run} could not run")
    total = sum(statuses.values()) + not_run
    return f"{total} audit(s)" + (": " + ", ".join(parts) if parts else "")
