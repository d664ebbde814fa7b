"""A real libvirtd with real QEMU guests, for end-to-end tests (started by scripts/start-libvirtd.sh).

Guests (all tiny: 32 MiB, a 1 MiB qcow2 disk, no OS — SeaBIOS spins, which is all we need):
  vmaudit-e2e-kvm   running, type kvm, zone dmz, registered in the test inventory
  vmaudit-e2e-tcg   running, type qemu (TCG), zone internal, NOT registered
  vmaudit-e2e-off   shut off, type kvm, zone dmz, registered, with one internal disk snapshot
The fixture changes the system (that is the test's set-up, not vmaudit): it defines and starts guests
through a read-write connection of its own.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid as uuidlib
from pathlib import Path

URI = "qemu:///system"
IMAGES = Path("/var/lib/libvirt/images")
GUESTS = {
    "vmaudit-e2e-kvm": {"type": "kvm", "zone": "dmz", "run": True,
                        "uuid": "5d1e2a0c-0c31-4b43-9d3c-000000000001"},
    "vmaudit-e2e-tcg": {"type": "qemu", "zone": "internal", "run": True,
                        "uuid": "5d1e2a0c-0c31-4b43-9d3c-000000000002"},
    "vmaudit-e2e-off": {"type": "kvm", "zone": "dmz", "run": False,
                        "uuid": "5d1e2a0c-0c31-4b43-9d3c-000000000003"},
}
REPO = Path(__file__).resolve().parents[1]


def virsh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["virsh", "-q", "-c", URI, *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        # libvirt's own message is the only clue on a CI machine: put it in the failure
        raise RuntimeError(f"virsh {' '.join(args)} (exit {proc.returncode}): {proc.stderr.strip()}")
    return proc


def available() -> str | None:
    """None when a real libvirtd can be used here, else the reason why not."""
    import os

    if os.geteuid() != 0:
        return "needs root to start libvirtd"
    for tool in ("libvirtd", "virtlogd", "virsh", "qemu-system-x86_64", "qemu-img"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/install-deps.sh --test)"
    return None


def domain_xml(name: str, spec: dict, disk: Path) -> str:
    emulator = shutil.which("qemu-system-x86_64")
    return f"""<domain type='{spec["type"]}'>
  <name>{name}</name>
  <uuid>{spec["uuid"]}</uuid>
  <metadata>
    <vm:guest xmlns:vm="urn:vmaudit:guest:1"><vm:zone>{spec["zone"]}</vm:zone>
      <vm:owner>e2e-team</vm:owner><vm:service>e2e</vm:service></vm:guest>
  </metadata>
  <memory unit='MiB'>32</memory>
  <currentMemory unit='MiB'>32</currentMemory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <devices>
    <emulator>{emulator}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <memballoon model='none'/>
    <graphics type='vnc' listen='127.0.0.1' autoport='yes'/>
  </devices>
</domain>
"""


def setup() -> dict:
    """Start libvirtd and (re)create the e2e guests. Returns {name: spec}."""
    subprocess.run(["bash", str(REPO / "scripts/start-libvirtd.sh")], check=True, timeout=120)
    IMAGES.mkdir(parents=True, exist_ok=True)
    for name, spec in GUESTS.items():
        state = virsh("domstate", name, check=False)
        if state.returncode == 0:
            if spec["run"] and state.stdout.strip() == "running":
                continue
            if not spec["run"] and state.stdout.strip() == "shut off" and virsh(
                    "snapshot-list", name, "--name", check=False).stdout.strip():
                continue
            teardown_one(name)
        disk = IMAGES / f"{name}.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1M"], check=True)
        xml = IMAGES.parent / f"{name}.xml"
        xml.write_text(domain_xml(name, spec, disk))
        virsh("define", str(xml))
        if spec["run"]:
            virsh("start", name)
        else:
            virsh("snapshot-create-as", name, "e2e-snap", "--description", "e2e")
            # creationTime has whole seconds: let the snapshot be older than a limit of 0 days
            time.sleep(1.1)
    return GUESTS


def teardown_one(name: str) -> None:
    virsh("destroy", name, check=False)
    virsh("undefine", name, "--snapshots-metadata", "--managed-save", check=False)


def inventory_csv(path: Path) -> Path:
    """An inventory that registers every e2e guest except the TCG one."""
    rows = ["uuid,name,zone,owner"]
    rows += [f"{s['uuid']},{n},{s['zone']},e2e-team" for n, s in GUESTS.items() if n != "vmaudit-e2e-tcg"]
    path.write_text("\n".join(rows) + "\n")
    return path


def new_uuid() -> str:
    return str(uuidlib.uuid4())
