"""vmaudit runs on the oldest Python the hypervisor distributions ship (3.9, RHEL 9): installed from
this checkout into a 3.9 virtualenv, it audits the fixture hosts in every format without a defect.
Skipped where no Python 3.9 interpreter exists on the machine (pyenv's or the system's)."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess

import pytest
from vmtest import LIBVIRT, host_root

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python39() -> str | None:
    """A working Python 3.9 (pyenv's shims exist for versions that are not selected: try each)."""
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9")))
    candidates += [p for p in (shutil.which("python3.9"),) if p]
    for candidate in candidates:
        ok = subprocess.run([candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 9)"],
                            capture_output=True, timeout=60)
        if ok.returncode == 0:
            return candidate
    return None


@pytest.fixture(scope="module")
def vmaudit39(tmp_path_factory):
    interpreter = python39()
    if interpreter is None:
        pytest.skip("no Python 3.9 interpreter on this machine")
    venv = tmp_path_factory.mktemp("py39") / "venv"
    subprocess.run([interpreter, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = subprocess.run([str(venv / "bin/pip"), "install", "-q", REPO], capture_output=True, text=True,
                         timeout=900)
    assert pip.returncode == 0, pip.stderr[-3000:]
    return str(venv / "bin/vmaudit")


@pytest.mark.parametrize("host, node", [("debian-broken", "m3-broken"), ("rhel-hardened", "hardened")])
def test_audit_on_python39(vmaudit39, tmp_path, host, node):
    out = tmp_path / "reports"
    args = [vmaudit39, "run", "--root", str(host_root(host)), "--connect", f"test://{LIBVIRT / node}.xml",
            "--output", str(out)]
    for fmt in ("json", "html", "text", "junit", "prometheus"):
        args += ["--format", fmt]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1, 3), proc.stderr
    report = json.loads((out / "report.json").read_text())
    defects = [f for f in report["findings"] if "internal error" in f["message"]]
    assert defects == [] and len(report["findings"]) > 50
    assert (out / "report.html").stat().st_size > 10_000
    facts = subprocess.run([vmaudit39, "facts", "--root", str(host_root(host))], capture_output=True, text=True,
                           timeout=300)
    assert json.loads(facts.stdout)["schema"] == "vmaudit-facts/2"
