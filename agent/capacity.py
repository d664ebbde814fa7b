"""A host's capacity for guests, by the rules the checks use (M2-MEM-OVERCOMMIT, M4-CPU-OVERCOMMIT),
shared with `vmaudit plan` so that a plan fits exactly what the checks accept."""

from __future__ import annotations

from dataclasses import dataclass

from .facts import EvidenceMissing, Facts, Guest, NotApplicable, lookup
from .policy import Policy, parse_size


@dataclass(frozen=True)
class HostMemory:
    total_mib: float
    source: str
    reserve_mib: float

    @property
    def available_mib(self) -> float:
        return self.total_mib - self.reserve_mib


def _gap_text(value: object, gap: Exception | None) -> str:
    if gap is None:
        return "no MemTotal" if value is not None else "missing"
    return f"{'not collected' if isinstance(gap, NotApplicable) else 'unavailable'}: {gap}"


def host_memory(facts: Facts, policy: Policy) -> HostMemory:
    """Host RAM (MemTotal, else libvirt's node info) and the policy's reserve: host_memory_reserve
    (default 10 %), at least host_memory_reserve_min (default 2 GiB). EvidenceMissing without RAM."""
    meminfo, meminfo_gap = facts.lookup("meminfo")
    mem_total, _ = lookup(meminfo, "MemTotal") if meminfo_gap is None else (None, meminfo_gap)
    total_mib, source = None, None
    if mem_total:
        total_mib, source = mem_total / 1024, "/proc/meminfo MemTotal"
    else:
        lv, gap = facts.lookup("libvirt")
        node, gap = lookup(lv, "nodeinfo") if gap is None else (None, gap)
        memory_mib, gap = lookup(node, "memory_mib") if node is not None else (None, gap)
        if memory_mib:
            total_mib, source = float(memory_mib), "libvirt getInfo()"
    if total_mib is None:
        raise EvidenceMissing(f"host RAM: /proc/meminfo ({_gap_text(meminfo, meminfo_gap)}) and libvirt "
                              "node info are both unavailable")
    reserve = max(parse_size(policy.get("limits", "host_memory_reserve"), total_mib),
                  parse_size(policy.get("limits", "host_memory_reserve_min"), total_mib))
    return HostMemory(total_mib, source, reserve)


def host_cpus(facts: Facts) -> tuple[int, str]:
    """Logical CPUs of the host: libvirt's node info, else /proc/cpuinfo."""
    lv, gap = facts.lookup("libvirt")
    node, node_gap = lookup(lv, "nodeinfo", {}) if gap is None else (None, gap)
    cpus = lookup(node, "cpus")[0] if node is not None else None
    if cpus:
        return cpus, "libvirt nodeinfo"
    cpu, cpu_gap = facts.lookup("cpu")
    logical, logical_gap = lookup(cpu, "logical_cpus") if cpu_gap is None else (None, cpu_gap)
    if logical:
        return logical, "/proc/cpuinfo"
    reasons = [str(r) for r in (node_gap or (None if node else "no node info"), logical_gap) if r]
    raise EvidenceMissing(f"number of host CPUs: {'; '.join(map(str, reasons)) or 'unknown'}")


def counts_for_memory(guest: Guest) -> tuple[bool, Exception | None]:
    """(whether the host must hold the guest's memory: running, or started at boot; the reason its
    autostart flag is unknown, if it is). EvidenceMissing when its state is unknown."""
    autostart, gap = guest.lookup("autostart")
    # runs: active per libvirt (under --root an image's guests are not known to run; its autostart
    # guests are what runs when it boots)
    return guest.runs or autostart is True, gap


__all__ = ["HostMemory", "host_memory", "host_cpus", "counts_for_memory"]
