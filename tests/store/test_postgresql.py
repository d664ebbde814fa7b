"""The fleet store on a REAL PostgreSQL (a private cluster, tests/store/pgcluster.py): concurrent writers,
migration from the previous schema, a store newer than the code, the server stopped mid-run, and the
same fleet report as SQLite for the same facts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from storetest import INVENTORY, REPO, vmaudit, write_fleet

from vmaudit.store import VERSION, StoreError, open_store
from vmaudit.store import schema as store_schema


def stable(report: dict) -> dict:
    out = {k: v for k, v in report.items() if k not in ("started_at", "finished_at", "trend", "run", "source",
                                                         "inventory")}
    out["hosts"] = [{k: v for k, v in h.items() if k != "seconds"} for h in report["hosts"]]
    return out


def host_reports(out: Path) -> dict:
    reports = {}
    for p in sorted((out / "hosts").glob("*.json")):
        r = json.loads(p.read_text())
        r.pop("finished_at")
        reports[p.name] = r
    return reports


def test_sqlite_and_postgresql_give_identical_fleet_reports(pg, tmp_path):
    cluster, url = pg
    facts = write_fleet(tmp_path / "f")
    inv = tmp_path / "inv.ini"
    inv.write_text(INVENTORY)
    runs = {}
    for name, store in (("sqlite", str(tmp_path / "s.sqlite")), ("pg", url)):
        done = vmaudit("fleet", "--facts", str(facts), "-i", str(inv), "--store", store,
                       "--output", str(tmp_path / name), env=cluster.env())
        assert done.returncode == 1, done.stderr
        # and again from the store alone: its latest facts and recorded inventory variables
        again = vmaudit("fleet", "--store", store, "--output", str(tmp_path / f"{name}-store"), env=cluster.env())
        assert again.returncode == 1, again.stderr
        runs[name] = [json.loads((tmp_path / d / "fleet.json").read_text()) for d in (name, f"{name}-store")]
    assert stable(runs["sqlite"][0]) == stable(runs["pg"][0]) == stable(runs["sqlite"][1]) == stable(runs["pg"][1])
    assert host_reports(tmp_path / "sqlite") == host_reports(tmp_path / "pg")
    assert runs["pg"][1]["source"]["store"] == url and [r["run"] for r in runs["pg"][1]["trend"]] == [1, 2]
    # the dashboard views read the same in both engines
    pg_rows = cluster.psql_admin("SELECT host, check_id, status FROM vmaudit_latest_host_check "
                                 "ORDER BY 1, 2", url.split("/")[3].split("?")[0])
    import sqlite3

    lite = sqlite3.connect(tmp_path / "s.sqlite").execute(
        "SELECT host, check_id, status FROM vmaudit_latest_host_check ORDER BY 1, 2").fetchall()
    assert pg_rows.splitlines() == ["|".join(r) for r in lite] and len(lite) > 50


def _dbname(url: str) -> str:
    return url.split("/")[3].split("?")[0]


def test_concurrent_writers_never_lose_or_duplicate_a_hosts_run(pg, tmp_path):
    """Eight writers at once on an empty database (the first migrates it, the others wait): two for
    each of four shards of 40 hosts. Every host ends up in exactly two runs, once each."""
    cluster, url = pg
    facts = write_fleet(tmp_path / "f", count=40)
    procs = []
    for i in range(8):
        shard = f"{i % 4 + 1}/4"
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "vmaudit", "fleet", "--facts", str(facts), "--store", url, "--shard", shard,
             "--no-html", "--output", str(tmp_path / f"o{i}")], cwd=str(REPO), env=cluster.env(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _out, err = p.communicate(timeout=600)
        assert p.returncode in (1, 3), err
        assert "NOT recorded" not in err
    db = _dbname(url)
    assert cluster.psql_admin("SELECT count(*), sum(complete) FROM runs", db) == "8|8"
    # each host: in two runs, of the same shard, never twice in one run (the primary key), none lost
    rows = cluster.psql_admin("SELECT name, count(*), count(DISTINCT r.shard) FROM hosts h JOIN runs r "
                              "ON r.id = h.run_id GROUP BY name ORDER BY name", db).splitlines()
    assert len(rows) == 40 and all(r.endswith("|2|1") for r in rows), rows
    per_run = cluster.psql_admin("SELECT r.shard, count(*) FROM hosts h JOIN runs r ON r.id = h.run_id "
                                 "GROUP BY r.id, r.shard ORDER BY 1", db).splitlines()
    assert sum(int(r.split("|")[1]) for r in per_run) == 80
    # every host's facts are there (superseded copies are pruned by the writers, best effort)
    total, names = cluster.psql_admin("SELECT count(*), count(DISTINCT name) FROM host_facts", db).split("|")
    assert names == "40" and 40 <= int(total) <= 80
    with open_store(url) as s:
        assert [h.name for h in s.latest_hosts()] == [f"h{i:04d}" for i in range(40)]
    # the fleet from the store: every host, merged across the shards' collectors
    done = vmaudit("fleet", "--store", url, "--no-html", "--output", str(tmp_path / "all"), env=cluster.env())
    report = json.loads((tmp_path / "all" / "fleet.json").read_text())
    assert done.returncode == 1 and report["summary"]["hosts"] == report["summary"]["reached"] == 40


def _v1_postgresql(cluster, db: str) -> None:
    stmts = ["CREATE TABLE vmaudit_store (version INTEGER NOT NULL)", "INSERT INTO vmaudit_store VALUES (1)",
             *store_schema.statements(1, "postgresql"),
             "INSERT INTO runs (started_at, finished_at, interrupted, inventory, policy_sha256, hosts, reached,"
             " hosts_failing, fail, warn, error, pass, fleet_fail, fleet_warn, fleet_error) VALUES"
             " ('2026-11-01T00:00:00Z', '2026-11-01T00:01:00Z', 0, 'inv', 'x', 1, 1, 1, 2, 0, 0, 5, 0, 0, 0)",
             "INSERT INTO hosts (run_id, name, zone, reached, worst, fail, warn, error, pass) "
             "VALUES (1, 'old', 'dmz', 1, 'high', 2, 0, 0, 5)"]
    cluster.psql_admin("SET ROLE vmaudit_i14; " + "; ".join(stmts), db)


def test_postgresql_store_of_the_previous_version_is_migrated(pg, tmp_path):
    cluster, url = pg
    db = _dbname(url)
    _v1_postgresql(cluster, db)
    facts = write_fleet(tmp_path / "f")
    done = vmaudit("fleet", "--facts", str(facts), "--store", url, "--no-html", "--output", str(tmp_path / "o"),
                   env=cluster.env())
    assert done.returncode == 1, done.stderr
    assert cluster.psql_admin("SELECT version FROM vmaudit_store", db) == str(VERSION)
    report = json.loads((tmp_path / "o" / "fleet.json").read_text())
    assert [r["run"] for r in report["trend"]] == [1, 2] and report["trend"][0]["fail"] == 2
    # the old run is complete and its host visible in the views
    assert cluster.psql_admin("SELECT name, worst FROM vmaudit_latest_host WHERE name = 'old'", db) == "old|high"
    assert cluster.psql_admin("SELECT count(*) FROM vmaudit_trend_daily", db) == "2"


def test_postgresql_store_newer_than_the_code_is_refused(pg, tmp_path):
    cluster, url = pg
    db = _dbname(url)
    open_store(url).close()
    cluster.psql_admin(f"UPDATE vmaudit_store SET version = {VERSION + 1}", db)
    facts = write_fleet(tmp_path / "f")
    done = vmaudit("fleet", "--facts", str(facts), "--store", url, "--output", str(tmp_path / "o"), env=cluster.env())
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"schema version {VERSION + 1} is newer than this vmaudit's ({VERSION})" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert cluster.psql_admin("SELECT count(*) FROM runs", db) == "0"


def test_unreachable_or_unauthorised_postgresql_is_one_clear_line(pg, tmp_path):
    cluster, url = pg
    facts = write_fleet(tmp_path / "f")
    env = cluster.env()
    env["PGPASSFILE"] = str(tmp_path / "none")  # no password: authentication fails
    done = vmaudit("fleet", "--facts", str(facts), "--store", url, "--output", str(tmp_path / "o"), env=env)
    assert done.returncode == 2 and "cannot connect" in done.stderr and "Traceback" not in done.stderr
    assert url in done.stderr
    with pytest.raises(StoreError, match="cannot connect"):
        open_store(f"postgresql://nobody@/x?host={tmp_path}&port=1")


def test_postgresql_stopped_mid_run(own_cluster, tmp_path):
    """The server stops while hosts are recorded: the run fails with a clear message and exit 4, every
    report is on disk, and nothing of the run is visible in the store afterwards."""
    cluster = own_cluster
    db = cluster.new_database()
    url = cluster.url(db)
    facts = write_fleet(tmp_path / "f", count=400)
    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "vmaudit", "fleet", "--facts", str(facts), "--store", url,
                             "--no-html", "--output", str(out)], cwd=str(REPO), env=cluster.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list((out / "hosts").glob("*.json"))) < 20:
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before the server could be stopped"
        cluster.halt("immediate")
        _out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 4, err
    assert "Traceback" not in err and "the run was NOT recorded" in err and url in err
    assert len(list((out / "hosts").glob("*.json"))) == 400
    report = json.loads((out / "fleet.json").read_text())
    assert report["summary"]["reached"] == 400 and "store_error" in report
    cluster.resume()
    assert cluster.psql_admin("SELECT count(*) FROM runs", db) == "0"
    assert cluster.psql_admin("SELECT count(*) FROM hosts", db) == "0"
    assert cluster.psql_admin("SELECT count(*) FROM host_facts", db) == "0"


def test_libpq_service_file_and_password_file(pg, tmp_path, monkeypatch):
    """`?service=NAME` from PGSERVICEFILE, the password from PGPASSFILE: nothing secret on the command line."""
    cluster, url = pg
    services = tmp_path / "pg_service.conf"
    services.write_text(f"[fleet]\nhost={cluster.sock}\nport={cluster.port}\nuser=vmaudit_i14\n"
                        f"dbname={_dbname(url)}\n")
    env = cluster.env() | {"PGSERVICEFILE": str(services)}
    facts = write_fleet(tmp_path / "f")
    done = vmaudit("fleet", "--facts", str(facts), "--store", "postgresql:///?service=fleet", "--no-html",
                   "--output", str(tmp_path / "o"), env=env)
    assert done.returncode == 1, done.stderr
    assert cluster.psql_admin("SELECT count(*), sum(complete) FROM runs", _dbname(url)) == "1|1"
    report = json.loads((tmp_path / "o" / "fleet.json").read_text())
    assert report["run"] == 1 and report["summary"]["reached"] == 4
