#!/usr/bin/env python3
"""Benchmark `vmaudit run` against a floor, on libvirt test-driver hosts of N guests.

For each size it builds a node XML of N realistic guests (disks, NICs, graphics, channels, vmaudit
metadata; half of them running, half shut off), then runs, one after the other in this same run:
  vmaudit  `python -m vmaudit run --connect test:///node.xml --root <empty> --format json` (whole process)
  floor    a bare Python process that opens the same URI read-only, lists every guest and fetches and
           parses its XML — both definitions of a running persistent guest (XMLDesc(0) and
           XMLDesc(VIR_DOMAIN_XML_INACTIVE)), as vmaudit does — nothing else
(The test driver keeps one XML per guest, so there the persistent definition equals the live one: the
cost of fetching and judging it is measured all the same.)
and prints wall time, CPU time (user+sys) and peak RSS of each, and the ratios vmaudit/floor. Then,
from a snapshot saved with `vmaudit facts`, it measures `vmaudit run --facts` (the whole process) and
the facts contract's share of it: validating the snapshot against the collectors' schemas (`Facts(data)`)
and unguarding the findings' evidence, timed in one process, as a fraction of that run.

    .venv/bin/python bench/bench_run.py            # 1,000 and 10,000 guests
    .venv/bin/python bench/bench_run.py 500 2000   # other sizes
    .venv/bin/python bench/bench_run.py --real 1000   # on the real libvirtd (qemu:///system, as root):
        defines 1,000 shut-off guests named vmaudit-bench-*, measures both over libvirt's RPC socket
        (plus the live host facts, for vmaudit), then undefines them again
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EMPTY_ROOT = REPO / "tests/fixtures/hosts/empty"

FLOOR = r"""
import sys, xml.etree.ElementTree as ET, libvirt
libvirt.registerErrorHandler(lambda *a: None, None)
conn = libvirt.openReadOnly(sys.argv[1])
persistent = {d.UUIDString() for d in conn.listAllDomains(4)}  # VIR_CONNECT_LIST_DOMAINS_PERSISTENT
n = 0
for dom in conn.listAllDomains(0):
    ET.fromstring(dom.XMLDesc(0))
    if dom.ID() != -1 and dom.UUIDString() in persistent:  # running: its persistent definition too
        ET.fromstring(dom.XMLDesc(2))
    n += 1
print(n)
"""

# The facts contract's cost on one snapshot: validation (Facts(data) holds it to the schemas) and the
# evidence pass of make_finding (unguarded), each the best of 3, in seconds.
CONTRACT = r"""
import json, sys, time
from vmaudit.collectors import source_schemas
from vmaudit.engine import evaluate, load_checks
from vmaudit.facts import Facts, unguarded
from vmaudit.policy import Policy
with open(sys.argv[1]) as fh:
    data = json.load(fh)
load_checks(); source_schemas()
best = float("inf")
for _ in range(3):
    t0 = time.perf_counter(); Facts(data); best = min(best, time.perf_counter() - t0)
evidence = [f["evidence"] for f in evaluate(Facts(data), Policy())]
unguard = float("inf")
for _ in range(3):
    t0 = time.perf_counter()
    for e in evidence:
        unguarded(e)
    unguard = min(unguard, time.perf_counter() - t0)
print(best, unguard, len(evidence))
"""

GUEST = """  <domain type='{dtype}'>
    <name>bench-{i:05d}</name>
    <uuid>6b0e6f9a-0000-4000-8000-{i:012d}</uuid>
    <metadata>
      <vm:guest xmlns:vm="urn:vmaudit:guest:1"><vm:zone>{zone}</vm:zone><vm:service>svc{svc}</vm:service>
        <vm:owner>team{svc}</vm:owner><vm:redundancy>grp{grp}</vm:redundancy></vm:guest>
      <libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
        <libosinfo:os id="http://debian.org/debian/12"/></libosinfo:libosinfo>
    </metadata>
    <memory unit='KiB'>2097152</memory>
    <currentMemory unit='KiB'>2097152</currentMemory>
    <vcpu placement='static'>2</vcpu>
    <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type><boot dev='hd'/></os>
    <features><acpi/><apic/></features>
    <cpu mode='host-model' check='partial'/>
    <clock offset='utc'><timer name='rtc' tickpolicy='catchup'/><timer name='pit' tickpolicy='delay'/></clock>
    <on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>
    <devices>
      <emulator>/usr/bin/qemu-system-x86_64</emulator>
      <disk type='file' device='disk'>
        <driver name='qemu' type='qcow2' discard='unmap'/>
        <source file='/var/lib/libvirt/images/bench-{i:05d}.qcow2'/>
        <target dev='vda' bus='virtio'/>
      </disk>
      <disk type='file' device='cdrom'>
        <driver name='qemu' type='raw'/>
        <target dev='sda' bus='sata'/>
        <readonly/>
      </disk>
      <controller type='usb' model='qemu-xhci' ports='15'/>
      <controller type='pci' model='pcie-root'/>
      <interface type='bridge'>
        <mac address='52:54:00:{m1:02x}:{m2:02x}:{m3:02x}'/>
        <source bridge='br-{zone}'/>
        <model type='virtio'/>
      </interface>
      <serial type='pty'><target type='isa-serial' port='0'><model name='isa-serial'/></target></serial>
      <console type='pty'><target type='serial' port='0'/></console>
      <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
      <input type='tablet' bus='usb'/>
      <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'><listen type='address' address='127.0.0.1'/></graphics>
      <video><model type='virtio' heads='1' primary='yes'/></video>
      <memballoon model='none'/>
      <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
    </devices>
    {runstate}
  </domain>
"""


def node_xml(n: int) -> str:
    parts = ["<node xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>",
             "<cpu><mhz>2400</mhz><model>x86_64</model><active>64</active><nodes>2</nodes><sockets>2</sockets>"
             "<cores>16</cores><threads>2</threads></cpu>",
             f"<memory>{max(n * 2 * 1024 * 1024 // 4, 64 * 1024 * 1024)}</memory>"]
    for i in range(n):
        parts.append(GUEST.format(
            i=i, dtype="kvm" if i % 50 else "qemu", zone="dmz" if i % 7 else "internal", svc=i % 40,
            grp=i // 2, m1=(i >> 16) & 255, m2=(i >> 8) & 255, m3=i & 255,
            runstate="<test:runstate>5</test:runstate>" if i % 2 == 0 else ""))
    parts.append("</node>")
    return "\n".join(parts)


# Both measured as installed code runs: from bytecode (pip compiles it), never compiling on import.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def compile_vmaudit() -> None:
    import vmaudit.checks
    import vmaudit.collectors

    dirs = {*vmaudit.__path__, *vmaudit.collectors.__path__, *vmaudit.checks.__path__}
    subprocess.run([sys.executable, "-m", "compileall", "-q", *sorted(dirs)], check=True, env=ENV)


def measure(argv: list[str]) -> dict:
    """Run a command to completion; wall time, CPU time and peak RSS of that process alone."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    out_chunks = []
    # drain stdout while it runs (reports can be large)
    for chunk in iter(lambda: proc.stdout.read(1 << 20), b""):
        out_chunks.append(len(chunk))
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1, 3):
        raise SystemExit(f"{argv[:4]} exited {code}: {err[-2000:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mib": usage.ru_maxrss / 1024,
            "out_bytes": sum(out_chunks)}


def real(n: int) -> None:
    """vmaudit and the floor against the real libvirtd, with n extra guests defined for the run."""
    import libvirt

    py = sys.executable
    compile_vmaudit()
    conn = libvirt.open("qemu:///system")  # the benchmark's own set-up; vmaudit itself opens read-only
    names = []
    try:
        t0 = time.perf_counter()
        for i in range(n):
            dom = conn.defineXML(GUEST.format(
                i=i, dtype="kvm", zone="dmz", svc=i % 40, grp=i // 2, m1=(i >> 16) & 255, m2=(i >> 8) & 255,
                m3=i & 255, runstate="").replace("<uuid>6b0e6f9a-", "<uuid>6b0e6f9b-"))
            names.append(dom.name())
        print(f"defined {n} guests in {time.perf_counter() - t0:.1f} s")
        total = len(conn.listAllDomains(0))
        vm = measure([py, "-m", "vmaudit", "run", "--connect", "qemu:///system", "--format", "json"])
        floor = measure([py, "-c", FLOOR, "qemu:///system"])
        print(f"{'guests':>7} {'what':<8} {'wall s':>8} {'cpu s':>8} {'peak MiB':>9}")
        for name, r in (("vmaudit", vm), ("floor", floor)):
            print(f"{total:>7} {name:<8} {r['wall']:>8.2f} {r['cpu']:>8.2f} {r['rss_mib']:>9.1f}")
        print(f"{total:>7} {'ratio':<8} {vm['wall'] / floor['wall']:>8.2f} {vm['cpu'] / floor['cpu']:>8.2f} "
              f"{vm['rss_mib'] / floor['rss_mib']:>9.2f}")
    finally:
        for name in names:
            try:
                conn.lookupByName(name).undefine()
            except libvirt.libvirtError:
                pass
        conn.close()


def main(sizes: list[int]) -> None:
    py = sys.executable
    compile_vmaudit()
    print(f"{'guests':>7} {'what':<8} {'wall s':>8} {'cpu s':>8} {'peak MiB':>9} {'report MiB':>10}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="vmaudit-bench-") as tmp:
        for n in sizes:
            node = Path(tmp) / f"node-{n}.xml"
            node.write_text(node_xml(n))
            uri = f"test://{node}"
            vm = measure([py, "-m", "vmaudit", "run", "--connect", uri, "--root", str(EMPTY_ROOT),
                          "--format", "json"])
            floor = measure([py, "-c", FLOOR, uri])
            for name, r in (("vmaudit", vm), ("floor", floor)):
                print(f"{n:>7} {name:<8} {r['wall']:>8.2f} {r['cpu']:>8.2f} {r['rss_mib']:>9.1f} "
                      f"{r['out_bytes'] / 2**20:>10.1f}")
            ratios = (vm["wall"] / floor["wall"], vm["cpu"] / floor["cpu"], vm["rss_mib"] / floor["rss_mib"])
            print(f"{n:>7} {'ratio':<8} {ratios[0]:>8.2f} {ratios[1]:>8.2f} {ratios[2]:>9.2f}")
            rows.append((n, vm, floor))
            snap = Path(tmp) / f"facts-{n}.json"
            subprocess.run([py, "-m", "vmaudit", "facts", "-q", "--connect", uri, "--root", str(EMPTY_ROOT),
                            "--output", str(snap)], check=True)
            saved = measure([py, "-m", "vmaudit", "run", "--facts", str(snap), "--format", "json"])
            out = subprocess.run([py, "-c", CONTRACT, str(snap)], check=True, capture_output=True, text=True)
            validate, unguard, count = out.stdout.split()
            validate, unguard = float(validate), float(unguard)
            print(f"{n:>7} {'--facts':<8} {saved['wall']:>8.2f} {saved['cpu']:>8.2f} {saved['rss_mib']:>9.1f} "
                  f"{saved['out_bytes'] / 2**20:>10.1f}   ({snap.stat().st_size / 2**20:.1f} MiB snapshot)")
            print(f"{n:>7} contract: validation {validate:.3f} s ({validate / saved['wall']:.1%} of run --facts, "
                  f"{validate / vm['wall']:.1%} of run), evidence unguarding {unguard:.3f} s for {count} findings "
                  f"({unguard / saved['wall']:.1%} of run --facts)")
    if len(rows) >= 2:
        (n1, a, _), (n2, b, _) = rows[0], rows[-1]
        print(f"vmaudit cost per guest: {a['wall'] / n1 * 1000:.2f} ms at {n1}, "
              f"{b['wall'] / n2 * 1000:.2f} ms at {n2} (linear when these match)")


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sizes", nargs="*", type=int, metavar="N", help="guest counts (default: 1000 10000)")
    ap.add_argument("--real", type=int, metavar="N", help="N guests on the real libvirtd instead (root)")
    args = ap.parse_args()
    if args.real:
        real(args.real)
    else:
        main(args.sizes or [1000, 10000])
