"""First-fit placement, as affinity enforcers do it: each guest that breaks a rule moves to the first
migration peer where it fits. It is the benchmark's baseline and the solver's starting hint; it is not
optimal (it never moves a guest that breaks nothing to make room, and takes the first host, not the
best) and may fail to place a guest at all (it then stays where it is)."""

from __future__ import annotations

from .fleet import PlanFleet, PlanGuest


def first_fit(fleet: PlanFleet, hosts: list[str] | None = None) -> dict[tuple, str]:
    """guest key -> host, for the guests of `hosts` (default: every known host)."""
    names = hosts if hosts is not None else [h.name for h in fleet.hosts.values() if h.known]
    members = set(names)
    place: dict[tuple, str] = {}
    on: dict[str, list[PlanGuest]] = {n: [] for n in names}
    for g in fleet.guests:
        if g.host in members:
            place[g.key] = g.host
            on[g.host].append(g)
    used = {n: [sum(g.memory_mib for g in on[n] if g.counted), sum(g.vcpus for g in on[n] if g.counted),
                sum(1 for g in on[n] if g.counted)] for n in names}

    def zones(n: str) -> set:
        return {g.zone for g in on[n] if g.zone}

    def zone_ok(g: PlanGuest, n: str, others: list[PlanGuest]) -> bool:
        declared = fleet.hosts[n].zone
        if not g.zone:
            return True
        if declared:
            return g.zone == declared
        return all(o.zone in (None, g.zone) for o in others)

    def fits(g: PlanGuest, n: str) -> bool:
        h = fleet.hosts[n]
        if h.drained or not zone_ok(g, n, on[n]):
            return False
        if g.redundancy and any(o.redundancy == g.redundancy for o in on[n]):
            return False
        if not g.counted:
            return True
        mem, cpu, cnt = used[n]
        return mem + g.memory_mib <= h.memory_mib and cpu + g.vcpus <= h.vcpus and cnt + 1 <= h.max_guests

    def over(n: str) -> bool:
        h = fleet.hosts[n]
        mem, cpu, cnt = used[n]
        return mem > h.memory_mib or cpu > h.vcpus or cnt > h.max_guests

    def violating(g: PlanGuest) -> bool:
        n = g.host
        others = [o for o in on[n] if o is not g]
        if fleet.hosts[n].drained or not zone_ok(g, n, others):
            return True
        if g.redundancy and any(o.redundancy == g.redundancy for o in others):
            return True
        return g.counted and over(n)

    def move(g: PlanGuest, n: str) -> None:  # each guest moves at most once: g.host is where it is
        on[g.host].remove(g)
        if g.counted:
            for i, v in enumerate((g.memory_mib, g.vcpus, 1)):
                used[g.host][i] -= v
                used[n][i] += v
        on[n].append(g)
        place[g.key] = n

    for n in names:
        for g in sorted(on[n], key=lambda g: g.name):
            if g.pinned or g.host != n or not violating(g):
                continue
            for peer in fleet.hosts[n].peers:
                if peer in members and fits(g, peer):
                    move(g, peer)
                    break
    return place


__all__ = ["first_fit"]
