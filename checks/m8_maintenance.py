"""M8: processes for deployment and maintenance — every guest registered, no forgotten (idle, transient)
guests, saved states and snapshots under control, no orphaned disk images, no forgotten guest that
boots by itself."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

from vmaudit.engine import Result, check
from vmaudit.facts import EvidenceMissing, NotApplicable, guest_view, lookup, need, partial

from ._guests import DAY, collected_at, days, idle_state, iso
from ._xml import find_all


def _inventory_entry(guest, policy):
    inv = policy.inventory
    return inv.find(guest.uuid) if inv is not None else None


@check("M8-UNREGISTERED", severity="high",
       title="Guest's registration in the central inventory",
       remediation="Register the guest (its UUID) in the central inventory, or remove it; configure the "
                   "inventory in the policy ([inventory] path).",
       sources="guest UUIDs (listAllDomains) vs the inventory named by policy [inventory] path")
def unregistered(facts, policy):
    """A guest nobody registered is a guest nobody patches, backs up, or decommissions: the central
    registry is how an organisation knows what runs where (and which zone it belongs to).

    Rule: per guest, its UUID not in the inventory -> fail. No inventory configured in the policy -> one
    warn for the host (registration cannot be verified); no guest defined -> pass.
    Sources: each defined guest's UUID; the inventory (CSV or JSON, matched by uuid, case-insensitive).
    """
    guests = facts.guests()
    inv = policy.inventory
    if not guests:
        yield Result("pass", "no guests are defined on this host: nothing to register", "host",
                     {"inventory": inv.source if inv is not None else None, "guests": 0})
        return
    if inv is None:
        yield Result("warn", "no inventory is configured ([inventory] path): guest registration cannot be "
                     "verified", "host", {"inventory": None, "guests": len(guests)},
                     expected="a central inventory")
        return
    for guest in guests:
        entry = inv.find(guest.uuid)
        evidence = {"uuid": guest.uuid, "inventory": inv.source}
        if entry is None:
            yield Result("fail", f"guest {guest.uuid} is not registered in the inventory", guest.resource,
                         evidence, expected="registered", actual="not found")
            continue
        evidence["inventory_name"] = entry.get("name") or None
        note = ""
        if entry.get("name") and entry["name"] != guest.name:
            note = f" (registered under the name {entry['name']!r})"
        yield Result("pass", f"guest is registered in the inventory{note}", guest.resource, evidence,
                     expected="registered", actual="registered")


@check("M8-IDLE-GUEST", severity="medium", scope="guest", definitions="guest",
       title="Time the guest has been shut off",
       remediation="Decommission the guest, or patch it and run it; raise [guests] idle_days if such "
                   "guests are expected.",
       sources="state (listAllDomains); mtime of /var/log/libvirt/qemu/<name>.log and "
               "/etc/libvirt/qemu/<name>.xml; policy [guests] idle_days, never_started_days")
def idle_guest(guest, facts, policy):
    """A guest that has been off for months is forgotten: it misses every patch meanwhile, and the day
    somebody starts it (or autostart does) an unpatched system joins the network.

    Rule: per shut-off guest, the last run (mtime of its QEMU log, written when QEMU starts and stops)
    or config change (mtime of its persistent XML), whichever is later, older than [guests] idle_days
    (default 90) -> warn; no QEMU log at all (never started) and its config older than [guests]
    never_started_days (default 30) -> warn. Ages are measured against the snapshot's collection time.
    Running guests pass.
    Sources: the domain state; the directory listings of /var/log/libvirt/qemu and /etc/libvirt/qemu
    (the guest is found by file name, so a name such as '../x' never reaches another file).
    Definitions: none: libvirt's state and the guest's files (state only a running libvirt knows:
    skip under --root).
    """
    idle = idle_state(guest, facts, policy)
    if idle["idle"]:
        yield Result("warn", f"guest is {idle['reason']}", guest.resource, idle["evidence"],
                     expected=f"run or retired within {policy.get('guests', 'idle_days')} days",
                     actual=f"{idle['evidence'].get('days_since_activity')} days")
    else:
        yield Result("pass", idle["reason"], guest.resource, idle["evidence"])


@check("M8-TRANSIENT", severity="medium", scope="guest", definitions="guest",
       title="Guest's persistent definition",
       remediation="Define the guest persistently (virsh dumpxml NAME > NAME.xml; virsh define NAME.xml) so "
                   "it is registered in libvirt's configuration and survives a host restart.",
       sources="isPersistent()")
def transient(guest, facts, policy):
    """A transient guest exists only while it runs: libvirt keeps no configuration for it, it vanishes
    at shutdown with its evidence, and it escapes every process built on defined guests (inventory,
    autostart review, configuration backup). Usually a sign of ad-hoc deployment.

    Rule: per guest, isPersistent() false -> warn.
    Sources: libvirt's isPersistent() for the domain.
    Definitions: none: libvirt's persistence flag.
    """
    persistent = need(guest.persistent, f"persistence of guest {guest.name}")
    if persistent:
        yield Result("pass", "guest is persistently defined", guest.resource, {"persistent": True},
                     expected="persistent", actual="persistent")
    else:
        yield Result("warn", "guest is transient: libvirt keeps no configuration for it", guest.resource,
                     {"persistent": False, "state": guest.state}, expected="persistent", actual="transient")


@check("M8-SAVED-STATE", severity="medium",
       title="Age of saved guest memory images",
       remediation="Start the guest (which consumes its managed save) or discard it (virsh managedsave-remove "
                   "NAME); delete stale files under /var/lib/libvirt/qemu/save.",
       sources="hasManagedSaveImage(); mtimes of /var/lib/libvirt/qemu/save/*; policy [saved_state] max_age_days")
def saved_state(facts, policy):
    """A saved RAM image freezes a guest's memory (keys, credentials, unpatched code) on disk; restoring
    an old one resumes a system that missed every patch since, and a stray one is a copy of a guest's
    secrets nobody looks after.

    Rule: a guest with a managed-save image whose file (/var/lib/libvirt/qemu/save/<name>.save) is older
    than [saved_state] max_age_days (default 30) -> warn, per guest; any other file in the save
    directory older than that -> warn, per file. Ages against the snapshot's collection time.
    Sources: libvirt's hasManagedSaveImage(); the listing of /var/lib/libvirt/qemu/save.
    """
    guests = facts.guests()
    max_age = policy.get("saved_state", "max_age_days")
    now = collected_at(facts)
    files_src = facts.source("guest_files")
    saves, saves_gap = lookup(files_src, "saved_images")
    if saves is None and saves_gap is None:
        saves_gap = EvidenceMissing("guest_files.saved_images: no saved_images listing")
    claimed: set[str] = set()
    emitted = False
    offline = False
    for guest in guests:
        managed, gap = guest.lookup("managed_save")
        if isinstance(gap, NotApplicable):
            offline = True  # an image under --root: its save files are judged below, each on its own
            continue
        if gap is not None or managed is None:
            reason = gap.reason if gap else "not collected"
            yield Result("error", f"evidence missing: managed save of guest {guest.name}: {reason}",
                         guest.resource, {"reason": reason})
            emitted = True
            continue
        if not managed:
            continue
        emitted = True
        fname = f"{guest.name}.save"
        claimed.add(fname)
        if saves_gap is not None:
            exc = f"listing of /var/lib/libvirt/qemu/save: {saves_gap}"
            yield Result("error", f"evidence missing: {exc}", guest.resource, {"reason": exc})
            continue
        path = f"{saves['dir']}/{fname}"
        entry, gap = lookup(saves["entries"], fname) if "/" not in guest.name else (None, None)
        if entry is None:
            yield Result("error", f"libvirt reports a managed-save image but {path} is not readable or not "
                         "there: its age is unknown", guest.resource, {"managed_save": True, "path": path})
            continue
        seconds = now - entry["mtime"]
        age = days(seconds)
        evidence = {"managed_save": True, "path": path, "saved_at": iso(entry["mtime"]), "age_days": age,
                    "size": entry.get("size"), "max_age_days": max_age}
        if seconds > max_age * DAY:
            yield Result("warn", f"guest has a saved memory image {age:g} days old (limit {max_age})",
                         guest.resource, evidence, expected=f"<= {max_age} days", actual=f"{age:g} days")
        else:
            yield Result("pass", f"guest has a saved memory image {age:g} days old (limit {max_age})",
                         guest.resource, evidence, expected=f"<= {max_age} days", actual=f"{age:g} days")
    if saves_gap is not None:  # raising here would drop the per-guest results above
        reason = str(saves_gap)
        yield Result("error", f"evidence missing: listing of /var/lib/libvirt/qemu/save: {reason}", "host",
                     {"reason": reason})
        return
    for fname, entry, gap in sorted(partial(saves["entries"]), key=lambda t: t[0]):
        if fname in claimed:
            continue
        path = f"{saves['dir']}/{fname}"
        emitted = True
        if gap is not None:
            yield Result("error", f"evidence missing: {gap}", f"file:{path}", {"reason": str(gap)})
            continue
        seconds = now - entry["mtime"]
        age = days(seconds)
        evidence = {"path": path, "saved_at": iso(entry["mtime"]), "age_days": age, "size": entry.get("size"),
                    "max_age_days": max_age, "guest_managed_save": False}
        if seconds > max_age * DAY:
            whose = ("a saved memory image (whose, only a running libvirt knows)" if offline
                     else "belongs to no guest's managed save")
            if offline:
                evidence.pop("guest_managed_save")
            yield Result("warn", f"{path} is {age:g} days old and {whose}",
                         f"file:{path}", evidence, expected=f"<= {max_age} days", actual=f"{age:g} days")
        else:
            yield Result("pass", f"{path} is {age:g} days old (limit {max_age})", f"file:{path}", evidence,
                         expected=f"<= {max_age} days", actual=f"{age:g} days")
    if not emitted:
        yield Result("pass", "no saved guest memory images", "host",
                     {"managed_saves": 0, "save_dir": saves.get("dir"), "files": 0})


@check("M8-SNAPSHOTS", severity="medium", scope="guest", definitions="guest",
       title="Age and number of the guest's snapshots",
       remediation="Prune snapshots (virsh snapshot-delete); keep few, short-lived ones and document every "
                   "rollback so a restored guest is patched again at once.",
       sources="listAllSnapshots(): creationTime, memory state; policy [snapshots] max_age_days, max_count")
def snapshots(guest, facts, policy):
    """A rollback to an old snapshot restores an unpatched state — and with a memory snapshot the running
    processes, keys and sessions of that time. Snapshots pile up unnoticed; they also pin old disk
    contents that should have been destroyed.

    Rule: per guest, a snapshot older than [snapshots] max_age_days (default 30) or more snapshots than
    [snapshots] max_count (default 3) -> warn. Ages against the snapshot's collection time; the
    evidence lists which snapshots include guest memory.
    Sources: libvirt's snapshot list of the domain with each snapshot's creationTime and memory element.
    Definitions: none: libvirt's snapshot list (only a running libvirt knows it: skip under --root).
    """
    snaps = need(guest.record.get("snapshots", {"unavailable": "not collected"}), f"snapshots of guest {guest.name}")
    max_age = policy.get("snapshots", "max_age_days")
    max_count = policy.get("snapshots", "max_count")
    now = collected_at(facts)
    listed, broken, old = [], [], []
    for s in snaps:
        if s.get("creation_time") is None:
            broken.append({"name": s.get("name"), "reason": s.get("xml_error", "no creation time")})
            continue
        seconds = now - s["creation_time"]
        age = days(seconds)
        item = {"name": s.get("name"), "created": iso(s["creation_time"]), "age_days": age,
                "memory": bool(s.get("memory"))}
        listed.append(item)
        if seconds > max_age * DAY:
            old.append(item)
    listed.sort(key=lambda i: i["age_days"], reverse=True)
    evidence = {"count": len(snaps), "max_count": max_count, "max_age_days": max_age,
                "snapshots": listed[:50], "with_memory": sum(1 for i in listed if i["memory"])}
    if broken:
        evidence["unreadable"] = broken
    problems = []
    if len(snaps) > max_count:
        problems.append(f"{len(snaps)} snapshots (limit {max_count})")
    if old:
        oldest = max(old, key=lambda i: i["age_days"])
        problems.append(f"{len(old)} older than {max_age} days (oldest {oldest['name']!r}, "
                        f"{oldest['age_days']:g} days)")
    if problems:
        yield Result("warn", "guest has " + "; ".join(problems), guest.resource, evidence,
                     expected=f"<= {max_count} snapshots, none older than {max_age} days",
                     actual=f"{len(snaps)} snapshots, oldest {listed[0]['age_days']:g} days" if listed
                     else f"{len(snaps)} snapshots")
    elif broken:
        yield Result("error", f"the creation time of {len(broken)} snapshot(s) could not be read", guest.resource,
                     evidence)
    elif not snaps:
        yield Result("pass", "guest has no snapshots", guest.resource, evidence, actual="0 snapshots")
    else:
        yield Result("pass", f"guest has {len(snaps)} snapshot(s), the oldest {listed[0]['age_days']:g} days old",
                     guest.resource, evidence, expected=f"<= {max_count} snapshots, none older than {max_age} days",
                     actual=f"{len(snaps)} snapshots")


# --- volumes ---------------------------------------------------------------------------------------

def _norm(path: str) -> str:
    """An absolute path normalised (os.path.normpath); other names (network images) as they are."""
    if not path.startswith("/"):
        return path
    # a path without empty, "." or ".." components and no trailing '/' is already normal: skip
    # normpath (pure Python before 3.12), which every disk of every guest would otherwise go through
    if "//" not in path and "/." not in path and not path.endswith("/"):
        return path
    return os.path.normpath(path)


def _source_refs(source: ET.Element | None, paths: set, pool_vols: set) -> None:
    if source is None:
        return
    for attr in ("file", "dev", "dir", "name"):
        if source.get(attr):
            paths.add(_norm(source.get(attr)))
    if source.get("pool") and source.get("volume"):
        pool_vols.add((source.get("pool"), source.get("volume")))


@guest_view
def _disk_refs(tree: ET.Element) -> tuple[set, set]:
    """Paths (files, block devices, network image names) and (pool, volume) pairs a guest uses,
    through its disks, their backing chains and block-copy mirrors, and its firmware/kernel files."""
    paths: set = set()
    pool_vols: set = set()
    # plain-tag walks: findall("devices/disk") would go through ElementPath, dearer than the walk
    for disk in find_all(tree, "devices", "disk"):
        _source_refs(disk.find("source"), paths, pool_vols)
        for node in disk.iter("backingStore"):
            _source_refs(node.find("source"), paths, pool_vols)
        for mirror in disk.iter("mirror"):
            if mirror.get("file"):
                paths.add(_norm(mirror.get("file")))
            _source_refs(mirror.find("source"), paths, pool_vols)
    for fs in find_all(tree, "devices", "filesystem"):
        _source_refs(fs.find("source"), paths, pool_vols)
    os_els = tree.findall("os")
    for tag in ("loader", "nvram", "kernel", "initrd", "dtb"):
        for os_el in os_els:  # tree.find("os/<tag>") without ElementPath: the first <os> that has one
            node = os_el.find(tag)
            if node is not None:
                if (node.text or "").strip():
                    paths.add(_norm(node.text.strip()))
                break
    return paths, pool_vols


@check("M8-ORPHAN-VOLUMES", severity="low",
       title="Storage volumes and the guests using them",
       remediation="Delete the volume (virsh vol-delete) or archive it outside the hypervisor's pools after "
                   "checking that no guest or backup needs it.",
       sources="storage pools' volumes (listAllVolumes, path, backingStore) vs every guest's disk sources and "
               "backing chains")
def orphan_volumes(facts, policy):
    """A disk image no guest uses is a forgotten copy of a system: its data (and the secrets in it) are
    kept, unpatched and unaccounted for, and it can be attached or booted again at any time.

    Rule: per volume of an active storage pool, not referenced by any defined guest -> warn. A volume is
    referenced by a disk source (file, block device, network image name, or pool/volume), a backingStore
    in the domain XML, a block-copy mirror, firmware/kernel paths, or by being the backing file of a
    referenced volume (recursively). While any guest's XML is unreadable no volume is called orphaned
    (error instead).
    Sources: libvirt storage pools and their volumes; every defined guest's domain XML, both the live
    and the persistent definition of a running guest.
    """
    pools = need(facts.libvirt.get("pools", {"unavailable": "no pool list"}), "libvirt storage pools")
    guests = facts.guests()
    paths: set = set()
    pool_vols: set = set()
    unreadable: dict[str, str] = {}
    for guest in guests:
        try:  # a disk the next start attaches is in use too
            for definition in guest.definitions().values():
                p, pv = definition.view(_disk_refs)
                paths |= p
                pool_vols |= pv
        except EvidenceMissing as exc:
            unreadable[guest.name] = str(exc)
    volumes = []  # (pool name, volume entry, path)
    inactive, pool_errors = [], []
    for pool in pools:
        vols, gap = lookup(pool, "volumes")
        if gap is not None:
            pool_errors.append(pool["name"])
            yield Result("error", f"evidence missing: volumes of pool {pool['name']}: {gap}",
                         f"pool:{pool['name']}", {"reason": str(gap)})
            continue
        if vols is None:
            inactive.append(pool["name"])
            continue
        for vol in vols:
            path = vol.get("path")
            if path is None:
                target = pool.get("target") or ""
                path = f"{target.rstrip('/')}/{vol.get('name')}" if target else vol.get("name")
            volumes.append((pool.get("name"), vol, _norm(path)))
    # Close over backing files: a referenced volume keeps its backing volume (and so on) in use.
    used = {v_path for pname, vol, v_path in volumes
            if v_path in paths or (pname, vol.get("name")) in pool_vols}
    backing = {v_path: _norm(vol["backing"]) for _, vol, v_path in volumes if vol.get("backing")}
    # backingStore of a volume not in any pool (e.g. a base image elsewhere) is irrelevant here
    frontier = list(used | paths)
    while frontier:
        nxt = backing.get(frontier.pop())
        if nxt and nxt not in used:
            used.add(nxt)
            frontier.append(nxt)
    orphans = [(pname, vol, v_path) for pname, vol, v_path in volumes if v_path not in used]
    evidence = {"volumes": len(volumes), "referenced": len(volumes) - len(orphans), "orphans": len(orphans),
                "inactive_pools": inactive}
    if unreadable:
        evidence["unreadable_guests"] = unreadable
        evidence["candidates"] = sorted(p for _, _, p in orphans)[:100]
        yield Result("error", f"the disks of {len(unreadable)} guest(s) are unknown (XML unreadable): "
                     "orphaned volumes cannot be told apart", "host", evidence)
        return
    for pname, vol, v_path in orphans:
        yield Result("warn", f"volume {vol.get('name')} of pool {pname} is used by no guest",
                     f"volume:{v_path}",
                     {"pool": pname, "name": vol.get("name"), "path": v_path, "format": vol.get("format"),
                      "backing": vol.get("backing")},
                     expected="attached to a guest", actual="unreferenced")
    if not orphans and not pool_errors:
        msg = (f"every one of {len(volumes)} volume(s) in active pools is used by a guest" if volumes
               else "no storage pool volumes to account for")
        yield Result("pass", msg, "host", evidence)


@check("M8-AUTOSTART", severity="low", scope="guest", definitions="guest",
       title="Autostart of unregistered or idle guests",
       remediation="Disable autostart (virsh autostart --disable NAME) until the guest is registered and "
                   "maintained.",
       sources="autostart(); inventory; M8-IDLE-GUEST's evidence")
def autostart(guest, facts, policy):
    """Autostart brings a guest up with the host. On a guest nobody registered, or one that has been off
    for months, it means an unmaintained, unpatched system joins the network after the next reboot
    without anybody deciding it.

    Rule: per guest with autostart on: not registered in the inventory (when one is configured), or idle
    per M8-IDLE-GUEST -> warn. Autostart off -> pass.
    Sources: libvirt's autostart flag; the inventory; the QEMU log / config mtimes (M8-IDLE-GUEST).
    Definitions: none: the autostart flag, the inventory and M8-IDLE-GUEST's rule.
    """
    auto = need(guest.autostart, f"autostart flag of guest {guest.name}")
    if not auto:
        yield Result("pass", "autostart is off", guest.resource, {"autostart": False}, actual="off")
        return
    evidence: dict = {"autostart": True}
    reasons = []
    if policy.inventory is not None:
        registered = _inventory_entry(guest, policy) is not None
        evidence["registered"] = registered
        if not registered:
            reasons.append("not registered in the inventory")
    else:
        evidence["registered"] = None  # no inventory: M8-UNREGISTERED warns for the host
    idle = idle_state(guest, facts, policy)
    evidence["idle"] = idle["idle"]
    evidence["idle_evidence"] = idle["evidence"]
    if idle["idle"]:
        reasons.append(idle["reason"])
    if reasons:
        yield Result("warn", "autostart is on for a guest that is " + "; ".join(reasons), guest.resource,
                     evidence, expected="autostart only for registered, maintained guests", actual="on")
    else:
        yield Result("pass", "autostart is on; the guest is " +
                     ("registered and " if evidence["registered"] else "") + "not idle",
                     guest.resource, evidence, actual="on")
