#!/usr/bin/env python3
"""Benchmark `vmaudit fleet --facts` over synthetic fleets, into SQLite and into PostgreSQL.

    sudo .venv/bin/python bench/bench_fleet.py                       # 100, 1,000 and 3,000 hosts, 40 guests each
    sudo .venv/bin/python bench/bench_fleet.py --sizes 100 500 --guests 20 --engines sqlite --no-html

One host's facts are collected once (`vmaudit facts` of a libvirt test-driver node of --guests
realistic guests, see bench_run.py, over the fixture root debian-hardened); every host of a fleet is
that snapshot with its own host name, guest names and UUIDs, and redundancy groups shared by pairs of
hosts (as replicas spread over two hypervisors would be). For each size and engine a fresh store
(a SQLite file; a database in a private PostgreSQL cluster started by the benchmark, as the tests do)
and a fresh output directory, then

    vmaudit fleet --facts DIR --store STORE --output OUT [-j N] [--no-html]

is measured as a whole process tree (its evaluation workers included): wall time, CPU time (user +
sys, sampled from /proc every 0.1 s), peak RSS of the tree (the sum over its processes at the worst
sample) and of the main process; per host. Targets: time linear in the hosts, peak memory at the
largest size within 1.5x of the smallest, 1,000 hosts evaluated and stored in under 2 minutes on 2
cores. Results also go to bench/results/fleet-<time>.json. Run it under `flock /tmp/vmaudit-real.lock`
on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests" / "store"))

from bench_run import node_xml  # noqa: E402

ROOT = REPO / "tests" / "fixtures" / "hosts" / "debian-hardened"


def template(work: Path, guests: int) -> str:
    node = work / "node.xml"
    node.write_text(node_xml(guests))
    done = subprocess.run([sys.executable, "-m", "vmaudit", "facts", "-q", "--connect", f"test://{node}",
                           "--root", str(ROOT)], capture_output=True, text=True, check=True)
    return done.stdout


def make_fleet(directory: Path, text: str, hosts: int) -> None:
    facts = directory / "facts"
    facts.mkdir(parents=True)
    hostname = json.loads(text)["host"]["hostname"]
    for n in range(hosts):
        (facts / f"hv{n:05d}.json").write_text(
            text.replace("bench-", f"hv{n:05d}-g").replace(">grp", f">hv{n // 2:05d}-grp").replace("6b0e6f9a-0000-4000-8000-", f"6b0e6f9a-{n:04x}-4000-8000-")
                .replace(f'"hostname": "{hostname}"', f'"hostname": "hv{n:05d}"'))


def measure(cmd: list[str], env: dict) -> dict:
    """Run `cmd`; wall, CPU and peak RSS of it and every process it starts."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    root = psutil.Process(proc.pid)
    cpu: dict[int, float] = {}
    peak_tree = peak_main = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        try:
            procs = [root] + root.children(recursive=True)
        except psutil.NoSuchProcess:
            break
        tree = 0
        for p in procs:
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    rss = p.memory_info().rss
            except psutil.NoSuchProcess:
                continue
            cpu[p.pid] = t.user + t.system
            tree += rss
            if p.pid == proc.pid:
                peak_main = max(peak_main, rss)
        peak_tree = max(peak_tree, tree)
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    if code not in (0, 1, 3):
        raise SystemExit(f"{' '.join(cmd[:6])} exited {code}: {err[-2000:]}")
    # the main process's own figures are exact (its reaped children's CPU included)
    cpu[proc.pid] = max(cpu.get(proc.pid, 0.0), usage.ru_utime + usage.ru_stime)
    peak_main = max(peak_main, usage.ru_maxrss * 1024)
    return {"wall": wall, "cpu": sum(cpu.values()), "rss_tree_mib": peak_tree / 2**20,
            "rss_main_mib": peak_main / 2**20, "stderr": err.strip().splitlines()[-1:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 3000])
    ap.add_argument("--guests", type=int, default=40)
    ap.add_argument("--engines", nargs="+", default=["sqlite", "postgresql"], choices=("sqlite", "postgresql"))
    ap.add_argument("-j", "--jobs", type=int, help="vmaudit fleet -j (default: its own, the number of CPUs)")
    ap.add_argument("--no-html", action="store_true", help="JSON host reports only")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vmaudit-bench-fleet-"))
    cluster = None
    results = []
    try:
        text = template(work, args.guests)
        print(f"one host: {args.guests} guests, facts {len(text) / 1024:.0f} KiB; {os.cpu_count()} CPUs")
        if "postgresql" in args.engines:
            from pgcluster import Cluster, unavailable

            why = unavailable()
            if why:
                raise SystemExit(f"PostgreSQL: {why}")
            cluster = Cluster("bench").start()
        for size in args.sizes:
            fleet = work / f"fleet-{size}"
            t0 = time.perf_counter()
            make_fleet(fleet, text, size)
            print(f"\n{size} hosts (facts written in {time.perf_counter() - t0:.1f} s)")
            for engine in args.engines:
                env = dict(os.environ)
                if engine == "sqlite":
                    store = str(work / f"store-{size}.sqlite")
                else:
                    store = cluster.url(cluster.new_database())
                    env = cluster.env()
                out = work / f"out-{size}-{engine}"
                cmd = [sys.executable, "-m", "vmaudit", "fleet", "--facts", str(fleet), "--store", store,
                       "--output", str(out), "-q"]
                if args.jobs:
                    cmd += ["-j", str(args.jobs)]
                if args.no_html:
                    cmd.append("--no-html")
                m = measure(cmd, env)
                report = json.loads((out / "fleet.json").read_text())
                assert report["summary"]["reached"] == size and report.get("run"), report["summary"]
                row = {"hosts": size, "engine": engine, "guests": args.guests, "html": not args.no_html, **m,
                       "wall_per_host_ms": 1000 * m["wall"] / size, "cpu_per_host_ms": 1000 * m["cpu"] / size}
                results.append(row)
                print(f"  {engine:10s} wall {m['wall']:7.1f} s ({row['wall_per_host_ms']:5.1f} ms/host)  "
                      f"cpu {m['cpu']:7.1f} s ({row['cpu_per_host_ms']:5.1f} ms/host)  "
                      f"peak RSS tree {m['rss_tree_mib']:6.1f} MiB, main {m['rss_main_mib']:6.1f} MiB")
                shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(fleet, ignore_errors=True)
        print("\nratios (largest / smallest fleet):")
        for engine in args.engines:
            rows = [r for r in results if r["engine"] == engine]
            small, large = rows[0], rows[-1]
            print(f"  {engine:10s} time per host x{large['wall_per_host_ms'] / small['wall_per_host_ms']:.2f} "
                  f"(linear: ~1), peak RSS tree x{large['rss_tree_mib'] / small['rss_tree_mib']:.2f}, "
                  f"main x{large['rss_main_mib'] / small['rss_main_mib']:.2f} (target <= 1.5)")
            thousand = [r for r in rows if r["hosts"] == 1000]
            if thousand:
                print(f"  {engine:10s} 1,000 hosts in {thousand[0]['wall']:.1f} s (target < 120 s)")
        out_dir = REPO / "bench" / "results"
        out_dir.mkdir(exist_ok=True)
        path = out_dir / f"fleet-{time.strftime('%Y%m%dT%H%M%S')}.json"
        path.write_text(json.dumps(results, indent=1))
        print(f"\nresults: {path}")
    finally:
        if cluster is not None:
            cluster.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
