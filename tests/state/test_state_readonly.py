"""vmaudit only reads: an audit that stores its run changes nothing outside the state directory —
neither a fixture root nor a real libvirtd's guests and configuration."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path

import pytest
from statehelp import OK, VMAUDIT, rows
from vmtest import HOSTS, LIBVIRT, test_uri


def tree_digest(top: Path) -> dict[str, tuple]:
    """Every entry under `top`: type, mode, owner, size, mtime and content (or link target)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            if stat.S_ISREG(st.st_mode):
                body = hashlib.sha256(p.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                body = os.readlink(p)
            else:
                body = None
            out[str(p.relative_to(top))] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid,
                                            st.st_gid, st.st_size, st.st_mtime_ns, body)
    return out


def fixture_hosts() -> list[str]:
    return sorted(p.name for p in HOSTS.iterdir() if p.is_dir())


@pytest.mark.parametrize("host", fixture_hosts())
def test_audit_of_a_fixture_root_changes_nothing_outside_the_state_dir(tmp_path, host):
    root = HOSTS / host
    node = LIBVIRT / f"{host}.xml"
    uri = test_uri(host) if node.exists() else "test:///default"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    before = tree_digest(root), tree_digest(LIBVIRT)
    proc = subprocess.run([VMAUDIT, "run", "--root", str(root), "--connect", uri,
                           "--state-dir", str(tmp_path / "state")],
                          capture_output=True, text=True, timeout=300, cwd=cwd)
    assert proc.returncode in OK, proc.stderr
    assert (tree_digest(root), tree_digest(LIBVIRT)) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "state"] and not list(cwd.iterdir())
    assert len(rows(tmp_path / "state")) == 1


def libvirt_state(uri: str) -> dict:
    """Every guest's XML (live and persistent), state, autostart and snapshots; networks; pools."""
    import libvirt

    conn = libvirt.openReadOnly(uri)
    try:
        out = {}
        for dom in conn.listAllDomains():
            snaps = {s.getName(): s.getXMLDesc() for s in dom.listAllSnapshots()}
            out[f"domain:{dom.name()}"] = (dom.state()[0], dom.XMLDesc(0),
                                           dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
                                           if dom.isPersistent() else None,
                                           dom.autostart() if dom.isPersistent() else None,
                                           dom.hasManagedSaveImage(), snaps)
        for net in conn.listAllNetworks():
            out[f"network:{net.name()}"] = (net.isActive(), net.XMLDesc(0))
        for pool in conn.listAllStoragePools():
            out[f"pool:{pool.name()}"] = (pool.isActive(), pool.XMLDesc(0))
        return out
    finally:
        conn.close()


def test_audit_of_the_real_libvirtd_changes_nothing(tmp_path, request):
    try:
        uri = request.getfixturevalue("real_libvirtd")
    except pytest.FixtureLookupError:
        pytest.skip("no real_libvirtd fixture in tests/conftest.py")
    before = libvirt_state(uri), tree_digest(Path("/etc/libvirt"))
    assert any(k.startswith("domain:") for k in before[0])
    proc = subprocess.run([VMAUDIT, "run", "--connect", uri, "--state-dir", str(tmp_path / "state")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode in OK, proc.stderr
    assert (libvirt_state(uri), tree_digest(Path("/etc/libvirt"))) == before
    [row] = rows(tmp_path / "state")
    assert row[3] == proc.returncode
