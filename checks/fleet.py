"""Fleet checks (F-*): what only the collection of many hosts can show.

They run in `vmaudit collect` after every host's own report (vmaudit.fleet.evaluate), as
`func(fleet, policy)` over a `vmaudit.fleet.evaluate.FleetView`: `fleet.hosts` (each with `name`,
`zone` (declared), `reached`, `reason`, `report` (the host's JSON report), `guests()`), `fleet.peers`
(inventory name -> migration peers) and `fleet.inventory` (the central guest registry or None).
The engine's per-host evaluate() skips scope "fleet". A host that could not be audited is evidence
missing: checks that need it say `error`, never `pass`.

Resources: `host:<name>`, `group:<redundancy group>`, `peers:<a>,<b>`, `uuid:<uuid>`,
`guest:<registered name or uuid>`, and `fleet` for a verdict over the whole fleet.
"""

from __future__ import annotations

from vmaudit.engine import Result, check
from vmaudit.facts import EvidenceMissing

from .m6_admins import admins_of

PARITY_MEASURES = ("M2", "M3", "M6", "M7")
_WORST = ("fail", "error", "warn", "pass", "skip")


@check("F-ZONE-HOSTS", severity="critical", scope="fleet",
       title="Zones served by each host",
       remediation="Keep one security zone per host (or cluster): move the guests of other zones to hosts "
                   "of their zone and declare each host's zone (vmaudit_zone or [host] zone).",
       sources="guest zone labels (vmaudit metadata, else the inventory); host zone from vmaudit_zone or "
               "the central policy")
def zone_hosts(fleet, policy):
    """Across the fleet, every hypervisor must serve exactly one security zone (M1): a DMZ guest next
    to an internal one shares a kernel, a VMM and often memory pages with it, so a guest escape crosses
    zones. This check shows the zone map of the whole fleet in one place.

    Rule: per host, guests of more than one zone -> fail; guests of one zone that differs from the
    host's declared zone -> fail; no declared zone -> warn (cannot be verified); no labelled guest
    at all while there are guests -> warn; otherwise pass. A host not audited -> error.
    Sources: guest zone labels (vmaudit metadata, else the central inventory), the host's zone
    (inventory variable vmaudit_zone, else the central policy's [host] zone).
    """
    for host in fleet.hosts:
        try:
            guests = host.guests()
        except EvidenceMissing as exc:
            yield Result("error", f"evidence missing: {exc}", host.resource, {"reason": str(exc)})
            continue
        zones: dict[str, list[str]] = {}
        unlabelled = []
        for g in guests:
            zone = g.labels.get("zone")
            if zone:
                zones.setdefault(zone, []).append(g.name)
            else:
                unlabelled.append(g.name)
        evidence = {"declared_zone": host.zone, "zones": {z: sorted(n) for z, n in sorted(zones.items())},
                    "unlabelled": sorted(unlabelled)}
        served = ", ".join(sorted(zones)) or "none"
        if len(zones) > 1:
            yield Result("fail", f"host {host.name} serves guests of {len(zones)} zones: {served}",
                         host.resource, evidence, expected=f"one zone ({host.zone or 'declared'})", actual=served)
        elif zones and host.zone and set(zones) != {host.zone}:
            yield Result("fail", f"host {host.name} is declared zone {host.zone} but serves guests of zone "
                         f"{served}", host.resource, evidence, expected=host.zone, actual=served)
        elif not host.zone:
            yield Result("warn", f"host {host.name} declares no zone (set vmaudit_zone or [host] zone); "
                         f"its guests' zones: {served}", host.resource, evidence, expected="a declared zone",
                         actual="none")
        elif not zones and unlabelled:
            yield Result("warn", f"none of the {len(unlabelled)} guests of host {host.name} has a zone label: "
                         f"the zone cannot be verified", host.resource, evidence)
        else:
            msg = (f"host {host.name} serves only zone {host.zone}" if zones
                   else f"host {host.name} (zone {host.zone}) has no guests")
            if unlabelled:
                msg += f" ({len(unlabelled)} guests without a zone label, see M1-ZONE-UNLABELLED)"
            yield Result("pass", msg, host.resource, evidence, expected=host.zone, actual=served)


def _unknown_hosts(fleet) -> list[str]:
    """Hosts whose guests are unknown (not audited, or no guest list)."""
    out = []
    for h in fleet.hosts:
        try:
            h.guests()
        except EvidenceMissing:
            out.append(h.name)
    return out


@check("F-REDUNDANCY", severity="high", scope="fleet",
       title="Spread of each redundancy group over hosts",
       remediation="Place the members of a redundancy group on different hosts (anti-affinity) so that "
                   "one host failing does not take the whole service down.",
       sources="guest redundancy labels (vmaudit metadata <redundancy>, else the inventory)")
def redundancy(fleet, policy):
    """A redundant pair (or cluster) exists so that one failure does not stop the service. If all its
    members run on one hypervisor, that host is a single point of failure again (M4), and a single
    compromise of that VMM reaches every replica.

    Rule: per redundancy group over all audited hosts: members on two or more hosts -> pass; all
    members on one host -> fail, unless some hosts could not be audited (then error: members may sit
    there); a group with a single guest -> warn (nothing redundant about it).
    Sources: the redundancy label of every guest (metadata, else the central inventory).
    """
    groups: dict[str, list[tuple[str, str]]] = {}
    for host in fleet.hosts:
        try:
            guests = host.guests()
        except EvidenceMissing:
            continue
        for g in guests:
            group = g.labels.get("redundancy")
            if group:
                groups.setdefault(group, []).append((host.name, g.name))
    unknown = _unknown_hosts(fleet)
    if not groups:
        if unknown:
            yield Result("error", f"no redundancy group found on the audited hosts; hosts not audited: "
                         f"{', '.join(unknown)}", "fleet", {"hosts_not_audited": unknown})
        else:
            yield Result("skip", "no guest carries a redundancy label", "fleet", {"groups": {}})
        return
    for group, members in sorted(groups.items()):
        hosts = sorted({h for h, _ in members})
        evidence = {"members": [{"host": h, "guest": g} for h, g in sorted(members)], "hosts": hosts}
        resource = f"group:{group}"
        if len(members) == 1:
            yield Result("warn", f"redundancy group {group} has a single guest ({members[0][1]} on "
                         f"{members[0][0]})", resource, evidence)
        elif len(hosts) > 1:
            yield Result("pass", f"redundancy group {group} is spread over {len(hosts)} hosts: "
                         f"{', '.join(hosts)}", resource, evidence, expected="2 or more hosts", actual=str(len(hosts)))
        elif unknown:
            evidence["hosts_not_audited"] = unknown
            yield Result("error", f"all {len(members)} audited guests of redundancy group {group} are on "
                         f"{hosts[0]}, but hosts {', '.join(unknown)} could not be audited", resource, evidence)
        else:
            yield Result("fail", f"all {len(members)} guests of redundancy group {group} are on host "
                         f"{hosts[0]}: {', '.join(sorted(g for _, g in members))}", resource, evidence,
                         expected="2 or more hosts", actual="1")


def _worst_by_check(report: dict) -> dict[str, str]:
    """check ID -> worst status over the host's non-guest findings of the parity measures."""
    out: dict[str, str] = {}
    for f in report["findings"]:
        if f["measure"] not in PARITY_MEASURES or f["resource"].startswith("guest:"):
            continue
        cur = out.get(f["check_id"])
        if cur is None or _WORST.index(f["status"]) < _WORST.index(cur):
            out[f["check_id"]] = f["status"]
    return out




@check("F-MIGRATION-PARITY", severity="high", scope="fleet",
       title="Parity of migration peers (zone, administrators, hardening)",
       remediation="Make hosts that migrate guests to each other equal: the same zone, the same "
                   "administrators, the same M2/M3/M6/M7 results; or stop them being peers.",
       sources="migration peers (vmaudit_migration_group / vmaudit_migration_peers, or [host] "
               "migration_peers); each peer's zone and host report")
def migration_parity(fleet, policy):
    """A guest may only move between hosts of the same administrators and the same security level (M7):
    a migration to a weaker or differently-administered host hands the guest's memory to that host.
    Peers must therefore be equals: same zone, same administrators, and the same results in the
    VMM (M2), hardening (M3), administration (M6) and mobility (M7) checks.

    Rule: per pair of migration peers: any difference -> fail, naming each; a peer not audited ->
    error; no peers declared anywhere -> skip.
    Sources: the peer relation from the inventory or policy; the peers' declared zones; the
    administrators in M6-ADMINS evidence; the worst status per M2/M3/M6/M7 check over host-level
    (non-guest) findings of each peer's report.
    """
    pairs = fleet.peer_pairs()
    if not pairs:
        yield Result("skip", "no migration peers declared (vmaudit_migration_group, vmaudit_migration_peers "
                     "or [host] migration_peers)", "fleet", {})
        return
    for a_name, b_name in pairs:
        a, b = fleet.host(a_name), fleet.host(b_name)
        resource = f"peers:{a_name},{b_name}"
        missing = [h.name for h in (a, b) if h is None or h.report is None]
        if missing:
            reasons = {h.name: h.reason for h in (a, b) if h is not None and h.report is None}
            yield Result("error", f"cannot compare migration peers {a_name} and {b_name}: "
                         f"{', '.join(missing)} not audited", resource, {"not_audited": reasons})
            continue
        diffs: list[str] = []
        evidence: dict = {"zones": {a.name: a.zone, b.name: b.zone}}
        if a.zone != b.zone:
            diffs.append(f"zone: {a.name} {a.zone or 'undeclared'}, {b.name} {b.zone or 'undeclared'}")
        admins_a, admins_b = admins_of(a.report), admins_of(b.report)
        if admins_a is not None or admins_b is not None:
            evidence["admins"] = {a.name: admins_a, b.name: admins_b}
            if admins_a != admins_b:
                diffs.append(f"administrators: {a.name} {', '.join(admins_a or []) or 'unknown'}; "
                             f"{b.name} {', '.join(admins_b or []) or 'unknown'}")
        wa, wb = _worst_by_check(a.report), _worst_by_check(b.report)
        differing = {}
        for cid in sorted(set(wa) | set(wb)):
            sa, sb = wa.get(cid, "absent"), wb.get(cid, "absent")
            if sa != sb:
                differing[cid] = {a.name: sa, b.name: sb}
                diffs.append(f"{cid}: {a.name} {sa}, {b.name} {sb}")
        evidence["checks_differing"] = differing
        evidence["checks_compared"] = len(set(wa) | set(wb))
        if diffs:
            yield Result("fail", f"migration peers {a.name} and {b.name} differ: {'; '.join(diffs)}",
                         resource, evidence, expected="equal peers", actual=f"{len(diffs)} differences")
        else:
            yield Result("pass", f"migration peers {a.name} and {b.name} are equal in zone, administrators "
                         f"and {evidence['checks_compared']} M2/M3/M6/M7 checks", resource, evidence)


@check("F-DUPLICATE-GUEST", severity="high", scope="fleet",
       title="Uniqueness of guest UUIDs across hosts",
       remediation="Undefine the stale copy (often left behind by a migration without --undefinesource); "
                   "two definitions of one guest can both be started and corrupt its disks.",
       sources="libvirt domain UUIDs of every audited host")
def duplicate_guest(fleet, policy):
    """A guest defined on two hypervisors can be started twice, writing to the same disks from two
    places, and leaves a forgotten, unpatched copy behind (M8). The usual cause is a live migration
    that kept the source definition.

    Rule: a UUID defined on two or more hosts -> fail (one finding per UUID); none -> pass when every
    host was audited, else error (a duplicate may sit on a host that could not be audited).
    Sources: the UUID, name and state of every defined guest of every host.
    """
    seen: dict[str, list[dict]] = {}
    for host in fleet.hosts:
        try:
            guests = host.guests()
        except EvidenceMissing:
            continue
        for g in guests:
            if g.uuid:
                seen.setdefault(g.uuid.lower(), []).append({"host": host.name, "guest": g.name, "state": g.state})
    dups = {u: where for u, where in seen.items() if len({w["host"] for w in where}) > 1}
    for uuid, where in sorted(dups.items()):
        places = ", ".join(f"{w['guest']} on {w['host']} ({w['state']})" for w in where)
        yield Result("fail", f"guest UUID {uuid} is defined on {len(where)} hosts: {places}", f"uuid:{uuid}",
                     {"uuid": uuid, "defined_on": where}, expected="1 host", actual=f"{len(where)} hosts")
    if dups:
        return
    unknown = _unknown_hosts(fleet)
    evidence = {"guests": len(seen), "hosts_audited": len(fleet.hosts) - len(unknown)}
    if unknown:
        evidence["hosts_not_audited"] = unknown
        yield Result("error", f"no duplicate among {len(seen)} guests of the audited hosts, but "
                     f"{', '.join(unknown)} could not be audited", "fleet", evidence)
    else:
        yield Result("pass", f"each of the {len(seen)} guest UUIDs is defined on one host only", "fleet", evidence)


@check("F-INVENTORY-MISSING", severity="medium", scope="fleet",
       title="Registered guests found in the fleet",
       remediation="Find the guest (a host missing from the collection inventory?) or retire its "
                   "registration; a registry that lists ghosts hides the guests that are really missing.",
       sources="the central inventory ([inventory] path) vs the guest UUIDs of every audited host")
def inventory_missing(fleet, policy):
    """The central registry (M8) is only useful if it matches reality. A registered guest that no
    hypervisor defines is either on a host outside the audit (an unknown hypervisor) or was removed
    without being deregistered.

    Rule: per registered guest not defined on any audited host -> warn; error instead when the host
    it is registered on (or, without one, any host) could not be audited; all found -> pass; no
    inventory configured -> skip.
    Sources: the inventory's uuid and host columns; the guest UUIDs of every audited host.
    """
    inventory = fleet.inventory
    if inventory is None:
        yield Result("skip", "no central inventory configured ([inventory] path in the policy)", "fleet", {})
        return
    found: dict[str, str] = {}
    for host in fleet.hosts:
        try:
            guests = host.guests()
        except EvidenceMissing:
            continue
        for g in guests:
            found.setdefault(g.uuid.lower(), host.name)
    unknown = set(_unknown_hosts(fleet))
    names = {h.name for h in fleet.hosts}
    hostnames = {((h.report or {}).get("host") or {}).get("hostname"): h.name for h in fleet.hosts if h.report}
    missing = 0
    for entry in inventory.entries:
        uuid = entry["uuid"].lower()
        if uuid in found:
            continue
        missing += 1
        label = entry.get("name") or uuid
        registered = entry.get("host") or ""
        host = registered if registered in names else hostnames.get(registered)
        evidence = {"uuid": entry["uuid"], "name": entry.get("name"), "registered_host": registered or None}
        if host in unknown or (not registered and unknown):
            where = f"registered on {registered}, which" if host else f"hosts {', '.join(sorted(unknown))}"
            yield Result("error", f"registered guest {label} not found; {where} could not be audited",
                         f"guest:{label}", evidence | {"hosts_not_audited": sorted(unknown)})
        else:
            on = f" (registered on {registered})" if registered else ""
            if registered and not host:
                on = f" (registered on {registered}, which is not in this collection)"
            yield Result("warn", f"registered guest {label}{on} is defined on none of the "
                         f"{len(fleet.hosts) - len(unknown)} audited hosts", f"guest:{label}", evidence,
                         expected="defined on a host", actual="found nowhere")
    if not missing:
        yield Result("pass", f"all {len(inventory.entries)} registered guests were found", "fleet",
                     {"registered": len(inventory.entries), "source": inventory.source})


@check("F-HOST-UNREACHED", severity="high", scope="fleet",
       title="Reachability of the inventory's hosts",
       remediation="Fix what the reason names: the host being down, SSH access (key, user, known_hosts), "
                   "a hanging command, or vmaudit/python3 missing on the host.",
       sources="the outcome of the SSH collection of every inventory host")
def host_unreached(fleet, policy):
    """A host that could not be audited is not a host that passed: its guests, zones and hardening are
    unknown, and every fleet verdict that needs it says so.

    Rule: per inventory host: not audited -> error, with the reason (down, refused host key,
    authentication, command timeout, bad answer, interrupted); audited -> pass.
    Sources: the collection itself (SSH connection, host-key verification, remote command).
    """
    for host in fleet.hosts:
        out = host.outcome
        evidence = {"address": out.host.address, "port": out.host.port, "seconds": out.seconds}
        if host.reached:
            yield Result("pass", f"host {host.name} was audited ({out.mode})", host.resource,
                         evidence | {"mode": out.mode})
        else:
            yield Result("error", f"host {host.name} could not be audited: {out.reason}", host.resource,
                         evidence | {"reason": out.reason, "stage": out.stage})


def _is_address(name: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(name.strip("[]"))
        return True
    except ValueError:
        return False


def _same_host(reported: str, names: list[str]) -> bool:
    """A reported host name matches an inventory name or address: equal ignoring case and a trailing
    dot, or equal in the first label when only one side is fully qualified (hv01 vs hv01.example.org)."""
    r = reported.lower().rstrip(".")
    for n in names:
        n = n.lower().rstrip(".")
        if r == n or ("." in r) != ("." in n) and r.split(".")[0] == n.split(".")[0]:
            return True
    return False


@check("F-HOST-IDENTITY", severity="high", scope="fleet",
       title="A host answered with another host name than the inventory's",
       remediation="Correct the inventory (ansible_host, DNS, ~/.ssh/config HostName) so that each entry "
                   "reaches the machine it names; until then this entry's report describes another host.",
       sources="the host name in each collected snapshot; the inventory name and ansible_host")
def host_identity(fleet, policy):
    """Every report of a fleet run is filed under an inventory name. If the machine that answered is
    another one (a stale DNS record, a recycled address, a copy-pasted ansible_host), its findings are
    filed under the wrong name while the host the inventory means goes unaudited, and fleet checks
    place its guests on the wrong host.

    Rule: per audited host: the host name its snapshot reports equals the inventory name or its
    ansible_host (ignoring case, a trailing dot, and the domain when only one side has one) -> pass;
    another name -> fail, saying which host answered; the snapshot reports no host name -> error;
    the inventory names the host by address only -> skip (nothing to compare with); not audited ->
    error. Sources: the snapshot's host name (the audited host's own), the inventory.
    """
    for host in fleet.hosts:
        inv_host = host.outcome.host
        names = [inv_host.name, inv_host.address]
        evidence = {"inventory_name": inv_host.name, "address": inv_host.address}
        if not host.reached or host.report is None:
            yield Result("error", f"host {host.name} could not be audited: {host.reason}", host.resource,
                         evidence | {"reason": host.reason})
            continue
        reported = (host.report.get("host") or {}).get("hostname")
        evidence["reported_hostname"] = reported
        if not isinstance(reported, str) or not reported.strip():
            yield Result("error", f"host {host.name}: its snapshot reports no host name", host.resource,
                         evidence)
        elif all(_is_address(n) for n in names):
            yield Result("skip", f"host {host.name} is named by address only in the inventory: nothing to "
                         f"compare its host name {reported} with", host.resource, evidence)
        elif _same_host(reported, names):
            yield Result("pass", f"host {host.name} answered as {reported}", host.resource, evidence,
                         expected=inv_host.name, actual=reported)
        else:
            yield Result("fail", f"inventory host {host.name} ({inv_host.address}) was answered by a host "
                         f"named {reported}: its report describes {reported}, not {host.name}",
                         host.resource, evidence, expected=inv_host.name, actual=reported)
