"""`vmaudit collect`: audit many hosts over SSH and write per-host reports and the fleet report.

    vmaudit collect -i inventory.yml --policy central.toml --output /srv/vmaudit/fleet

Writes into --output: fleet.json, fleet.html, hosts/<host>.json and .html (each host's report under the
central policy), facts/<host>.json (the raw snapshots, for `vmaudit run --facts`), and appends the run
to the SQLite store (default <output>/fleet-history.sqlite) whose trend the fleet page shows.
Exit status as for `run`, over every host's findings and the fleet checks' (F-HOST-UNREACHED makes an
unreachable host an error, status 3); 2 for a bad inventory or policy; 130 after Ctrl-C, with what was
collected written.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
import threading
import time

from vmaudit.engine import SEVERITIES

from .common import log

MAX_TIMEOUT = 86400  # a day: larger timeouts overflow the remote `timeout` and select()


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-i", "--inventory", metavar="FILE",
                     help="Ansible inventory (INI or YAML) or a plain host list, one [user@]host[:port] a line")
    src.add_argument("--hosts", metavar="LIST", action="append",
                     help="comma-separated [user@]host[:port] list instead of an inventory")
    p.add_argument("--limit", metavar="PATTERN", action="append",
                   help="only these hosts or groups (comma-separated, globs allowed; may be repeated)")
    p.add_argument("--policy", metavar="FILE", help="the central policy (default: /etc/vmaudit/policy.toml if present)")
    p.add_argument("--output", metavar="DIR", default="vmaudit-fleet", help="report directory (default: ./vmaudit-fleet)")
    p.add_argument("--shard", metavar="K/N", help="only the K-th of N stable shards of the hosts (by name), for "
                   "several collectors sharing one inventory and store")
    p.add_argument("--store", metavar="URL", help="fleet store: a SQLite file (default: DIR/fleet-history.sqlite) "
                   "or postgresql://… (libpq; no password in the URL: PGPASSFILE or a service file)")
    p.add_argument("--no-store", action="store_true", help="do not record this run in the history")
    p.add_argument("--no-html", action="store_true", help="write JSON reports only")
    p.add_argument("--mode", choices=("auto", "installed", "agentless"),
                   help="how to collect: run the installed vmaudit, copy a zipapp, or auto (default: each host's "
                        "vmaudit_mode, else auto)")
    p.add_argument("--connect", metavar="URI", default="qemu:///system",
                   help="libvirt URI on the hosts (default qemu:///system; per host: vmaudit_connect)")
    p.add_argument("--root", metavar="DIR", default="/", help="audited root on the hosts (per host: vmaudit_root)")
    p.add_argument("-f", "--concurrency", metavar="N", type=positive_int,
                   help="hosts at a time (default: [fleet] concurrency, 16)")
    p.add_argument("--connect-timeout", metavar="S", type=positive_seconds,
                   help="per SSH step (default: [fleet] connect_timeout, 10)")
    p.add_argument("--command-timeout", metavar="S", type=positive_seconds,
                   help="per remote command (default: [fleet] command_timeout, 300)")
    p.add_argument("-l", "--user", metavar="USER", help="SSH user when neither inventory nor ~/.ssh/config names one")
    p.add_argument("-b", "--become", action="store_true",
                   help="run the facts command as --become-user through sudo -n (or doas -n) on every host whose "
                        "inventory does not say otherwise (vmaudit_become / ansible_become win); never prompts: a "
                        "host whose sudo wants a password is reported not audited")
    p.add_argument("--become-method", metavar="METHOD", choices=("sudo", "doas"), default="sudo",
                   help="sudo (default) or doas, where the inventory sets no ansible_become_method")
    p.add_argument("--become-user", metavar="USER", default="root",
                   help="user to become (default root), where the inventory sets no ansible_become_user")
    p.add_argument("--identity", metavar="FILE", action="append", help="private key file (may be repeated)")
    p.add_argument("--no-agent", action="store_true", help="do not use keys from the SSH agent")
    p.add_argument("--ssh-config", metavar="FILE", help="OpenSSH client config (default: ~/.ssh/config)")
    p.add_argument("--known-hosts", metavar="FILE", action="append",
                   help="known_hosts file(s) (default: ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts)")
    p.add_argument("--accept-new-host-keys", action="store_true",
                   help="for this run, accept hosts whose key is NOT yet known and record it in the first "
                        "--known-hosts file; a CHANGED key is always refused")
    p.add_argument("--fail-on", metavar="SEV", default="low", choices=SEVERITIES,
                   help="lowest severity of an unwaived fail that makes the exit status 1 (default: low)")
    p.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="show a progress bar (default: when standard error is a terminal)")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def positive_int(text: str) -> int:
    """-f N: a whole number of hosts, at least 1 (0 is refused here as it is in the policy)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value


def positive_seconds(text: str) -> float:
    """A timeout: a finite number of seconds above 0 (nan and inf are floats to Python, not timeouts)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0 or value > MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a number of seconds above 0 and at most "
                                         f"{MAX_TIMEOUT}")
    return value


def safe_name(name: str) -> str:
    """A file name for a host: inventory names are not trusted to be paths."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "host"
    return cleaned[:120]


class Progress:
    """`[#####.....] 12/50 hosts, 2 not audited` on a terminal, redrawn in place."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.done, self.failed = total, enabled, 0, 0
        self._last = 0.0

    def step(self, reached: bool) -> None:
        self.done += 1
        self.failed += 0 if reached else 1
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.1 or self.done == self.total):
            self._last = now
            width = 30
            filled = int(width * self.done / max(self.total, 1))
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} hosts"
                             + (f", {self.failed} not audited" if self.failed else "") + "\x1b[K")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.done:
            sys.stderr.write("\n")


def _write(path: str, text: str) -> None:
    from vmaudit.fsutil import atomic_write

    atomic_write(path, text)


def main(args: argparse.Namespace) -> int:
    from vmaudit.audit import now_rfc3339
    from vmaudit.errors import UsageError
    from vmaudit.fleet.central import exit_status_of, host_meta, select_shard, slim
    from vmaudit.fleet.collect import Collector, Settings, collect_all
    from vmaudit.fleet.evaluate import (
        FleetView,
        HostView,
        declared_zone,
        evaluate_fleet,
        fleet_report,
        host_entry,
        host_view,
        peer_map,
    )
    from vmaudit.fleet.hosts import hosts_from_list, load_hosts, valid_become_user
    from vmaudit.fleet.ssh import Connector, SSHOptions
    from vmaudit.fleet.zipapp import build_zipapp
    from vmaudit.policy import load_policy
    from vmaudit.store import StoreError, open_store, record_run, utc_text

    # paramiko logs every connection (INFO) and each failed one with a traceback (ERROR); the reason of
    # a failure is reported per host by vmaudit itself
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    # everything that can be wrong with the input fails here, before any host is contacted (exit 2)
    policy = load_policy(args.policy)
    inv = load_hosts(args.inventory) if args.inventory else hosts_from_list(args.hosts)
    limit = [p.strip() for item in (args.limit or []) for p in item.split(",") if p.strip()]
    hosts = select_shard(inv.select(limit), args.shard)
    if not hosts:
        raise UsageError(f"{inv.source}: the inventory lists no hosts"
                         + (f" in shard {args.shard}" if args.shard else ""))
    peers = peer_map(hosts, policy)
    settings = Settings(
        mode=args.mode, connect=args.connect, root=args.root,
        concurrency=args.concurrency if args.concurrency is not None else policy.get("fleet", "concurrency"),
        connect_timeout=(args.connect_timeout if args.connect_timeout is not None
                         else float(policy.get("fleet", "connect_timeout"))),
        command_timeout=(args.command_timeout if args.command_timeout is not None
                         else float(policy.get("fleet", "command_timeout"))),
        become=args.become, become_method=args.become_method, become_user=args.become_user)
    if not valid_become_user(settings.become_user):
        raise UsageError(f"--become-user {settings.become_user!r} is not a user name")
    if settings.concurrency < 1 or settings.connect_timeout <= 0 or settings.command_timeout <= 0:
        raise UsageError("concurrency and timeouts must be positive")
    if max(settings.connect_timeout, settings.command_timeout) > MAX_TIMEOUT:
        raise UsageError(f"[fleet] timeouts must be at most {MAX_TIMEOUT} seconds")
    known = [os.path.expanduser(k) for k in args.known_hosts or []]
    connector = Connector(SSHOptions(
        ssh_config=args.ssh_config, known_hosts=known, accept_new=args.accept_new_host_keys,
        identities=args.identity or [], user=args.user, use_agent=not args.no_agent,
        connect_timeout=settings.connect_timeout, command_timeout=settings.command_timeout))

    out_dir = args.output
    from vmaudit.fsutil import make_dir

    try:
        for sub in ("hosts", "facts"):
            make_dir(os.path.join(out_dir, sub), parents=True)  # 0750, as every directory vmaudit makes
    except OSError as exc:
        raise UsageError(f"{out_dir}: cannot create the report directory: {exc.strerror or exc}") from None
    store = writer = None
    store_error: str | None = None
    if not args.no_store:
        try:
            store = open_store(args.store or os.path.join(out_dir, "fleet-history.sqlite"))
        except StoreError as exc:
            raise UsageError(str(exc)) from None

    zip_lock = threading.Lock()
    zip_cache: list[bytes] = []

    def zipapp() -> bytes:
        with zip_lock:
            if not zip_cache:
                zip_cache.append(build_zipapp())
            return zip_cache[0]

    html_render = None
    if not args.no_html:
        import importlib.util

        if importlib.util.find_spec("vmaudit.report.html") is not None:
            from vmaudit.report import render as html_render
        else:
            log.warning("per-host HTML reports are not available in this installation; writing JSON")

    names = {h.name: safe_name(h.name) for h in hosts}
    if len(set(names.values())) != len(names):
        raise UsageError(f"{inv.source}: host names that differ only in unusual characters map to the same "
                          f"report file; rename them")
    views: dict[str, HostView] = {}
    entries: dict[str, dict] = {}
    progress = Progress(len(hosts), sys.stderr.isatty() if args.progress is None else args.progress)
    started = now_rfc3339()
    if store is not None:
        try:  # one transaction for the whole run: the store shows all of it or nothing
            writer = store.begin_run("collect", started, inventory=inv.source, policy_sha256=policy.sha256,
                                     shard=args.shard)
        except StoreError as exc:
            store.close()
            raise UsageError(str(exc)) from None

    def done(outcome) -> None:
        # runs in the main thread as each host finishes, while the others are still being collected
        nonlocal writer, store_error
        host = outcome.host
        facts = outcome.facts
        fname = names[host.name]
        view = HostView(host.name, declared_zone(host, policy), outcome, inventory=policy.inventory)
        paths: dict = {"report": None, "html": None, "facts": None}
        if outcome.reached:
            try:
                _write(os.path.join(out_dir, "facts", f"{fname}.json"), json.dumps(outcome.facts, sort_keys=True))
                paths["facts"] = f"facts/{fname}.json"
                view = host_view(outcome, policy, peers[host.name])
                _write(os.path.join(out_dir, "hosts", f"{fname}.json"), json.dumps(view.report, indent=1))
                paths["report"] = f"hosts/{fname}.json"
                if html_render is not None:
                    _write(os.path.join(out_dir, "hosts", f"{fname}.html"), html_render("html", view.report))
                    paths["html"] = f"hosts/{fname}.html"
            except Exception as exc:  # one host's bad snapshot or a full disk must not lose the others
                log.exception("%s: cannot evaluate or write its report", host.name)
                outcome.reached = False
                outcome.reason, outcome.stage = f"cannot evaluate or write its report: {exc}", "internal"
                view = HostView(host.name, declared_zone(host, policy), outcome, inventory=policy.inventory)
            outcome.facts = None  # written to disk; the fleet checks use the prepared guest views
        else:
            log.info("%s: not audited: %s", host.name, outcome.reason)
        entries[host.name] = host_entry(view, host, peers[host.name], paths)
        if writer is not None:
            when = utc_text((facts or {}).get("collected_at")) if outcome.reached else None
            entries[host.name]["collected_at"] = when
            try:
                writer.add_host(entries[host.name], view.report, facts if outcome.reached else None,
                                host_meta(host), when)
            except StoreError as exc:
                store_error, writer = str(exc), None
                log.error("%s; collection goes on, the reports are written", store_error)
        views[host.name] = slim(view)  # the fleet checks' inputs only: the host's facts and report go
        progress.step(outcome.reached)

    try:
        _outcomes, interrupted = collect_all(hosts, Collector(connector, settings, zipapp), settings, done)
    finally:
        progress.close()
        connector.close()

    fleet = FleetView([views[h.name] for h in hosts], peers, policy.inventory)
    findings = evaluate_fleet(fleet, policy)
    report = fleet_report([entries[h.name] for h in hosts], findings, policy, started_at=started,
                          interrupted=interrupted, inventory_source=inv.source)
    store_error = record_run(store, writer, report, policy.get("fleet", "history_days") or policy.get("agent", "history_days"), store_error)
    _write(os.path.join(out_dir, "fleet.json"), json.dumps(report, indent=1))
    if not args.no_html:
        from vmaudit.fleet.html import render

        _write(os.path.join(out_dir, "fleet.html"), render(report))
    s = report["summary"]
    print(f"vmaudit collect: {s['hosts']} hosts, {s['reached']} audited, {s['unreached']} not audited, "
          f"{s['hosts_failing']} with failures; fleet checks {s['fleet']['fail']} fail, "
          f"{s['fleet']['error']} error; reports in {out_dir}/fleet.html", file=sys.stderr)
    if store_error:
        print(f"vmaudit collect: the run was NOT recorded: {store_error}", file=sys.stderr)
    if interrupted:
        return 130
    if store_error:
        return 4
    return exit_status_of(findings, list(entries.values()), args.fail_on)
