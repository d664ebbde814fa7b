"""vmaudit.state in-process: recording runs, reading them back, retention, repair, the lock."""

from __future__ import annotations

import copy
import errno
import json
import multiprocessing
import os
import sqlite3
from datetime import datetime, timezone

import pytest
from vmtest import audit

import vmaudit.state as state_mod
from vmaudit.policy import PolicyError
from vmaudit.report import render
from vmaudit.state import LockTimeout, StateDir, StateError, last_two_reports, resolve_state_dir

RENDERS = {"json": lambda r: render("json", r)}


@pytest.fixture(scope="module")
def report():
    return audit("empty", uri="test:///default")


def at(report: dict, started: str, fail: int = 0) -> dict:
    r = copy.deepcopy(report)
    r["started_at"] = r["finished_at"] = started
    r["summary"]["fail"] = fail
    return r


def test_record_stores_row_findings_files_and_latest(tmp_path, report):
    st = StateDir(tmp_path / "s")
    with st.lock(wait=0):
        run_id, run_dir = st.record(report, 3, RENDERS)
    assert run_id == 1 and run_dir.name.startswith("000001-")
    text = (run_dir / "report.json").read_text()
    assert json.loads(text) == json.loads(json.dumps(report))
    assert (tmp_path / "s" / "latest.json").read_text() == text
    [run] = st.runs()
    assert run["exit_status"] == 3 and run["summary"] == {k: report["summary"][k] for k in run["summary"]}
    assert run["hostname"] == report["host"]["hostname"] and run["dir"] == str(run_dir)
    conn = sqlite3.connect(st.db_path)
    stored = conn.execute("SELECT check_id, resource, status FROM findings WHERE run_id = 1").fetchall()
    assert stored == [(f["check_id"], f["resource"], f["status"]) for f in report["findings"]]
    assert st.report(1) == json.loads(text)
    # reports may name tenants' guests: not world-readable
    for p in (st.db_path, run_dir / "report.json", tmp_path / "s" / "latest.json", st.path):
        assert os.stat(p).st_mode & 0o007 == 0, p


def test_last_two_reports_needs_two_runs(tmp_path, report):
    st = StateDir(tmp_path / "s")
    with pytest.raises(PolicyError, match="no such state directory"):
        last_two_reports(str(st.path))
    with st.lock(wait=0):
        st.record(at(report, "2026-01-01T00:00:00Z"), 0, RENDERS)
    with pytest.raises(PolicyError, match=r"holds 1 run\(s\); diff --last needs two"):
        last_two_reports(str(st.path))
    with st.lock(wait=0):
        st.record(at(report, "2026-01-02T00:00:00Z", fail=1), 1, RENDERS)
        st.record(at(report, "2026-01-03T00:00:00Z", fail=2), 1, RENDERS)
    previous, latest = last_two_reports(str(st.path))
    assert (previous["started_at"], latest["started_at"]) == ("2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z")
    assert latest["summary"]["fail"] == 2


def test_retention_forgets_old_runs_but_keeps_the_newest_two(tmp_path, report):
    st = StateDir(tmp_path / "s")
    now = datetime(2026, 6, 30, tzinfo=timezone.utc)
    with st.lock(wait=0):
        for day in ("2026-01-01", "2026-02-01", "2026-06-01", "2026-06-29"):
            st.record(at(report, f"{day}T00:00:00Z"), 0, RENDERS)
        assert st.prune(90, now=now) == 2
    assert [r["started_at"][:10] for r in st.runs()] == ["2026-06-29", "2026-06-01"]
    assert sorted(p.name[:6] for p in st.runs_path.iterdir()) == ["000003", "000004"]
    assert sqlite3.connect(st.db_path).execute(
        "SELECT count(*) FROM findings WHERE run_id IN (1, 2)").fetchone()[0] == 0
    with st.lock(wait=0):  # everything older than a day, yet the newest two stay for diff --last
        assert st.prune(1, now=now.replace(year=2027)) == 0
    assert len(st.runs()) == 2


def test_record_applies_retention_from_history_days(tmp_path, report):
    st = StateDir(tmp_path / "s")
    with st.lock(wait=0):
        for year in (2001, 2002, 2003):
            st.record(at(report, f"{year}-01-01T00:00:00Z"), 0, RENDERS)
        st.record(at(report, "2004-01-01T00:00:00Z"), 0, RENDERS, history_days=90)
    assert [r["id"] for r in st.runs()] == [4, 3]


def test_repair_completes_an_interrupted_run(tmp_path, report):
    st = StateDir(tmp_path / "s")
    with st.lock(wait=0):
        st.record(at(report, "2026-01-01T00:00:00Z"), 0, RENDERS)
        _, run_dir = st.record(at(report, "2026-01-02T00:00:00Z"), 1, RENDERS)
    # as if killed after the commit: the run's file and latest.json not (fully) written, a temp file left
    latest = st.path / "latest.json"
    old_text = (st.runs_path / "000001-20260101T000000Z" / "report.json").read_text()
    latest.write_text(old_text)
    (run_dir / "report.json").unlink()
    (st.path / ".latest.json.abc.tmp").write_text("{half")
    (st.runs_path / "000099-20990101T000000Z").mkdir()  # a directory no history row knows
    with st.lock(wait=0):
        st.repair(RENDERS)
    assert json.loads(latest.read_text())["started_at"] == "2026-01-02T00:00:00Z"
    assert (run_dir / "report.json").read_text() == latest.read_text()
    assert not list(st.path.glob(".*.tmp"))
    assert sorted(p.name[:6] for p in st.runs_path.iterdir()) == ["000001", "000002"]


def test_a_renderer_defect_keeps_the_recorded_run(tmp_path, report):
    st = StateDir(tmp_path / "s")

    def broken(_report):
        raise RuntimeError("template bug")

    with st.lock(wait=0), pytest.raises(StateError, match="html report could not be rendered"):
        st.record(report, 0, {**RENDERS, "html": broken})
    assert len(st.runs()) == 1 and (st.path / "latest.json").exists()


def test_full_disk_while_writing_latest_leaves_previous_latest(tmp_path, report, monkeypatch):
    st = StateDir(tmp_path / "s")
    with st.lock(wait=0):
        st.record(at(report, "2026-01-01T00:00:00Z"), 0, RENDERS)
    before = (st.path / "latest.json").read_bytes()
    real = state_mod.atomic_write_at

    def enospc(dir_fd, name, data, mode=0o640):
        if name == "latest.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)
        return real(dir_fd, name, data, mode)

    monkeypatch.setattr(state_mod, "atomic_write_at", enospc)
    with st.lock(wait=0), pytest.raises(StateError, match="no space left on device") as exc:
        st.record(at(report, "2026-01-02T00:00:00Z"), 0, RENDERS)
    assert exc.value.exit_status == 5
    assert (st.path / "latest.json").read_bytes() == before
    monkeypatch.setattr(state_mod, "atomic_write_at", real)
    with st.lock(wait=0):
        st.repair(RENDERS)  # the next run finishes the job
    assert json.loads((st.path / "latest.json").read_text())["started_at"] == "2026-01-02T00:00:00Z"


def _hold(path: str, ready, release) -> None:
    with StateDir(path).lock(wait=0):
        ready.set()
        release.wait(30)


def test_lock_waits_within_a_bound_then_gives_up(tmp_path):
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(tmp_path / "s"), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(LockTimeout, match=rf"another vmaudit run \(pid {holder.pid}, since .*\) holds") as exc:
            with StateDir(tmp_path / "s").lock(wait=0.3):
                pass
        assert exc.value.exit_status == 4
    finally:
        release.set()
        holder.join(30)
    with StateDir(tmp_path / "s").lock(wait=0):  # released with its holder
        pass


def test_writes_need_the_lock(tmp_path, report):
    with pytest.raises(RuntimeError, match="need the lock"):
        StateDir(tmp_path / "s").record(report, 0, RENDERS)


def test_unwritable_state_dir_is_a_state_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StateError, match="is not writable") as exc:
        with StateDir(blocker / "s").lock(wait=0):
            pass
    assert exc.value.exit_status == 5


def test_newer_history_schema_is_refused(tmp_path, report):
    st = StateDir(tmp_path / "s")
    st.path.mkdir()
    sqlite3.connect(st.db_path).execute("PRAGMA user_version = 99")
    with st.lock(wait=0), pytest.raises(StateError, match="newer than this vmaudit"):
        st.record(report, 0, RENDERS)


def test_state_dir_resolution(tmp_policy):
    from vmaudit.policy import load_policy

    assert resolve_state_dir(None, None) == "/var/lib/vmaudit"
    pol = load_policy(str(tmp_policy('[agent]\nstate_dir = "/srv/vmaudit"\n')))
    assert resolve_state_dir(None, pol) == "/srv/vmaudit"
    assert resolve_state_dir("/x", pol) == "/x"


def test_corrupt_history_is_reported_not_replaced(tmp_path, report):
    st = StateDir(tmp_path / "s")
    st.path.mkdir()
    st.db_path.write_bytes(b"this is not an SQLite database, but someone's history" * 100)
    before = st.db_path.read_bytes()
    with st.lock(wait=0), pytest.raises(StateError, match="cannot (open|read) the history .*history.sqlite"):
        st.repair(RENDERS)
        st.record(report, 0, RENDERS)
    with pytest.raises(StateError, match="history"):
        st.runs()
    assert st.db_path.read_bytes() == before
