"""M1: keep guests with different security needs apart — one security zone per host, and every
guest's network in that zone.

A guest's zone is its `zone` label (libvirt metadata in urn:vmaudit:guest:1, else the inventory); the
host's zone is the policy's [host] zone; networks are mapped to zones by the policy's [zones.networks]
(a libvirt network, bridge or macvtap device name, or "vlan:<id>" -> zone).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from vmaudit.engine import Result, check
from vmaudit.facts import EvidenceMissing, guest_view, lookup, partial

from ._guests import try_labels


def _zones_of_guests(facts: Any) -> tuple[dict, list, dict]:
    """({zone: [guest names]}, [unlabelled guest names], {guest: reason its XML is unreadable})."""
    zones: dict[str, list[str]] = {}
    unlabelled: list[str] = []
    unreadable: dict[str, str] = {}
    for guest in facts.guests():
        labels, reason = try_labels(guest)
        if labels is None:
            unreadable[guest.name] = reason
        elif labels.get("zone"):
            zones.setdefault(labels["zone"], []).append(guest.name)
        else:
            unlabelled.append(guest.name)
    return {z: sorted(g) for z, g in sorted(zones.items())}, sorted(unlabelled), unreadable


@check("M1-ZONE-MIX", severity="critical",
       title="Security zones of the host's guests",
       remediation="Run one host (or cluster) per security zone: move the guests of other zones away, "
                   "and declare the host's zone in the policy ([host] zone).",
       sources="vmaudit metadata <zone> (urn:vmaudit:guest:1) or the inventory; policy [host] zone")
def zone_mix(facts, policy):
    """A host that runs a DMZ guest next to internal or management guests is one VM escape (or one
    hypervisor misconfiguration) away from joining those zones: the hypervisor is then the only wall
    between them. Every defined guest counts, running or not, since a shut-off guest can be started.

    Rule: guests of more than one zone, or a guest whose zone differs from the host's declared zone
    ([host] zone) -> fail. Guests without a zone cannot be placed: while no mix is proven the result is
    warn (see M1-ZONE-UNLABELLED); a guest whose XML could not be read -> error.
    Sources: each guest's vmaudit metadata element <zone> (urn:vmaudit:guest:1), else the inventory's
    zone column; the policy's [host] zone.
    """
    zones, unlabelled, unreadable = _zones_of_guests(facts)
    host_zone = policy.zone
    evidence = {"host_zone": host_zone, "zones": zones, "unlabelled": unlabelled}
    if unreadable:
        evidence["unreadable"] = unreadable
    foreign = sorted(g for z, names in zones.items() if host_zone and z != host_zone for g in names)
    if len(zones) > 1:
        yield Result("fail", f"guests of {len(zones)} zones share this host: {', '.join(zones)}", "host",
                     evidence, expected=f"one zone{f' ({host_zone})' if host_zone else ''}",
                     actual=", ".join(zones))
    elif foreign:
        evidence["foreign_guests"] = foreign
        yield Result("fail", f"guests of zone {next(iter(zones))!r} on a host declared for zone {host_zone!r}",
                     "host", evidence, expected=host_zone, actual=next(iter(zones)))
    elif unreadable:
        yield Result("error", f"the zone of {len(unreadable)} guest(s) is unknown: their XML could not be "
                     f"read ({', '.join(sorted(unreadable))})", "host", evidence)
    elif unlabelled:
        yield Result("warn", f"{len(unlabelled)} guest(s) have no zone, so the zone mix cannot be verified: "
                     f"{', '.join(unlabelled)}", "host", evidence,
                     expected="every guest labelled with one zone", severity="medium")
    elif not zones:
        yield Result("pass", "no guests are defined on this host", "host", evidence)
    else:
        zone = next(iter(zones))
        note = "" if host_zone else " (the policy declares no [host] zone to compare with)"
        yield Result("pass", f"all guests are in zone {zone!r}{note}", "host", evidence,
                     expected=host_zone or "one zone", actual=zone)


@check("M1-ZONE-UNLABELLED", severity="medium", scope="guest", definitions="guest",
       title="Guest's security zone label",
       remediation="Label the guest: virsh metadata <guest> --uri urn:vmaudit:guest:1 --key vmaudit --config "
                   "--set '<guest><zone>…</zone></guest>', or register it with a zone in the inventory.",
       sources="vmaudit metadata <zone> (urn:vmaudit:guest:1) or the inventory")
def zone_unlabelled(guest, facts, policy):
    """A guest without a zone cannot be checked against the one-zone-per-host rule (M1): nobody has
    decided which security needs it has, so nobody can tell whether it may share this host.

    Rule: per guest, no zone from the libvirt metadata nor the inventory -> warn.
    Sources: vmaudit metadata element <zone> (urn:vmaudit:guest:1), else the inventory.
    Definitions: the guest's labels (persistent definition, then live, then inventory).
    """
    labels = guest.labels
    zone = labels.get("zone")
    if zone:
        yield Result("pass", f"guest is labelled zone {zone!r} ({guest.label_source('zone')})", guest.resource,
                     {"zone": zone, "source": guest.label_source("zone")}, actual=zone)
    else:
        yield Result("warn", "guest has no zone in its metadata nor in the inventory: M1 cannot be verified "
                     "for it", guest.resource,
                     {"zone": None, "source": None, "inventory": policy.inventory is not None},
                     expected="a zone label", actual="none")


# --- networks --------------------------------------------------------------------------------------

def _vlan_tags(node: ET.Element | None) -> list[str]:
    if node is None:
        return []
    return [t.get("id") for t in node.findall("tag") if t.get("id")]


class _Networks:
    """libvirt networks by name, with what a guest interface on them really attaches to."""

    def __init__(self, networks: Any, missing: Exception | None):
        self.error: str | None = str(missing) if missing else None
        self.by_name: dict[str, ET.Element | str] = {}
        for _i, net, gap in partial(networks or []):
            if gap is not None:
                self.by_name[f"?{_i}"] = str(gap)
                continue
            xml, gap = lookup(net, "xml")
            if xml is None:
                self.by_name[net["name"]] = str(gap) if gap else "no XML"
                continue
            try:
                self.by_name[net["name"]] = ET.fromstring(xml)
            except ET.ParseError as exc:
                self.by_name[net["name"]] = f"network XML does not parse: {exc}"

    def resolve(self, name: str, portgroup: str | None) -> tuple[list[str], list[str], str | None]:
        """(names the network stands for on the host, its VLAN tags for this portgroup, error)."""
        if self.error:
            return [], [], f"libvirt networks unavailable: {self.error}"
        net = self.by_name.get(name)
        if net is None:
            return [], [], None  # an undefined network: only its name can be mapped
        if isinstance(net, str):
            return [], [], f"network {name}: {net}"
        keys = []
        bridge = net.find("bridge")
        if bridge is not None and bridge.get("name"):
            # forward mode='bridge' to a host bridge, or the network's own bridge (NAT/route/isolated):
            # either way the guest's tap sits on that bridge.
            keys.append(bridge.get("name"))
        fwd = net.find("forward")
        if fwd is not None:
            for iface in fwd.findall("interface"):  # macvtap / passthrough pools of host devices
                if iface.get("dev"):
                    keys.append(iface.get("dev"))
            for pf in fwd.findall("pf"):  # SR-IOV: the VFs of this physical function
                if pf.get("dev"):
                    keys.append(pf.get("dev"))
            if fwd.get("dev"):
                keys.append(fwd.get("dev"))
        # compared as strings (no XPath built from a tenant-visible name)
        groups = net.findall("portgroup")
        if portgroup:
            pg = next((g for g in groups if g.get("name") == portgroup), None)
        else:
            pg = next((g for g in groups if g.get("default") == "yes"), None)
        tags = _vlan_tags(pg.find("vlan")) if pg is not None else []
        if not tags:
            tags = _vlan_tags(net.find("vlan"))
        return keys, tags, None


@guest_view
def _nic_view(tree: ET.Element) -> tuple[tuple, ...]:
    """(type, source network, portgroup, bridge and dev, its own VLAN tags, MAC address) of each
    <interface> of the first <devices> element (what guest.findall("devices/interface") reads). A view:
    M1-NET-ZONE runs after the guests' trees are dropped, and would parse every definition again."""
    devices = tree.find("devices")
    out = []
    for iface in devices.findall("interface") if devices is not None else ():
        src = iface.find("source")
        src = src if src is not None else ET.Element("source")
        mac = iface.find("mac")
        out.append((iface.get("type", ""), src.get("network"), src.get("portgroup"), src.get("bridge"),
                    src.get("dev"), tuple(_vlan_tags(iface.find("vlan"))),
                    mac.get("address") if mac is not None else None))
    return tuple(out)


def _interfaces(guest: Any, nets: _Networks, zone_map: dict) -> list[dict]:
    """Every interface of the guest with what it attaches to and the zone(s) the policy gives that."""
    out = []
    for i, (itype, network, portgroup, bridge, dev, own_tags, mac) in enumerate(guest.view(_nic_view)):
        names: list[str] = []
        tags: list[str] = []
        error = None
        if itype == "network" and network:
            names.append(network)
            more, tags, error = nets.resolve(network, portgroup)
            names += [n for n in more if n not in names]
        elif itype == "bridge" and bridge:
            names.append(bridge)
        elif itype == "direct" and dev:
            names.append(dev)
        if own_tags:  # the interface's own <vlan> overrides the portgroup's and the network's
            tags = list(own_tags)
        entry: dict = {"index": i, "type": itype, "attached_to": names, "vlans": tags, "mac": mac}
        # A mapped VLAN is the real layer-2 segment (the bridge may be a trunk); else the names.
        vlan_zones = sorted({zone_map[f"vlan:{t}"] for t in tags if f"vlan:{t}" in zone_map})
        name_zones = sorted({zone_map[n] for n in names if n in zone_map})
        entry["zones"] = vlan_zones or name_zones
        unmapped_tags = [t for t in tags if f"vlan:{t}" not in zone_map]
        if unmapped_tags:  # the guest's real segment (or part of its trunk) has no zone in the policy
            entry["unmapped_vlans"] = unmapped_tags
        if error:
            entry["error"] = error
        out.append(entry)
    return out


def _interfaces_of_definitions(guest: Any, nets: _Networks, zone_map: dict) -> list[dict]:
    """The interfaces of every definition of the guest: what it is attached to now and after its next
    start. An interface only one of two definitions has says which ("when")."""
    defs = guest.definitions()
    if len(defs) == 1:
        return _interfaces(next(iter(defs.values())), nets, zone_map)
    now = _interfaces(defs["live"], nets, zone_map)
    later = _interfaces(defs["persistent"], nets, zone_map)

    def key(entry: dict) -> tuple:
        return tuple(sorted((k, repr(v)) for k, v in entry.items() if k not in ("index", "alias")))

    later_keys = {key(e) for e in later}
    now_keys = {key(e) for e in now}
    out = [dict(e, when="now") if key(e) not in later_keys else e for e in now]
    out += [dict(e, when="after the next start") for e in later if key(e) not in now_keys]
    return out


@check("M1-NET-ZONE", severity="high",
       title="Zone of the guest's networks",
       remediation="Give each zone its own NIC/bridge (or VLAN) per host, attach each guest only to its "
                   "zone's network, and map every network to its zone in the policy ([zones.networks]).",
       sources="/domain/devices/interface/source/@network|@bridge|@dev, vlan/tag/@id, portgroup; "
               "libvirt network XML; policy [zones.networks]")
def net_zone(facts, policy):
    """The zone split of M1 is only real if the networks follow it: a DMZ guest with a leg in the
    internal VLAN bridges the two zones, whatever the host's placement. And a host whose guests reach
    networks of several zones has its (shared) kernel network stack in all of them.

    Rule: per guest, an interface on a network (libvirt network, host bridge, macvtap device or VLAN)
    that the policy maps to another zone than the guest's -> fail; an interface on an unmapped network
    or carrying a VLAN the policy does not map, or a guest without a zone whose networks are mapped
    -> warn. For the host: the guests' networks
    span more than one zone, or a zone other than the host's declared one -> fail. No [zones.networks]
    in the policy -> one warn for the host (nothing to compare with). No guest defined -> pass.
    A libvirt network is resolved to what it attaches to: its bridge (forward mode='bridge' to a host
    bridge is that bridge), its forward devices, and its VLAN tags (the interface's own <vlan> over the
    portgroup's over the network's). A mapped VLAN decides over the bridge it rides on.
    Sources: domain XML interfaces; libvirt network XML (portgroups, vlan, bridge, forward); policy.
    A running guest's interfaces are those of both its definitions (an interface only one has says
    "when": "now" or "after the next start").
    """
    zone_map = policy.get("zones", "networks") or {}
    guests = facts.guests()
    if not guests:
        yield Result("pass", "no guests are defined on this host: no network to place in a zone", "host",
                     {"guests": 0, "zones.networks": zone_map})
        return
    if not zone_map:
        yield Result("warn", "the policy maps no networks to zones ([zones.networks]): guests' networks "
                     "cannot be checked against their zones", "host", {"zones.networks": {}},
                     expected="[zones.networks] in the policy")
        return
    nets = _Networks(*lookup(facts.libvirt, "networks", []))
    spanned: dict[str, set[str]] = {}
    errors: dict[str, str] = {}
    for guest in guests:
        try:
            labels = guest.labels
            ifaces = _interfaces_of_definitions(guest, nets, zone_map)
        except EvidenceMissing as exc:
            errors[guest.name] = str(exc)
            yield Result("error", f"evidence missing: {exc}", guest.resource, {"reason": str(exc)})
            continue
        zone = labels.get("zone")
        for entry in ifaces:
            for z in entry["zones"]:
                spanned.setdefault(z, set()).add(guest.name)
        evidence = {"zone": zone, "interfaces": ifaces}
        wrong = [e for e in ifaces if zone and any(z != zone for z in e["zones"])]
        unmapped = [e for e in ifaces if not e["zones"] or e.get("unmapped_vlans")]
        broken = [e for e in ifaces if e.get("error")]
        if wrong:
            where = "; ".join(f"{'/'.join(e['attached_to'] + ['vlan:' + t for t in e['vlans']]) or e['type']}"
                              f" -> {', '.join(e['zones'])}" for e in wrong)
            yield Result("fail", f"guest of zone {zone!r} is attached to networks of another zone: {where}",
                         guest.resource, evidence, expected=zone,
                         actual=", ".join(sorted({z for e in wrong for z in e["zones"]})))
        elif broken:  # a portgroup's VLAN or the network's bridge unknown: its zone is not proven
            errors[guest.name] = "; ".join(e["error"] for e in broken)
            yield Result("error", "evidence missing: " + "; ".join(e["error"] for e in broken),
                         guest.resource, evidence)
        elif not ifaces:
            yield Result("pass", "guest has no network interface", guest.resource, evidence)
        elif unmapped:
            what = ", ".join("/".join(e["attached_to"] + ["vlan:" + t for t in e["vlans"]]) or f"type {e['type']}"
                             for e in unmapped)
            tags = sorted({t for e in unmapped for t in e.get("unmapped_vlans", [])})
            if tags:
                what += f" (VLAN {', '.join(tags)} not mapped)"
            yield Result("warn", f"the policy gives no zone for the network(s) of this guest: {what}",
                         guest.resource, evidence, expected="every network mapped in [zones.networks]")
        elif zone is None:
            found = sorted({z for e in ifaces for z in e["zones"]})
            yield Result("warn", f"guest has no zone; its networks are in zone(s) {', '.join(found)}",
                         guest.resource, evidence, expected="a zone label", actual=", ".join(found))
        else:
            yield Result("pass", f"every network of the guest is in its zone {zone!r}", guest.resource,
                         evidence, expected=zone, actual=zone)

    host_zone = policy.zone
    span = {z: sorted(g) for z, g in sorted(spanned.items())}
    evidence = {"host_zone": host_zone, "network_zones": span}
    if errors:
        evidence["unreadable"] = errors
    if len(span) > 1:
        yield Result("fail", f"the guests' networks span {len(span)} zones: {', '.join(span)}", "host",
                     evidence, expected="one zone", actual=", ".join(span))
    elif host_zone and span and host_zone not in span:
        yield Result("fail", f"the guests' networks are in zone {next(iter(span))!r}, the host is declared "
                     f"for {host_zone!r}", "host", evidence, expected=host_zone, actual=next(iter(span)))
    elif errors:
        yield Result("error", f"the networks of {len(errors)} guest(s) could not be resolved "
                     f"({', '.join(sorted(errors))}): the host may span another zone", "host", evidence)
    else:
        zones = ", ".join(span) or "none mapped"
        yield Result("pass", f"the guests' networks are in one zone ({zones})", "host", evidence,
                     expected=host_zone or "one zone", actual=zones)
