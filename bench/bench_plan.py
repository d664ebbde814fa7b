#!/usr/bin/env python3
"""Benchmark `vmaudit plan` on synthetic fleets against a greedy first-fit baseline.

    .venv/bin/python bench/bench_plan.py [--hosts 50 200 1000] [--time-limit 60] [--seed 1]

Each fleet: migration groups of 20 peer hosts (256 GiB RAM, 64 CPUs; the default policy: 10 % memory
reserve, cpu_overcommit 4, max_running_guests raised to 50), hosts declaring one of three zones, 40
guests per host using 70-90 % of its RAM (the fullest up to the reserve), redundancy pairs on distinct hosts,
and 10 % of the guests misplaced (labelled with another zone than their host's). `--undeclared F`: a
fraction of the hosts declares no zone (legacy hosts: they serve whichever one zone the plan leaves
them), `--used LO HI` changes the memory in use. The fleet is built in
memory (vmaudit.plan.fleet objects, as load_fleet returns them), so the figures are the planner's:
model, CP-SAT, ordering and the independent verifier; not JSON/XML loading.

Per size, in a child process (its peak RSS from getrusage()): wall time of the plan (solve + order), moves,
memory moved, lower bound, status, groups proved optimal, the verifier's violations left; and for
the greedy baseline (each violating guest to the first peer where it fits, vmaudit.plan.greedy) its
moves and the violations it leaves. Targets: 1,000 hosts under 60 s on 2 cores, every group proved
optimal, fewer moves than greedy wherever greedy is not optimal. Results also go to
bench/results/plan-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ZONES = ("dmz", "internal", "restricted")
GROUP = 20
PER_HOST = 40
RAM_MIB = 256 * 1024
CPUS = 64


def build(hosts: int, seed: int, used: tuple = (0.70, 0.90), undeclared: float = 0.0):
    from vmaudit.plan.fleet import PlanFleet, PlanGuest, PlanHost

    rng = random.Random(seed)
    reserve = max(RAM_MIB * 0.10, 2048)
    cap = int(RAM_MIB - reserve)
    fleet_hosts = {}
    guests = []
    for gi in range(0, hosts, GROUP):
        names = [f"hv{i:04d}" for i in range(gi, min(gi + GROUP, hosts))]
        for k, name in enumerate(names):
            # a host declaring no zone serves the zone of most of its guests (legacy hosts)
            declared = None if rng.random() < undeclared else ZONES[k % len(ZONES)]
            fleet_hosts[name] = PlanHost(name=name, address=name, port=None, zone=declared,
                                         peers=[n for n in names if n != name], known=True, ram_mib=RAM_MIB,
                                         memory_mib=cap, cpus=CPUS, vcpus=4 * CPUS, max_guests=50)
        pair = 0
        for k, name in enumerate(names):
            zone = ZONES[k % len(ZONES)]
            target = min(cap, RAM_MIB * rng.uniform(*used))  # of the host's RAM: the fullest are at the reserve
            weights = [rng.choice((1, 2, 2, 4, 4, 8)) for _ in range(PER_HOST)]
            scale = target / sum(weights)
            for j, w in enumerate(weights):
                misplaced = rng.random() < 0.10
                gzone = rng.choice([z for z in ZONES if z != zone]) if misplaced else zone
                red = None
                if not misplaced and j < 2:
                    # redundancy pairs: member j=0 of host k and j=1 of host k+1, same zone
                    red = f"{names[0]}-r{k if j == 0 else k - 1}"
                    pair += 1
                guests.append(PlanGuest(name=f"{name}-vm{j:02d}", uuid=f"{name}-vm{j:02d}", host=name, zone=gzone,
                                        redundancy=red, memory_mib=max(256, int(w * scale) // 256 * 256),
                                        vcpus=rng.choice((1, 2, 2, 4)), counted=True, live=True))
    return PlanFleet(source=f"synthetic-{hosts}", sha256="", hosts=fleet_hosts, guests=guests)


def one(hosts: int, time_limit: float, seed: int, used: tuple, undeclared: float) -> dict:
    from vmaudit.plan.greedy import first_fit
    from vmaudit.plan.order import order_moves
    from vmaudit.plan.solver import solve
    from vmaudit.plan.verify import evaluate

    fleet = build(hosts, seed, used, undeclared)
    before = len(evaluate(fleet))
    t0 = time.monotonic()
    sol = solve(fleet, time_limit=time_limit)
    ordered = order_moves(fleet, sol.placement)
    seconds = time.monotonic() - t0
    left = len(evaluate(fleet, sol.placement))
    t1 = time.monotonic()
    greedy = first_fit(fleet)
    greedy_seconds = time.monotonic() - t1
    greedy_moves = sum(1 for k, h in greedy.items() if h != k[0])
    greedy_left = len(evaluate(fleet, greedy))
    fewer = 0
    for r in sol.groups:
        members = set(r.hosts)
        if r.moves < sum(1 for k, h in greedy.items() if k[0] in members and h != k[0]):
            fewer += 1
    return {
        "hosts": hosts, "guests": len(fleet.guests), "groups": len(sol.groups), "violations_before": before,
        "seconds": round(seconds, 2), "solver_seconds": sol.seconds, "moves": len(ordered),
        "memory_mib": sum(m["memory_mib"] for m in ordered),
        "lower_bound": sum(r.lower_bound for r in sol.groups),
        "groups_optimal": sum(1 for r in sol.groups if r.optimal), "status": "optimal" if sol.proved else "feasible",
        "violations_after": left, "spare_room_steps": sum(1 for m in ordered if m.get("spare_room")),
        "greedy_moves": greedy_moves, "greedy_violations_left": greedy_left,
        "greedy_seconds": round(greedy_seconds, 2),
        "groups_fewer_moves_than_greedy": fewer,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, nargs="+", default=[50, 200, 1000])
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--used", type=float, nargs=2, default=[0.70, 0.90], metavar=("LO", "HI"),
                    help="memory in use per host, fractions of its RAM (default 0.70 0.90)")
    ap.add_argument("--undeclared", type=float, default=0.0, metavar="F",
                    help="fraction of hosts that declare no zone (default 0)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one(args.hosts[0], args.time_limit, args.seed, tuple(args.used), args.undeclared)))
        return 0
    rows = []
    for n in args.hosts:
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, __file__, "--child", "--hosts", str(n), "--time-limit",
                               str(args.time_limit), "--seed", str(args.seed), "--used", *map(str, args.used), "--undeclared", str(args.undeclared)], stdout=subprocess.PIPE, text=True)
        out = proc.stdout
        wall = time.monotonic() - t0
        if proc.returncode:
            print(f"{n} hosts: the child failed with status {proc.returncode}", file=sys.stderr)
            return 1
        row = json.loads(out)
        row["process_wall_seconds"] = round(wall, 2)
        rows.append(row)
    print(f"{'hosts':>6} {'guests':>7} {'viol':>5} {'plan s':>7} {'moves':>6} {'LB':>6} {'status':>9} "
          f"{'opt grp':>8} {'left':>5} {'spare':>5} {'greedy':>7} {'g.left':>6} {'peak MiB':>9}")
    for r in rows:
        print(f"{r['hosts']:>6} {r['guests']:>7} {r['violations_before']:>5} {r['seconds']:>7.1f} {r['moves']:>6} "
              f"{r['lower_bound']:>6} {r['status']:>9} {r['groups_optimal']:>3}/{r['groups']:<4} "
              f"{r['violations_after']:>5} {r['spare_room_steps']:>5} {r['greedy_moves']:>7} "
              f"{r['greedy_violations_left']:>6} {r.get('peak_rss_mib', 0):>9}")
    results = REPO / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / f"plan-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
