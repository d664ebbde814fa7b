"""`vmaudit run --state-dir`, `vmaudit history`, and the state directory under contention, full or
read-only — through the installed command line."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess

import pytest
from statehelp import (
    FIXTURE,
    OK,
    VMAUDIT,
    fill,
    rows,
    run_into,
    small_tmpfs,
    snapshot,
    tmp_leftovers,
    vmaudit,
)


def test_run_with_state_dir_stores_reports_history_and_latest(tmp_path):
    state = tmp_path / "state"
    proc = run_into(state)
    assert proc.returncode in OK, proc.stderr
    assert proc.stdout == ""  # a timer's journal gets the summary line, not a report
    [line] = [x for x in proc.stderr.splitlines() if " run 1 of " in x]
    assert "exit status" in line and " pass, " in line and str(state / "runs") in line
    [run_dir] = (state / "runs").iterdir()
    report = json.loads((run_dir / "report.json").read_text())
    assert report["schema"] == "vmaudit-report/1" and report["host"]["libvirt_uri"] == "test:///default"
    assert (state / "latest.json").read_bytes() == (run_dir / "report.json").read_bytes()
    html = (run_dir / "report.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and report["host"]["hostname"] in html
    assert (state / "latest.html").read_bytes() == (run_dir / "report.html").read_bytes()
    [row] = rows(state)
    assert row[3] == proc.returncode and row[-1] == len(report["findings"]) > 0
    assert row[4:10] == tuple(report["summary"][k] for k in ("pass", "fail", "warn", "error", "skip", "waived"))


def test_run_without_state_dir_is_unchanged(tmp_path):
    proc = vmaudit("run", *FIXTURE, "--format", "json", cwd=tmp_path)
    assert proc.returncode in OK, proc.stderr
    assert json.loads(proc.stdout)["schema"] == "vmaudit-report/1"
    assert list(tmp_path.iterdir()) == []


def test_state_dir_with_format_also_prints_the_report(tmp_path):
    proc = run_into(tmp_path / "s", "--format", "json")
    assert proc.returncode in OK, proc.stderr
    assert json.loads(proc.stdout) == json.loads((tmp_path / "s" / "latest.json").read_text())


def test_history_lists_runs_newest_first(tmp_path):
    state = tmp_path / "s"
    for _ in range(2):
        assert run_into(state).returncode in OK
    text = vmaudit("history", "--state-dir", str(state))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split()[:4] == ["RUN", "STARTED", "(UTC)", "HOST"]
    assert [ln.split()[0] for ln in lines[1:]] == ["2", "1"]
    data = json.loads(vmaudit("history", "--state-dir", str(state), "--format", "json", "--limit", "1").stdout)
    assert [r["id"] for r in data] == [2] and set(data[0]["summary"]) == {"pass", "fail", "warn", "error",
                                                                          "skip", "waived"}
    missing = vmaudit("history", "--state-dir", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "no such state directory" in missing.stderr


def test_history_of_an_empty_state_dir(tmp_path):
    proc = vmaudit("history", "--state-dir", str(tmp_path))
    assert proc.returncode == 0 and "no run recorded yet" in proc.stderr


def test_bad_policy_is_exit_2_and_stores_nothing(tmp_path, tmp_policy):
    state = tmp_path / "s"
    assert run_into(state).returncode in OK
    before = snapshot(state)
    proc = run_into(state, "--policy", str(tmp_policy("[agent]\nbogus = 1\n")))
    assert proc.returncode == 2 and "unknown key 'bogus'" in proc.stderr
    assert snapshot(state) == before


def _locked(state):
    state.mkdir(parents=True, exist_ok=True)
    fd = os.open(state / "lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_second_run_refuses_cleanly_while_the_lock_is_held(tmp_path):
    state = tmp_path / "s"
    assert run_into(state).returncode in OK
    before = snapshot(state)
    fd = _locked(state)
    try:
        proc = run_into(state, "--wait", "0")
        assert proc.returncode == 4
        assert "holds" in proc.stderr and str(state / "lock") in proc.stderr and "--wait" in proc.stderr
        proc = run_into(state, "--wait", "0.5")
        assert proc.returncode == 4
    finally:
        os.close(fd)
    assert snapshot(state) == before


def test_runs_started_together_both_finish(tmp_path):
    state = tmp_path / "s"
    fd = _locked(state)  # both start while the lock is taken, so both really wait
    cmd = [VMAUDIT, "run", *FIXTURE, "--state-dir", str(state), "--wait", "120"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        # both are alive and waiting for the lock
        for p in procs:
            with pytest.raises(subprocess.TimeoutExpired):
                p.wait(timeout=1)
    finally:
        os.close(fd)
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode in OK for p in procs] == [True, True], outs
    assert [r[0] for r in rows(state)] == [1, 2]
    assert len(list((state / "runs").iterdir())) == 2 and not tmp_leftovers(state)


def test_runs_started_at_once_without_help(tmp_path):
    state = tmp_path / "s"
    cmd = [VMAUDIT, "run", *FIXTURE, "--state-dir", str(state)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode in OK for p in procs), outs
    assert [r[0] for r in rows(state)] == [1, 2, 3]
    json.loads((state / "latest.json").read_text())


def test_full_state_dir_is_a_clear_error_and_loses_nothing(tmp_path):
    with small_tmpfs(tmp_path / "fs", size="1m") as fs:
        state = fs / "state"
        assert run_into(state).returncode in OK
        before = snapshot(state)
        fill(fs)
        proc = run_into(state)
        assert proc.returncode == 5, proc.stderr
        assert "full" in proc.stderr or "no space left" in proc.stderr
        assert "the history and latest.json are unchanged" in proc.stderr
        assert snapshot(state) == before
        assert vmaudit("history", "--state-dir", str(state)).returncode == 0
        (fs / "filler").unlink()
        assert run_into(state).returncode in OK  # space again: the next run just works
        assert [r[0] for r in rows(state)] == [1, 2] and not tmp_leftovers(state)


def test_read_only_state_dir_is_a_clear_error_and_loses_nothing(tmp_path):
    with small_tmpfs(tmp_path / "fs") as fs:
        state = fs / "state"
        assert run_into(state).returncode in OK
        before = snapshot(state)
        subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
        proc = run_into(state)
        assert proc.returncode == 5
        assert f"state directory {state} is not writable: read-only file system" in proc.stderr
        assert " run " not in proc.stderr  # refused before auditing
        assert snapshot(state) == before
        hist = vmaudit("history", "--state-dir", str(state))  # still readable
        assert hist.returncode == 0 and hist.stdout.splitlines()[1].split()[0] == "1"


def test_empty_state_dir_is_bad_usage(tmp_path):
    proc = vmaudit("run", *FIXTURE, "--state-dir", "", cwd=tmp_path)
    assert proc.returncode == 2 and "--state-dir: empty path" in proc.stderr
    assert list(tmp_path.iterdir()) == []
