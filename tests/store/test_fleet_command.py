"""`vmaudit fleet` over facts directories and SQLite stores; the store's schema, migration, retention,
sharding and redaction (the PostgreSQL engine: test_postgresql.py)."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from storetest import FLEET, INVENTORY, fixture_facts, vmaudit, write_fleet

from vmaudit.errors import InputError
from vmaudit.fleet.central import parse_shard, select_shard, shard_of
from vmaudit.fleet.hosts import FleetHost
from vmaudit.store import VERSION, StoreError, open_store, redact
from vmaudit.store import schema as store_schema

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fleet"))
from test_fleet_checks import FULL, run_fleet  # noqa: E402


def fleet_run(tmp_path: Path, *extra: str, name: str = "out") -> tuple[int, dict, Path]:
    out = tmp_path / name
    done = vmaudit("fleet", "--output", str(out), *extra)
    assert "Traceback" not in done.stderr, done.stderr
    report = json.loads((out / "fleet.json").read_text()) if (out / "fleet.json").exists() else {}
    return done.returncode, report, out


def stable(report: dict) -> dict:
    """A fleet report without what differs between two runs of the same facts (times, run, trend)."""
    out = {k: v for k, v in report.items() if k not in ("started_at", "finished_at", "trend", "run", "source",
                                                         "inventory")}
    out["hosts"] = [{k: v for k, v in h.items() if k != "seconds"} for h in report["hosts"]]
    return out


def test_fleet_from_facts_equals_the_collect_evaluation(tmp_path):
    facts = write_fleet(tmp_path / "collected")
    (tmp_path / "inv.ini").write_text(INVENTORY)
    policy = tmp_path / "central.toml"
    policy.write_text(f'[inventory]\npath = "{FLEET / "registry.csv"}"\n')
    rc, report, out = fleet_run(tmp_path, "--facts", str(facts), "-i", str(tmp_path / "inv.ini"), "--no-store",
                                "--policy", str(policy))
    assert rc == 1  # the fixture fleet has failures
    # the fleet checks give exactly what collect's evaluation gives for the same facts and inventory
    collected = run_fleet(FULL)
    same = [f for f in report["findings"] if f["check_id"] != "F-HOST-UNREACHED"]
    assert same and same == [f for f in collected if f["check_id"] != "F-HOST-UNREACHED"]
    # only how the facts came differs: from a file here, over SSH there
    reached = [f for f in report["findings"] if f["check_id"] == "F-HOST-UNREACHED"]
    assert [(f["status"], f["evidence"]["mode"]) for f in reached] == [("pass", "facts")] * 4
    assert {h["name"] for h in report["hosts"]} == {"hv-a", "hv-b", "hv-c", "hv-d"}
    for h in report["hosts"]:
        assert h["reached"] and h["mode"] == "facts" and h["collected_at"]
        host_report = json.loads((out / h["report"]).read_text())
        assert host_report["schema"] == "vmaudit-report/1" and host_report["findings"]
        assert (out / h["html"]).exists()
        assert oct((out / h["report"]).stat().st_mode & 0o777) == "0o640"
    assert not (out / "fleet-history.sqlite").exists()  # --no-store
    assert oct((out / "hosts").stat().st_mode & 0o777) == "0o750" and oct(out.stat().st_mode & 0o777) == "0o750"


def test_in_process_and_worker_evaluation_give_the_same_reports(tmp_path):
    facts = write_fleet(tmp_path / "f", count=12)
    (tmp_path / "inv.ini").write_text("[all]\n" + "".join(f"h{i:04d} vmaudit_migration_group=g{i % 3}\n"
                                                          for i in range(12)))
    runs = [fleet_run(tmp_path, "--facts", str(facts), "-i", str(tmp_path / "inv.ini"), "--no-store", "-j", j,
                      name=f"j{j}") for j in ("1", "3")]
    assert runs[0][0] == runs[1][0] == 1
    assert stable(runs[0][1]) == stable(runs[1][1])
    assert any(f["check_id"] == "F-MIGRATION-PARITY" and f["status"] == "pass" for f in runs[0][1]["findings"])


def test_fleet_without_inventory_uses_the_files_and_stale_facts_are_reported(tmp_path):
    old = (datetime.now(timezone.utc) - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    facts = write_fleet(tmp_path / "f")
    data = fixture_facts("hv-d")
    data["collected_at"] = old
    (facts / "facts" / "hv-d.json").write_text(json.dumps(data))
    (facts / "facts" / "hv-x.json").write_text("{not json")
    rc, report, out = fleet_run(tmp_path, "--facts", str(facts), "--no-store")
    hosts = {h["name"]: h for h in report["hosts"]}
    assert set(hosts) == {"hv-a", "hv-b", "hv-c", "hv-d", "hv-x"}
    assert not hosts["hv-d"]["reached"] and hosts["hv-d"]["stage"] == "stale"
    assert "30.0 days ago" in hosts["hv-d"]["reason"] and hosts["hv-d"]["collected_at"] == old
    assert hosts["hv-d"]["report"] is None and not (out / "hosts" / "hv-d.json").exists()
    assert not hosts["hv-x"]["reached"] and "not a JSON" in hosts["hv-x"]["reason"]
    unreached = {f["resource"]: f for f in report["findings"] if f["check_id"] == "F-HOST-UNREACHED"}
    assert unreached["host:hv-d"]["status"] == "error" and "stale" in unreached["host:hv-d"]["message"]
    # never mixed in: the zone check cannot pass a host whose facts are stale
    zone = {f["resource"]: f for f in report["findings"] if f["check_id"] == "F-ZONE-HOSTS"}
    assert zone["host:hv-d"]["status"] == "error"
    # --max-age widens the limit: the host is evaluated again
    rc, report, _ = fleet_run(tmp_path, "--facts", str(facts), "--no-store", "--max-age", "40", name="o2")
    assert {h["name"]: h for h in report["hosts"]}["hv-d"]["reached"]


def test_fleet_bad_usage_exits_2_in_one_line(tmp_path):
    done = vmaudit("fleet", "--output", str(tmp_path / "o"))
    assert done.returncode == 2 and "--facts DIR or --store URL" in done.stderr
    done = vmaudit("fleet", "--facts", str(tmp_path / "missing"), "--output", str(tmp_path / "o"), "--no-store")
    assert done.returncode == 2 and "cannot read" in done.stderr and "Traceback" not in done.stderr
    done = vmaudit("fleet", "--store", str(tmp_path / "none.sqlite"), "--output", str(tmp_path / "o"))
    assert done.returncode == 2 and "no such SQLite file" in done.stderr and not (tmp_path / "none.sqlite").exists()
    facts = write_fleet(tmp_path / "f")
    done = vmaudit("fleet", "--facts", str(facts), "--shard", "5/4", "--no-store", "--output", str(tmp_path / "o"))
    assert done.returncode == 2 and "--shard" in done.stderr


def test_sqlite_store_records_runs_facts_and_reevaluates_from_the_store(tmp_path):
    facts = write_fleet(tmp_path / "f")
    (tmp_path / "inv.ini").write_text(INVENTORY)
    store = tmp_path / "store.sqlite"
    rc1, from_facts, _ = fleet_run(tmp_path, "--facts", str(facts), "-i", str(tmp_path / "inv.ini"),
                                   "--store", str(store), name="a")
    assert oct(store.stat().st_mode & 0o777) == "0o640"
    # from the store alone, with the inventory variables recorded with the facts: the same verdicts
    rc2, from_store, _ = fleet_run(tmp_path, "--store", str(store), name="b")
    assert rc1 == rc2 == 1
    assert stable(from_store) == stable(from_facts)
    assert [r["run"] for r in from_store["trend"]] == [1, 2]
    with open_store(str(store)) as s:
        hosts = s.latest_hosts()
        assert [h.name for h in hosts] == ["hv-a", "hv-b", "hv-c", "hv-d"]
        assert hosts[0].meta["vars"]["vmaudit_zone"] == "dmz" and hosts[0].run_id == 1
        name, facts0 = next((h.name, f) for h, f in s.latest_facts())
        assert name == "hv-a" and facts0 == fixture_facts("hv-a") | {"collected_at": facts0["collected_at"]}
    db = sqlite3.connect(store)
    assert db.execute("SELECT count(*) FROM vmaudit_latest_host").fetchone()[0] == 4
    assert db.execute("SELECT count(DISTINCT run_id) FROM vmaudit_latest_host").fetchone() == (1,)
    statuses = dict(db.execute("SELECT check_id, status FROM vmaudit_latest_host_check WHERE host = 'hv-a'"))
    assert statuses and set(statuses.values()) <= {"pass", "fail", "warn", "error", "skip", "waived"}
    day = db.execute("SELECT day, hosts, hosts_failing FROM vmaudit_trend_daily").fetchall()
    assert len(day) == 1 and day[0][1] == 4 and day[0][2] == 4


def test_a_limit_and_shards_partition_the_hosts(tmp_path):
    hosts = [FleetHost(f"hv{i:03d}") for i in range(200)]
    parts = [select_shard(hosts, f"{k}/4") for k in range(1, 5)]
    assert sorted(h.name for p in parts for h in p) == sorted(h.name for h in hosts)
    assert all(20 < len(p) < 80 for p in parts)
    assert shard_of("hv001", 4) == shard_of("hv001", 4)
    # stable across processes (Python's hash() is randomized per process; SHA-256 is not)
    assert shard_of("hv-a", 7) == 1 + int.from_bytes(__import__("hashlib").sha256(b"hv-a").digest()[:8], "big") % 7
    for bad in ("0/4", "5/4", "x", "1/0", "2"):
        with pytest.raises(InputError):
            parse_shard(bad)


def _v1_sqlite(path: Path) -> None:
    db = sqlite3.connect(path)
    for stmt in store_schema.statements(1, "sqlite"):
        db.execute(stmt)
    db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO runs (started_at, finished_at, interrupted, inventory, policy_sha256, hosts, reached,"
               " hosts_failing, fail, warn, error, pass, fleet_fail, fleet_warn, fleet_error) VALUES"
               " ('2026-11-01T00:00:00Z', '2026-11-01T00:01:00Z', 0, 'inv', 'x', 1, 1, 0, 0, 0, 0, 5, 0, 0, 0)")
    db.execute("INSERT INTO hosts (run_id, name, zone, reached, fail, warn, error, pass) VALUES (1, 'old', 'dmz', 1, 0, 0, 0, 5)")
    db.commit()
    db.close()


def test_sqlite_store_of_the_previous_version_is_migrated_keeping_its_runs(tmp_path):
    path = tmp_path / "v1.sqlite"
    _v1_sqlite(path)
    with open_store(str(path)) as s:
        assert [r["run"] for r in s.trend()] == [1]
        assert s.host_history("old")[0]["reached"] == 1
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == VERSION
    assert db.execute("SELECT name, reached FROM vmaudit_latest_host").fetchall() == [("old", 1)]


def test_a_store_newer_than_the_code_is_refused_unchanged(tmp_path):
    path = tmp_path / "new.sqlite"
    open_store(str(path)).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {VERSION + 1}")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="newer than this vmaudit"):
        open_store(str(path))
    facts = write_fleet(tmp_path / "f")
    done = vmaudit("fleet", "--facts", str(facts), "--store", str(path), "--output", str(tmp_path / "o"))
    assert done.returncode == 2 and "newer than this vmaudit" in done.stderr and "Traceback" not in done.stderr
    assert path.read_bytes() == before


def test_a_foreign_database_or_a_symlink_is_refused(tmp_path):
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="not a vmaudit fleet store"):
        open_store(str(other))
    link = tmp_path / "link.sqlite"
    os.symlink(tmp_path / "target.sqlite", link)
    with pytest.raises(StoreError, match="symbolic link"):
        open_store(str(link))
    assert not (tmp_path / "target.sqlite").exists()


def test_retention_forgets_old_runs_but_keeps_every_hosts_latest_facts(tmp_path):
    path = str(tmp_path / "s.sqlite")
    facts = fixture_facts("hv-a")
    entry = {"name": "hv-a", "reached": True}
    report = {"summary": {"findings": {"fail": 0, "warn": 0, "error": 0, "pass": 0},
                          "fleet": {"fail": 0, "warn": 0, "error": 0}, "hosts": 1, "reached": 1, "hosts_failing": 0},
              "findings": [], "finished_at": "x", "interrupted": False}
    with open_store(path) as s:
        for started, host, when in (("2026-01-01T00:00:00Z", "gone", "2026-01-01T00:00:00Z"),
                                    ("2026-01-02T00:00:00Z", "hv-a", "2026-01-02T00:00:00Z"),
                                    ("2026-12-01T00:00:00Z", "hv-a", "2026-12-01T00:00:00Z")):
            w = s.begin_run("collect", started, inventory=None, policy_sha256=None)
            w.add_host(entry | {"name": host}, {"findings": []}, facts, {}, when)
            w.finish(report)
        s.prune(90, now=datetime(2026, 12, 5, tzinfo=timezone.utc))
        latest = {h.name: (h.run_id, h.collected_at) for h in s.latest_hosts()}
        # hv-a's older facts are superseded; the host last seen in January keeps its facts (reported
        # stale by `vmaudit fleet`, never silently gone), its run's other rows are forgotten
        assert latest == {"gone": (1, "2026-01-01T00:00:00Z"), "hv-a": (3, "2026-12-01T00:00:00Z")}
        assert [r["run"] for r in s.trend()] == [1, 3]
        assert s.host_history("gone") == []


def test_urls_are_redacted_and_a_password_in_the_url_is_refused():
    assert redact("postgresql://fleet:hunter2@db.example/vmaudit?sslmode=require") == \
        "postgresql://fleet:***@db.example/vmaudit?sslmode=require"
    assert redact("postgres://db/x?user=a&password=hunter2&sslpassword=k") == \
        "postgres://db/x?user=a&password=***&sslpassword=***"
    for url in ("postgresql://fleet:hunter2@127.0.0.1:1/vmaudit", "postgresql:///vmaudit?password=hunter2"):
        with pytest.raises(StoreError) as err:
            open_store(url)
        assert "hunter2" not in str(err.value) and "PGPASSFILE" in str(err.value)
