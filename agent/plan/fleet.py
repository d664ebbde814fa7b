"""The fleet a plan starts from: hosts (zone, capacity, migration peers) and their guests (zone,
redundancy group, memory, vCPUs), read from a `vmaudit collect` output directory.

`load_fleet(source, policy)` is the one entry point; a fleet store can be added as another source
behind it. Capacity and labels are read with the checks' own rules (vmaudit.capacity, Guest.labels
with the central inventory), so a plan fits exactly what M1, M2-MEM-OVERCOMMIT and M4 accept.

A host whose guests cannot be known (not audited, its snapshot unreadable, a guest whose memory or
vCPUs are missing) is `known = False` with the reason: the plan moves nothing to or from it and is
partial.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import os
from dataclasses import dataclass, field

from vmaudit.capacity import counts_for_memory, host_cpus, host_memory
from vmaudit.errors import InputError, SnapshotError
from vmaudit.facts import EvidenceMissing, Facts, NotApplicable, load_snapshot_file
from vmaudit.fsutil import check_json_values, read_bounded
from vmaudit.policy import Policy

FLEET_SCHEMA = "vmaudit-fleet/1"


@dataclass
class PlanGuest:
    name: str
    uuid: str
    host: str                 # where it is now
    zone: str | None          # None: unlabelled (fits any zone, as F-ZONE-HOSTS counts it)
    redundancy: str | None
    memory_mib: int           # /domain/memory, rounded as M2-MEM-OVERCOMMIT rounds it
    vcpus: int
    counted: bool             # running or autostart: takes memory, vCPUs and a guest slot
    live: bool                # running (live migration) or shut off (offline)
    pinned: bool = False

    @property
    def key(self) -> tuple[str, str]:
        """Where it is and who it is: a UUID defined on two hosts (F-DUPLICATE-GUEST) is two guests."""
        return (self.host, self.uuid or self.name)


@dataclass
class PlanHost:
    name: str
    address: str
    port: int | None
    zone: str | None          # declared zone
    peers: list[str]
    known: bool
    reason: str | None = None
    drained: bool = False
    ram_mib: int = 0
    memory_mib: int = 0       # RAM minus the reserve
    cpus: int = 0
    vcpus: int = 0            # floor(cpu_overcommit x CPUs)
    max_guests: int = 0

    def capacity(self) -> dict:
        return {"memory_mib": self.memory_mib, "vcpus": self.vcpus, "guests": self.max_guests,
                "ram_mib": self.ram_mib, "cpus": self.cpus}


@dataclass
class PlanFleet:
    source: str
    sha256: str
    hosts: dict[str, PlanHost]
    guests: list[PlanGuest] = field(default_factory=list)

    def host_guests(self, name: str) -> list[PlanGuest]:
        return [g for g in self.guests if g.host == name]

    @property
    def unknown(self) -> list[PlanHost]:
        return [h for h in self.hosts.values() if not h.known]


def _read_json(path: str, what: str) -> tuple[object, bytes]:
    """(the parsed JSON, its bytes), read with the one input limit (vmaudit.fsutil)."""
    data = read_bounded(path, what, InputError)
    check_json_values(data, path, what, InputError)
    try:
        return json.loads(data), data
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InputError(f"{path}: {what} is not JSON: {exc}") from None


def _facts_path(directory: str, rel: object) -> str | None:
    """The facts file a fleet.json entry names, only if it lies inside the fleet directory's facts/."""
    if not isinstance(rel, str) or not rel:
        return None
    base = os.path.realpath(os.path.join(directory, "facts"))
    path = os.path.realpath(os.path.join(directory, rel))
    return path if os.path.dirname(path) == base else None


def _matches(patterns: list[str], *names: str) -> bool:
    return any(fnmatch.fnmatchcase(n, p) for p in patterns for n in names if n)


def _peers(entries: list[dict], policy: Policy) -> dict[str, list[str]]:
    """Migration peers as `vmaudit collect` recorded them, the plan policy's [host] migration_peers
    applying to the listed hosts that declare none (the rule of vmaudit.fleet.evaluate.peer_map)."""
    from vmaudit.fleet.evaluate import peer_map
    from vmaudit.fleet.hosts import FleetHost

    hosts = [FleetHost(e["name"], vars={"vmaudit_migration_group": e.get("migration_group") or "",
                                        "vmaudit_migration_peers": list(e.get("migration_peers") or [])})
             for e in entries]
    return peer_map(hosts, policy)


def _host_from_facts(host: PlanHost, facts: Facts, policy: Policy, pinned: list[str]) -> list[PlanGuest]:
    memory = host_memory(facts, policy)
    cpus, _ = host_cpus(facts)
    host.ram_mib = int(memory.total_mib)
    host.memory_mib = max(0, math.floor(memory.available_mib))
    host.cpus = cpus
    host.vcpus = math.floor(float(policy.get("limits", "cpu_overcommit")) * cpus + 1e-9)
    host.max_guests = int(policy.get("limits", "max_running_guests"))
    guests = []
    for g in facts.labelled_guests(policy.inventory):
        try:
            # what it holds now and after its next start (its persistent definition): the larger, as
            # M2-MEM-OVERCOMMIT and M4-CPU-OVERCOMMIT count it
            nxt = g.will_run
            memory_mib = max(int(round(g.memory_kib / 1024)), int(round(nxt.memory_kib / 1024)))
            vcpus = max(g.vcpus, nxt.vcpus)
            labels = g.labels
            counted, unknown = counts_for_memory(g)
            live = g.active
        except (EvidenceMissing, NotApplicable, ValueError) as exc:
            raise EvidenceMissing(f"guest {g.name}: {exc}") from None
        guests.append(PlanGuest(
            name=g.name, uuid=g.uuid, host=host.name, zone=labels.get("zone"),
            redundancy=labels.get("redundancy"), memory_mib=memory_mib, vcpus=vcpus,
            # an unknown autostart flag counts: the plan must not leave a host that might overflow at boot
            counted=counted or unknown is not None, live=live, pinned=_matches(pinned, g.name, g.uuid)))
        g.release()
    return guests


def load_fleet(source: str, policy: Policy) -> PlanFleet:
    """The fleet of a `vmaudit collect` output directory (fleet.json + facts/). InputError (exit 2) for
    input that cannot be used at all; a host that cannot be planned is kept with known = False."""
    directory = source
    path = os.path.join(directory, "fleet.json")
    if not os.path.isdir(directory):
        raise InputError(f"{directory}: not a directory (give the output directory of vmaudit collect)")
    report, raw = _read_json(path, "the fleet report")
    if not isinstance(report, dict) or report.get("schema") != FLEET_SCHEMA:
        found = report.get("schema") if isinstance(report, dict) else type(report).__name__
        raise InputError(f"{path}: not a vmaudit fleet report (schema {found!r}, expected {FLEET_SCHEMA!r})")
    entries = report.get("hosts")
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("name"), str)
                                                and e["name"] for e in entries):
        raise InputError(f"{path}: 'hosts' is not a list of host entries with names")
    names = [e["name"] for e in entries]
    if len(set(names)) != len(names):
        raise InputError(f"{path}: a host name appears twice")
    for e in entries:
        for key, kind in (("zone", str), ("migration_group", str), ("address", str), ("reason", str)):
            if e.get(key) is not None and not isinstance(e[key], kind):
                raise InputError(f"{path}: host {e['name']}: '{key}' must be a string")
        mp = e.get("migration_peers")
        if mp is not None and not (isinstance(mp, list) and all(isinstance(p, str) for p in mp)):
            raise InputError(f"{path}: host {e['name']}: 'migration_peers' must be a list of host names")
        if e.get("port") is not None and (not isinstance(e["port"], int) or isinstance(e["port"], bool)):
            raise InputError(f"{path}: host {e['name']}: 'port' must be an integer")
    peers = _peers(entries, policy)
    pinned = list(policy.get("plan", "pinned"))
    drain = list(policy.get("plan", "drain"))
    for pattern in drain:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise InputError(f"{policy.source}: [plan] drain names {pattern!r}, which matches no host of "
                              f"the fleet {directory}")
    hosts: dict[str, PlanHost] = {}
    guests: list[PlanGuest] = []
    for e in entries:
        host = PlanHost(name=e["name"], address=e.get("address") or e["name"], port=e.get("port"),
                        zone=e.get("zone") or None, peers=peers[e["name"]], known=False,
                        drained=_matches(drain, e["name"]))
        hosts[host.name] = host
        if e.get("reached") is not True:
            host.reason = f"not audited: {e.get('reason') or 'no reason recorded'}"
            continue
        facts_file = _facts_path(directory, e.get("facts"))
        if facts_file is None:
            host.reason = "no facts snapshot inside the fleet directory's facts/"
            continue
        try:
            host_guests = _host_from_facts(host, Facts(load_snapshot_file(facts_file)), policy, pinned)
        except (SnapshotError, EvidenceMissing, NotApplicable) as exc:
            host.reason = f"{os.path.relpath(facts_file, directory)}: {exc}"
            continue
        host.known = True
        guests.extend(host_guests)
    return PlanFleet(source=os.path.abspath(directory), sha256=hashlib.sha256(raw).hexdigest(), hosts=hosts,
                     guests=guests)


__all__ = ["PlanGuest", "PlanHost", "PlanFleet", "load_fleet"]
