"""A root run cannot be aimed at its host through the state directory (CONTRACT.md 1.1): a link planted
for any entry is refused (exit 5) and never followed, a linked or group/world-writable state directory is
refused, and the directory is created 0750 without its parents. The links point into a temporary
directory standing for /etc (never the real one), whose files must stay untouched."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "state"))
from statehelp import FIXTURE, run_into, vmaudit  # noqa: E402
from vmtest import REQUIRE_REAL  # noqa: E402

if os.geteuid() != 0:
    pytestmark = (pytest.mark.xfail(strict=True, reason="must run as root") if REQUIRE_REAL
                  else pytest.mark.skip(reason="the attack is on a root run: needs root"))


def tree(d: Path) -> dict:
    """Every file below d with its mode and content digest: what 'untouched' means."""
    out = {}
    for p in sorted(d.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(d))] = (st.st_mode, st.st_uid,
                                      hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None)
    return out


@pytest.fixture
def fake_etc(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "shadow").write_text("root:$6$secret:19000:0:99999:7:::\n")
    os.chmod(etc / "shadow", 0o600)
    (etc / "ld.so.preload").write_text("")
    return etc


@pytest.fixture
def state(tmp_path):
    d = tmp_path / "state"
    r = run_into(d)
    assert r.returncode in (0, 1, 3), r.stderr
    return d


def refused(r, what: str) -> None:
    assert r.returncode == 5, (r.returncode, r.stderr)
    assert "symbolic link" in r.stderr and what in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("entry", ["latest.json", "latest.html", "lock", "history.sqlite",
                                   "history.sqlite-journal"])
def test_linked_entry_is_refused_and_its_target_untouched(state, fake_etc, entry):
    before = tree(fake_etc)
    target = fake_etc / ("shadow" if entry != "history.sqlite-journal" else "new-file")
    if (state / entry).exists():
        (state / entry).unlink()
    (state / entry).symlink_to(target)
    refused(run_into(state), entry)
    assert tree(fake_etc) == before
    assert (state / entry).is_symlink()


def test_linked_runs_directory(state, fake_etc):
    before = tree(fake_etc)
    os.rename(state / "runs", state / "runs.old")
    (state / "runs").symlink_to(fake_etc)
    refused(run_into(state), "runs")
    assert tree(fake_etc) == before


def test_linked_run_directory_and_report_inside_runs(state, fake_etc):
    before = tree(fake_etc)
    run_dir = next((state / "runs").iterdir())
    (run_dir / "report.json").unlink()
    (run_dir / "report.json").symlink_to(fake_etc / "shadow")
    refused(run_into(state), "report.json")
    assert tree(fake_etc) == before
    (run_dir / "report.json").unlink()
    # the next run's directory, planted in advance
    (state / "runs" / "000002-20990101T000000Z").symlink_to(fake_etc)
    refused(run_into(state), "000002-")
    assert tree(fake_etc) == before


def test_linked_state_directory(tmp_path, fake_etc):
    before = tree(fake_etc)
    link = tmp_path / "state"
    link.symlink_to(fake_etc)
    r = run_into(link)
    refused(r, str(link))
    assert tree(fake_etc) == before
    r = vmaudit("history", "--state-dir", str(link))
    assert r.returncode == 5 and "symbolic link" in r.stderr, r.stderr


@pytest.mark.parametrize("mode,who", [(0o777, "its group and others"), (0o770, "its group"),
                                      (0o757, "others")])
def test_state_directory_writable_by_others_is_refused(tmp_path, mode, who):
    d = tmp_path / "state"
    d.mkdir()
    os.chmod(d, mode)
    r = run_into(d)
    assert r.returncode == 5 and f"writable by {who}" in r.stderr and f"{mode:04o}" in r.stderr, r.stderr
    assert os.listdir(d) == [] and (d.stat().st_mode & 0o777) == mode


def test_state_directory_created_0750_never_its_parents(tmp_path):
    old = os.umask(0)
    try:
        d = tmp_path / "state"
        r = run_into(d)
        assert r.returncode in (0, 1, 3), r.stderr
        assert d.stat().st_mode & 0o777 == 0o750
        missing = tmp_path / "nonexistent" / "x" / "y"
        r = run_into(missing)
    finally:
        os.umask(old)
    assert r.returncode == 5 and "never its parents" in r.stderr, r.stderr
    assert not (tmp_path / "nonexistent").exists()


def test_a_clean_state_directory_still_works(state):
    r = vmaudit("run", *FIXTURE, "--state-dir", str(state))
    assert r.returncode in (0, 1, 3), r.stderr
    assert len(list((state / "runs").iterdir())) == 2
