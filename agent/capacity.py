"""A host's capacity for guests, by the rules the checks use (M2-MEM-OVERCOMMIT, M4-CPU-OVERCOMMIT,
M4-GUEST-COUNT), shared with `vmaudit plan` so that a plan fits exactly what the checks accept."""

from __future__ import annotations

from dataclasses import dataclass

from .facts import EvidenceMissing, Facts, Guest, is_marker
from .policy import Policy, parse_size


@dataclass(frozen=True)
class HostMemory:
    total_mib: float
    source: str
    reserve_mib: float

    @property
    def available_mib(self) -> float:
        return self.total_mib - self.reserve_mib


def _number(value: object) -> bool:
    """A positive number of the snapshot (a bool is not one, though Python says it is an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _marker_text(value: object) -> str:
    if isinstance(value, dict) and is_marker(value):
        return str(value.get("unavailable") or value.get("not_collected"))
    return "missing" if value is None else "not a value"


def host_memory(facts: Facts, policy: Policy) -> HostMemory:
    """Host RAM (MemTotal, else libvirt's node info) and the policy's reserve: host_memory_reserve
    (default 10 %), at least host_memory_reserve_min (default 2 GiB). EvidenceMissing without RAM."""
    meminfo = facts.raw("meminfo")
    total_mib, source = None, None
    if isinstance(meminfo, dict) and not is_marker(meminfo) and _number(meminfo.get("MemTotal")):
        total_mib, source = meminfo["MemTotal"] / 1024, "/proc/meminfo MemTotal"
    else:
        lv = facts.raw("libvirt")
        node = lv.get("nodeinfo") if isinstance(lv, dict) and not is_marker(lv) else None
        if isinstance(node, dict) and not is_marker(node) and _number(node.get("memory_mib")):
            total_mib, source = float(node["memory_mib"]), "libvirt getInfo()"
    if total_mib is None:
        raise EvidenceMissing(f"host RAM: /proc/meminfo ({_marker_text(meminfo)}) and libvirt node info "
                              "are both unavailable")
    reserve = max(parse_size(policy.get("limits", "host_memory_reserve"), total_mib),
                  parse_size(policy.get("limits", "host_memory_reserve_min"), total_mib))
    return HostMemory(total_mib, source, reserve)


def host_cpus(facts: Facts) -> tuple[int, str]:
    """Logical CPUs of the host: libvirt's node info, else /proc/cpuinfo."""
    lv = facts.raw("libvirt")
    node = lv.get("nodeinfo") if isinstance(lv, dict) and not is_marker(lv) else lv
    if isinstance(node, dict) and not is_marker(node) and isinstance(node.get("cpus"), int) and _number(node["cpus"]):
        return node["cpus"], "libvirt nodeinfo"
    cpu = facts.raw("cpu")
    if isinstance(cpu, dict) and not is_marker(cpu) and isinstance(cpu.get("logical_cpus"), int) \
            and _number(cpu["logical_cpus"]):
        return cpu["logical_cpus"], "/proc/cpuinfo"
    reasons = [r for r in (node.get("unavailable") if isinstance(node, dict) else "no node info",
                           cpu.get("unavailable") if isinstance(cpu, dict) else None) if r]
    raise EvidenceMissing(f"number of host CPUs: {'; '.join(map(str, reasons)) or 'unknown'}")


def counts_for_memory(guest: Guest) -> bool:
    """A guest whose memory the host must hold: running, or started at boot (M2-MEM-OVERCOMMIT)."""
    return guest.active or guest.autostart is True


__all__ = ["HostMemory", "host_memory", "host_cpus", "counts_for_memory"]
