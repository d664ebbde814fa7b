"""Fleets for the plan tests, written as `vmaudit collect` writes them: fleet.json (vmaudit-fleet/1, host
entries made by vmaudit.fleet.evaluate.host_entry, peers by peer_map) and facts/<host>.json.

With `collect=True` (the default) each host's snapshot comes from the real collector over libvirt's
test driver (a node XML with the host's RAM, CPUs and domains); autostart, which the test driver cannot
set, is then written into the collected domain record. With `collect=False` the snapshot is written
in the same shape directly (fast, for the property tests' many fleets)."""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from vmaudit.audit import collect_facts
from vmaudit.fleet.collect import Outcome
from vmaudit.fleet.evaluate import HostView, declared_zone, fleet_report, host_entry, peer_map
from vmaudit.fleet.hosts import FleetHost
from vmaudit.policy import Policy, parse_policy

# capacity = RAM exactly, so the fixtures' numbers read plainly; tests of the reserve use their own policy
NO_RESERVE = "[limits]\nhost_memory_reserve = 0\nhost_memory_reserve_min = 0\n"
_uuids = itertools.count(1)


@dataclass
class G:
    name: str
    mem: int = 1024            # MiB
    vcpus: int = 1
    zone: str | None = None
    redundancy: str | None = None
    running: bool = True
    autostart: bool = False
    uuid: str = ""

    def __post_init__(self):
        if not self.uuid:
            self.uuid = f"00000000-0000-4000-8000-{next(_uuids):012d}"


@dataclass
class H:
    name: str
    ram: int = 8192            # MiB
    cpus: int = 4
    zone: str | None = None
    group: str | None = None
    peers: tuple = ()
    guests: list = field(default_factory=list)
    unreached: str | None = None   # the reason it could not be audited


def node_xml(h: H) -> str:
    doms = []
    for g in h.guests:
        labels = "".join(f"<vm:{k}>{escape(v)}</vm:{k}>" for k, v in (("zone", g.zone), ("redundancy", g.redundancy)) if v)
        meta = f"<metadata><vm:guest xmlns:vm='urn:vmaudit:guest:1'>{labels}</vm:guest></metadata>" if labels else ""
        state = "" if g.running else "<test:runstate>5</test:runstate>"
        doms.append(f"<domain type='kvm'><name>{escape(g.name)}</name><uuid>{g.uuid}</uuid>{meta}"
                    f"<memory unit='MiB'>{g.mem}</memory><vcpu>{g.vcpus}</vcpu>"
                    f"<os><type arch='x86_64'>hvm</type></os>{state}</domain>")
    return (f"<?xml version='1.0'?><node xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>"
            f"<cpu><mhz>2400</mhz><model>x86_64</model><active>{h.cpus}</active><nodes>1</nodes><sockets>1</sockets>"
            f"<cores>{h.cpus}</cores><threads>1</threads></cpu><memory>{h.ram * 1024}</memory>{''.join(doms)}</node>")


def domain_xml(g: G) -> str:
    labels = "".join(f"<vm:{k}>{escape(v)}</vm:{k}>" for k, v in (("zone", g.zone), ("redundancy", g.redundancy)) if v)
    return (f"<domain type='kvm'><name>{escape(g.name)}</name><uuid>{g.uuid}</uuid>"
            f"<metadata><vm:guest xmlns:vm='urn:vmaudit:guest:1'>{labels}</vm:guest></metadata>"
            f"<memory unit='KiB'>{g.mem * 1024}</memory><currentMemory unit='KiB'>{g.mem * 1024}</currentMemory>"
            f"<vcpu placement='static'>{g.vcpus}</vcpu><os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>"
            f"<devices/></domain>")


def synth_facts(h: H) -> dict:
    """A snapshot in the collector's shape (libvirt nodeinfo and domains; /proc not collected)."""
    domains = [{"name": g.name, "uuid": g.uuid, "id": i if g.running else -1,
                "state": "running" if g.running else "shutoff", "persistent": True, "autostart": g.autostart,
                "managed_save": False, "xml": domain_xml(g), "snapshots": []} for i, g in enumerate(h.guests, 1)]
    for d, g in zip(domains, h.guests):
        if g.running:  # a running guest's persistent definition, as the collector reads it
            d["xml_inactive"] = d["xml"]
    from vmaudit.facts import SCHEMA

    return {"schema": SCHEMA, "tool": {"name": "vmaudit", "version": "test"},
            "collected_at": "2026-12-05T07:00:00Z",
            "host": {"hostname": h.name, "root": "/", "live": False, "libvirt_uri": "test:///"},
            "sources": {"libvirt": {"uri": "test:///", "nodeinfo": {"model": "x86_64", "memory_mib": h.ram,
                                                                   "cpus": h.cpus, "mhz": 2400, "numa_nodes": 1,
                                                                   "sockets": 1, "cores": h.cpus, "threads": 1},
                                    "domains": domains, "pools": [], "networks": []},
                        "meminfo": {"unavailable": "not collected in this fixture"},
                        "cpu": {"unavailable": "not collected in this fixture"}},
            "timings": {}}


def collected_facts(h: H, work: Path) -> dict:
    (work / "root" / "etc").mkdir(parents=True, exist_ok=True)
    xml = work / f"{h.name}.xml"
    xml.write_text(node_xml(h))
    facts = collect_facts(root=str(work / "root"), uri=f"test://{xml}")
    by_name = {g.name: g for g in h.guests}
    for d in facts["sources"]["libvirt"]["domains"]:
        d["autostart"] = by_name[d["name"]].autostart
    return facts


def write_fleet(out: Path, hosts: list[H], policy: Policy | None = None, collect: bool = True,
                policy_text: str | None = None) -> Path:
    """The collect output directory for `hosts`; also writes policy.toml (default NO_RESERVE) there."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "facts").mkdir(exist_ok=True)
    text = NO_RESERVE if policy_text is None else policy_text
    (out / "policy.toml").write_text(text)
    policy = policy or parse_policy(text, str(out / "policy.toml"))
    fhosts = []
    for h in hosts:
        vars_ = {}
        if h.zone:
            vars_["vmaudit_zone"] = h.zone
        if h.group:
            vars_["vmaudit_migration_group"] = h.group
        if h.peers:
            vars_["vmaudit_migration_peers"] = list(h.peers)
        fhosts.append(FleetHost(h.name, vars=vars_))
    peers = peer_map(fhosts, policy)
    entries = []
    for h, fh in zip(hosts, fhosts):
        paths = {"report": None, "html": None, "facts": None}
        if h.unreached:
            outcome = Outcome(fh, reason=h.unreached, stage="connect")
        else:
            facts = collected_facts(h, out / ".work") if collect else synth_facts(h)
            (out / "facts" / f"{h.name}.json").write_text(json.dumps(facts, sort_keys=True))
            paths["facts"] = f"facts/{h.name}.json"
            outcome = Outcome(fh, facts=None, reached=True, mode="installed")
        view = HostView(fh.name, declared_zone(fh, policy), outcome)
        entries.append(host_entry(view, fh, peers[fh.name], paths))
    report = fleet_report(entries, [], policy, started_at="2026-12-05T07:00:00Z", interrupted=False,
                          inventory_source="fixture")
    (out / "fleet.json").write_text(json.dumps(report, indent=1))
    if (out / ".work").exists():
        for f in sorted((out / ".work").rglob("*"), reverse=True):
            f.rmdir() if f.is_dir() else f.unlink()
        os.rmdir(out / ".work")
    return out
