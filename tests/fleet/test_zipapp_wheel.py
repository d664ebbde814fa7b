"""The agentless zipapp built where it is built in production: from an INSTALLED wheel (the checkout's
layout hid duplicate entries and carried checks, commands and reports). It holds the modules of its
explicit list once each, nothing else, and collects agentless against the real sshd lab."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
from sshlab import ADDR, PORT
from test_collect_ssh import host_line, hosts_of

REPO = Path(__file__).resolve().parents[2]

_LIST = r"""
import io, json, sys, warnings, zipfile
warnings.simplefilter("error")  # zipfile's "Duplicate name" is a UserWarning
import vmaudit
from vmaudit.fleet.zipapp import COLLECTORS, MODULES, PACKAGES, build_zipapp
data = build_zipapp()
names = zipfile.ZipFile(io.BytesIO(data)).namelist()
print(json.dumps({"vmaudit": vmaudit.__file__, "names": names, "modules": list(MODULES),
                  "collectors": COLLECTORS, "packages": list(PACKAGES)}))
"""


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    """A venv with vmaudit installed from its wheel (no editable checkout); its dependencies come from
    the test venv's site-packages through a .pth line (paths only: no editable finder is loaded)."""
    tmp = tmp_path_factory.mktemp("wheel")
    # built from a copy: an in-tree build leaves build/ in the checkout (and would reuse a stale one)
    src = tmp / "src"
    shutil.copytree(REPO, src, symlinks=True,  # the fixture hosts hold absolute links
                    ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp / "dist"), str(src)],
                   check=True, capture_output=True, timeout=300)
    wheel = next((tmp / "dist").glob("vmaudit-*.whl"))
    env = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env)
    py = env / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    (site / "test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env


def test_zipapp_from_the_wheel_holds_its_list_once(wheel_venv):
    done = subprocess.run([str(wheel_venv / "bin" / "python"), "-c", _LIST], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["vmaudit"].startswith(str(wheel_venv)), got["vmaudit"]  # the installed copy, not the checkout
    names = got["names"]
    assert len(names) == len(set(names)), "duplicate entries"
    collectors = sorted(p.name for p in (REPO / "collectors").glob("*.py"))
    expected = {"__main__.py"} | {m.replace(".", "/") + ("/__init__.py" if m == "vmaudit" else ".py")
                                  for m in got["modules"]}
    expected |= {"vmaudit/collectors/" + c for c in collectors}
    package_files = {n for n in names if n.split("/")[0] in got["packages"]}
    native = {n for n in names if n.startswith("_native/")}
    assert set(names) - native - package_files == expected
    assert not [n for n in names if n.startswith(("vmaudit/checks", "vmaudit/commands", "vmaudit/report",
                                                  "vmaudit/fleet", "tomli/"))]


def test_zipapp_from_the_wheel_runs_in_an_isolated_python(wheel_venv, tmp_path):
    """Every module the collectors import is in the list: the zipapp alone (python -I -S: no
    site-packages, so no vmaudit, libvirt or psutil but its own) collects a fixture root."""
    pyz = tmp_path / "vmaudit.pyz"
    subprocess.run([str(wheel_venv / "bin" / "python"), "-c",
                    f"from vmaudit.fleet.zipapp import build_zipapp; open({str(pyz)!r}, 'wb').write("
                    f"build_zipapp(include_native=False))"], check=True, timeout=120)
    done = subprocess.run([sys.executable, "-I", "-S", str(pyz), "facts", "--root",
                           str(REPO / "tests/fixtures/hosts/empty"), "--connect", "test:///default"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert facts["schema"].startswith("vmaudit-facts/") and "libvirt" in facts["sources"]


def test_zipapp_from_the_wheel_collects_agentless(wheel_venv, lab, tmp_path):
    inv = tmp_path / "hosts.ini"
    inv.write_text(f"[all:vars]\nansible_port={PORT}\nansible_user=root\n[hv]\n"
                   + host_line("hv-b", ADDR["agentless"], vmaudit_python="/usr/bin/python3") + "\n")
    out = tmp_path / "out"
    done = subprocess.run([str(wheel_venv / "bin" / "python"), "-W", "error::UserWarning", "-m", "vmaudit",
                           "collect", "-i", str(inv), "--output", str(out), "--identity", str(lab.client_key),
                           "--no-agent", "--known-hosts", str(lab.known_hosts), "--ssh-config", str(lab.ssh_config),
                           "--connect-timeout", "5", "--command-timeout", "60", "--no-progress", "--no-store"],
                          capture_output=True, text=True, timeout=180)
    hosts = hosts_of(json.loads((out / "fleet.json").read_text()))
    b = hosts["hv-b"]
    assert (b["reached"], b["mode"], b["hostname"]) == (True, "agentless", "hv-b"), (b, done.stderr)
    assert "Duplicate name" not in done.stderr
    facts = json.loads((out / b["facts"]).read_text())
    assert sorted(d["name"] for d in facts["sources"]["libvirt"]["domains"]) == ["app01", "db01", "dmz-stray"]
