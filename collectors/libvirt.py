"""Facts from libvirt, over a read-only connection: capabilities, node info, every defined guest
(running or not) with its XML — a running persistent guest with both definitions, live (`xml`) and
persistent (`xml_inactive`) — state, persistence, autostart, managed-save image and snapshots, storage
pools with their volumes, and networks.

Under `--root` other than / without `--connect` no libvirt is contacted: the guests and networks are
the image's persistent definitions (collectors/libvirt_files.py). On a host without any libvirt the
source is `not_collected` (its checks `skip`)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from vmaudit.facts import unavailable
from vmaudit.schema import Bool, Int, ListOf, Optional, Record, Skippable, Str

from . import Context, collector
from .libvirt_files import offline_libvirt

STATES = {0: "nostate", 1: "running", 2: "blocked", 3: "paused", 4: "shutdown", 5: "shutoff",
          6: "crashed", 7: "pmsuspended"}


def _try(call: Any, *args: Any) -> Any:
    """A libvirt call whose failure is recorded for this item only."""
    try:
        return call(*args)
    except Exception as exc:  # libvirt.libvirtError, or unsupported by the driver
        msg = exc.get_error_message() if hasattr(exc, "get_error_message") else str(exc)
        return unavailable(f"libvirt: {msg}")


def _snapshots(dom: Any) -> Any:
    snaps = _try(dom.listAllSnapshots)
    if isinstance(snaps, dict):
        return snaps
    out = []
    for snap in snaps:
        xml = _try(snap.getXMLDesc)
        if isinstance(xml, dict):
            out.append({"name": snap.getName(), "xml_error": xml["unavailable"]})
            continue
        root = ET.fromstring(xml)
        ctime = root.findtext("creationTime")
        memory = root.find("memory")
        out.append({
            "name": snap.getName(),
            "creation_time": int(ctime) if ctime and ctime.strip().isdigit() else None,
            "state": root.findtext("state"),
            # an internal or external memory image means a rollback restores running RAM too
            "memory": memory is not None and memory.get("snapshot", "no") != "no",
        })
    return out


# listAllDomains filters (libvirt's virConnectListAllDomainsFlags): one call answers a yes/no question
# for every guest at once, where asking each guest would cost one RPC per guest and question.
LIST_FLAGS = {"persistent": 4, "running": 16, "paused": 32, "shutoff": 64, "managed_save": 256,
              "autostart": 1024, "has_snapshot": 4096}
STATE_FLAGS = ("running", "paused", "shutoff")


def _flag_sets(conn: Any) -> tuple[dict, set]:
    """({question: UUIDs answering yes}, UUIDs those answers cover).

    An answer is trusted only for a guest the three state filters saw: a guest defined while the list
    calls ran, in another state (crashed, suspended), or on a driver that refuses a filter, is asked
    directly instead."""
    sets = {}
    for name, flag in LIST_FLAGS.items():
        try:
            sets[name] = {d.UUIDString() for d in conn.listAllDomains(flag)}
        except Exception:  # an old or limited driver: ask each guest instead
            pass
    states = [sets.get(s) for s in STATE_FLAGS]
    seen = set().union(*states) if all(x is not None for x in states) else set()
    return sets, seen


def _domain(dom: Any, sets: dict, seen: set) -> dict:
    uuid = dom.UUIDString()
    known = uuid in seen

    def answer(name: str, ask: Any) -> Any:
        return uuid in sets[name] if known and name in sets else _try(ask)

    state = next((s for s in STATE_FLAGS if uuid in sets[s]), None) if known else None
    record = {
        "name": dom.name(),
        "uuid": uuid,
        "id": dom.ID(),
        "state": state,
        "persistent": answer("persistent", lambda: bool(dom.isPersistent())),
        "autostart": answer("autostart", lambda: bool(dom.autostart())),
        "managed_save": answer("managed_save", lambda: bool(dom.hasManagedSaveImage(0))),
        # flags=0: the live XML for a running guest (its dynamic seclabel included), else the config
        "xml": _try(dom.XMLDesc, 0),
        "snapshots": _snapshots(dom) if answer("has_snapshot", lambda: True) is not False else [],
    }
    if state is None:  # blocked, shutting down, crashed, suspended, or not seen by the filters
        raw = _try(dom.state)
        record["state"] = STATES.get(raw[0], str(raw[0])) if isinstance(raw, list) else "unknown"
        if isinstance(raw, dict):
            record["state_error"] = raw["unavailable"]
    inactive = _persistent_definition(dom, record)
    if inactive is not None:
        record["xml_inactive"] = inactive
    return record


VIR_DOMAIN_XML_INACTIVE = 2
INACTIVE_STATES = ("shutoff", "crashed", "nostate", "unknown")


def _persistent_definition(dom: Any, record: dict) -> Any:
    """An active persistent guest's persistent definition (what runs after its next start; one more
    read-only RPC per running guest), None when `xml` already is the only definition the guest has
    (shut off: the persistent one; transient: the live one)."""
    if record["state"] in INACTIVE_STATES or record["persistent"] is False:
        return None
    if record["persistent"] is not True:  # a transient guest would answer with its live definition
        return unavailable(f"persistence unknown ({record['persistent'].get('unavailable')})")
    return _try(dom.XMLDesc, VIR_DOMAIN_XML_INACTIVE)


def _pools(conn: Any) -> Any:
    pools = _try(conn.listAllStoragePools)
    if isinstance(pools, dict):
        return pools
    out = []
    for pool in pools:
        # every call below is an RPC that fails for a pool undefined since the list (a transient pool
        # of virt-manager or libguestfs): that costs this pool's facts, never the whole libvirt source
        active = _try(pool.isActive)
        entry: dict = {"name": pool.name(), "active": active if isinstance(active, dict) else bool(active)}
        xml = _try(pool.XMLDesc, 0)
        if isinstance(xml, str):
            root = ET.fromstring(xml)
            entry["type"] = root.get("type")
            entry["target"] = root.findtext("target/path")
        if isinstance(active, dict):
            entry["volumes"] = active
        elif entry["active"]:
            vols = _try(pool.listAllVolumes)
            if isinstance(vols, dict):
                entry["volumes"] = vols
            else:
                entry["volumes"] = [_volume(v) for v in vols]
        out.append(entry)
    return out


def _volume(vol: Any) -> dict:
    entry: dict = {"name": vol.name(), "path": _try(vol.path)}
    xml = _try(vol.XMLDesc, 0)
    if isinstance(xml, str):
        root = ET.fromstring(xml)
        entry["format"] = root.find("target/format").get("type") if root.find("target/format") is not None else None
        entry["backing"] = root.findtext("backingStore/path")
    return entry


def _networks(conn: Any) -> Any:
    nets = _try(conn.listAllNetworks)
    if isinstance(nets, dict):
        return nets
    out = []
    for n in nets:
        active = _try(n.isActive)  # an RPC: a network undefined since the list costs only itself
        out.append({"name": n.name(), "active": active if isinstance(active, dict) else bool(active),
                    "xml": _try(n.XMLDesc, 0)})
    return out


def _domains(conn: Any) -> list:
    domains = conn.listAllDomains(0)
    sets, seen = _flag_sets(conn)
    return [_domain(d, sets, seen) for d in domains]


def domain_records(ctx: Context) -> Any:
    """Every guest's record as the `libvirt` source holds it (`xml`, `xml_inactive`, state, ...), read
    once per collection and shared with `guest_paths`; under --root without --connect the image's
    definitions (a marker when they cannot be listed)."""
    if ctx.uri is None:
        return _offline(ctx)["domains"]
    return ctx.once("libvirt.domains", lambda: _domains(ctx.libvirt()))


def _offline(ctx: Context) -> dict:
    return ctx.once("libvirt.offline", lambda: offline_libvirt(ctx))


_SNAPSHOT = Record({"name": Str()}, optional={"creation_time": Optional(Int(min=0)), "state": Optional(Str()),
                                          "memory": Bool(), "xml_error": Str()})
# A guest's name only labels its findings (Guest.name is its str()): a number in a mangled snapshot
# still tells which record it was. Skippable: what an image audited from its files cannot know
# (collectors/libvirt_files.py says not_collected there); in any other snapshot a not_collected at
# these positions is missing evidence.
_DOMAIN = Record({"name": Str() | Int(), "uuid": Str(), "state": Skippable(Str()), "xml": Str()},
                 optional={"id": Int(), "persistent": Bool(), "autostart": Bool(),
                           "managed_save": Skippable(Bool()), "snapshots": Skippable(ListOf(_SNAPSHOT)),
                           "xml_inactive": Str(), "file": Str()})
_VOLUME = Record({"name": Str()}, optional={"path": Optional(Str()), "format": Optional(Str()),
                                            "backing": Optional(Str())})
LIBVIRT_SCHEMA = Record({"domains": ListOf(_DOMAIN)},
                 optional={"uri": Optional(Str()), "definitions_from": Str(),
                           "lib_version": Skippable(Int(min=0)), "hv_version": Skippable(Int(min=0)),
                           "hv_type": Skippable(Str()), "capabilities": Skippable(Str()),
                           "nodeinfo": Skippable(Record(optional={"model": Str(), "memory_mib": Int(min=0),
                                                        "cpus": Int(min=0), "mhz": Int(min=0),
                                                        "numa_nodes": Int(min=0), "sockets": Int(min=0),
                                                        "cores": Int(min=0), "threads": Int(min=0)})),
                           "pools": Skippable(ListOf(Record({"name": Str()},
                                                  optional={"active": Bool(), "type": Optional(Str()),
                                                            "target": Optional(Str()),
                                                            "volumes": ListOf(_VOLUME)}))),
                           "networks": ListOf(Record({"name": Str()}, optional={"active": Skippable(Bool()), "xml": Str(),
                                                                            "autostart": Bool(), "file": Str()}))})


@collector("libvirt", schema=LIBVIRT_SCHEMA)
def collect_libvirt(ctx: Context) -> dict:
    """`{uri, lib_version, hv_version, hv_type, capabilities (XML string), nodeinfo {model, memory_mib, cpus,
    mhz, numa_nodes, sockets, cores, threads}, domains: [...], pools: [...], networks: [...]}`; each domain's
    `xml` is libvirt's XMLDesc(0) (the live definition of an active guest, else the persistent one) and an
    active persistent guest's `xml_inactive` its persistent definition (XMLDesc(VIR_DOMAIN_XML_INACTIVE)).
    Under `--root DIR` without `--connect` (no libvirt contacted): `{uri: null, definitions_from, domains,
    networks}` from DIR/etc/libvirt/qemu/*.xml and networks/*.xml (collectors/libvirt_files.py); state,
    snapshots, managed save, capabilities, node info and pools `not_collected`; a domain's `file` names its
    definition file, its `xml` a marker when libvirt would not load that file.
    """
    if ctx.uri is None:  # --root without --connect: the image's own definitions, no daemon
        return _offline(ctx)
    conn = ctx.libvirt()
    info = _try(conn.getInfo)
    return {
        "uri": conn.getURI(),
        "lib_version": _try(conn.getLibVersion),
        "hv_version": _try(conn.getVersion),
        "hv_type": _try(conn.getType),
        "capabilities": _try(conn.getCapabilities),
        "nodeinfo": ({"model": info[0], "memory_mib": info[1], "cpus": info[2], "mhz": info[3],
                      "numa_nodes": info[4], "sockets": info[5], "cores": info[6], "threads": info[7]}
                     if isinstance(info, list) else info),
        "domains": domain_records(ctx),
        "pools": _pools(conn),
        "networks": _networks(conn),
    }
