"""Helpers shared by the guest-oriented checks (M1, M4, M5, M8): the snapshot's reference time, guest
labels read safely, and the "when did this guest last run" rule of M8-IDLE-GUEST (also used by
M8-AUTOSTART). Pure functions of the snapshot and policy; no I/O."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from vmaudit.facts import EvidenceMissing, Facts, Guest, need

DAY = 86400.0


def collected_at(facts: Facts) -> float:
    """The snapshot's collection time (epoch s): ages are measured against it, never against "now"."""
    return facts.collected_at.timestamp()


def days(seconds: float) -> float:
    return round(seconds / DAY, 1)


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def labels(guest: Guest) -> dict:
    """The guest's merged labels; raises EvidenceMissing when its XML (hence metadata) is unreadable."""
    return guest.labels


def try_labels(guest: Guest) -> tuple[dict | None, str | None]:
    """(labels, None), or (None, reason) when the guest's XML could not be read."""
    try:
        return guest.labels, None
    except EvidenceMissing as exc:
        return None, str(exc)


def file_entry(source: Any, filename: str, what: str) -> dict | None:
    """The listing entry for `filename` in one directory of the guest_files source (None: no such file).

    `filename` is matched as a directory-entry name only: a guest name with '/' never matches anything.
    """
    listing = need(source, what)
    entry = listing.get("entries", {}).get(filename) if "/" not in filename else None
    if entry is not None:
        entry = need(entry, f"{listing.get('dir', what)}/{filename}")
    return entry


def idle_state(guest: Guest, facts: Facts, policy: Any) -> dict:
    """Whether a guest is idle per M8-IDLE-GUEST, with the evidence.

    Returns {"idle": bool, "reason": str, "evidence": {...}}; raises EvidenceMissing (or
    NotApplicable) when the files that date the guest could not be read.
    """
    state = guest.need_state()  # under --root only a running libvirt knows it: NotApplicable
    evidence: dict = {"state": state}
    if state != "shutoff":
        return {"idle": False, "reason": f"guest is {state}", "evidence": evidence}
    files = facts.source("guest_files")
    now = collected_at(facts)
    idle_days = policy.get("guests", "idle_days")
    never_days = policy.get("guests", "never_started_days")
    log = file_entry(files.get("qemu_logs"), f"{guest.name}.log", "QEMU log directory")
    config = file_entry(files.get("qemu_configs"), f"{guest.name}.xml", "QEMU config directory")
    log_dir = (files.get("qemu_logs") or {}).get("dir", "/var/log/libvirt/qemu")
    conf_dir = (files.get("qemu_configs") or {}).get("dir", "/etc/libvirt/qemu")
    evidence.update({
        "log": f"{log_dir}/{guest.name}.log", "log_mtime": iso(log["mtime"]) if log else None,
        "config": f"{conf_dir}/{guest.name}.xml", "config_mtime": iso(config["mtime"]) if config else None,
        "collected_at": iso(now), "idle_days": idle_days, "never_started_days": never_days,
    })
    if log is not None:
        # The log is written when QEMU starts and stops; an edit of the config also counts as care.
        last = max(log["mtime"], config["mtime"]) if config else log["mtime"]
        age = days(now - last)
        older = now - last > idle_days * DAY  # compare unrounded: 0 days means any age
        evidence["days_since_activity"] = age
        if older:
            return {"idle": True, "evidence": evidence,
                    "reason": f"shut off for {age:g} days (last run or config change {iso(last)}), "
                              f"longer than {idle_days}"}
        return {"idle": False, "evidence": evidence,
                "reason": f"shut off, last run or config change {age:g} days ago (limit {idle_days})"}
    if config is None:
        raise EvidenceMissing(f"guest {guest.name} has neither {log_dir}/{guest.name}.log nor "
                              f"{conf_dir}/{guest.name}.xml: its last run cannot be dated")
    age = days(now - config["mtime"])
    older = now - config["mtime"] > never_days * DAY
    evidence["days_since_activity"] = age
    evidence["never_started"] = True
    if older:
        return {"idle": True, "evidence": evidence,
                "reason": f"never started (no QEMU log) and defined {age:g} days ago, longer than {never_days}"}
    return {"idle": False, "evidence": evidence,
            "reason": f"never started, defined {age:g} days ago (limit {never_days})"}
