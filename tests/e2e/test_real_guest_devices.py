"""M3-IMAGE-PERMS, M3-CHARDEV-EXPOSED, M3-HOST-SHARE and M3-QEMU-USER's guest labels on the REAL
libvirtd, with guests of this test's own (prefix vmaudit-i11-, removed with their images and directories
in the teardown, pass or fail) on the session's PRIVATE libvirtd; their images and directories live under
that daemon's root (/var/tmp/vmaudit-test-libvirtd-*), where its QEMU reads them:

  vmaudit-i11-open   running: its image in a 0777 directory, a TCP serial console bound to 0.0.0.0
  vmaudit-i11-share  defined: a writable 9p share of the host's /etc and a virtiofs share of a data
                     directory (with the shared memory backing virtiofs needs)
  vmaudit-i11-root   defined: a static DAC label +0:+0 (QEMU as root)
  vmaudit-i11-clean  defined: a 0600 image in libvirt's own directory, a pty console, no share

The set-up changes the system (through virsh's read-write connection); the audit only reads it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import realenv
from vmtest import audit, one

from vmaudit.audit import collect_facts

pytestmark = pytest.mark.usefixtures("real_libvirtd")



def _open_dir() -> Path:
    return realenv.daemon().root / "vmaudit-i11-images"


def _share_dir() -> Path:
    return realenv.daemon().root / "vmaudit-i11-share"


def _clean_image() -> Path:
    return realenv.daemon().images / "vmaudit-i11-clean.qcow2"

NAMES = ("vmaudit-i11-open", "vmaudit-i11-share", "vmaudit-i11-root", "vmaudit-i11-clean")
SOURCES = ["libvirt", "guest_paths", "libvirt_config", "accounts", "os_release", "processes", "listeners",
           "kernel"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def _domain(name: str, devices: str, extra: str = "", memory: str = "") -> str:
    emulator = shutil.which("qemu-system-x86_64")
    return f"""<domain type='kvm'>
  <name>{name}</name>
  <memory unit='MiB'>32</memory>
  {memory}
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <devices>
    <emulator>{emulator}</emulator>
    {devices}
    <memballoon model='none'/>
  </devices>
  {extra}
</domain>
"""


def _disk(path: Path) -> str:
    return (f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{path}'/>"
            f"<target dev='vda' bus='virtio'/></disk>")


def _define(tmp: Path, name: str, xml: str) -> None:
    path = tmp / f"{name}.xml"
    path.write_text(xml)
    realenv.virsh("define", str(path))


def _teardown() -> None:
    for name in NAMES:
        realenv.remove_guest(name)
    shutil.rmtree(_open_dir(), ignore_errors=True)
    shutil.rmtree(_share_dir(), ignore_errors=True)
    _clean_image().unlink(missing_ok=True)


@pytest.fixture(scope="module")
def devices_report(tmp_path_factory, real_libvirtd):
    tmp = tmp_path_factory.mktemp("i11")
    _teardown()  # a run killed earlier may have left them
    port = _free_port()
    OPEN_DIR, SHARE_DIR, CLEAN_IMAGE = _open_dir(), _share_dir(), _clean_image()
    try:
        OPEN_DIR.mkdir()
        os.chmod(OPEN_DIR, 0o777)
        SHARE_DIR.mkdir()
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(OPEN_DIR / "open.qcow2"), "1M"], check=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(CLEAN_IMAGE), "1M"], check=True)
        os.chmod(CLEAN_IMAGE, 0o600)
        _define(tmp, "vmaudit-i11-open", _domain(
            "vmaudit-i11-open", _disk(OPEN_DIR / "open.qcow2")
            + f"<serial type='tcp'><source mode='bind' host='0.0.0.0' service='{port}'/>"
              "<protocol type='telnet'/><target port='0'/></serial>"))
        _define(tmp, "vmaudit-i11-share", _domain(
            "vmaudit-i11-share",
            "<filesystem type='mount' accessmode='passthrough'><source dir='/etc'/><target dir='hostetc'/>"
            "</filesystem>"
            f"<filesystem type='mount'><driver type='virtiofs'/><source dir='{SHARE_DIR}'/>"
            "<target dir='data'/></filesystem>",
            memory="<memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>"))
        _define(tmp, "vmaudit-i11-root", _domain(
            "vmaudit-i11-root", "",
            extra="<seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>"))
        _define(tmp, "vmaudit-i11-clean", _domain(
            "vmaudit-i11-clean", _disk(CLEAN_IMAGE) + "<serial type='pty'><target port='0'/></serial>"))
        realenv.virsh("start", "vmaudit-i11-open")
        facts = collect_facts(root="/", uri=real_libvirtd, only=SOURCES)
        report = audit(facts=facts)
        yield {"report": report, "facts": facts, "port": port, "open_dir": OPEN_DIR, "share_dir": SHARE_DIR}
    finally:
        _teardown()


def test_image_in_a_world_writable_directory(devices_report):
    report, OPEN_DIR = devices_report["report"], devices_report["open_dir"]
    f = one(report, "M3-IMAGE-PERMS", "guest:vmaudit-i11-open")
    assert f["status"] == "fail" and str(OPEN_DIR) in f["message"]
    bad = f["evidence"]["directories_with_problems"]
    assert bad == [{"path": str(OPEN_DIR), "mode": "0777", "owner": "root", "group": "root",
                    "problem": "writable by everyone (o+w)"}]
    clean = one(report, "M3-IMAGE-PERMS", "guest:vmaudit-i11-clean")
    assert clean["status"] == "pass", clean["message"]
    assert clean["evidence"]["files"][0]["mode"] == "0600"


def test_tcp_serial_console_on_all_addresses(devices_report):
    report, port = devices_report["report"], devices_report["port"]
    f = one(report, "M3-CHARDEV-EXPOSED", "guest:vmaudit-i11-open")
    assert f["status"] == "fail" and f"serial tcp on 0.0.0.0:{port} (telnet)" in f["message"]
    # QEMU really listens there (the live listener list of the same snapshot)
    listeners = devices_report["facts"]["sources"]["listeners"]
    assert any(li["port"] == port and li["address"] in ("0.0.0.0", "::") for li in listeners), listeners
    assert one(report, "M3-CHARDEV-EXPOSED", "guest:vmaudit-i11-clean")["status"] == "pass"


def test_etc_shared_into_a_guest(devices_report):
    f = one(devices_report["report"], "M3-HOST-SHARE", "guest:vmaudit-i11-share")
    assert f["status"] == "fail" and f["severity"] == "critical"
    shares = {s["source"]: s for s in f["evidence"]["shares"]}
    assert shares["/etc"]["sensitive"] == ["/etc"] and shares["/etc"]["accessmode"] == "passthrough"
    assert shares[str(devices_report["share_dir"])]["verdict"] == "warn"  # a writable virtiofs share of a data directory
    assert one(devices_report["report"], "M3-HOST-SHARE", "guest:vmaudit-i11-clean")["status"] == "pass"


def test_root_dac_label(devices_report):
    f = one(devices_report["report"], "M3-QEMU-USER", "guest:vmaudit-i11-root")
    assert f["status"] == "fail" and "+0:+0" in f["message"]
    assert "vmaudit-i11-root" in f["remediation"] and "<label>+0:+0</label>" in f["remediation"]
