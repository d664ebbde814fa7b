"""The agentless zipapp (agent/fleet/zipapp.py) runs the collectors on a remote host with nothing but
its Python: the sources of issue 11 need no library beyond the standard one there (python-debian is
used by the check, centrally). Run with the system interpreter, isolated from this virtualenv."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from vmtest import REQUIRE_REAL, host_root

from vmaudit.fleet.zipapp import build_zipapp

SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")


@pytest.mark.skipif(SYSTEM_PYTHON is None and not REQUIRE_REAL, reason="no system python3")
def test_zipapp_collects_guest_paths_and_package_indexes_without_python_debian(tmp_path):
    pyz = tmp_path / "vmaudit.pyz"
    pyz.write_bytes(build_zipapp(include_native=False))
    out = tmp_path / "facts.json"
    node = Path(__file__).resolve().parents[1] / "fixtures/libvirt/m3-broken.xml"
    proc = subprocess.run([SYSTEM_PYTHON, "-I", str(pyz), "facts", "--root", str(host_root("debian-broken")),
                           "--connect", f"test://{node}", "--output", str(out), "-q"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    sources = json.loads(out.read_text())["sources"]
    idx = sources["package_indexes"]
    assert idx["manager"] == "dpkg" and idx["candidates"]["apt:amd64"]["installed"] == "2.6.1", idx
    paths = sources["guest_paths"]["paths"]
    assert "/var/lib/libvirt/images/lab01.qcow2" in paths and "unavailable" not in json.dumps(paths)
