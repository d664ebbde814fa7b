"""An independent check of a migration plan against a fleet and a policy (`vmaudit plan --check`).

It shares nothing with the solver's model: it replays the plan's moves one by one from the fleet as
collected, checks each step (the guest is where the step says, the destination is a migration peer,
the guest is not pinned, every host it reaches stays within capacity unless the step says it needs
spare room), and evaluates the final placement rule by rule. The report's `violations_before` and
`violations_after` are this module's evaluation, so a plan's claims are always the verifier's.

Violations are counted one per: foreign zone on a host (every zone other than the declared one; on a
host without a declared zone, every zone beyond the first), extra member of a redundancy group on a
host, host and resource over capacity (memory, vcpus, guests), guest left on a drained host, move
outside the migration peers, pinned guest moved.
"""

from __future__ import annotations

from dataclasses import dataclass

from .fleet import PlanFleet, PlanGuest

RESOURCES = ("memory", "vcpus", "guests")


@dataclass
class Violation:
    constraint: str
    resource: str
    message: str

    def as_dict(self) -> dict:
        return {"constraint": self.constraint, "resource": self.resource, "message": self.message}


def _load(g: PlanGuest) -> tuple[int, int, int]:
    return (g.memory_mib, g.vcpus, 1) if g.counted else (0, 0, 0)


def _limits(fleet: PlanFleet, name: str) -> tuple[int, int, int]:
    h = fleet.hosts[name]
    return (h.memory_mib, h.vcpus, h.max_guests)


def usage(fleet: PlanFleet, where: dict) -> dict[str, list[int]]:
    """host -> [memory MiB, vCPUs, guests] of its counted guests under placement `where`."""
    out = {n: [0, 0, 0] for n, h in fleet.hosts.items() if h.known}
    for g in fleet.guests:
        host = where.get(g.key, g.host)
        if host in out:
            for i, v in enumerate(_load(g)):
                out[host][i] += v
    return out


def evaluate(fleet: PlanFleet, where: dict | None = None) -> list[Violation]:
    """Every violation of constraints 1, 2, 3 and 5 in a placement (guest key -> host; default: as
    collected). Hosts whose guests are unknown are not evaluated."""
    where = where or {}
    on: dict[str, list[PlanGuest]] = {n: [] for n, h in fleet.hosts.items() if h.known}
    for g in fleet.guests:
        host = where.get(g.key, g.host)
        if host in on:
            on[host].append(g)
    out: list[Violation] = []
    used = usage(fleet, where)
    for name, guests in on.items():
        h = fleet.hosts[name]
        zones = sorted({g.zone for g in guests if g.zone})
        if h.zone:
            for z in zones:
                if z != h.zone:
                    names = sorted(g.name for g in guests if g.zone == z)
                    out.append(Violation("zone", f"host:{name}", f"host {name} (zone {h.zone}) holds guests of "
                                         f"zone {z}: {', '.join(names)}"))
        elif len(zones) > 1:
            for z in zones[1:]:
                out.append(Violation("zone", f"host:{name}", f"host {name} (no declared zone) holds guests of "
                                     f"zones {', '.join(zones)}; zone {z} is one too many"))
        groups: dict[str, list[str]] = {}
        for g in guests:
            if g.redundancy:
                groups.setdefault(g.redundancy, []).append(g.name)
        for grp, members in sorted(groups.items()):
            for _ in members[1:]:
                out.append(Violation("redundancy", f"group:{grp}", f"{len(members)} members of redundancy group "
                                     f"{grp} on host {name}: {', '.join(sorted(members))}"))
        for res, have, cap in zip(RESOURCES, used[name], _limits(fleet, name)):
            if have > cap:
                unit = {"memory": " MiB", "vcpus": " vCPUs", "guests": " guests"}[res]
                out.append(Violation("capacity", f"host:{name}", f"host {name}: running and autostart guests "
                                     f"need {have}{unit}, more than its {cap}{unit}"))
        if h.drained:
            for g in sorted(guests, key=lambda g: g.name):
                out.append(Violation("drain", f"host:{name}", f"guest {g.name} is still on drained host {name}"
                                     + (" (it is pinned)" if g.pinned else "")))
    return out


def check_plan(fleet: PlanFleet, plan: object) -> tuple[list[Violation], dict]:
    """(every problem of the plan, the final placement). Problems are violations of the final placement,
    steps that cannot be made (constraint `step`), moves outside the peers or of pinned guests, steps
    that overflow a host without saying they need spare room (constraint `order`), and claims of the
    plan that do not match (constraint `claim`)."""
    problems: list[Violation] = []
    if not isinstance(plan, dict) or plan.get("schema") != "vmaudit-plan/1":
        return [Violation("claim", "plan", "not a vmaudit-plan/1 document")], {}
    moves = plan.get("moves")
    if not isinstance(moves, list):
        return [Violation("claim", "plan", "the plan has no list of moves")], {}
    fsum = (plan.get("fleet") or {}).get("sha256") if isinstance(plan.get("fleet"), dict) else None
    if fsum and fsum != fleet.sha256:
        problems.append(Violation("claim", "fleet", "the plan was made for another fleet report (sha256 differs)"))
    where: dict = {}
    resolved: list[tuple[dict, PlanGuest | None]] = []
    by_uuid: dict[tuple, PlanGuest] = {}   # (host it is on now, uuid) and (host, name) -> guest
    by_name: dict[tuple, PlanGuest] = {}
    for cand in fleet.guests:
        by_uuid.setdefault((cand.host, cand.uuid), cand)
        by_name.setdefault((cand.host, cand.name), cand)
    for i, m in enumerate(moves, 1):
        label = f"step:{m.get('step', i) if isinstance(m, dict) else i}"
        if not isinstance(m, dict) or not all(isinstance(m.get(k), str) for k in ("from", "to")):
            problems.append(Violation("step", label, f"move #{i} is not an object with 'from' and 'to' hosts"))
            resolved.append(({}, None))
            continue
        src, dst = m["from"], m["to"]
        # a guest that moved before is found where it went
        g = by_uuid.get((src, m.get("uuid"))) if m.get("uuid") else by_name.get((src, m.get("guest")))
        if g is None:
            problems.append(Violation("step", label, f"move #{i}: no guest {m.get('guest')!r} (uuid "
                                      f"{m.get('uuid')!r}) is on host {src} at that point"))
            resolved.append((m, None))
            continue
        for end in (src, dst):
            if end not in fleet.hosts or not fleet.hosts[end].known:
                problems.append(Violation("peers", label, f"move #{i} ({g.name}): host {end} "
                                          + ("is not in the fleet" if end not in fleet.hosts else
                                             "was not audited; its guests and capacity are unknown")))
        if dst not in fleet.hosts.get(src, _NOHOST).peers:
            problems.append(Violation("peers", label, f"move #{i}: {g.name} from {src} to {dst}, which is not a "
                                      f"migration peer of {src}"))
        if g.pinned:
            problems.append(Violation("pinned", label, f"move #{i}: guest {g.name} is pinned by [plan] pinned"))
        where[g.key] = dst
        for index, ident in ((by_uuid, g.uuid), (by_name, g.name)):
            if index.get((src, ident)) is g:
                del index[(src, ident)]
            index.setdefault((dst, ident), g)
        resolved.append((m, g))
    final_use = usage(fleet, where)
    # replay the order: after each step the destination holds no more than its capacity, or than it
    # holds in the end (a host that stays over capacity is reported once, as a capacity violation)
    current: dict = {}
    use = usage(fleet, current)
    for i, (m, g) in enumerate(resolved, 1):
        if g is None:
            continue
        src, dst = m["from"], m["to"]
        if src not in use or dst not in use:
            current[g.key] = dst
            continue
        load = _load(g)
        for k in range(3):
            use[src][k] -= load[k]
            use[dst][k] += load[k]
        current[g.key] = dst
        caps = _limits(fleet, dst)
        over = [RESOURCES[k] for k in range(3) if use[dst][k] > max(caps[k], final_use[dst][k])]
        if over and not m.get("spare_room"):
            problems.append(Violation("order", f"step:{m.get('step', i)}", f"move #{i} ({g.name} to {dst}) "
                                      f"overflows {dst} ({', '.join(over)}) at that point and does not say it "
                                      f"needs spare room"))
    problems.extend(evaluate(fleet, where))
    claimed = plan.get("objective")
    if isinstance(claimed, dict):
        mem = sum(g.memory_mib for _, g in resolved if g is not None)
        if claimed.get("moves") != len(moves):
            problems.append(Violation("claim", "objective", f"the plan claims {claimed.get('moves')} moves "
                                      f"but lists {len(moves)}"))
        if claimed.get("memory_mib") != mem:
            problems.append(Violation("claim", "objective", f"the plan claims {claimed.get('memory_mib')} MiB "
                                      f"moved; its moves move {mem} MiB"))
    return problems, where


class _NoHost:
    peers: list = []


_NOHOST = _NoHost()


__all__ = ["Violation", "evaluate", "check_plan", "usage", "RESOURCES"]
