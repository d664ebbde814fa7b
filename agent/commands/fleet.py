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
import json
import os
import sys
import time
from datetime import datetime, timezone

from vmaudit.engine import SEVERITIES

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
    p.add_argument("--fail-on", metavar="SEV", default="low", choices=SEVERITIES,
                   help="lowest severity of an unwaived fail that makes the exit status 1 (default: low)")


def _facts_files(root: str) -> dict[str, str]:
    """Host name (file stem) -> snapshot path, from DIR/facts/ (a collect output) or DIR itself."""
    from vmaudit.policy import PolicyError

    base = os.path.join(root, "facts") if os.path.isdir(os.path.join(root, "facts")) else root
    try:
        names = sorted(os.listdir(base))
    except OSError as exc:
        raise PolicyError(f"--facts {root}: cannot read: {exc.strerror or exc}") from None
    return {n[:-5]: os.path.join(base, n) for n in names if n.endswith(".json") and not n.startswith(".")}


def main(args: argparse.Namespace) -> int:
    from vmaudit.audit import load_snapshot, now_rfc3339
    from vmaudit.facts import Facts, SnapshotError
    from vmaudit.fleet.central import exit_status_of, host_meta, inventory_from_meta, select_shard, slim
    from vmaudit.fleet.collect import Outcome
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
    from vmaudit.fleet.hosts import load_hosts
    from vmaudit.policy import PolicyError, load_policy
    from vmaudit.store import StoreError, open_store, utc_text

    if not args.facts and not args.store:
        raise PolicyError("give --facts DIR or --store URL: where the fleet's facts are")
    if args.store is None and args.no_store and not args.facts:
        raise PolicyError("--no-store without --facts: no facts to evaluate")
    policy = load_policy(args.policy)
    max_age = args.max_age if args.max_age is not None else policy.get("fleet", "facts_max_age_days")
    if max_age <= 0:
        raise PolicyError("--max-age must be positive")
    history_days = policy.get("fleet", "history_days") or policy.get("agent", "history_days")
    out_dir = args.output

    # the source of facts, and the store the run is recorded in (may be the same)
    store = None
    target = args.store or (None if args.no_store else os.path.join(out_dir, "fleet-history.sqlite"))
    try:
        if target is not None and not (args.no_store and args.facts):
            store = open_store(target)
    except StoreError as exc:
        raise PolicyError(str(exc)) from None

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
            raise PolicyError(str(exc)) from None
        source = store.display
        found_meta = {name: h.meta for name, h in stored.items()}
    limit = [p.strip() for item in (args.limit or []) for p in item.split(",") if p.strip()]
    inv = load_hosts(args.inventory) if args.inventory else inventory_from_meta(source, found_meta)
    hosts = select_shard(inv.select(limit), args.shard)
    if not hosts:
        if store is not None:
            store.close()
        raise PolicyError(f"{inv.source}: no hosts to evaluate" + (f" in shard {args.shard}" if args.shard else ""))
    peers = peer_map(hosts, policy)
    names = {h.name: safe_name(h.name) for h in hosts}
    if len(set(names.values())) != len(names):
        raise PolicyError(f"{inv.source}: host names that differ only in unusual characters map to the same "
                          f"report file; rename them")

    html_render = None
    if not args.no_html:
        from vmaudit.report import render as html_render
    os.makedirs(os.path.join(out_dir, "hosts"), exist_ok=True)

    started = now_rfc3339()
    now = datetime.now(timezone.utc)
    writer = None
    store_error: str | None = None
    if store is not None:
        try:
            writer = store.begin_run("fleet", started, inventory=inv.source, policy_sha256=policy.sha256,
                                     shard=args.shard)
        except StoreError as exc:
            store.close()
            raise PolicyError(str(exc)) from None

    def load(host) -> tuple[dict | None, str | None, str | None]:
        """(facts, collected_at, why not) of one host."""
        try:
            if args.facts:
                path = files.get(host.name) or files.get(names[host.name])
                if path is None:
                    return None, None, f"no facts snapshot for it in {args.facts}"
                data = load_snapshot(path)
            else:
                ref = stored.get(host.name)
                if ref is None:
                    return None, None, f"no facts for it in the store {store.display}"
                data = store.facts_of(ref)
                Facts(data)
        except (PolicyError, StoreError) as exc:
            return None, None, f"its facts cannot be used: {exc}"
        except SnapshotError as exc:
            return None, None, f"its stored facts are not a usable snapshot: {exc}"
        when = utc_text(data.get("collected_at"))
        if when is None:
            return None, None, "its snapshot has no valid collected_at time: its age is unknown"
        age = (now - datetime.strptime(when, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)).total_seconds()
        if age > max_age * 86400:
            return None, when, (f"stale: its latest facts were collected at {when}, {age / 86400:.1f} days ago, "
                                f"more than the {max_age:g} days allowed ([fleet] facts_max_age_days); not evaluated")
        return data, when, None

    views = []
    entries = []
    t0 = time.monotonic()
    for host in hosts:
        fname = names[host.name]
        facts, when, why = load(host)
        paths: dict = {"report": None, "html": None, "facts": None}
        if facts is None:
            stage = "stale" if why and why.startswith("stale") else "facts"
            outcome = Outcome(host, reason=why, stage=stage)
            view = HostView(host.name, declared_zone(host, policy), outcome, inventory=policy.inventory)
        else:
            outcome = Outcome(host, facts=facts, reached=True, mode="facts")
            try:
                view = host_view(outcome, policy, peers[host.name])
                _write(os.path.join(out_dir, "hosts", f"{fname}.json"), json.dumps(view.report, indent=1))
                paths["report"] = f"hosts/{fname}.json"
                if html_render is not None:
                    _write(os.path.join(out_dir, "hosts", f"{fname}.html"), html_render("html", view.report))
                    paths["html"] = f"hosts/{fname}.html"
            except Exception as exc:  # one host's bad snapshot or a full disk must not lose the others
                log.exception("%s: cannot evaluate or write its report", host.name)
                outcome = Outcome(host, reason=f"cannot evaluate or write its report: {exc}", stage="internal")
                view = HostView(host.name, declared_zone(host, policy), outcome, inventory=policy.inventory)
        entry = host_entry(view, host, peers[host.name], paths)
        entry["collected_at"] = when
        if writer is not None:
            try:
                writer.add_host(entry, view.report, facts if args.facts else None, host_meta(host), when,
                                stale=outcome.stage == "stale")
            except StoreError as exc:
                store_error = str(exc)
                log.error("%s; the evaluation goes on, the reports are written", store_error)
                writer = None
        views.append(slim(view))
        entries.append(entry)
        del facts, view
    log.debug("evaluated %d hosts in %.1f s", len(hosts), time.monotonic() - t0)

    fleet = FleetView(views, peers, policy.inventory)
    findings = evaluate_fleet(fleet, policy)
    report = fleet_report(entries, findings, policy, started_at=started, interrupted=False,
                          inventory_source=inv.source)
    report["source"] = {"facts": args.facts} if args.facts else {"store": store.display}
    if writer is not None:
        try:
            report["run"] = writer.finish(report)
            store.prune(history_days)
            report["trend"] = store.trend()
        except StoreError as exc:
            store_error = str(exc)
            log.error("%s", store_error)
    if store is not None:
        store.close()
    if store_error:
        report["store_error"] = store_error
    _write(os.path.join(out_dir, "fleet.json"), json.dumps(report, indent=1))
    if not args.no_html:
        from vmaudit.fleet.html import render

        _write(os.path.join(out_dir, "fleet.html"), render(report))
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
