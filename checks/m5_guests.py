"""M5: keep the security measures inside the guests — each guest is visible to the host (guest agent),
runs a supported OS, and has someone who patches it."""

from __future__ import annotations

import fnmatch
import sys
from datetime import date, datetime, timezone
from functools import lru_cache
from importlib import resources

from vmaudit.engine import Result, check

from ._cache import per_snapshot
from ._guests import collected_at

if sys.version_info >= (3, 11):
    import tomllib
else:  # RHEL 9 ships Python 3.9
    import tomli as tomllib

AGENT_CHANNEL = "org.qemu.guest_agent.0"


@check("M5-GUEST-AGENT", severity="low", scope="guest", definitions="both",
       title="Guest's QEMU guest agent channel",
       remediation="Add a guest-agent channel (<channel type='unix'><target type='virtio' "
                   "name='org.qemu.guest_agent.0'/></channel>) and install and run qemu-guest-agent in the guest.",
       sources="/domain/devices/channel/target[@name='org.qemu.guest_agent.0'], live @state")
def guest_agent(guest, facts, policy):
    """Without the guest agent the host cannot see into the guest: no OS and patch information, no
    consistent (frozen) file-system snapshots for backups, no clean shutdown on host maintenance. M5
    asks that guests be monitored like physical machines; the agent channel is the host's window.

    Rule: per guest, no virtio channel named org.qemu.guest_agent.0 -> warn; a running guest whose
    channel libvirt reports state='disconnected' (the agent is not running inside) -> warn.
    Sources: the domain XML (live XML for a running guest: the channel's @state is live state).
    Definitions: both (the channel's connected/disconnected state exists in the live definition
    only).
    """
    channel = target = None  # the first channel whose <target> names the agent
    for candidate in guest.findall("devices/channel"):
        found = candidate.find("target")
        if found is not None and found.get("name") == AGENT_CHANNEL:
            channel, target = candidate, found
            break
    if channel is None:
        yield Result("warn", "guest has no QEMU guest agent channel: the host cannot see into it",
                     guest.resource, {"channel": None, "state": guest.state},
                     expected=AGENT_CHANNEL, actual="no channel")
        return
    live_state = target.get("state")
    evidence = {"channel": AGENT_CHANNEL, "channel_type": channel.get("type"), "agent_state": live_state,
                "state": guest.state}
    if guest.active and live_state == "disconnected":
        yield Result("warn", "guest has an agent channel but no agent is connected (qemu-guest-agent not "
                     "running in the guest)", guest.resource, evidence, expected="connected",
                     actual="disconnected")
    else:
        how = f", agent {live_state}" if live_state else ""
        yield Result("pass", f"guest has a QEMU guest agent channel{how}", guest.resource, evidence,
                     expected=AGENT_CHANNEL, actual=AGENT_CHANNEL)


@lru_cache(maxsize=1)
def builtin_eol_list() -> tuple[str, tuple[tuple[str, date], ...]]:
    """(reviewed date, ((id or pattern, eol date), …)) from checks/eol_os.toml (package data)."""
    text = resources.files("vmaudit.checks").joinpath("eol_os.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    entries = tuple((e["id"], e["eol"]) for e in data["os"])
    return data["reviewed"].isoformat(), entries


def _match(os_id: str, pattern: str) -> bool:
    return os_id == pattern or fnmatch.fnmatchcase(os_id, pattern)


@lru_cache(maxsize=4096)
def _builtin_hit(os_id: str) -> tuple | None:
    """The first built-in end-of-life entry matching os_id (guests share a handful of OS ids)."""
    return next(((p, eol) for p, eol in builtin_eol_list()[1] if _match(os_id, p)), None)


def _snapshot_day(facts) -> tuple[date, str]:
    """The snapshot's collection day (UTC) and its ISO form: end-of-life dates are compared with it."""
    today = datetime.fromtimestamp(collected_at(facts), timezone.utc).date()
    return today, today.isoformat()


@check("M5-GUEST-OS", severity="medium", scope="guest", definitions="both",
       title="Support status of the guest's operating system",
       remediation="Upgrade the guest to a supported OS release (or retire it); keep the libosinfo metadata "
                   "(virt-install --os-variant / virt-xml --metadata os_name=) accurate.",
       sources="libosinfo metadata os/@id (http://libosinfo.org/xmlns/libvirt/domain/1.0); end-of-life list "
               "checks/eol_os.toml or policy [guests] eol_os")
def guest_os(guest, facts, policy):
    """A guest whose OS no longer gets security updates cannot be patched, whatever its owner does: it
    stays exploitable, and on a shared host it is the weakest neighbour of every other guest.

    Rule: per guest, an OS id on the end-of-life list whose end-of-support date is on or before the
    snapshot's collection time -> fail; no OS id -> skip with the reason (vmaudit uses the libosinfo
    metadata that virt-install / virt-manager write; the guest agent's OS information needs a
    read-write connection, and vmaudit opens libvirt read-only).
    The list is checks/eol_os.toml (ids or fnmatch patterns with their end-of-support date, reviewed
    on the date it states); the policy's [guests] eol_os (a list of ids or patterns, all taken as
    end-of-life) replaces it.
    Sources: /domain/metadata/libosinfo:libosinfo/libosinfo:os/@id.
    Definitions: both (the libosinfo metadata of each).
    """
    os_id = guest.os_id
    if not os_id:
        yield Result("skip", "the guest's OS is unknown: no libosinfo metadata in its XML (guest-agent OS "
                     "information is not available on vmaudit's read-only libvirt connection)",
                     guest.resource, {"os_id": None, "source": "libosinfo metadata"})
        return
    today, today_iso = per_snapshot(facts, _snapshot_day)
    custom = policy.get("guests", "eol_os")
    if custom is not None:
        hit = next((p for p in custom if _match(os_id, p)), None)
        evidence = {"os_id": os_id, "eol_list": "policy [guests] eol_os", "matched": hit}
        if hit:
            yield Result("fail", f"guest OS {os_id} is end-of-life (policy [guests] eol_os: {hit})",
                         guest.resource, evidence, expected="a supported OS", actual=os_id)
        else:
            yield Result("pass", f"guest OS {os_id} is not on the policy's end-of-life list", guest.resource,
                         evidence, actual=os_id)
        return
    reviewed, _entries = builtin_eol_list()
    hit = _builtin_hit(os_id)
    eol = hit[1].isoformat() if hit else None
    evidence = {"os_id": os_id, "eol_list": f"built-in (reviewed {reviewed})", "as_of": today_iso,
                "matched": hit[0] if hit else None, "eol": eol}
    if hit and hit[1] <= today:
        yield Result("fail", f"guest OS {os_id} reached end of security support on {eol}",
                     guest.resource, evidence, expected="a supported OS", actual=f"{os_id} (EOL {hit[1]})")
    elif hit:
        yield Result("pass", f"guest OS {os_id} is supported until {eol}", guest.resource,
                     evidence, actual=os_id)
    else:
        yield Result("pass", f"guest OS {os_id} is not on the end-of-life list (reviewed {reviewed})",
                     guest.resource, evidence, actual=os_id)


@check("M5-GUEST-OWNER", severity="low", scope="guest", definitions="guest",
       title="Guest's owner or patch group",
       remediation="Record the guest's owner or patch group: vmaudit metadata <owner>/<patch_group> "
                   "(urn:vmaudit:guest:1) or the inventory's owner / patch_group columns.",
       sources="vmaudit metadata <owner>, <patch_group> (urn:vmaudit:guest:1) or the inventory")
def guest_owner(guest, facts, policy):
    """A guest is patched, hardened and monitored only if somebody is responsible for it; a guest with
    no recorded owner or patch group is the one that nobody updates.

    Rule: per guest, neither an owner nor a patch group (vmaudit metadata, else the inventory) -> warn.
    Sources: vmaudit metadata elements <owner>, <patch_group> (or <patch-group>); the inventory.
    Definitions: the guest's labels (persistent definition, then live, then inventory).
    """
    labels = guest.labels
    found = {k: labels[k] for k in ("owner", "patch_group") if labels.get(k)}
    evidence = {"owner": labels.get("owner"), "patch_group": labels.get("patch_group"),
                "sources": {k: guest.label_source(k) for k in found}}
    if found:
        desc = ", ".join(f"{k} {v!r}" for k, v in found.items())
        yield Result("pass", f"guest has {desc}", guest.resource, evidence, actual=desc)
    else:
        yield Result("warn", "guest has no owner and no patch group in its metadata nor in the inventory",
                     guest.resource, evidence, expected="an owner or patch group", actual="none")
