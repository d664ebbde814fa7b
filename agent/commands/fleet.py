"""`vmaudit fleet`: evaluate a fleet's latest facts under a central policy, without connecting to any host.

    vmaudit fleet --facts /srv/vmaudit/fleet --policy central.toml --output /srv/vmaudit/report
    vmaudit fleet --store postgresql:///vmaudit?service=fleet --policy central.toml

The facts come from a directory (`--facts DIR`: a `vmaudit collect` output, whose facts/ holds one
snapshot per host, or any directory of `vmaudit facts` snapshots named <host>.json) or from a store
(`--store URL` alone: the newest facts of every host in it, whichever collector or shard wrote them).
`-i INVENTORY` gives the host list with zones and migration groups; without it the hosts are the
snapshots found (directory) or the hosts in the store, with the inventory variables recorded by the
collector that wrote their facts. Facts older than `[fleet] facts_max_age_days` (or --max-age) are not
evaluated: the host is reported stale (F-HOST-UNREACHED, stage `stale`).

Hosts are evaluated one at a time (vmaudit.fleet.central): memory stays flat as the fleet grows.
Writes fleet.json, fleet.html, hosts/<host>.json and .html as `collect` does, and records the run in
the store (`--store`, else DIR/fleet-history.sqlite of --output; with --facts, the facts too). Exit
status as for `collect`; 4 when the reports are written but the store could not record the run.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

from vmaudit.engine import SEVERITIES
from vmaudit.fsutil import make_dir

from .collect import _write, safe_name
from .common import log

STORE_FAILED = 4


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--facts", metavar="DIR", help="evaluate the snapshots in DIR (a collect output or "
                   "<host>.json files) instead of the store's")
    p.add_argument("--store", metavar="URL", help="the fleet store: a SQLite file or postgresql://… (libpq; no "
                   "password in the URL: use PGPASSFILE or a service file). Without --facts, the facts come "
                   "from it; the run is recorded in it (default: OUTPUT/fleet-history.sqlite)")
    p.add_argument("--no-store", action="store_true", help="do not record this run in any store")
    p.add_argument("-i", "--inventory", metavar="FILE", help="Ansible inventory or host list: which hosts, "
                   "their zones and migration groups (default: the hosts found, with their recorded variables)")
    p.add_argument("--limit", metavar="PATTERN", action="append",
                   help="only these hosts or groups (comma-separated, globs allowed; may be repeated)")
    p.add_argument("--shard", metavar="K/N", help="only the K-th of N stable shards of the hosts (by name)")
    p.add_argument("--policy", metavar="FILE", help="the central policy (default: /etc/vmaudit/policy.toml if present)")
    p.add_argument("--output", metavar="DIR", default="vmaudit-fleet", help="report directory (default: ./vmaudit-fleet)")
    p.add_argument("--max-age", metavar="DAYS", type=float,
                   help="facts older than this are stale (default: [fleet] facts_max_age_days, 7)")
    p.add_argument("--no-html", action="store_true", help="write JSON reports only")
    p.add_argument("-j", "--jobs", metavar="N", type=int,
                   help="hosts evaluated at once, in worker processes (default: the number of CPUs, at most 4)")
    p.add_argument("--fail-on", metavar="SEV", default="low", choices=SEVERITIES,
                   help="lowest severity of an unwaived fail that makes the exit status 1 (default: low)")


def _shared_strings(value: Any) -> Any:
    """A host's fleet-report entry with its keys and short values (statuses, measures, zones) as
    interned strings: a worker's result arrives with its own copy of each, kept for the whole run."""
    if isinstance(value, dict):
        return {sys.intern(k) if isinstance(k, str) else k: _shared_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shared_strings(v) for v in value]
    if isinstance(value, str) and len(value) <= 32:
        return sys.intern(value)
    return value


def _facts_files(root: str) -> dict[str, str]:
    """Host name (file stem) -> snapshot path, from DIR/facts/ (a collect output) or DIR itself."""
    from vmaudit.errors import UsageError

    base = os.path.join(root, "facts") if os.path.isdir(os.path.join(root, "facts")) else root
    try:
        names = sorted(os.listdir(base))
    except OSError as exc:
        raise UsageError(f"--facts {root}: cannot read: {exc.strerror or exc}") from None
    return {n[:-5]: os.path.join(base, n) for n in names if n.endswith(".json") and not n.startswith(".")}


def main(args: argparse.Namespace) -> int:
    from vmaudit.audit import now_rfc3339
    from vmaudit.errors import UsageError
    from vmaudit.fleet.central import exit_status_of, host_meta, inventory_from_meta, select_shard
    from vmaudit.fleet.evaluate import FleetView, evaluate_fleet, fleet_report, peer_map
    from vmaudit.fleet.hosts import load_hosts
    from vmaudit.policy import load_policy
    from vmaudit.store import StoreError, is_postgresql, open_store, record_run

    if not args.facts and not args.store:
        raise UsageError("give --facts DIR or --store URL: where the fleet's facts are")
    if args.store is None and args.no_store and not args.facts:
        raise UsageError("--no-store without --facts: no facts to evaluate")
    policy = load_policy(args.policy)
    max_age = args.max_age if args.max_age is not None else policy.get("fleet", "facts_max_age_days")
    if max_age <= 0:
        raise UsageError("--max-age must be positive")
    history_days = policy.get("fleet", "history_days") or policy.get("agent", "history_days")
    out_dir = args.output

    # the source of facts, and the store the run is recorded in (may be the same)
    if args.store and not args.facts and not is_postgresql(args.store) and not os.path.isfile(args.store):
        raise UsageError(f"store {args.store}: no such SQLite file (nothing to evaluate)")
    store = None
    target = args.store or (None if args.no_store else os.path.join(out_dir, "fleet-history.sqlite"))
    try:
        if target is not None and not (args.no_store and args.facts):
            store = open_store(target)
    except StoreError as exc:
        raise UsageError(str(exc)) from None

    files: dict[str, str] = {}
    stored: dict = {}
    if args.facts:
        files = _facts_files(args.facts)
        source = args.facts
        found_meta = {name: {} for name in files}
    else:
        try:
            stored = {h.name: h for h in store.latest_hosts()}
        except StoreError as exc:
            store.close()
            raise UsageError(str(exc)) from None
        source = store.display
        found_meta = {name: h.meta for name, h in stored.items()}
    limit = [p.strip() for item in (args.limit or []) for p in item.split(",") if p.strip()]
    inv = load_hosts(args.inventory) if args.inventory else inventory_from_meta(source, found_meta)
    hosts = select_shard(inv.select(limit), args.shard)
    if not hosts:
        if store is not None:
            store.close()
        raise UsageError(f"{inv.source}: no hosts to evaluate" + (f" in shard {args.shard}" if args.shard else ""))
    peers = peer_map(hosts, policy)
    names = {h.name: safe_name(h.name) for h in hosts}
    if len(set(names.values())) != len(names):
        raise UsageError(f"{inv.source}: host names that differ only in unusual characters map to the same "
                          f"report file; rename them")

    for d in (out_dir, os.path.join(out_dir, "hosts")):
        make_dir(d, parents=True)
    started = now_rfc3339()
    writer = None
    store_error: str | None = None
    if store is not None:
        try:
            writer = store.begin_run("fleet", started, inventory=inv.source, policy_sha256=policy.sha256,
                                     shard=args.shard)
        except StoreError as exc:
            store.close()
            raise UsageError(str(exc)) from None

    def task(host) -> Task:
        """What a worker needs for one host: the snapshot's path, or (from the store) the facts."""
        t = Task(host, peers[host.name], names[host.name])
        if args.facts:
            t.path = files.get(host.name) or files.get(names[host.name])
            if t.path is None:
                t.why = f"no facts snapshot for it in {args.facts}"
        else:
            ref = stored.get(host.name)
            if ref is None:
                t.why = f"no facts for it in the store {store.display}"
            else:
                try:
                    t.facts = store.facts_json_of(ref)
                except StoreError as exc:
                    t.why = f"its facts cannot be used: {exc}"
        return t

    # each worker holds a policy, the check catalogue and one host at a time: about 55 MiB
    jobs = max(1, min(args.jobs or min(os.cpu_count() or 1, 4), len(hosts)))
    settings = WorkerSettings(policy_path=args.policy, out_dir=out_dir, html=not args.no_html, max_age=max_age,
                              now=datetime.now(timezone.utc), pack=bool(args.facts and writer is not None))
    views = []
    entries = []
    t0 = time.monotonic()
    for host, done in evaluate_hosts(hosts, task, settings, jobs):
        if done.error:
            log.error("%s: cannot evaluate or write its report: %s", host.name, done.error)
        done.entry = _shared_strings(done.entry)
        done.slim.outcome.host = host  # not the worker's copy
        entries.append(done.entry)
        views.append(done.slim)
        if writer is not None:
            try:
                writer.add_host(done.entry, None, None, host_meta(host), done.entry["collected_at"],
                                stale=done.entry.get("stage") == "stale", checks=done.checks, packed=done.packed)
            except StoreError as exc:
                store_error = str(exc)
                log.error("%s; the evaluation goes on, the reports are written", store_error)
                writer = None
    log.debug("evaluated %d hosts in %.1f s", len(hosts), time.monotonic() - t0)

    from vmaudit.fsutil import sync_tree

    sync_tree(os.path.join(out_dir, "hosts"))  # the host reports, durable before the fleet report names them
    fleet = FleetView(views, peers, policy.inventory)
    findings = evaluate_fleet(fleet, policy)
    del fleet, views  # the fleet checks' inputs: not needed for the reports
    report = fleet_report(entries, findings, policy, started_at=started, interrupted=False,
                          inventory_source=inv.source)
    report["source"] = {"facts": args.facts} if args.facts else {"store": store.display}
    store_error = record_run(store, writer, report, history_days, store_error)
    # written piece by piece: the fleet report of thousands of hosts is never one string in memory
    _write(os.path.join(out_dir, "fleet.json"), json.JSONEncoder(indent=1).iterencode(report))
    if not args.no_html:
        from vmaudit.fleet.html import render_chunks

        _write(os.path.join(out_dir, "fleet.html"), render_chunks(report))
    s = report["summary"]
    stale = sum(1 for e in entries if e.get("stage") == "stale")
    print(f"vmaudit fleet: {s['hosts']} hosts, {s['reached']} evaluated, {stale} stale, "
          f"{s['unreached'] - stale} without usable facts, {s['hosts_failing']} with failures; fleet checks "
          f"{s['fleet']['fail']} fail, {s['fleet']['error']} error; reports in {out_dir}/fleet.json",
          file=sys.stderr)
    if store_error:
        print(f"vmaudit fleet: the run was NOT recorded: {store_error}", file=sys.stderr)
        return STORE_FAILED
    return exit_status_of(findings, entries, args.fail_on)


# --- one host's evaluation, in this process or a worker's ------------------------------------------

@dataclass
class Task:
    host: Any
    peers: list
    fname: str
    path: str | None = None     # the snapshot file (--facts)
    facts: bytes | None = None  # or the facts themselves, as JSON (--store)
    why: str | None = None      # or why there are none


@dataclass
class WorkerSettings:
    policy_path: str | None
    out_dir: str
    html: bool
    max_age: float
    now: datetime
    pack: bool                  # return the facts packed for the store (imported from --facts)


@dataclass
class Done:
    entry: dict
    slim: Any
    checks: list | None = None
    packed: bytes | None = None
    error: str | None = None


_WORKER: dict = {}


def _write_host_file(path: str, text: str) -> None:
    """A host's report: atomic, made durable with all the others at the end (sync_tree)."""
    from vmaudit.fsutil import atomic_write

    atomic_write(path, text, mode=0o640, durable=False)


def _init_worker(settings: WorkerSettings) -> None:
    from vmaudit.policy import load_policy

    _WORKER.clear()
    _WORKER.update(settings=settings, policy=load_policy(settings.policy_path))
    if settings.html:
        from vmaudit.report import render

        _WORKER["html"] = render


def _usable(t: Task, settings: WorkerSettings) -> tuple[dict | None, dict | None, str | None, str | None]:
    """(snapshot as read, the same held to the facts contract, collected_at, why not) of one host:
    parsed and validated as `vmaudit run --facts` does (vmaudit.facts), and not stale."""
    from vmaudit.errors import InputError
    from vmaudit.facts import EvidenceMissing, Facts, load_snapshot_file, parse_snapshot
    from vmaudit.store import utc_text

    if t.why:
        return None, None, None, t.why
    try:
        if t.path is not None:
            data = load_snapshot_file(t.path)
        else:
            data = parse_snapshot(t.facts, f"the store's facts of host {t.host.name}")
        facts = Facts(data)
        when = facts.collected_at
    except InputError as exc:
        return None, None, None, f"its facts cannot be used: {exc}"
    except EvidenceMissing as exc:
        return None, None, None, f"its facts cannot be used: {exc}: their age is unknown"
    when_text = utc_text(when.isoformat())
    age = (settings.now - when).total_seconds()
    if age > settings.max_age * 86400:
        return None, None, when_text, (f"stale: its latest facts were collected at {when_text}, {age / 86400:.1f} days "
                                 f"ago, more than the {settings.max_age:g} days allowed ([fleet] "
                                 f"facts_max_age_days); not evaluated")
    return data, facts.data, when_text, None


def evaluate_task(t: Task) -> Done:
    """Load, evaluate and write the reports of one host; return what the fleet keeps of it."""
    from vmaudit.fleet.central import slim
    from vmaudit.fleet.collect import Outcome
    from vmaudit.fleet.evaluate import HostView, declared_zone, host_entry, host_view
    from vmaudit.store.base import check_rows, pack_facts

    settings, policy = _WORKER["settings"], _WORKER["policy"]
    host, out_dir, fname = t.host, settings.out_dir, t.fname
    raw, facts, when, why = _usable(t, settings)
    t.facts = None
    paths: dict = {"report": None, "html": None, "facts": None}
    done = Done({}, None)
    if facts is None:
        outcome = Outcome(host, reason=why, stage="stale" if why and why.startswith("stale") else "facts")
        view = HostView(host.name, declared_zone(host, policy), outcome, inventory=policy.inventory)
    else:
        outcome = Outcome(host, facts=facts, reached=True, mode="facts")
        try:
            view = host_view(outcome, policy, t.peers)
            _write_host_file(os.path.join(out_dir, "hosts", f"{fname}.json"), json.dumps(view.report, indent=1))
            paths["report"] = f"hosts/{fname}.json"
            if "html" in _WORKER:
                _write_host_file(os.path.join(out_dir, "hosts", f"{fname}.html"), _WORKER["html"]("html", view.report))
                paths["html"] = f"hosts/{fname}.html"
            if settings.pack:
                done.packed = pack_facts(raw)  # as read: the validated copy holds markers
        except Exception as exc:  # one host's bad snapshot or a full disk must not lose the others
            done.error = f"{type(exc).__name__}: {exc}"
            outcome = Outcome(host, reason=f"cannot evaluate or write its report: {exc}", stage="internal")
            view = HostView(host.name, declared_zone(host, policy), outcome, inventory=policy.inventory)
            done.packed = None
    done.entry = host_entry(view, host, t.peers, paths)
    done.entry["collected_at"] = when
    done.checks = check_rows(view.report) if view.report is not None else None
    done.slim = slim(view)
    return done


def evaluate_hosts(hosts: list, task: Callable[[Any], Task], settings: WorkerSettings,
                   jobs: int) -> Iterator[tuple[Any, Done]]:
    """(host, Done) in the hosts' order, `jobs` at a time in worker processes (in this one for 1); at
    most 2 x jobs hosts are in flight, so memory does not grow with the fleet."""
    if jobs <= 1:
        _init_worker(settings)
        for host in hosts:
            yield host, evaluate_task(task(host))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # forkserver: workers start clean (no inherited store connection or threads)
    ctx = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker, initargs=(settings,)) as pool:
        pending: collections.deque = collections.deque()
        it = iter(hosts)
        for host in it:
            pending.append((host, pool.submit(evaluate_task, task(host))))
            if len(pending) >= 2 * jobs:
                break
        while pending:
            host, fut = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(evaluate_task, task(nxt))))
            yield host, fut.result()
