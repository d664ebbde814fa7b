#!/usr/bin/env python3
"""Benchmark `vmaudit collect` on N real SSH hosts against what operators would use instead, and the floor.

    sudo .venv/bin/python bench/bench_collect.py [--hosts 50] [--concurrency 16 64] [--skip-ansible]

Debian sshds listen on N loopback addresses (127.0.6.100 ..., 16 per sshd), each a "host" with vmaudit installed
(the lab of tests/fleet/sshlab.py: root, a throw-away key, its own known_hosts). Every contender runs
the same remote command on every host, `vmaudit facts` of a fixture hypervisor (hv-a):

  vmaudit   `vmaudit collect -f 16`: SSH, facts, central evaluation, per-host JSON+HTML, fleet report,
            SQLite history
  ansible   `ansible all -f 16 -m command -a 'vmaudit facts ...'` (ansible-core, same inventory, same key,
            host keys checked against the same known_hosts)
  floor     a bare pool of 16 paramiko sessions: connect, verify the host key, authenticate, run the
            command, read its output; nothing else

Each runs as a child process; wall time, CPU time (user+sys of the process and its children) and peak
RSS come from wait4(). For each --concurrency (default 16 and 64; Ansible at the first only) prints the
three and the ratios; targets: vmaudit >= 10x faster than Ansible and within 1.5x of the floor at the same
concurrency. Results are also written to bench/results/collect-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # vmtest
sys.path.insert(0, str(REPO / "tests" / "fleet"))

from sshlab import FLEET, PORT, SSHLab, available  # noqa: E402

BIN = Path(sys.executable).parent


def remote_command(uri: str, root: str) -> str:
    return " ".join(shlex.quote(a) for a in ("vmaudit", "facts", "-q", "--output", "-", "--connect", uri, "--root", root))


def measure(cmd: list[str], env: dict | None = None) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    # read while waiting so a chatty child never blocks on a full pipe; wait4 gives its rusage
    chunks: dict = {"out": [], "err": []}

    def drain(stream, key):
        for block in iter(lambda: stream.read(65536), b""):
            chunks[key].append(block)

    threads = [threading.Thread(target=drain, args=(proc.stdout, "out")),
               threading.Thread(target=drain, args=(proc.stderr, "err"))]
    for t in threads:
        t.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    for t in threads:
        t.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    out, err = b"".join(chunks["out"]), b"".join(chunks["err"])
    return {"wall_s": round(wall, 3), "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "exit": proc.returncode,
            "stdout": out.decode(errors="replace"), "stderr": err.decode(errors="replace")}


def floor_main(args: argparse.Namespace) -> int:
    """The floor: connect, verify, authenticate, run, read. Runs in its own process."""
    from concurrent.futures import ThreadPoolExecutor

    import paramiko

    hosts = [line.split() for line in Path(args.floor).read_text().splitlines() if line.strip()]
    key = paramiko.PKey.from_path(args.key)

    def one(h: list[str]) -> int:
        addr, cmd = h[0], " ".join(h[1:])
        c = paramiko.SSHClient()
        c.load_host_keys(args.known_hosts)
        c.set_missing_host_key_policy(paramiko.RejectPolicy())
        c.connect(addr, port=PORT, username="root", pkey=key, allow_agent=False, look_for_keys=False, timeout=30)
        _, stdout, _ = c.exec_command(cmd)
        data = stdout.read()
        status = stdout.channel.recv_exit_status()
        c.close()
        return len(data) if status == 0 else -1

    with ThreadPoolExecutor(args.concurrency[0]) as pool:
        sizes = list(pool.map(one, hosts))
    bad = sum(1 for s in sizes if s < 0)
    print(json.dumps({"hosts": len(sizes), "failed": bad, "bytes": sum(s for s in sizes if s > 0)}))
    return 1 if bad else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--hosts", type=int, default=50)
    p.add_argument("--concurrency", type=int, nargs="+", default=[16, 64],
                   help="hosts at a time, one comparison per value (default: 16 64)")
    p.add_argument("--skip-ansible", action="store_true")
    p.add_argument("--floor", help=argparse.SUPPRESS)
    p.add_argument("--key", help=argparse.SUPPRESS)
    p.add_argument("--known-hosts", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.floor:
        return floor_main(args)
    why = available()
    if why:
        print(f"bench_collect: {why}", file=sys.stderr)
        return 2

    addrs = [f"127.0.6.{100 + i}" for i in range(args.hosts)]
    uri, root = f"test://{FLEET}/hv-a.xml", str(FLEET / "roots" / "hv-a")
    command = remote_command(uri, root)
    lab = SSHLab()
    results: dict = {"hosts": args.hosts, "remote_command": command, "runs": {}}
    try:
        for i in range(0, len(addrs), 16):  # sshd listens on at most 16 sockets (MAX_LISTEN_SOCKS)
            lab.add(f"fleet{i // 16}", addrs[i:i + 16])
        lab.start()
        work = Path(tempfile.mkdtemp(prefix="vmaudit-bench-", dir=lab.dir))
        inv = work / "hosts.ini"
        inv.write_text("[hypervisors]\n" + "".join(f"hv{i:03d} ansible_host={a}\n" for i, a in enumerate(addrs))
                       + f"[hypervisors:vars]\nansible_port={PORT}\nansible_user=root\n"
                       f"ansible_python_interpreter=/usr/bin/python3\nvmaudit_connect={uri}\nvmaudit_root={root}\n")
        floor_list = work / "floor.txt"
        floor_list.write_text("".join(f"{a} {command}\n" for a in addrs))

        env_ansible = dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="True", ANSIBLE_SSH_ARGS=(
            f"-o UserKnownHostsFile={lab.known_hosts} -o StrictHostKeyChecking=yes -o ControlMaster=auto "
            f"-o ControlPersist=60s -o BatchMode=yes"), ANSIBLE_CONFIG=str(work / "none.cfg"),
            ANSIBLE_LOCAL_TEMP=str(work / "ansible-tmp"), ANSIBLE_NOCOLOR="1")
        for n, conc in enumerate(args.concurrency):
            out = work / f"out-{conc}"
            runs = {
                "floor": [sys.executable, __file__, "--floor", str(floor_list), "--key", str(lab.client_key),
                          "--known-hosts", str(lab.known_hosts), "--concurrency", str(conc)],
                "vmaudit": [str(BIN / "vmaudit"), "collect", "-i", str(inv), "-f", str(conc),
                            "--output", str(out), "--identity", str(lab.client_key), "--no-agent",
                            "--known-hosts", str(lab.known_hosts), "--ssh-config", str(lab.ssh_config),
                            "--no-progress", "--command-timeout", "120"],
            }
            if not args.skip_ansible and n == 0:  # Ansible once: it is the slow one
                runs["ansible"] = [str(BIN / "ansible"), "all", "-i", str(inv), "-f", str(conc),
                                   "--private-key", str(lab.client_key), "-m", "command", "-a", command, "-o"]
            per: dict = {}
            for name, cmd in runs.items():
                r = measure(cmd, env_ansible if name == "ansible" else None)
                ok = r["exit"] in (0, 1, 3) if name == "vmaudit" else r["exit"] == 0
                if name == "vmaudit":
                    fleet = json.loads((out / "fleet.json").read_text())
                    r["reached"] = fleet["summary"]["reached"]
                    ok = ok and r["reached"] == args.hosts
                elif name == "ansible":
                    r["succeeded"] = r["stdout"].count("| CHANGED |") + r["stdout"].count("| SUCCESS |")
                    ok = ok and r["succeeded"] == args.hosts
                if not ok:
                    print(f"bench_collect: {name} -f {conc} did not collect every host (exit {r['exit']}):\n"
                          f"{r['stderr'][-2000:]}{r['stdout'][-1000:]}", file=sys.stderr)
                r.pop("stdout"), r.pop("stderr")
                r["ok"] = ok
                per[name] = r
            results["runs"][str(conc)] = per
    finally:
        lab.cleanup()

    print(f"\n{args.hosts} hosts, remote command: {command}")
    for conc, per in results["runs"].items():
        print(f"\nconcurrency {conc}\n{'':10} {'wall s':>8} {'cpu s':>8} {'peak MiB':>9}  ok")
        for name in ("vmaudit", "ansible", "floor"):
            if name in per:
                r = per[name]
                print(f"{name:10} {r['wall_s']:8.2f} {r['cpu_s']:8.2f} {r['peak_rss_mib']:9.1f}  {r['ok']}")
        v, f = per["vmaudit"]["wall_s"], per["floor"]["wall_s"]
        per["vmaudit_over_floor"] = round(v / f, 2)
        print(f"vmaudit / floor:   {v / f:.2f}x wall (target <= 1.5), "
              f"{per['vmaudit']['cpu_s'] / max(per['floor']['cpu_s'], 1e-9):.2f}x cpu")
        if "ansible" in per:
            a = per["ansible"]["wall_s"]
            per["ansible_over_vmaudit"] = round(a / v, 1)
            print(f"ansible / vmaudit: {a / v:.1f}x wall (target >= 10), "
                  f"{per['ansible']['cpu_s'] / max(per['vmaudit']['cpu_s'], 1e-9):.1f}x cpu")
    out_dir = REPO / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"collect-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=1))
    print(f"\nresults: {path}")
    return 0 if all(per[n]["ok"] for per in results["runs"].values() for n in ("vmaudit", "floor")) else 1


if __name__ == "__main__":
    sys.exit(main())
