"""What central evaluation keeps of each host for the whole fleet, and how a fleet is split.

Streaming: `vmaudit fleet` and `vmaudit collect` evaluate one host at a time (facts loaded, report
written, facts released). Only the fleet checks' inputs are kept for every host: a `SlimHost` with
the guests' names, UUIDs, states and zone and redundancy labels and, of the host report, the hostname and the findings
F-MIGRATION-PARITY compares (the host-level findings of the parity measures, M6-ADMINS' evidence).
So memory grows by a few kilobytes per host, not by its facts or its full report.

Sharding: `--shard K/N` keeps the hosts whose name hashes (SHA-256, not Python's per-process
randomized hash()) to K among N, so N collectors given the same inventory split it the same way
every time, each host in exactly one shard.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vmaudit.errors import UsageError
from vmaudit.facts import EvidenceMissing

from .evaluate import FleetCheckHost
from .hosts import FleetHost, Group, HostInventory

# the inventory variables central evaluation reads (zone, peers) and the fleet report shows
META_VARS = ("vmaudit_zone", "vmaudit_migration_group", "vmaudit_migration_peers", "ansible_host", "ansible_port")


def parse_shard(text: str) -> tuple[int, int]:
    """`K/N` with 1 <= K <= N."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard {text!r}: expected K/N, e.g. 2/4") from None
    if not 1 <= k <= n:
        raise UsageError(f"--shard {text!r}: K must be between 1 and N")
    return k, n


def shard_of(name: str, n: int) -> int:
    """The shard (1..n) of a host name: stable across runs, machines and Python versions."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8", "surrogatepass")).digest()[:8], "big") % n + 1


def select_shard(hosts: list[FleetHost], shard: str | None) -> list[FleetHost]:
    if not shard:
        return hosts
    k, n = parse_shard(shard)
    return [h for h in hosts if shard_of(h.name, n) == k]


def host_meta(host: FleetHost) -> dict:
    """The inventory facts of a host worth keeping with its facts in the store."""
    return {"vars": {k: host.vars[k] for k in META_VARS if host.vars.get(k) not in (None, "")},
            "groups": list(host.groups)}


def inventory_from_meta(source: str, metas: dict[str, dict]) -> HostInventory:
    """An inventory rebuilt from stored metadata (name -> host_meta()), so --limit can name groups."""
    inv = HostInventory(source)
    for name, meta in metas.items():
        groups = [str(g) for g in meta.get("groups") or [] if isinstance(g, str)]
        variables = {k: v for k, v in (meta.get("vars") or {}).items() if k in META_VARS}
        inv.hosts[name] = FleetHost(name, variables, groups, where=source)
        for g in groups:
            inv.groups.setdefault(g, Group(g, where=source)).hosts.append(name)
    return inv


class SlimGuest:
    """A guest's name, UUID, state and the labels the fleet checks read (zone, redundancy), in a few
    hundred bytes; a guest whose labels could not be read (no XML) raises the same EvidenceMissing
    when a check reads them, as the full guest would. A fleet check reading another label needs it
    here (tests/store/test_fleet_command.py compares with the full evaluation)."""

    __slots__ = ("name", "uuid", "state", "_zone", "_redundancy", "_error")

    def __init__(self, guest: Any):
        self.name, self.uuid, self.state = guest.name, guest.uuid, sys.intern(str(guest.state))
        self._zone = self._redundancy = self._error = None
        try:
            labels = guest.labels
        except EvidenceMissing as exc:
            self._error = str(exc)
            return
        # label values repeat across the fleet: one string each
        zone, group = labels.get("zone"), labels.get("redundancy")
        self._zone = sys.intern(zone) if isinstance(zone, str) else zone
        self._redundancy = sys.intern(group) if isinstance(group, str) else group

    def __getstate__(self):
        return None, {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, state) -> None:  # from a worker process: shared strings for shared values
        for k, v in state[1].items():
            setattr(self, k, sys.intern(v) if k in ("state", "_zone", "_redundancy") and isinstance(v, str) else v)

    @property
    def labels(self) -> dict:
        if self._error is not None:
            raise EvidenceMissing(self._error)
        return {k: v for k, v in (("zone", self._zone), ("redundancy", self._redundancy)) if v}


@dataclass
class SlimHost(FleetCheckHost):
    """One host as the fleet checks see it, its facts and full report gone (vmaudit.fleet.evaluate.HostView's
    interface)."""

    _guests: list | None = field(default=None, repr=False)
    _guest_error: str | None = field(default=None, repr=False)

    def guests(self) -> list[SlimGuest]:
        if self._guest_error is not None:
            raise EvidenceMissing(self._guest_error)
        return self._guests or []


class SlimReport(Mapping):
    """What F-MIGRATION-PARITY reads of a host report, compactly: the hostname, per host-level check of
    the parity measures its worst status (vmaudit.checks.fleet._worst_by_check) and the administrators
    M6-ADMINS names. Read as the report it stands for: `report["findings"]` gives one finding per check
    with that worst status, which the fleet checks judge exactly as the full list."""

    __slots__ = ("hostname", "checks", "admins")

    def __init__(self, report: dict):
        from vmaudit.checks.fleet import _worst_by_check
        from vmaudit.checks.m6_admins import admins_of

        measures = {f["check_id"]: f["measure"] for f in report["findings"]}
        self.hostname = (report.get("host") or {}).get("hostname")
        self.checks = tuple((sys.intern(c), sys.intern(measures[c]), sys.intern(st))
                            for c, st in sorted(_worst_by_check(report).items()))
        self.admins = admins_of(report)

    def __setstate__(self, state) -> None:  # from a worker process: one string per check and status
        _, slots = state
        self.hostname, self.admins = slots["hostname"], slots["admins"]
        self.checks = tuple(tuple(sys.intern(x) for x in c) for c in slots["checks"])

    def __getstate__(self):
        return None, {"hostname": self.hostname, "checks": self.checks, "admins": self.admins}

    def _findings(self) -> list[dict]:
        out = []
        for check_id, measure, status in self.checks:
            f: dict = {"check_id": check_id, "measure": measure, "status": status, "resource": "host"}
            if check_id == "M6-ADMINS" and self.admins is not None:
                from vmaudit.checks.m6_admins import ADMINS_EVIDENCE

                f["evidence"] = {ADMINS_EVIDENCE: list(self.admins)}
            out.append(f)
        return out

    def __getitem__(self, key: str) -> Any:
        if key == "host":
            return {"hostname": self.hostname}
        if key == "findings":
            return self._findings()
        raise KeyError(key)

    def __iter__(self):
        return iter(("host", "findings"))

    def __len__(self) -> int:
        return 2


def slim(view: Any) -> SlimHost:
    """What the fleet checks need of an evaluated host view (its facts and full report may go)."""
    out = SlimHost(view.name, view.zone, view.outcome, SlimReport(view.report) if view.report is not None else None)
    try:
        out._guests = [SlimGuest(g) for g in view.guests()]
    except EvidenceMissing as exc:
        out._guest_error = str(exc)
    out.outcome.facts = None
    return out


def exit_status_of(fleet_findings: list[dict], entries: list[dict], fail_on: str) -> int:
    """CONTRACT.md's exit status over the fleet checks' findings and every host's, the latter from the
    hosts' fleet-report entries (`worst` unwaived failure, unwaived `error` count): their findings are
    not kept in memory."""
    from vmaudit.engine import SEVERITIES, exit_status

    threshold = SEVERITIES.index(fail_on)
    status = exit_status(fleet_findings, fail_on)
    if status == 1 or any(e.get("worst") and SEVERITIES.index(e["worst"]) <= threshold for e in entries):
        return 1
    if status == 3 or any((e.get("summary") or {}).get("error") for e in entries):
        return 3
    return 0


__all__ = ["exit_status_of", "parse_shard", "shard_of", "select_shard", "host_meta", "inventory_from_meta", "SlimHost",
           "SlimGuest", "slim", "META_VARS"]
