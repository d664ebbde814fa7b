"""The real-libvirtd tests run on a libvirtd of their own (tests/realenv.py) and leave the host's
libvirtd, and the machine, as they found them — even when a test fails half-way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import realenv

pytestmark = pytest.mark.usefixtures("real_libvirtd")


def test_the_session_daemon_is_private(real_libvirtd):
    d = realenv.daemon()
    assert real_libvirtd == d.uri != realenv.SYSTEM_URI
    assert str(d.root).startswith(str(realenv.ROOT_PARENT / realenv.ROOT_PREFIX))
    names = set(realenv.virsh("list", "--all", "--name").stdout.split())
    assert set(realenv.GUESTS) <= names
    # their definitions live in the private root, not in the host's /etc/libvirt
    assert {p.stem for p in (d.root / "etc/qemu").glob("*.xml")} == names


def test_vmaudit_reads_the_private_daemon_read_only_as_any_user(real_libvirtd):
    """The read-only socket is what vmaudit uses without root: the guests are visible through it."""
    proc = subprocess.run([sys.executable, "-m", "vmaudit", "facts", "--connect", realenv.daemon().ro_uri,
                          ], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "vmaudit-e2e-kvm" in proc.stdout


def test_the_before_and_after_listing_sees_a_guest_a_test_leaves_behind(libvirt_guests):
    """The session hook's comparison (realenv.system_state) notices a guest, a snapshot or a state change,
    shown here on the private daemon (the host's own one is never changed to prove it)."""
    uri = realenv.daemon().ro_uri
    before = realenv.system_state(uri)
    assert before and "domain:vmaudit-e2e-off" in before
    libvirt_guests.define("vmaudit-e2e-tmp-left", {"type": "kvm", "zone": "dmz"})
    assert realenv.system_state(uri) != before
    libvirt_guests.remove("vmaudit-e2e-tmp-left")
    assert realenv.system_state(uri) == before
    realenv.virsh("snapshot-create-as", "vmaudit-e2e-off", "tmp-snap")
    try:
        assert realenv.system_state(uri) != before
    finally:
        realenv.virsh("snapshot-delete", "vmaudit-e2e-off", "tmp-snap")
    assert realenv.system_state(uri) == before


def test_guests_of_a_failing_test_are_removed(real_libvirtd, request):
    """libvirt_guests removes what a test defined even when the test raises."""
    factory = realenv.GuestFactory()
    name = "vmaudit-e2e-tmp-failing"
    with pytest.raises(RuntimeError):
        try:
            factory.define(name, {"type": "kvm", "zone": "dmz"}, run=True, snapshot="s1")
            assert realenv.virsh("domstate", name).stdout.strip() == "running"
            raise RuntimeError("the test failed here")
        finally:
            factory.remove_all()
    assert realenv.virsh("domstate", name, check=False).returncode != 0
    assert not (realenv.daemon().images / f"{name}.qcow2").exists()


def test_stopping_a_daemon_removes_everything_it_held(tmp_path):
    """A second private daemon with a running guest and a snapshot: stop() leaves no process, no
    file, no mount point behind; the sweep stops a root whose session died."""
    d = realenv.PrivateLibvirtd()
    try:
        d.start()
        disk = d.images / "vmaudit-e2e-tmp-stop.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1M"], check=True)
        xml = tmp_path / "g.xml"
        xml.write_text(realenv.domain_xml("vmaudit-e2e-tmp-stop", {"type": "kvm"}, disk))
        d.virsh("define", str(xml))
        d.virsh("start", "vmaudit-e2e-tmp-stop")
        d.virsh("snapshot-create-as", "vmaudit-e2e-tmp-stop", "s1")
        assert realenv._processes_using(d.root)
        # as if its session had been killed: the owner is a process that no longer exists
        dead = subprocess.Popen(["true"])
        dead.wait()
        (d.root / "owner.pid").write_text(f"{dead.pid}\n")
        assert d.root in realenv.sweep_leftovers()
    finally:
        d.stop()
    assert not d.root.exists()
    assert not realenv._processes_using(d.root)
    assert not Path(d.sock).exists()
