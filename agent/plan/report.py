"""The plan document (`vmaudit-plan/1`, CONTRACT.md "Plan") and its exit status.

Status and exit: `infeasible` (1) when the placement leaves violations (some constraint cannot be met:
`infeasible` names which and why); else `partial` (3) when hosts were not audited (nothing moves to
or from them, and their guests are not counted); else `optimal` (0) when every group is proved
optimal, `feasible` (0) when the time limit ended the search first.
"""

from __future__ import annotations

from vmaudit import __version__

from .fleet import PlanFleet
from .order import order_moves
from .solver import Solution
from .verify import evaluate

PLAN_SCHEMA = "vmaudit-plan/1"
EXIT = {"optimal": 0, "feasible": 0, "infeasible": 1, "partial": 3}


def _totals(fleet: PlanFleet, name: str, where: dict) -> dict:
    guests = [g for g in fleet.guests if where.get(g.key, g.host) == name]
    counted = [g for g in guests if g.counted]
    return {"guests": len(counted), "defined": len(guests), "memory_mib": sum(g.memory_mib for g in counted),
            "vcpus": sum(g.vcpus for g in counted),
            "zones": sorted({g.zone for g in guests if g.zone})}


def why_infeasible(fleet: PlanFleet, hosts: list[str]) -> list[dict]:
    """Plain reasons a migration group cannot meet every constraint (necessary conditions that fail)."""
    members = set(hosts)
    open_hosts = [fleet.hosts[h] for h in hosts if not fleet.hosts[h].drained]
    guests = [g for g in fleet.guests if g.host in members]
    label = ", ".join(hosts)
    out = []

    def add(constraint: str, resource: str, message: str) -> None:
        out.append({"constraint": constraint, "resource": resource, "message": message})

    for g in guests:
        if g.pinned and fleet.hosts[g.host].drained:
            add("drain", f"host:{g.host}", f"guest {g.name} is pinned ([plan] pinned) on drained host {g.host}")
    if len(hosts) == 1 and fleet.hosts[hosts[0]].drained and guests:
        add("drain", f"host:{hosts[0]}", f"host {hosts[0]} is drained but has no migration peer to move its "
                                         f"guests to")
    zones = sorted({g.zone for g in guests if g.zone})
    undeclared = [h for h in open_hosts if not h.zone]
    homeless = [z for z in zones if not any(h.zone == z for h in open_hosts)]
    if len(homeless) > len(undeclared):
        add("zone", f"group:{label}", f"migration group {label} holds guests of {len(zones)} zones "
            f"({', '.join(zones)}); zones {', '.join(homeless)} have no host of their own and only "
            f"{len(undeclared)} host(s) declare no zone")
    reds: dict[str, int] = {}
    for g in guests:
        if g.redundancy:
            reds[g.redundancy] = reds.get(g.redundancy, 0) + 1
    for grp, n in sorted(reds.items()):
        if n > len(open_hosts):
            add("redundancy", f"group:{grp}", f"redundancy group {grp} has {n} members in migration group {label}, "
                f"which has {len(open_hosts)} host(s) to spread them over")
    counted = [g for g in guests if g.counted]
    for attr, cap_attr, unit in (("memory_mib", "memory_mib", "MiB"), ("vcpus", "vcpus", "vCPUs")):
        need = sum(getattr(g, attr) for g in counted)
        have = sum(getattr(h, cap_attr) for h in open_hosts)
        if need > have:
            add("capacity", f"group:{label}", f"running and autostart guests of migration group {label} need "
                f"{need} {unit}; its hosts offer {have} {unit} (after the memory reserve and cpu_overcommit)")
    if len(counted) > sum(h.max_guests for h in open_hosts):
        add("capacity", f"group:{label}", f"{len(counted)} running and autostart guests in migration group "
            f"{label}; its hosts take {sum(h.max_guests for h in open_hosts)} ([limits] max_running_guests)")
    if not out:
        add("combined", f"group:{label}", f"in migration group {label} the zone, redundancy, capacity and drain "
            f"constraints cannot all be met together; the plan leaves the fewest violations")
    return out


def build_plan(fleet: PlanFleet, policy, solution: Solution, time_limit: float) -> dict:
    from ortools import __version__ as ortools_version

    moves = order_moves(fleet, solution.placement)
    before = [v.as_dict() for v in evaluate(fleet, {})]
    after = [v.as_dict() for v in evaluate(fleet, solution.placement)]
    infeasible = []
    for r in solution.groups:
        if r.status == "unsolved":
            infeasible.append({"constraint": "time_limit", "resource": f"group:{', '.join(r.hosts)}",
                               "message": f"the solver found no placement for migration group "
                                          f"{', '.join(r.hosts)} within its share of the time limit "
                                          f"({r.seconds:.1f} s of {time_limit:g} s); the first-fit placement "
                                          f"is used (never worse than the fleet as it is): raise --time-limit"})
        if r.soft:
            infeasible.extend(why_infeasible(fleet, r.hosts))
    unaudited = [{"host": h.name, "reason": h.reason} for h in fleet.hosts.values() if not h.known]
    if after:
        status = "infeasible"
    elif unaudited:
        status = "partial"
    else:
        status = "optimal" if solution.proved else "feasible"
    hosts = []
    for h in fleet.hosts.values():
        entry = {"name": h.name, "address": h.address, "port": h.port, "zone": h.zone, "audited": h.known,
                 "drained": h.drained, "peers": h.peers}
        if h.known:
            entry.update(before=_totals(fleet, h.name, {}), after=_totals(fleet, h.name, solution.placement),
                         capacity=h.capacity())
        else:
            entry["reason"] = h.reason
        hosts.append(entry)
    return {
        "schema": PLAN_SCHEMA,
        "tool": {"name": "vmaudit", "version": __version__},
        "fleet": {"source": fleet.source, "sha256": fleet.sha256},
        "policy": {"source": policy.source, "sha256": policy.sha256},
        "status": status,
        "proved_optimal": solution.proved,
        "objective": {"moves": len(moves), "memory_mib": sum(m["memory_mib"] for m in moves)},
        "lower_bound": {"moves": sum(r.lower_bound for r in solution.groups)},
        "solver": {"name": "OR-Tools CP-SAT", "version": ortools_version, "seconds": solution.seconds,
                   "time_limit": time_limit},
        "groups": [{"hosts": r.hosts, "status": r.status, "moves": r.moves, "memory_mib": r.memory_mib,
                    "lower_bound": r.lower_bound, "proved_optimal": r.optimal, "seconds": r.seconds,
                    "notes": r.notes} for r in solution.groups],
        "infeasible": infeasible,
        "unaudited": unaudited,
        "violations_before": before,
        "violations_after": after,
        "moves": moves,
        "hosts": hosts,
    }


def exit_status(plan: dict) -> int:
    return EXIT[plan["status"]]


__all__ = ["PLAN_SCHEMA", "build_plan", "exit_status", "why_infeasible"]
