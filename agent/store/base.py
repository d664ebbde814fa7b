"""The fleet store: one interface over SQLite and PostgreSQL (vmaudit.store.engines opens them).

Writing: `store.begin_run(kind, ...)` returns a RunWriter; `add_host()` once per host as it is
evaluated (its summary, its worst status per check, and, when given, its facts); `finish(report)`
adds the fleet checks' findings and the run's totals and commits. The whole run is ONE transaction:
other readers and writers see all of it or, if the writer dies or the server stops mid-run, nothing.
Runs of several collectors get distinct numbers from the database, so none loses or duplicates
another's hosts. Each finished run prunes (in its own transaction): facts superseded by newer facts
of the same host, and runs older than the retention (`[fleet] history_days`), except the runs that
still hold some host's latest facts, so that a host long gone is reported stale rather than vanish.

Reading (the API other commands use, e.g. `vmaudit fleet --store`, `vmaudit plan --store`):

    with open_store(url) as store:
        for host, facts in store.latest_facts():     # one host at a time, by name
            host.name, host.collected_at, host.meta   # meta: inventory variables, groups
            facts                                     # the vmaudit-facts/1 snapshot (a dict)

`latest_hosts()` lists the hosts (name, run, collection time, meta) without their facts and
`facts_of(host)` loads one host's facts; both read complete runs only, merged across collectors:
the newest facts of every host by collection time.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

from vmaudit.engine import STATUSES

from . import schema

log = logging.getLogger("vmaudit")

# worst first; a check whose findings are all waived is "waived"
_STATUS_ORDER = ("fail", "error", "warn", "pass", "skip")


class StoreError(Exception):
    """The store cannot be opened, read or written; the message names the (redacted) store."""


class StoreTooNew(StoreError):
    pass


@dataclass
class StoredHost:
    """One host's latest facts in the store (without the facts themselves)."""

    name: str
    run_id: int
    collected_at: str
    meta: dict = field(default_factory=dict)


def utc_text(value: Any) -> str | None:
    """An RFC 3339 time as `YYYY-MM-DDTHH:MM:SSZ` (UTC), so that text order is time order; None if
    it is not one."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_rows(report: dict) -> list[tuple]:
    """(check_id, measure, severity, worst status, n_pass, n_fail, n_warn, n_error, n_skip, n_waived)
    per check of one host report; waived findings are counted apart, as in the report's summary."""
    by_check: dict[str, dict] = {}
    for f in report.get("findings", []):
        c = by_check.get(f["check_id"])
        if c is None:
            c = by_check[f["check_id"]] = {"measure": f["measure"], "severity": f["severity"],
                                           "waived": 0, **{s: 0 for s in STATUSES}}
        c["waived" if "waiver" in f else f["status"]] += 1
    rows = []
    for check_id, c in sorted(by_check.items()):
        worst = next((s for s in _STATUS_ORDER if c[s]), "waived")
        rows.append((check_id, c["measure"], c["severity"], worst, c["pass"], c["fail"], c["warn"],
                     c["error"], c["skip"], c["waived"]))
    return rows


def pack_facts(facts: dict) -> bytes:
    """A snapshot as the store keeps it: compact JSON, zlib-compressed (about a tenth of its size)."""
    return zlib.compress(json.dumps(facts, separators=(",", ":")).encode("utf-8", "surrogatepass"), 6)


class FleetStore:
    """A migrated, open store. Engines subclass it with their connection handling (engines.py)."""

    engine = ""

    def __init__(self, display: str):
        self.display = display  # the store's name for messages: a path or a URL without secrets
        self._writing = False   # a RunWriter's transaction is open on this connection

    # --- engine hooks -----------------------------------------------------------------------------
    def _execute(self, sql: str, params: tuple = ()) -> Any:
        raise NotImplementedError

    def _executemany(self, sql: str, rows: list) -> None:
        raise NotImplementedError

    def _begin(self) -> None:
        raise NotImplementedError

    def _commit(self) -> None:
        raise NotImplementedError

    def _rollback(self) -> None:
        raise NotImplementedError

    def _errors(self) -> tuple:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> FleetStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def fail(self, exc: BaseException, doing: str) -> StoreError:
        text = " ".join(str(exc).split()) or type(exc).__name__
        return StoreError(f"store {self.display}: {doing}: {text}")

    def _query(self, sql: str, params: tuple = (), doing: str = "cannot read") -> list:
        try:
            rows = self._execute(sql, params).fetchall()
            if not self._writing:
                self._commit()  # ends the read transaction (PostgreSQL): no snapshot held open
            return rows
        except self._errors() as exc:
            self._safe_rollback()
            self._writing = False
            raise self.fail(exc, doing) from None

    def _safe_rollback(self) -> None:
        self._writing = False
        try:
            self._rollback()
        except Exception:  # the connection is gone: nothing to roll back
            pass

    # --- writing ----------------------------------------------------------------------------------
    def begin_run(self, kind: str, started_at: str, *, inventory: str | None, policy_sha256: str | None,
                  shard: str | None = None) -> RunWriter:
        return RunWriter(self, kind, started_at, inventory=inventory, policy_sha256=policy_sha256,
                         shard=shard)

    def append(self, report: dict, kind: str = "collect") -> int:
        """Record a finished fleet report as one run (hosts and fleet findings; no facts)."""
        writer = self.begin_run(kind, report["started_at"], inventory=report["inventory"]["source"],
                                policy_sha256=report["policy"]["sha256"])
        for entry in report["hosts"]:
            writer.add_host(entry)
        return writer.finish(report)

    def prune(self, history_days: int, now: datetime | None = None) -> None:
        """Forget superseded facts and runs older than `history_days` (see the module docstring)."""
        cutoff = ((now or datetime.now(timezone.utc)) - timedelta(days=history_days)).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
        latest = ("SELECT run_id, name FROM (SELECT f.run_id, f.name, row_number() OVER (PARTITION BY "
                  "f.name ORDER BY f.collected_at DESC, f.run_id DESC) AS rn FROM host_facts f JOIN runs r "
                  "ON r.id = f.run_id WHERE r.complete = 1) x WHERE rn = 1")
        try:
            self._begin()
            self._execute(f"DELETE FROM host_facts WHERE run_id IN (SELECT id FROM runs WHERE complete = 1) "
                          f"AND (run_id, name) NOT IN ({latest})")
            old = "SELECT id FROM runs WHERE started_at < ? AND complete = 1"
            for table in ("host_checks", "hosts", "findings"):
                self._execute(f"DELETE FROM {table} WHERE run_id IN ({old})", (cutoff,))
            self._execute("DELETE FROM runs WHERE started_at < ? AND complete = 1 "
                          "AND id NOT IN (SELECT run_id FROM host_facts)", (cutoff,))
            self._commit()
        except self._errors() as exc:
            # pruning is best effort: another writer pruning at once (or a deadlock PostgreSQL broke)
            # leaves the rows for the next run; nothing of the recorded run depends on it
            self._safe_rollback()
            log.warning("%s", self.fail(exc, "pruning old runs failed (retried by the next run)"))

    # --- reading ----------------------------------------------------------------------------------
    def trend(self, limit: int = 20) -> list[dict]:
        """The last `limit` complete runs, oldest first."""
        rows = self._query(
            "SELECT id, started_at, hosts, reached, hosts_failing, fail, warn, error, fleet_fail, fleet_error,"
            " interrupted FROM runs WHERE complete = 1 ORDER BY id DESC LIMIT ?", (limit,))
        keys = ("run", "started_at", "hosts", "reached", "hosts_failing", "fail", "warn", "error",
                "fleet_fail", "fleet_error", "interrupted")
        return [dict(zip(keys, r)) for r in reversed(rows)]

    def host_history(self, name: str, limit: int = 20) -> list[dict]:
        rows = self._query(
            "SELECT r.id, r.started_at, h.reached, h.reason, h.fail, h.warn, h.error FROM hosts h"
            " JOIN runs r ON r.id = h.run_id WHERE h.name = ? AND r.complete = 1 ORDER BY r.id DESC LIMIT ?",
            (name, limit))
        keys = ("run", "started_at", "reached", "reason", "fail", "warn", "error")
        return [dict(zip(keys, r)) for r in reversed(rows)]

    def latest_hosts(self) -> list[StoredHost]:
        """Every host with facts in a complete run: its newest facts' run and time, by name."""
        rows = self._query(
            "SELECT name, run_id, collected_at, host_meta FROM (SELECT f.name, f.run_id, f.collected_at, "
            "f.host_meta, row_number() OVER (PARTITION BY f.name ORDER BY f.collected_at DESC, f.run_id DESC) "
            "AS rn FROM host_facts f JOIN runs r ON r.id = f.run_id WHERE r.complete = 1) x WHERE rn = 1 "
            "ORDER BY name")
        return [StoredHost(name, int(run_id), collected_at, json.loads(meta)) for name, run_id, collected_at, meta
                in rows]

    def facts_of(self, host: StoredHost) -> dict:
        """One host's facts (parse them with vmaudit.facts.parse_snapshot to have them checked)."""
        return json.loads(self.facts_json_of(host))

    def facts_json_of(self, host: StoredHost) -> bytes:
        """One host's facts as the JSON text they were stored as."""
        rows = self._query("SELECT facts FROM host_facts WHERE run_id = ? AND name = ?", (host.run_id, host.name))
        if not rows:
            raise StoreError(f"store {self.display}: the facts of host {host.name} (run {host.run_id}) "
                             f"are no longer there (pruned by another writer?)")
        try:
            return zlib.decompress(bytes(rows[0][0]))
        except zlib.error as exc:
            raise StoreError(f"store {self.display}: the facts of host {host.name} (run {host.run_id}) "
                             f"are damaged: {exc}") from None

    def latest_facts(self) -> Iterator[tuple[StoredHost, dict]]:
        """(host, facts) of every host, one at a time (only one host's facts in memory at once)."""
        for host in self.latest_hosts():
            yield host, self.facts_of(host)


def record_run(store: FleetStore | None, writer: RunWriter | None, report: dict,
               history_days: int | None, error: str | None = None) -> str | None:
    """Close a command's run into the store (`writer`: None when recording stopped or never began) and
    say so in the fleet report (`run`, `trend`, or `store_error`: the earlier `error` or this one; the
    reports on disk are complete either way). Closes the store; returns the store error, if any."""
    if writer is not None:
        try:
            report["run"] = writer.finish(report)
            store.prune(history_days)
            report["trend"] = store.trend()
        except StoreError as exc:
            error = str(exc)
            log.error("%s", error)
    if store is not None:
        store.close()
    if error:
        report["store_error"] = error
    return error


class RunWriter:
    """One run being written: a single transaction from begin_run() to finish() (or abort())."""

    def __init__(self, store: FleetStore, kind: str, started_at: str, *, inventory: str | None,
                 policy_sha256: str | None, shard: str | None):
        self.store = store
        self.run_id: int | None = None
        collector = f"{socket.gethostname()}:{os.getpid()}"
        if store._writing:
            raise StoreError(f"store {store.display}: a run is already being recorded on this connection")
        try:
            store._begin()
            store._writing = True
            cur = store._execute(
                "INSERT INTO runs (started_at, finished_at, interrupted, inventory, policy_sha256, hosts, reached,"
                " hosts_failing, fail, warn, error, pass, fleet_fail, fleet_warn, fleet_error, complete, kind,"
                " collector, shard) VALUES (?,?,0,?,?,0,0,0,0,0,0,0,0,0,0,0,?,?,?) RETURNING id",
                (started_at, started_at, inventory, policy_sha256, kind, collector, shard))
            self.run_id = int(cur.fetchone()[0])
        except store._errors() as exc:
            store._safe_rollback()
            raise store.fail(exc, "cannot start recording the run") from None

    def add_host(self, entry: dict, report: dict | None = None, facts: dict | None = None,
                 meta: dict | None = None, collected_at: str | None = None, stale: bool = False, *,
                 checks: list | None = None, packed: bytes | None = None) -> None:
        """One host of the run: its fleet-report entry, its report (worst status per check; or
        `checks`, check_rows() of it) and, when it was collected (or imported), its facts as its newest
        (or `packed`, pack_facts() of them)."""
        s = self.store
        if checks is None and report is not None:
            checks = check_rows(report)
        if packed is None and facts is not None:
            packed = pack_facts(facts)
        summary = entry.get("summary") or {}
        try:
            s._execute(
                "INSERT INTO hosts (run_id, name, zone, reached, reason, mode, seconds, worst, fail, warn, error,"
                " pass, by_measure, collected_at, stale) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (self.run_id, entry["name"], entry.get("zone"), int(bool(entry["reached"])), entry.get("reason"),
                 entry.get("mode"), entry.get("seconds"), entry.get("worst"),
                 *(summary.get(k) for k in ("fail", "warn", "error", "pass")),
                 json.dumps(summary.get("by_measure"), sort_keys=True), collected_at, int(stale)))
            if checks:
                s._executemany(
                    "INSERT INTO host_checks (run_id, host, check_id, measure, severity, status, n_pass, n_fail,"
                    " n_warn, n_error, n_skip, n_waived) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    [(self.run_id, entry["name"], *row) for row in checks])
            if packed is not None:
                s._execute("INSERT INTO host_facts (run_id, name, collected_at, host_meta, facts) VALUES (?,?,?,?,?)",
                           (self.run_id, entry["name"], collected_at or utc_text((facts or {}).get("collected_at"))
                            or "", json.dumps(meta or {}, sort_keys=True), packed))
        except s._errors() as exc:
            s._safe_rollback()
            raise s.fail(exc, f"cannot record host {entry['name']} (nothing of this run is kept)") from None

    def finish(self, report: dict) -> int:
        """The fleet findings and totals; commits the run. Returns its number."""
        s = self.store
        tot, fl = report["summary"]["findings"], report["summary"]["fleet"]
        try:
            s._executemany(
                "INSERT INTO findings (run_id, check_id, resource, status, severity, message, waived)"
                " VALUES (?,?,?,?,?,?,?)",
                [(self.run_id, x["check_id"], x["resource"], x["status"], x["severity"], x["message"],
                  int("waiver" in x)) for x in report["findings"]])
            s._execute(
                "UPDATE runs SET finished_at = ?, interrupted = ?, hosts = ?, reached = ?, hosts_failing = ?,"
                " fail = ?, warn = ?, error = ?, pass = ?, fleet_fail = ?, fleet_warn = ?, fleet_error = ?,"
                " complete = 1 WHERE id = ?",
                (report["finished_at"], int(report["interrupted"]), report["summary"]["hosts"],
                 report["summary"]["reached"], report["summary"]["hosts_failing"], tot["fail"], tot["warn"],
                 tot["error"], tot["pass"], fl["fail"], fl["warn"], fl["error"], self.run_id))
            s._commit()
            s._writing = False
        except s._errors() as exc:
            s._safe_rollback()
            raise s.fail(exc, "cannot commit the run (nothing of it is kept)") from None
        return self.run_id

    def abort(self) -> None:
        self.store._safe_rollback()


__all__ = ["record_run", "FleetStore", "RunWriter", "StoredHost", "StoreError", "StoreTooNew", "check_rows", "utc_text",
           "pack_facts",
           "schema"]
