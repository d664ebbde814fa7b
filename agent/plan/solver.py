"""The placement model, solved exactly with OR-Tools CP-SAT, one migration group at a time.

Moves never leave a group of migration peers (the connected components of the peer relation over
the hosts whose guests are known), so each group is its own model. Per group:

* x[g,h] = 1 when guest g ends on host h, for h its current host or a peer of it (constraint 4).
  A pinned guest, and a shut-off guest outside every redundancy group whose zone its host accepts
  (moving it can never help: it takes no capacity and breaks nothing), keep their host: no variable.
* zone (1): a host that declares a zone takes no guest of another zone; a host that declares none
  gets z[h,k] (k: the zones of the guests that may end there) with at most one of them set.
* redundancy (2): at most one member of a redundancy group per host.
* capacity (3): over running and autostart guests, memory, vCPUs and guest count within the host's.
* drain (5): no guest ends on a drained host.

Objective: moved guests, then memory moved, lexicographically (moves x W + MiB moved, W larger than
all the memory that can move). The group is solved hard first; when CP-SAT proves it infeasible, it
is solved again with every constraint but 4 and pinning soft, in two steps: the fewest violations
(counted as the verifier counts them, vmaudit.plan.verify), then the fewest moves and memory keeping
that many.

The first-fit placement (vmaudit.plan.greedy) is the solver's hint, so a feasible plan is known from
the start and the search only has to improve it and prove the bound.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from .fleet import PlanFleet, PlanGuest, PlanHost
from .greedy import first_fit


class SolverMissing(Exception):
    """OR-Tools is not installed (the optional extra vmaudit[plan])."""


def _cp_model():
    try:
        from ortools.sat.python import cp_model
    except ImportError:
        raise SolverMissing("vmaudit plan needs OR-Tools: pip install 'vmaudit[plan]' "
                            "(or: pip install ortools)") from None
    return cp_model


@dataclass
class GroupResult:
    hosts: list[str]
    status: str                    # optimal, feasible, infeasible (soft placement), unsolved
    placement: dict                # guest key -> host
    moves: int = 0
    memory_mib: int = 0
    lower_bound: int = 0           # on moves (for the hard model; for a soft one, 0 unless optimal)
    seconds: float = 0.0
    violations: int = 0            # left by the soft placement, as the model counts them
    soft: bool = False
    optimal: bool = False          # proved: fewest moves (soft: fewest violations, then moves)
    notes: list[str] = field(default_factory=list)


def groups(fleet: PlanFleet) -> list[list[str]]:
    """Connected components of the migration peer relation over the hosts whose guests are known."""
    known = {n for n, h in fleet.hosts.items() if h.known}
    seen: set = set()
    out = []
    for name in fleet.hosts:
        if name not in known or name in seen:
            continue
        stack, comp = [name], []
        seen.add(name)
        while stack:
            n = stack.pop()
            comp.append(n)
            for p in fleet.hosts[n].peers:
                if p in known and p not in seen:
                    seen.add(p)
                    stack.append(p)
        out.append(sorted(comp))
    return out


def _candidates(g: PlanGuest, host: PlanHost, fleet: PlanFleet, members: set, soft: bool) -> list[str]:
    """Where g may end: its host, then the peers that could take it."""
    out = [g.host]
    for p in host.peers:
        ph = fleet.hosts.get(p)
        if p not in members or ph is None:
            continue  # an unknown host is outside the plan
        if ph.drained and not soft:
            continue  # (a soft plan may park a guest there if that leaves fewer violations)
        if not soft and g.zone and ph.zone and ph.zone != g.zone:
            continue
        if not soft and g.counted and (g.memory_mib > ph.memory_mib or g.vcpus > ph.vcpus or ph.max_guests < 1):
            continue
        out.append(p)
    return out


def _fixed(g: PlanGuest, host: PlanHost) -> bool:
    """Moving g can never help: pinned, or shut off (no capacity), in no redundancy group, on a host that
    is not drained and declares g's zone (or g has none). On a host declaring no zone a labelled guest
    decides the host's zone, so it stays free to move."""
    if g.pinned:
        return True
    return not g.counted and not g.redundancy and not host.drained and (not g.zone or host.zone == g.zone)


def solve_group(fleet: PlanFleet, hosts: list[str], time_limit: float, workers: int,
                hint: dict | None = None) -> GroupResult:
    cp_model = _cp_model()
    started = time.monotonic()
    members = set(hosts)
    guests = [g for g in fleet.guests if g.host in members]
    hint = hint or {}
    result = None
    for soft in (False, True):
        remaining = max(0.05, time_limit - (time.monotonic() - started))
        result = _solve(cp_model, fleet, hosts, guests, remaining, workers, hint, soft)
        if result is not None:
            break
    if result is None:  # the soft model cannot be infeasible; should CP-SAT say so, nothing moves
        result = _unsolved(hosts, guests, True)
    if result.status == "unsolved" and hint:
        # the hint is first-fit's placement (it only moves a guest that breaks a rule to where it
        # breaks none: never worse than the fleet as it is) or, on a second try, the best one so far
        result.placement = {g.key: hint.get(g.key, g.host) for g in guests}
        result.moves = sum(1 for g in guests if result.placement[g.key] != g.host)
        result.memory_mib = sum(g.memory_mib for g in guests if result.placement[g.key] != g.host)
        result.notes = ["no better placement found within the time limit: the first-fit placement is used"]
    result.seconds = round(time.monotonic() - started, 3)
    return result


def _solve(cp_model, fleet, hosts, guests, time_limit, workers, hint, soft) -> GroupResult | None:
    members = set(hosts)
    model = cp_model.CpModel()
    x: dict[tuple, dict[str, object]] = {}
    on: dict[str, list] = {h: [] for h in hosts}        # (guest, var or None when fixed there)
    fixed_here = {}
    for g in guests:
        host = fleet.hosts[g.host]
        cands = [g.host] if _fixed(g, host) else _candidates(g, host, fleet, members, soft)
        if len(cands) == 1:
            fixed_here[g.key] = g.host
            on[g.host].append((g, None))
            continue
        vars_ = {h: model.NewBoolVar("") for h in cands}
        model.AddExactlyOne(vars_.values())
        x[g.key] = vars_
        for h, v in vars_.items():
            on[h].append((g, v))
            if h == hint.get(g.key, g.host):
                model.AddHint(v, 1)
            else:
                model.AddHint(v, 0)
    penalties = []   # (weight-less) violation terms of the soft model
    penalty_hint = [0]  # their sum under the hint
    movable_mem = sum(g.memory_mib for g in guests if g.key in x)
    W = movable_mem + 1

    def hinted(g: PlanGuest, v, h: str) -> bool:
        """Whether the hint puts g on h (so the soft model's auxiliary variables can be hinted too: a
        complete hint is a solution CP-SAT takes at once)."""
        return v is None or hint.get(g.key, g.host) == h

    for h in hosts:
        ph = fleet.hosts[h]
        entries = on[h]
        # (5) drain: nothing may end here but what is fixed (pinned) here
        if ph.drained:
            for g, v in entries:
                if v is None:
                    if g.pinned:
                        if not soft:
                            return None  # infeasible already: guests that cannot move break it
                        penalties.append(1)
                        penalty_hint[0] += 1
                elif soft:
                    penalties.append(v)
                    penalty_hint[0] += hinted(g, v, h)
                else:
                    model.Add(v == 0)
        # (1) zone
        zones: dict[str, list] = {}
        present: dict[str, bool] = {}
        for g, v in entries:
            if g.zone:
                zones.setdefault(g.zone, []).append(v)
                present[g.zone] = present.get(g.zone, False) or hinted(g, v, h)
        if ph.zone:
            for k, vs in zones.items():
                if k == ph.zone:
                    continue
                if any(v is None for v in vs):
                    if not soft:
                        return None  # infeasible already: guests that cannot move break it
                    penalties.append(1)
                    penalty_hint[0] += 1
                    continue
                if soft:
                    z = model.NewBoolVar("")
                    model.AddHint(z, present[k])
                    for v in vs:
                        model.AddImplication(v, z)
                    penalties.append(z)
                    penalty_hint[0] += present[k]
                else:
                    for v in vs:
                        model.Add(v == 0)
        elif len(zones) > 1:
            zvars = {}
            for k, vs in zones.items():
                z = model.NewBoolVar("")
                model.AddHint(z, present[k])
                zvars[k] = z
                for v in vs:
                    if v is None:
                        model.Add(z == 1)
                    else:
                        model.AddImplication(v, z)
            if soft:
                extra = model.NewIntVar(0, len(zvars), "")
                model.AddHint(extra, max(0, sum(present.values()) - 1))
                model.Add(extra >= sum(zvars.values()) - 1)
                penalties.append(extra)
                penalty_hint[0] += max(0, sum(present.values()) - 1)
            else:
                model.Add(sum(zvars.values()) <= 1)
        # (2) redundancy
        groups_here: dict[str, list] = {}
        members_here: dict[str, int] = {}
        for g, v in entries:
            if g.redundancy:
                groups_here.setdefault(g.redundancy, []).append(v)
                members_here[g.redundancy] = members_here.get(g.redundancy, 0) + hinted(g, v, h)
        for grp, vs in groups_here.items():
            if len(vs) < 2:
                continue
            fixed = sum(1 for v in vs if v is None)
            terms = [v for v in vs if v is not None]
            if soft:
                extra = model.NewIntVar(0, len(vs), "")
                model.AddHint(extra, max(0, members_here[grp] - 1))
                model.Add(extra >= fixed + sum(terms) - 1)
                penalties.append(extra)
                penalty_hint[0] += max(0, members_here[grp] - 1)
            else:
                if fixed > 1:
                    return None  # infeasible already: guests that cannot move break it
                model.Add(sum(terms) <= 1 - fixed)
        # (3) capacity
        counted = [(g, v) for g, v in entries if g.counted]
        for attr, cap in ((lambda g: g.memory_mib, ph.memory_mib), (lambda g: g.vcpus, ph.vcpus),
                          (lambda g: 1, ph.max_guests)):
            fixed = sum(attr(g) for g, v in counted if v is None)
            terms = [(attr(g), v) for g, v in counted if v is not None]
            top = fixed + sum(a for a, _ in terms)
            if top <= cap:
                continue
            expr = sum(a * v for a, v in terms)
            if soft:
                b = model.NewBoolVar("")
                over = sum(attr(g) for g, v in counted if hinted(g, v, h)) > cap
                model.AddHint(b, over)
                model.Add(expr + fixed <= cap + (top - cap) * b)
                penalties.append(b)
                penalty_hint[0] += over
            else:
                if fixed > cap:
                    return None  # infeasible already: guests that cannot move break it
                model.Add(expr <= cap - fixed)

    stay = {k: vs[k[0]] for k, vs in x.items()}   # k[0]: the guest's current host
    mem_of = {g.key: g.memory_mib for g in guests}
    moved_terms = [(1 - v) for v in stay.values()]
    objective = sum(W * m for m in moved_terms) + sum(mem_of[k] * (1 - v) for k, v in stay.items())
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = workers
    started = time.monotonic()
    violations_proved = True
    if soft:
        # lexicographic in two solves: the fewest violations first, then the fewest moves keeping them.
        # Reached only after the hard model was proved infeasible: at least one violation is left.
        total = model.NewIntVar(0, len(penalties) * (len(guests) + 1), "violations")
        model.Add(total == sum(penalties))
        model.Add(total >= 1)
        model.AddHint(total, penalty_hint[0])
        model.Minimize(total)
        solver.parameters.max_time_in_seconds = max(0.05, time_limit / 2)
        status = solver.Solve(model)
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return _unsolved(hosts, guests, soft)
        violations_proved = status == cp_model.OPTIMAL
        least = int(round(solver.ObjectiveValue()))
        model.Add(total <= least)
        model.ClearHints()
        for vs in x.values():
            for v in vs.values():
                model.AddHint(v, solver.Value(v))
    model.Minimize(objective)
    solver.parameters.max_time_in_seconds = max(0.05, time_limit - (time.monotonic() - started))
    status = solver.Solve(model)
    if status == cp_model.INFEASIBLE:
        return None
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        res = _unsolved(hosts, guests, soft)
        if not soft and x:
            res.lower_bound = int(max(0, solver.BestObjectiveBound()) // W)
        return res
    placement = dict(fixed_here)
    moves = mem = 0
    for k, vs in x.items():
        dest = next(h for h, v in vs.items() if solver.Value(v))
        placement[k] = dest
        if dest != k[0]:
            moves += 1
            mem += mem_of[k]
    optimal = status == cp_model.OPTIMAL and violations_proved
    viol = sum(solver.Value(p) if not isinstance(p, int) else p for p in penalties) if soft else 0
    bound = int(round(solver.BestObjectiveBound())) if x else 0
    lb = moves if optimal else (max(0, bound) // W if violations_proved else 0)
    st = "infeasible" if soft else ("optimal" if optimal else "feasible")
    return GroupResult(hosts, st, placement, moves=moves, memory_mib=mem, lower_bound=lb, violations=viol,
                       soft=soft, optimal=optimal, notes=[] if optimal or not x else ["not proved optimal within the time limit"])


def _unsolved(hosts: list[str], guests: list[PlanGuest], soft: bool) -> GroupResult:
    res = GroupResult(hosts, "unsolved", _current(guests), soft=soft)
    res.notes.append("no placement found within the time limit; nothing moves in this group")
    return res


def _current(guests: list[PlanGuest]) -> dict:
    return {g.key: g.host for g in guests}


@dataclass
class Solution:
    placement: dict                    # guest key -> host (every known host's guests)
    groups: list[GroupResult]
    seconds: float

    @property
    def proved(self) -> bool:
        return all(r.optimal for r in self.groups)


def solve(fleet: PlanFleet, time_limit: float = 60.0, workers: int | None = None) -> Solution:
    """The placement with the fewest moves (then memory moved) per migration group."""
    _cp_model()
    started = time.monotonic()
    workers = workers or max(1, min(8, os.cpu_count() or 1))
    comps = groups(fleet)
    per_host: dict[str, int] = {}
    for g in fleet.guests:
        per_host[g.host] = per_host.get(g.host, 0) + 1
    sizes = [sum(per_host.get(h, 0) for h in c) + len(c) for c in comps]
    left = sum(sizes)
    results: list[GroupResult] = []
    for comp, size in zip(comps, sizes):
        remaining = max(0.0, time_limit - (time.monotonic() - started))
        budget = remaining * size / max(left, 1)
        left -= size
        results.append(solve_group(fleet, comp, max(0.1, budget), workers, first_fit(fleet, comp)))
    # the time the quick groups left goes to the groups not proved yet, starting from their best plan
    open_groups = [i for i, r in enumerate(results) if not r.optimal]
    left = sum(sizes[i] for i in open_groups)
    for i in open_groups:
        remaining = time_limit - (time.monotonic() - started)
        budget = remaining * sizes[i] / max(left, 1)
        left -= sizes[i]
        if budget < 1.0:
            continue
        old = results[i]
        new = solve_group(fleet, old.hosts, budget, workers, old.placement)
        new.seconds = round(new.seconds + old.seconds, 3)
        if _better(new, old):
            results[i] = new
    placement: dict = {}
    for r in results:
        placement.update(r.placement)
    return Solution(placement, results, round(time.monotonic() - started, 3))


def _better(new: GroupResult, old: GroupResult) -> bool:
    if new.status == "unsolved":
        return False
    if old.status == "unsolved" or new.optimal:
        return True
    return (new.violations, new.moves, new.memory_mib) <= (old.violations, old.moves, old.memory_mib)


__all__ = ["SolverMissing", "GroupResult", "Solution", "groups", "solve", "solve_group"]
