"""The README's quick start on a clean machine: `./scripts/install.sh && vmaudit run` from a checkout
only root can read (as under /root), into a fresh prefix, and the installed command run by an ordinary
user. Nothing outside the test's own directories is written (VMAUDIT_PREFIX/BINDIR/CONFDIR), and the
throw-away user is removed, pass or fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
from vmtest import REQUIRE_REAL

REPO = Path(__file__).resolve().parents[2]


def _need_root_tools() -> None:
    why = None
    if os.geteuid() != 0:
        why = "needs root (install.sh installs system packages, the test creates a user)"
    elif not (shutil.which("useradd") and shutil.which("userdel") and shutil.which("runuser")):
        why = "needs useradd, userdel and runuser (passwd, util-linux)"
    if why:
        (pytest.fail if REQUIRE_REAL else pytest.skip)(why)


def _checkout_copy(dest: Path) -> Path:
    """The working tree's files (committed or not, ignored ones left out) as a fresh clone would have."""
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "-co", "--exclude-standard"],
                           capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, files):
        src = REPO / os.fsdecode(name)
        if src.is_file() or src.is_symlink():
            target = dest / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target, follow_symlinks=False)
    return dest


@pytest.fixture
def throwaway_user():
    name = f"vmaudit-i15-{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/bin/sh",
                    "--user-group", name], check=True, capture_output=True, timeout=60)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], capture_output=True, timeout=60)
        subprocess.run(["groupdel", name], capture_output=True, timeout=60)


def test_install_then_run_as_an_ordinary_user(tmp_path, throwaway_user):
    _need_root_tools()
    # the checkout where only root may read, like a clone in /root (mode 0700)
    private = tmp_path / "root-only"
    private.mkdir(mode=0o700)
    checkout = _checkout_copy(private / "vmaudit")
    # the installation outside it, where any user can reach (not under pytest's 0700 tmp dirs)
    place = Path(tempfile.mkdtemp(prefix="vmaudit-test-install-", dir="/var/tmp"))
    try:
        place.chmod(0o755)
        env = {**os.environ, "VMAUDIT_PREFIX": str(place / "opt"), "VMAUDIT_BINDIR": str(place / "bin"),
               "VMAUDIT_CONFDIR": str(place / "etc")}
        env.pop("VIRTUAL_ENV", None)
        proc = subprocess.run(["bash", str(checkout / "scripts/install.sh")], env=env, capture_output=True,
                              text=True, timeout=1800)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        lines = proc.stdout.splitlines()
        steps = [line for line in lines if line.startswith("install.sh: [")]
        assert [s[:17] for s in steps] == [f"install.sh: [{n}/5]" for n in range(1, 6)], proc.stdout
        assert lines[-2].startswith("install.sh: vmaudit ") and " installed in " in lines[-2], proc.stdout
        assert lines[-1].startswith("Next: vmaudit run"), proc.stdout
        # the distribution's Python, not one under /root that other users cannot execute
        assert "home = /usr/bin\n" in (place / "opt/pyvenv.cfg").read_text()
        policy = place / "etc/policy.toml"
        assert policy.read_text() == (REPO / "etc/vmaudit/policy.toml").read_text()

        # the README's second half: `vmaudit run`, by a user who is not root
        run_env = {"PATH": f"{place / 'bin'}:/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8"}
        as_user = [shutil.which("runuser"), "-u", throwaway_user, "--"]
        version = subprocess.run([*as_user, "vmaudit", "--version"], env=run_env, capture_output=True,
                                 text=True, timeout=120)
        assert version.returncode == 0 and version.stdout.startswith("vmaudit "), version.stderr
        audit = subprocess.run([*as_user, "vmaudit", "run", "--policy", str(policy)], env=run_env,
                               capture_output=True, text=True, timeout=600)
        # 1: failures found, 3: some evidence unreadable (an ordinary user cannot read everything)
        assert audit.returncode in (0, 1, 3), audit.stderr
        assert "Traceback" not in audit.stderr and "vmaudit explain" in audit.stdout

        # run again (an upgrade): an edited policy is kept, never overwritten
        policy.write_text("[limits]\nmax_running_guests = 5\n")
        again = subprocess.run(["bash", str(checkout / "scripts/install.sh")], env=env, capture_output=True,
                               text=True, timeout=1800)
        assert again.returncode == 0, again.stderr
        assert "kept as it is" in again.stdout
        assert policy.read_text() == "[limits]\nmax_running_guests = 5\n"
    finally:
        shutil.rmtree(place, ignore_errors=True)
