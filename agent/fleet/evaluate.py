"""Central evaluation: each host's facts under the central policy, then the fleet checks (F-*) over all.

Each host is evaluated with a copy of the central policy in which [host] zone and migration_peers are
the host's own, from the inventory (`vmaudit_zone`, `vmaudit_migration_group` / `_peers`), falling back
to the central policy's values. The fleet checks then see every host at once through `FleetView`; their
findings have the same shape as a host report's (vmaudit.engine.make_finding), with the measure "F".

The fleet report (`vmaudit-fleet/1`):

    {"schema": "vmaudit-fleet/1", "tool": {...}, "started_at", "finished_at", "interrupted": bool,
     "policy": {"source", "sha256"}, "inventory": {"source", "hosts"},
     "summary": {"hosts", "reached", "unreached", "hosts_failing", "fleet": {pass, fail, ...},
                 "findings": {pass, fail, ...}},
     "hosts": [{"name", "address", "zone", "migration_group", "groups", "reached", "reason", "stage",
                "mode", "seconds", "hostname", "summary", "worst", "report", "html", "facts"}],  worst first
     "findings": [F-* findings], "trend": [...runs from the store...]}
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from vmaudit import __version__
from vmaudit.audit import build_report, now_rfc3339
from vmaudit.engine import (
    SEVERITIES,
    STATUSES,
    CheckSpec,
    apply_waivers,
    load_checks,
    make_finding,
    run_check,
    summarize,
)
from vmaudit.errors import InventoryError
from vmaudit.facts import EvidenceMissing, Facts, Guest, NotApplicable
from vmaudit.policy import Policy

from .collect import Outcome
from .hosts import FleetHost

FLEET_SCHEMA = "vmaudit-fleet/1"


def peer_map(hosts: list[FleetHost], policy: Policy) -> dict[str, list[str]]:
    """Inventory name -> its migration peers (symmetric), from groups, explicit peers or the policy."""
    names = {h.name for h in hosts}
    peers: dict[str, set] = {h.name: set() for h in hosts}
    groups: dict[str, list[str]] = {}
    for h in hosts:
        if h.migration_group:
            groups.setdefault(h.migration_group, []).append(h.name)
        for p in h.migration_peers:
            if p not in names:
                raise InventoryError(f"{h.where or h.name}: host {h.name}: vmaudit_migration_peers names "
                                  f"{p!r}, which is not a host of this inventory")
            if p != h.name:
                peers[h.name].add(p)
                peers[p].add(h.name)
    for members in groups.values():
        for a in members:
            peers[a].update(m for m in members if m != a)
    central = policy.get("host", "migration_peers")
    if central:
        # the central policy's peer list applies to the listed hosts that declare none themselves
        listed = [n for n in central if n in names]
        for a in listed:
            if not peers[a]:
                peers[a].update(n for n in listed if n != a)
    return {k: sorted(v) for k, v in peers.items()}


def host_policy(policy: Policy, host: FleetHost, peers: list[str]) -> Policy:
    """The central policy as it applies to one host: its own zone and migration peers."""
    values = copy.deepcopy(policy.values)
    section = values.setdefault("host", {})
    if host.zone:
        section["zone"] = host.zone
    if peers:
        section["migration_peers"] = list(peers)
    return Policy(source=policy.source, sha256=policy.sha256, values=values, waivers=policy.waivers,
                  inventory=policy.inventory)


def declared_zone(host: FleetHost, policy: Policy) -> str | None:
    return host.zone or policy.zone


@dataclass
class FleetCheckHost:
    """What every fleet check reads of a host: its name, zone, collection outcome and report, and
    (subclasses) guests(). HostView holds a host's facts; central.SlimHost only what the checks need."""

    name: str
    zone: str | None
    outcome: Outcome
    report: dict | None = None

    @property
    def reached(self) -> bool:
        return self.outcome.reached

    @property
    def reason(self) -> str | None:
        return self.outcome.reason

    @property
    def resource(self) -> str:
        return f"host:{self.name}"


@dataclass
class HostView(FleetCheckHost):
    """One host as the fleet checks see it."""

    inventory: Any = None
    _guests: list | None = field(default=None, repr=False)
    _guest_error: str | None = field(default=None, repr=False)

    def prepare(self) -> None:
        """Parse the guests once (inventory labels applied, XML trees released) so the raw facts can
        be dropped; a host whose guest list is missing keeps that reason."""
        if not self.reached or self._guests is not None or self._guest_error is not None:
            return
        try:
            guests = Facts(self.outcome.facts).labelled_guests(self.inventory)
            for g in guests:
                g.settle()
            self._guests = guests
        except (EvidenceMissing, NotApplicable) as exc:  # a guest list that is not there is not there
            self._guest_error = str(exc)

    def guests(self) -> list[Guest]:
        """The host's guests with inventory labels applied; EvidenceMissing if not collected."""
        if not self.reached:
            raise EvidenceMissing(f"host {self.name} could not be audited: {self.reason}")
        self.prepare()
        if self._guest_error is not None:
            raise EvidenceMissing(f"host {self.name}: {self._guest_error}")
        return self._guests


@dataclass
class FleetView:
    """Every host of the run, the central guest registry and the migration peer relation."""

    hosts: list[HostView]
    peers: dict[str, list[str]]
    inventory: Any = None   # vmaudit.inventory.Inventory or None

    def host(self, name: str) -> HostView | None:
        return next((h for h in self.hosts if h.name == name), None)

    @property
    def reached(self) -> list[HostView]:
        return [h for h in self.hosts if h.reached]

    @property
    def unreached(self) -> list[HostView]:
        return [h for h in self.hosts if not h.reached]

    def peer_pairs(self) -> list[tuple[str, str]]:
        return sorted({tuple(sorted((a, b))) for a, ps in self.peers.items() for b in ps})


def fleet_checks(checks: dict[str, CheckSpec] | None = None) -> list[CheckSpec]:
    checks = checks or load_checks()
    return [c for c in checks.values() if c.scope == "fleet"]


def evaluate_fleet(fleet: FleetView, policy: Policy, checks: dict[str, CheckSpec] | None = None) -> list[dict]:
    """Run every F-* check over the fleet; findings sorted by check ID, resource; waivers applied."""
    results = []
    for spec in fleet_checks(checks):
        results.extend(make_finding(spec, r) for r in run_check(spec, (fleet, policy), "fleet"))
    results.sort(key=lambda f: (f["check_id"], f["resource"]))
    apply_waivers(results, policy.waivers)
    return results


# --- ranking and the fleet report ---------------------------------------------------------------

def rank_key(entry: dict) -> tuple:
    """Worst first: unreached hosts, then unwaived fails by severity, errors, warns; then by name."""
    if not entry["reached"]:
        return (0,) + (0,) * (len(SEVERITIES) + 2) + (entry["name"],)
    counts = entry.get("_counts", {})
    return (1,) + tuple(-counts.get(("fail", s), 0) for s in SEVERITIES) + (
        -counts.get("error", 0), -counts.get("warn", 0), entry["name"])


def host_entry(view: HostView, host: FleetHost, peers: list[str], paths: dict) -> dict:
    out = view.outcome
    entry: dict[str, Any] = {
        "name": host.name, "address": host.address, "port": host.port, "zone": view.zone,
        "migration_group": host.migration_group, "migration_peers": peers, "groups": host.groups,
        "reached": out.reached, "reason": out.reason, "stage": out.stage, "mode": out.mode,
        "seconds": out.seconds,
    }
    if view.report is not None:
        counts: dict = {}
        worst = None
        for f in view.report["findings"]:
            if "waiver" in f:
                continue
            if f["status"] == "fail":
                counts[("fail", f["severity"])] = counts.get(("fail", f["severity"]), 0) + 1
                if worst is None or SEVERITIES.index(f["severity"]) < SEVERITIES.index(worst):
                    worst = f["severity"]
            elif f["status"] in ("error", "warn"):
                counts[f["status"]] = counts.get(f["status"], 0) + 1
        entry.update(hostname=view.report["host"].get("hostname"), summary=view.report["summary"],
                     worst=worst, _counts=counts)
    entry.update(paths)
    return entry


def fleet_report(entries: list[dict], findings: list[dict], policy: Policy, *, started_at: str,
                 interrupted: bool, inventory_source: str, trend: list | None = None) -> dict:
    entries = sorted(entries, key=rank_key)
    for e in entries:
        e.pop("_counts", None)
    host_totals = {s: 0 for s in STATUSES} | {"waived": 0}
    for e in entries:
        for k in host_totals:
            host_totals[k] += (e.get("summary") or {}).get(k, 0)
    fleet_summary = summarize(findings)
    fleet_summary.pop("by_measure", None)
    reached = sum(1 for e in entries if e["reached"])
    return {
        "schema": FLEET_SCHEMA,
        "tool": {"name": "vmaudit", "version": __version__},
        "started_at": started_at,
        "finished_at": now_rfc3339(),
        "interrupted": interrupted,
        "policy": {"source": policy.source, "sha256": policy.sha256},
        "inventory": {"source": inventory_source, "hosts": len(entries)},
        "summary": {"hosts": len(entries), "reached": reached, "unreached": len(entries) - reached,
                    "hosts_failing": sum(1 for e in entries if e.get("worst")),
                    "fleet": fleet_summary, "findings": host_totals},
        "hosts": entries,
        "findings": findings,
        "trend": trend or [],
    }


def evaluate_host(outcome: Outcome, policy: Policy, peers: list[str], checks: Any = None) -> dict | None:
    if not outcome.reached:
        return None
    return build_report(outcome.facts, host_policy(policy, outcome.host, peers), checks=checks)


def host_view(outcome: Outcome, policy: Policy, peers: list[str], checks: Any = None) -> HostView:
    """One collected host evaluated: its report under the central policy and its guests prepared for
    the fleet checks (after this, outcome.facts may be dropped)."""
    view = HostView(outcome.host.name, declared_zone(outcome.host, policy), outcome, inventory=policy.inventory)
    view.report = evaluate_host(outcome, policy, peers, checks)
    view.prepare()
    return view


__all__ = ["FLEET_SCHEMA", "FleetView", "HostView", "peer_map", "host_policy", "declared_zone",
           "evaluate_fleet", "evaluate_host", "host_view", "fleet_report", "host_entry", "rank_key", "fleet_checks"]
