"""Helpers for the guest-device checks (checks/m3_guest_devices.py): a host root copied from a fixture
host with files of chosen modes and owners, and a libvirt test-driver node of guests written next to it.
Modes cannot live in git, so every file and directory a test judges is made here, its mode set
explicitly (the checkout's umask never leaks into a verdict)."""

from __future__ import annotations

from pathlib import Path

from vmtest import make_root, put_dir, put_file  # noqa: F401 (re-exported for the device tests)

from vmaudit.audit import collect_facts

NOW_ISO = "2026-11-25T12:00:00Z"
NODE_HEAD = "<node xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>\n"


def domain(name: str, devices: str = "", os_extra: str = "", extra: str = "", running: bool = False,
           index: int = 1) -> str:
    runstate = "" if running else "<test:runstate>5</test:runstate>"
    return f"""  <domain type='kvm'>
    <name>{name}</name>
    <uuid>7e57d00d-0000-4000-8000-{index:012d}</uuid>
    <memory unit='GiB'>1</memory>
    <vcpu placement='static'>1</vcpu>
    <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type>{os_extra}</os>
    <devices>
      <emulator>/usr/bin/qemu-system-x86_64</emulator>
      {devices}
    </devices>
    {extra}
    {runstate}
  </domain>
"""


def disk(path: str, dev: str = "vda", device: str = "disk", readonly: bool = False, backing: str = "") -> str:
    ro = "<readonly/>" if readonly else ""
    return (f"<disk type='file' device='{device}'><driver name='qemu' type='qcow2'/>"
            f"<source file='{path}'/>{backing}<target dev='{dev}' bus='virtio'/>{ro}</disk>")


def node(tmp_path: Path, *domains: str, pools: str = "") -> str:
    path = tmp_path / "node.xml"
    path.write_text(NODE_HEAD + "".join(domains) + pools + "</node>\n")
    return f"test://{path}"


def snapshot(root: Path, uri: str) -> dict:
    facts = collect_facts(root=str(root), uri=uri)
    facts["collected_at"] = NOW_ISO
    return facts
