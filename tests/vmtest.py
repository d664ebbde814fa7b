"""Shared test helpers (import them: `from vmtest import audit, one, ...`): fixture host trees, libvirt test-driver URIs, in-process audits.

Fixture hosts live in tests/fixtures/hosts/<name>/ (real /proc, /sys and /etc file contents) and their
guests in tests/fixtures/libvirt/<name>.xml (libvirt test-driver node XML). `audit()` runs the real
pipeline (collectors -> snapshot -> checks -> report) in-process.
"""

from __future__ import annotations

import copy
import os
import shutil
import stat
import sys
from pathlib import Path

from vmaudit.audit import build_report, collect_facts
from vmaudit.engine import INTERNAL_ERROR
from vmaudit.policy import Policy, parse_policy

TESTS = Path(__file__).resolve().parent
FIXTURES = TESTS / "fixtures"
HOSTS = FIXTURES / "hosts"
LIBVIRT = FIXTURES / "libvirt"
sys.path.insert(0, str(TESTS))  # tests/realenv.py

# In CI real parts (libvirtd, sshd, chromium) must be there: a missing one fails instead of skipping.
REQUIRE_REAL = os.environ.get("VMAUDIT_REQUIRE_REAL") == "1" or os.environ.get("CI") == "true"


def sshd_privsep_dir() -> None:
    """Create /run/sshd, which sshd (even `sshd -T`) refuses to run without. systemd's unit makes it at
    boot; on a host without systemd nothing does, so every test that runs sshd calls this first."""
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)


def host_root(name: str) -> Path:
    return HOSTS / name


def test_uri(name: str) -> str:
    """test:///abs/path for tests/fixtures/libvirt/<name>.xml (or an absolute path)."""
    path = Path(name) if os.path.isabs(name) else LIBVIRT / f"{name}.xml"
    return f"test://{path}"


test_uri.__test__ = False  # a helper, not a test, when imported into a test module
driver_uri = test_uri


def make_policy(text: str = "", source: str = "test-policy.toml", inventory=None) -> Policy:
    policy = parse_policy(text, source) if text else Policy()
    if inventory is not None:
        policy.inventory = inventory
    return policy


def audit(root: str | Path = "empty", uri: str | None = None, policy: Policy | str | None = None,
          facts: dict | None = None) -> dict:
    """Collect from a fixture root (name or path) and a test-driver URI, evaluate, return the report."""
    if facts is None:
        root_path = root if isinstance(root, Path) else host_root(root)
        facts = collect_facts(root=str(root_path), uri=uri or "test:///nonexistent-vmaudit-fixture")
    if not isinstance(policy, Policy):
        policy = make_policy(policy or "")
    return build_report(facts, policy)


# (check_id, status) of every finding a test looked at through findings()/one(): the session hook
# below holds the catalogue to it (every check is made to fail, or warn, by some test).
OBSERVED: set[tuple[str, str]] = set()


def findings(report: dict, check_id: str, resource: str | None = None) -> list[dict]:
    """The findings of check_id (for resource); fails the test if the check crashed on any of them."""
    found = [f for f in report["findings"]
             if f["check_id"] == check_id and (resource is None or f["resource"] == resource)]
    crashed = [f for f in found if f["message"].startswith(INTERNAL_ERROR)]
    assert not crashed, f"{check_id} crashed: {[(f['resource'], f['message']) for f in crashed]}"
    OBSERVED.update((f["check_id"], f["status"]) for f in found)
    return found


def one(report: dict, check_id: str, resource: str = "host") -> dict:
    """The single finding of check_id for resource; fails the test if there is not exactly one."""
    found = findings(report, check_id, resource)
    assert len(found) == 1, (f"expected one {check_id} finding for {resource}, got "
                             f"{[(f['resource'], f['status'], f['message']) for f in findings(report, check_id)]}")
    return found[0]


def with_sources(facts: dict, **overrides) -> dict:
    """A deep copy of a snapshot with some sources replaced (e.g. by unavailable(...) markers)."""
    out = copy.deepcopy(facts)
    for name, value in overrides.items():
        out["sources"][name] = value
    return out


# --- host roots with files of chosen modes (git keeps no modes) -------------------------------------

def make_root(tmp_path: Path, host: str = "debian-hardened") -> Path:
    """A copy of a fixture host's root, with /, /var, /var/lib, /var/lib/libvirt 0755 root and libvirt's
    image directory 0711 root, as Debian and RHEL ship them."""
    root = tmp_path / "root"
    shutil.copytree(host_root(host), root, symlinks=True)
    for d, mode in (("", 0o755), ("var", 0o755), ("var/lib", 0o755), ("var/lib/libvirt", 0o755),
                    ("var/lib/libvirt/images", 0o711), ("var/lib/libvirt/qemu", 0o751),
                    ("var/lib/libvirt/qemu/nvram", 0o755), ("usr", 0o755), ("usr/share", 0o755),
                    ("usr/share/OVMF", 0o755), ("srv", 0o755)):
        put_dir(root, d, mode)
    return root


def put_dir(root: Path, path: str, mode: int, uid: int = 0, gid: int = 0) -> Path:
    p = root / path.lstrip("/") if path else root
    p.mkdir(parents=True, exist_ok=True)
    os.chown(p, uid, gid)
    os.chmod(p, mode)
    return p


def put_file(root: Path, path: str, mode: int = 0o600, uid: int = 0, gid: int = 0, text: str = "QFI\xfb") -> Path:
    p = root / path.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    os.chown(p, uid, gid)
    os.chmod(p, mode)
    return p


def put_guest_images(root: Path, images: dict[str, tuple[int, int, int]]) -> None:
    """Image files {path: (mode, uid, gid)} under root; a path under /dev becomes a block device
    (udev's root:disk 0660 for device-mapper volumes), reached through the /dev/<vg>/<lv> link LVM makes."""
    for path, (mode, uid, gid) in images.items():
        if path.startswith("/dev/"):
            node = root / "dev" / f"dm-{len(os.listdir(root / 'dev'))}"
            os.mknod(node, mode | stat.S_IFBLK, os.makedev(253, 3))
            os.chown(node, uid, gid)
            link = root / path.lstrip("/")
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(node, link.parent), link)
        else:
            put_file(root, path, mode, uid, gid)


def domain_parses(monkeypatch) -> list[str]:
    """The guest definitions parsed (ET.fromstring of a <domain>) from now on in this test: to show that
    a check reads what the engine kept with each guest instead of parsing every guest again."""
    import xml.etree.ElementTree as ET

    parsed: list[str] = []
    real = ET.fromstring

    def counting(text, *args, **kwargs):
        if isinstance(text, str) and text.lstrip().startswith("<domain"):
            parsed.append(text)
        return real(text, *args, **kwargs)

    monkeypatch.setattr(ET, "fromstring", counting)
    return parsed


def set_xml(domain: dict, xml) -> dict:
    """Give a guest record of a snapshot this XML (or marker) as every definition it has: the live one
    and, for a running persistent guest, the persistent one (`xml_inactive`) too."""
    domain["xml"] = xml
    if "xml_inactive" in domain:
        domain["xml_inactive"] = xml
    return domain

