"""A run SIGKILLed at any moment leaves latest.json and the history readable, and what was stored
before unchanged; the next run completes whatever the killed one had recorded."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest
from statehelp import FIXTURE, KILLPOINT, OK, VMAUDIT, rows, run_into, sha, snapshot, tmp_leftovers, vmaudit


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """A state directory with two recorded runs."""
    state = tmp_path_factory.mktemp("baseline") / "state"
    for _ in range(2):
        assert run_into(state).returncode in OK
    return state


@pytest.fixture
def state(baseline, tmp_path):
    copy = tmp_path / "state"
    shutil.copytree(baseline, copy)
    return copy


def killed_at(point: str, state) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(KILLPOINT), point, "run", *FIXTURE, "--state-dir", str(state)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, (point, proc.returncode, proc.stderr)
    return proc


def history_ids(state) -> list[int]:
    proc = vmaudit("history", "--state-dir", str(state), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return [r["id"] for r in json.loads(proc.stdout)]


def assert_consistent(state) -> None:
    """latest.* are the newest recorded run's reports, every run has its files, no temporary file."""
    recorded = rows(state)
    assert sha(state / "latest.json") == recorded[-1][10]
    dirs = sorted((state / "runs").iterdir())
    assert [int(d.name[:6]) for d in dirs] == [r[0] for r in recorded]
    for d in dirs:
        json.loads((d / "report.json").read_text())
        assert (d / "report.html").stat().st_size > 0
    assert (state / "latest.html").read_bytes() == (dirs[-1] / "report.html").read_bytes()
    assert not tmp_leftovers(state)


@pytest.mark.parametrize("point", ["collect", "before-record", "in-transaction"])
def test_killed_before_the_commit_changes_nothing(state, point):
    before = snapshot(state)
    killed_at(point, state)
    assert history_ids(state) == [2, 1]  # readable (a killed transaction is rolled back)
    assert snapshot(state) == before
    proc = run_into(state, "--wait", "0")  # the dead run's lock is gone with it
    assert proc.returncode in OK, proc.stderr
    assert [r[0] for r in rows(state)] == [1, 2, 3] and rows(state)[:2] == before["rows"]
    assert_consistent(state)


@pytest.mark.parametrize("point", ["before-rename", "before-latest"])
def test_killed_after_the_commit_keeps_the_previous_latest(state, point):
    before = snapshot(state)
    killed_at(point, state)
    # the run was recorded (the commit is the one point where it becomes so) ...
    assert history_ids(state) == [3, 2, 1]
    assert rows(state)[:2] == before["rows"]
    # ... and latest.* still hold the previous, complete run
    assert sha(state / "latest.json") == before["latest.json"]
    assert sha(state / "latest.html") == before["latest.html"]
    proc = run_into(state, "--wait", "0")
    assert proc.returncode in OK, proc.stderr
    assert [r[0] for r in rows(state)] == [1, 2, 3, 4]
    assert_consistent(state)


def test_killed_between_the_latest_files(state):
    before = snapshot(state)
    killed_at("between-latest", state)
    assert history_ids(state) == [3, 2, 1] and rows(state)[:2] == before["rows"]
    assert sha(state / "latest.json") == before["latest.json"]  # still the previous complete run
    # a run that finds it so completes run 3's files before auditing
    proc = run_into(state, "--wait", "0")
    assert proc.returncode in OK, proc.stderr
    assert "completing the reports of run 3" in proc.stderr
    assert_consistent(state)


def test_killed_before_retention(state):
    before = snapshot(state)
    killed_at("before-prune", state)
    assert rows(state)[:2] == before["rows"]
    assert_consistent(state)  # the killed run was complete but for retention
    assert run_into(state, "--wait", "0").returncode in OK
    assert_consistent(state)


def test_killed_at_random_moments(state):
    t0 = time.monotonic()
    assert run_into(state).returncode in OK
    duration = time.monotonic() - t0
    for i in range(8):
        before = snapshot(state)
        proc = subprocess.Popen([VMAUDIT, "run", *FIXTURE, "--state-dir", str(state)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(duration * (i + 0.5) / 8)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        after_rows = rows(state)  # integrity_check inside
        assert after_rows[:len(before["rows"])] == before["rows"]
        assert len(after_rows) - len(before["rows"]) in (0, 1)
        latest = sha(state / "latest.json")
        json.loads((state / "latest.json").read_text())
        # latest.json is always a complete report of a recorded run: the previous one, the killed run's
        # own, or (a run killed earlier between its commit and its latest files) the last recorded run
        # before it, whose files a run completes before auditing
        assert latest in {before["latest.json"]} | {r[10] for r in after_rows[len(before["rows"]) - 1:]}
    assert run_into(state, "--wait", "0").returncode in OK
    assert_consistent(state)
