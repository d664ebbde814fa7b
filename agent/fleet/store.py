"""The fleet's history: every `vmaudit collect` run appended to an embedded SQLite database, so the fleet
page can show the trend (hosts audited, failures, errors per run) and older runs can be queried.

Tables: `runs` (one row per run, with its totals), `hosts` (one row per host and run: reached, reason,
counts by status and by measure as JSON), `findings` (the fleet checks' findings of each run). The schema
version is kept in `PRAGMA user_version`; a database of another version is refused, never rewritten.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from vmaudit.fsutil import create_file, make_dir

VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at TEXT NOT NULL, finished_at TEXT NOT NULL, interrupted INTEGER NOT NULL,
    inventory TEXT, policy_sha256 TEXT,
    hosts INTEGER NOT NULL, reached INTEGER NOT NULL, hosts_failing INTEGER NOT NULL,
    fail INTEGER NOT NULL, warn INTEGER NOT NULL, error INTEGER NOT NULL, pass INTEGER NOT NULL,
    fleet_fail INTEGER NOT NULL, fleet_warn INTEGER NOT NULL, fleet_error INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS hosts (
    run_id INTEGER NOT NULL REFERENCES runs(id), name TEXT NOT NULL, zone TEXT,
    reached INTEGER NOT NULL, reason TEXT, mode TEXT, seconds REAL, worst TEXT,
    fail INTEGER, warn INTEGER, error INTEGER, pass INTEGER, by_measure TEXT,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS findings (
    run_id INTEGER NOT NULL REFERENCES runs(id), check_id TEXT NOT NULL, resource TEXT NOT NULL,
    status TEXT NOT NULL, severity TEXT NOT NULL, message TEXT, waived INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS hosts_by_name ON hosts (name, run_id);
"""


class StoreError(Exception):
    pass


class Store:
    def __init__(self, path: str | Path):
        self.path = str(path)
        try:
            make_dir(Path(self.path).parent, parents=True)
            create_file(self.path)  # 0640 whatever the umask: the fleet's findings
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot create the store: {exc.strerror or exc}") from None
        try:
            self.db = sqlite3.connect(self.path, timeout=30)
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            tables = self.db.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
            if version == 0 and tables == 0:
                with self.db:
                    self.db.executescript(_SCHEMA)
                    self.db.execute(f"PRAGMA user_version = {VERSION}")
            elif version != VERSION:
                raise StoreError(f"{self.path}: not a vmaudit fleet store of version {VERSION} "
                                 f"(user_version {version})")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: {exc}") from None

    def append(self, report: dict) -> int:
        """Append one fleet report as a run; returns its id."""
        s, f = report["summary"]["findings"], report["summary"]["fleet"]
        with self.db:
            cur = self.db.execute(
                "INSERT INTO runs (started_at, finished_at, interrupted, inventory, policy_sha256, hosts,"
                " reached, hosts_failing, fail, warn, error, pass, fleet_fail, fleet_warn, fleet_error)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (report["started_at"], report["finished_at"], int(report["interrupted"]),
                 report["inventory"]["source"], report["policy"]["sha256"], report["summary"]["hosts"],
                 report["summary"]["reached"], report["summary"]["hosts_failing"], s["fail"], s["warn"],
                 s["error"], s["pass"], f["fail"], f["warn"], f["error"]))
            run_id = int(cur.lastrowid)
            self.db.executemany(
                "INSERT INTO hosts VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [(run_id, h["name"], h.get("zone"), int(h["reached"]), h.get("reason"), h.get("mode"),
                  h.get("seconds"), h.get("worst"),
                  *((h.get("summary") or {}).get(k) for k in ("fail", "warn", "error", "pass")),
                  json.dumps((h.get("summary") or {}).get("by_measure"), sort_keys=True))
                 for h in report["hosts"]])
            self.db.executemany(
                "INSERT INTO findings VALUES (?,?,?,?,?,?,?)",
                [(run_id, x["check_id"], x["resource"], x["status"], x["severity"], x["message"],
                  int("waiver" in x)) for x in report["findings"]])
        return run_id

    def trend(self, limit: int = 20) -> list[dict]:
        """The last `limit` runs, oldest first."""
        rows = self.db.execute(
            "SELECT id, started_at, hosts, reached, hosts_failing, fail, warn, error, fleet_fail, fleet_error,"
            " interrupted FROM runs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        keys = ("run", "started_at", "hosts", "reached", "hosts_failing", "fail", "warn", "error",
                "fleet_fail", "fleet_error", "interrupted")
        return [dict(zip(keys, r)) for r in reversed(rows)]

    def host_history(self, name: str, limit: int = 20) -> list[dict]:
        rows = self.db.execute(
            "SELECT r.id, r.started_at, h.reached, h.reason, h.fail, h.warn, h.error FROM hosts h"
            " JOIN runs r ON r.id = h.run_id WHERE h.name = ? ORDER BY r.id DESC LIMIT ?",
            (name, limit)).fetchall()
        keys = ("run", "started_at", "reached", "reason", "fail", "warn", "error")
        return [dict(zip(keys, r)) for r in reversed(rows)]

    def close(self) -> None:
        self.db.close()


__all__ = ["Store", "StoreError", "VERSION"]
