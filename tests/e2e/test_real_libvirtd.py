"""End to end on a REAL libvirtd with real QEMU guests (tests/realenv.py): the installed command line,
the live facts read from the real QEMU processes, and nothing on the host changed by the audit."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import realenv
from vmtest import findings, one

pytestmark = pytest.mark.usefixtures("real_libvirtd")

KVM, TCG, OFF = (f"guest:{n}" for n in realenv.GUESTS)


@pytest.fixture(scope="module")
def e2e(tmp_path_factory, real_libvirtd):
    """One `vmaudit run` of this machine, as an operator would run it, plus its facts snapshot."""
    tmp = tmp_path_factory.mktemp("e2e")
    inventory = realenv.inventory_csv(tmp / "inventory.csv")
    policy = tmp / "policy.toml"
    policy.write_text(f'[host]\nzone = "dmz"\n[inventory]\npath = "{inventory}"\n'
                      f'[snapshots]\nmax_age_days = 0\n')
    before = {n: realenv.virsh("dumpxml", n).stdout for n in realenv.GUESTS}
    proc = subprocess.run([sys.executable, "-m", "vmaudit", "run", "--connect", real_libvirtd,
                           "--policy", str(policy), "--format", "json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 1, 3), proc.stderr
    facts = subprocess.run([sys.executable, "-m", "vmaudit", "facts", "--connect", real_libvirtd],
                           capture_output=True, text=True, timeout=600)
    after = {n: realenv.virsh("dumpxml", n).stdout for n in realenv.GUESTS}
    return {"report": json.loads(proc.stdout), "facts": json.loads(facts.stdout), "before": before,
            "after": after}


def test_tcg_guest_fails_only_for_the_tcg_guest(e2e):
    report = e2e["report"]
    assert one(report, "M2-TCG-GUEST", TCG)["status"] == "fail"
    assert one(report, "M2-TCG-GUEST", KVM)["status"] == "pass"
    assert one(report, "M2-TCG-GUEST", OFF)["status"] == "pass"


def test_libvirt_facts_are_real(e2e):
    lv = e2e["facts"]["sources"]["libvirt"]
    domains = {d["name"]: d for d in lv["domains"]}
    assert set(realenv.GUESTS) <= set(domains)
    assert domains["vmaudit-e2e-kvm"]["state"] == "running"
    assert domains["vmaudit-e2e-off"]["state"] == "shutoff"
    assert [s["name"] for s in domains["vmaudit-e2e-off"]["snapshots"]] == ["e2e-snap"]
    assert "<domain type='kvm'" in lv["capabilities"].replace('"', "'") or "type='kvm'" in lv["capabilities"]


def test_live_qemu_processes_are_read(e2e):
    """The live M3 checks read the real QEMU processes: libvirt runs them as libvirt-qemu, seccomp on."""
    procs = e2e["facts"]["sources"]["processes"]
    qemu = [p for p in procs if "qemu-system" in (p.get("exe") or p.get("name") or "")]
    names = " ".join(" ".join(p.get("cmdline") or []) for p in qemu)
    assert "guest=vmaudit-e2e-kvm" in names and "guest=vmaudit-e2e-tcg" in names
    for p in qemu:
        assert p["user"] == "libvirt-qemu" and p["seccomp"] == 2
    report = e2e["report"]
    for check in ("M3-QEMU-USER", "M3-SECCOMP"):
        statuses = {f["status"] for f in findings(report, check)}
        assert statuses == {"pass"}, (check, findings(report, check))


def test_zones_inventory_snapshots_and_counts(e2e):
    report = e2e["report"]
    mix = findings(report, "M1-ZONE-MIX")
    assert any(f["status"] == "fail" for f in mix), mix
    assert one(report, "M8-UNREGISTERED", TCG)["status"] == "fail"
    assert one(report, "M8-UNREGISTERED", KVM)["status"] == "pass"
    snaps = findings(report, "M8-SNAPSHOTS", OFF)
    assert [f["status"] for f in snaps] == ["warn"], snaps
    count = one(report, "M4-GUEST-COUNT")
    ev = json.dumps(count["evidence"])
    running = sum(1 for d in e2e["facts"]["sources"]["libvirt"]["domains"] if d["state"] == "running")
    defined = len(e2e["facts"]["sources"]["libvirt"]["domains"])
    assert count["evidence"].get("running") == running and count["evidence"].get("defined") == defined, ev
    assert defined > running  # the shut-off guest is defined, not running


def test_the_audit_changed_no_guest(e2e):
    assert e2e["before"] == e2e["after"]
