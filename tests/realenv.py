"""A real libvirtd with real QEMU guests, PRIVATE to one test session, for end-to-end tests.

The test session starts its own libvirtd (PrivateLibvirtd): a mount namespace of its own in which
/etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt are directories
under one private root (/var/tmp/vmaudit-test-libvirtd-XXXX), its sockets in <root>/sock. Guests, disk
images, snapshots and libvirt's state all live there; stopping the daemon destroys its guests, kills it
and deletes the root. The host's own libvirtd (qemu:///system) is never opened read-write, so the suite
leaves the hypervisor it runs on as it found it. A session killed before its teardown leaves a root
behind: the next session sweeps roots whose owning session is gone (sweep_leftovers).

API for tests (keep it stable; other test modules rely on it):
  fixture real_libvirtd (session)   -> the private daemon's URI, with the e2e guests below defined
  fixture libvirt_guests (function) -> GuestFactory: define(name, ...) / remove(name); every guest it
                                       defined is removed at teardown, pass or fail
  realenv.virsh(*args)              -> virsh against the running private daemon (read-write)
  realenv.daemon()                  -> the PrivateLibvirtd (uri, ro_uri, images dir)

e2e guests (all tiny: 32 MiB, a 1 MiB qcow2 disk, no OS — SeaBIOS spins, which is all we need):
  vmaudit-e2e-kvm   running, type kvm, zone dmz, registered in the test inventory
  vmaudit-e2e-tcg   running, type qemu (TCG), zone internal, NOT registered
  vmaudit-e2e-off   shut off, type kvm, zone dmz, registered, with one internal disk snapshot
The set-up changes the private daemon only (that is the test's set-up, not vmaudit).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid as uuidlib
from pathlib import Path

SYSTEM_URI = "qemu:///system"
ROOT_PREFIX = "vmaudit-test-libvirtd-"
ROOT_PARENT = Path("/var/tmp")  # not /tmp/pytest-of-root (0700): libvirt-qemu must reach the images
# the host directories the private daemon sees replaced by its own (mount points; created if missing)
PRIVATE_DIRS = {"etc": "/etc/libvirt", "run": "/run/libvirt", "lib": "/var/lib/libvirt",
                "cache": "/var/cache/libvirt", "log": "/var/log/libvirt"}
GUESTS = {
    "vmaudit-e2e-kvm": {"type": "kvm", "zone": "dmz", "run": True,
                        "uuid": "5d1e2a0c-0c31-4b43-9d3c-000000000001"},
    "vmaudit-e2e-tcg": {"type": "qemu", "zone": "internal", "run": True,
                        "uuid": "5d1e2a0c-0c31-4b43-9d3c-000000000002"},
    "vmaudit-e2e-off": {"type": "kvm", "zone": "dmz", "run": False,
                        "uuid": "5d1e2a0c-0c31-4b43-9d3c-000000000003"},
}
REPO = Path(__file__).resolve().parents[1]
URI = SYSTEM_URI  # replaced by the private daemon's URI once it runs (read realenv.URI, not a copy)

_DAEMON: PrivateLibvirtd | None = None


def available() -> str | None:
    """None when a private libvirtd can be started here, else the reason why not."""
    if os.geteuid() != 0:
        return "needs root to start a private libvirtd"
    for tool in ("libvirtd", "virsh", "qemu-system-x86_64", "qemu-img", "unshare", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/install-deps.sh --test)"
    return None


class PrivateLibvirtd:
    """One libvirtd with its own config, state, run and log directories and sockets."""

    def __init__(self, parent: Path = ROOT_PARENT) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=ROOT_PREFIX, dir=parent))
        self.root.chmod(0o755)  # libvirt-qemu (QEMU's user) traverses it to reach the disk images
        self.sock = self.root / "sock"
        self.images = self.root / "images"
        self.uri = f"qemu+unix:///system?socket={self.sock}/libvirt-sock"
        self.ro_uri = f"qemu+unix:///system?socket={self.sock}/libvirt-sock-ro"
        self.pidfile = self.root / "libvirtd.pid"
        self._made_mountpoints: list[Path] = []

    def start(self, timeout: float = 180) -> None:
        for sub in (*PRIVATE_DIRS, "sock", "images"):
            (self.root / sub).mkdir(mode=0o755, exist_ok=True)
        (self.root / "owner.pid").write_text(f"{os.getpid()}\n")
        (self.root / "etc/libvirtd.conf").write_text(
            f'unix_sock_dir = "{self.sock}"\nunix_sock_rw_perms = "0700"\nunix_sock_ro_perms = "0777"\n'
            f'log_outputs = "3:file:{self.root}/libvirtd.log"\n')
        # QEMU's output to a file: no virtlogd needed inside the private namespace
        (self.root / "etc/qemu.conf").write_text('stdio_handler = "file"\n')
        for target in PRIVATE_DIRS.values():
            path = Path(target)
            if not path.exists():
                path.mkdir(parents=True)
                self._made_mountpoints.append(path)
        if not Path("/dev/null").is_char_device():
            raise RuntimeError("/dev/null is not a device here: libvirt cannot start guests")
        binds = "\n".join(f"mount --bind {self.root / sub} {target}" for sub, target in PRIVATE_DIRS.items())
        script = (f"set -e\n{binds}\n"
                  f"exec libvirtd -f {self.root}/etc/libvirtd.conf -p {self.pidfile} -d\n")
        proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"private libvirtd did not start: {proc.stderr.strip()}")
        # the first start probes QEMU's capabilities: seconds usually, over a minute on a slow machine
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.virsh("version", check=False).returncode == 0:
                return
            time.sleep(0.25)
        log = (self.root / "libvirtd.log")
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"private libvirtd did not answer on {self.uri} within {timeout:.0f} s: {tail}")

    def virsh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(["virsh", "-q", "-c", self.uri, *args], capture_output=True, text=True,
                              timeout=120)
        if check and proc.returncode != 0:
            # libvirt's own message is the only clue on a CI machine: put it in the failure
            raise RuntimeError(f"virsh {' '.join(args)} (exit {proc.returncode}): {proc.stderr.strip()}")
        return proc

    def stop(self) -> None:
        """Destroy every guest, stop the daemon, kill any QEMU it left, delete the root."""
        stop_root(self.root)
        for path in reversed(self._made_mountpoints):
            try:
                path.rmdir()
            except OSError:
                pass


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _processes_using(root: Path) -> list[int]:
    """PIDs whose command line names a path under root (the daemon, its QEMU guests)."""
    needle = str(root).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def stop_root(root: Path) -> None:
    sock = root / "sock/libvirt-sock"
    uri = f"qemu+unix:///system?socket={sock}"
    daemon_pid = _pid(root / "libvirtd.pid")
    if sock.exists() and _alive(daemon_pid):
        names = subprocess.run(["virsh", "-q", "-c", uri, "list", "--name"], capture_output=True,
                               text=True, timeout=60).stdout.split()
        for name in names:
            subprocess.run(["virsh", "-q", "-c", uri, "destroy", name], capture_output=True, timeout=60)
    if _alive(daemon_pid):
        os.kill(daemon_pid, signal.SIGTERM)
        for _ in range(100):
            if not _alive(daemon_pid):
                break
            time.sleep(0.1)
    for pid in _processes_using(root):  # a QEMU the destroy missed, a daemon that ignored SIGTERM
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(root, ignore_errors=True)


def sweep_leftovers(parent: Path = ROOT_PARENT) -> list[Path]:
    """Stop and delete private roots of earlier sessions that died before their teardown (their
    owner.pid is gone); roots of sessions still running are left alone. Returns the roots swept."""
    swept = []
    for root in sorted(parent.glob(ROOT_PREFIX + "*")):
        if root.is_dir() and not _alive(_pid(root / "owner.pid")):
            stop_root(root)
            swept.append(root)
    return swept


def daemon() -> PrivateLibvirtd:
    """The running private daemon (started by the real_libvirtd fixture or start())."""
    if _DAEMON is None:
        raise RuntimeError("no private libvirtd is running (use the real_libvirtd fixture)")
    return _DAEMON


def start() -> PrivateLibvirtd:
    """Start this process's private daemon (once); realenv.URI then names it."""
    global _DAEMON, URI
    if _DAEMON is None:
        sweep_leftovers()
        d = PrivateLibvirtd()
        try:
            d.start()
        except BaseException:
            d.stop()
            raise
        _DAEMON, URI = d, d.uri
    return _DAEMON


def stop() -> None:
    global _DAEMON, URI
    if _DAEMON is not None:
        d, _DAEMON, URI = _DAEMON, None, SYSTEM_URI
        d.stop()


def virsh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return daemon().virsh(*args, check=check)


def domain_xml(name: str, spec: dict, disk: Path) -> str:
    emulator = shutil.which("qemu-system-x86_64")
    return f"""<domain type='{spec["type"]}'>
  <name>{name}</name>
  <uuid>{spec.get("uuid") or new_uuid()}</uuid>
  <metadata>
    <vm:guest xmlns:vm="urn:vmaudit:guest:1"><vm:zone>{spec.get("zone", "dmz")}</vm:zone>
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


def define_guest(name: str, spec: dict | None = None, xml: str | None = None, run: bool | None = None,
                 snapshot: str | None = None) -> Path:
    """Define (and start, and snapshot) a guest on the private daemon; its disk image is created in the
    daemon's images directory. With xml, that XML is defined as given ({disk} is replaced by the path
    of a fresh 1 MiB qcow2 image). Returns the disk image path."""
    d = daemon()
    spec = dict(spec or {"type": "kvm", "zone": "dmz", "run": False})
    disk = d.images / f"{name}.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1M"], check=True, timeout=60)
    text = xml.replace("{disk}", str(disk)) if xml is not None else domain_xml(name, spec, disk)
    path = d.root / f"{name}.xml"
    path.write_text(text)
    d.virsh("define", str(path))
    if spec.get("run") if run is None else run:
        d.virsh("start", name)
    if snapshot:
        d.virsh("snapshot-create-as", name, snapshot, "--description", "test")
    return disk


def remove_guest(name: str) -> None:
    """Destroy and undefine a guest with its snapshots and managed save; delete its disk image."""
    d = daemon()
    d.virsh("destroy", name, check=False)
    d.virsh("undefine", name, "--snapshots-metadata", "--managed-save", "--nvram", check=False)
    for path in (d.images / f"{name}.qcow2", d.root / f"{name}.xml"):
        path.unlink(missing_ok=True)


def setup() -> dict:
    """Start the private libvirtd and create the e2e guests. Returns {name: spec}."""
    start()
    for name, spec in GUESTS.items():
        if virsh("domstate", name, check=False).returncode == 0:
            continue
        define_guest(name, spec, snapshot=None if spec["run"] else "e2e-snap")
        if not spec["run"]:
            # creationTime has whole seconds: let the snapshot be older than a limit of 0 days
            time.sleep(1.1)
    return GUESTS


class GuestFactory:
    """Guests a test defines on the private daemon; remove_all() undefines them all, pass or fail."""

    def __init__(self) -> None:
        self.uri = daemon().uri
        self.names: list[str] = []

    def define(self, name: str, spec: dict | None = None, xml: str | None = None, run: bool | None = None,
               snapshot: str | None = None) -> Path:
        self.names.append(name)
        return define_guest(name, spec, xml=xml, run=run, snapshot=snapshot)

    def remove(self, name: str) -> None:
        remove_guest(name)
        if name in self.names:
            self.names.remove(name)

    def remove_all(self) -> None:
        for name in reversed(self.names):
            remove_guest(name)
        self.names.clear()


def system_state(uri: str = SYSTEM_URI) -> dict | None:
    """What the host's own libvirtd (or the one at uri) holds, read-only: guests with state and
    snapshots, networks, pools; None when it does not answer. Compared before and after a session to
    prove the suite changed nothing there."""
    try:
        import libvirt
    except ImportError:
        return None
    libvirt.registerErrorHandler(lambda *_: None, None)  # a host without libvirtd is not an error here
    try:
        conn = libvirt.openReadOnly(uri)
    except libvirt.libvirtError:
        return None
    try:
        out = {}
        for dom in conn.listAllDomains():
            snapshots = tuple(sorted(s.getName() for s in dom.listAllSnapshots()))
            out[f"domain:{dom.name()}"] = (dom.state()[0], snapshots)
        for net in conn.listAllNetworks():
            out[f"network:{net.name()}"] = net.isActive()
        for pool in conn.listAllStoragePools():
            out[f"pool:{pool.name()}"] = pool.isActive()
        return out
    finally:
        conn.close()


def inventory_csv(path: Path) -> Path:
    """An inventory that registers every e2e guest except the TCG one."""
    rows = ["uuid,name,zone,owner"]
    rows += [f"{s['uuid']},{n},{s['zone']},e2e-team" for n, s in GUESTS.items() if n != "vmaudit-e2e-tcg"]
    path.write_text("\n".join(rows) + "\n")
    return path


def new_uuid() -> str:
    return str(uuidlib.uuid4())
