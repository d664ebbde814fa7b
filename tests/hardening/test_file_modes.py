"""Every file vmaudit creates is 0640 and every directory 0750, whatever the umask (CONTRACT.md 1.1):
reports, snapshots, report directories, the state directory and everything in it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "state"))
from statehelp import FIXTURE, VMAUDIT  # noqa: E402


def under_umask(mask: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([VMAUDIT, *args], capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: os.umask(mask))


def modes(top: Path) -> dict:
    """{relative path: mode} of top and everything below it."""
    out = {".": stat.S_IMODE(top.lstat().st_mode)}
    for p in top.rglob("*"):
        out[str(p.relative_to(top))] = stat.S_IMODE(p.lstat().st_mode)
    return out


def assert_private(top: Path) -> None:
    wrong = {p: f"{m:04o}" for p, m in modes(top).items()
             if m != (0o750 if (top / p).is_dir() else 0o640)}
    assert not wrong, wrong


@pytest.mark.parametrize("mask", [0o000, 0o022])
def test_reports_and_snapshots(tmp_path, mask):
    out = tmp_path / "out"
    r = under_umask(mask, "run", *FIXTURE, "--format", "json", "--format", "html", "--format", "prometheus",
                    "--output", str(out / "reports" / "today"))
    assert r.returncode in (0, 1, 3), r.stderr
    r = under_umask(mask, "run", *FIXTURE, "--format", "json", "--output", str(out / "one.json"))
    assert r.returncode in (0, 1, 3), r.stderr
    r = under_umask(mask, "facts", *FIXTURE, "--output", str(out / "facts.json"))
    assert r.returncode == 0, r.stderr
    os.chmod(out, 0o750)  # made by the test
    assert_private(out)
    assert len(modes(out)) == 8  # ., reports, today, 3 reports, one.json, facts.json


@pytest.mark.parametrize("mask", [0o000, 0o022])
def test_state_directory(tmp_path, mask):
    state = tmp_path / "state"
    for _ in range(2):
        r = under_umask(mask, "run", *FIXTURE, "--state-dir", str(state))
        assert r.returncode in (0, 1, 3), r.stderr
    assert_private(state)
    assert {"lock", "history.sqlite", "latest.json", "latest.html", "runs"} <= set(os.listdir(state))
