"""The state directory of a hypervisor's scheduled audits: reports, `latest.json`, SQLite history, lock.

Layout (default `/var/lib/vmaudit`, see docs/hypervisor.md):

    lock                      flock(2) held by the run that is auditing; its pid is written in it
    history.sqlite            every run (summary, exit status, the whole report, compressed) and its
                              findings, pruned after `[agent] history_days`
    runs/<NNNNNN>-<stamp>/    report.json and report.html of each run still in the history
    latest.json, latest.html  copies of the newest run's reports, replaced atomically

Crash safety. The SQLite commit is the one point where a run becomes recorded: before it, a killed run
leaves everything as it was (SQLite rolls the journal back on the next open, `atomic_write` never
replaces a file with half of one); after it, the report files are derived from the history, and the
next run (`StateDir.repair`) re-derives any the killed one did not finish writing.

Links. vmaudit runs as root, and the directory may belong to another user (a service's DynamicUser):
it is opened once (O_DIRECTORY|O_NOFOLLOW) and every entry is used relative to that descriptor, created
O_EXCL|O_NOFOLLOW and renamed into place with renameat, so no path is ever resolved through a link. A
state directory that is a symbolic link, that its group or others may write, or that holds a symbolic
link (checked when it is opened, and for each run directory and the history's files when used) is
refused with exit status 5: a link there is someone's attempt to aim root's writes elsewhere. It is
created 0750 (whatever the umask) when missing, but never its missing parents: a mistyped path is an
error, not a tree of new directories.

Concurrency. A run holds an exclusive flock on `lock` from before collection until its reports are
written; a second run waits for it within a bound, then gives up with `LockTimeout` (exit status 4).
Readers (`vmaudit history`, `last_two_reports`) need no lock: SQLite gives them a consistent view.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import stat
import time
import zlib
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import PolicyError
from .fsutil import DIR_MODE, FILE_MODE, IsALink, atomic_write_at, make_dir_at, open_dir_at
from .termsafe import clean

log = logging.getLogger("vmaudit")

DEFAULT_STATE_DIR = "/var/lib/vmaudit"
DB_NAME = "history.sqlite"
LOCK_NAME = "lock"
RUNS_DIR = "runs"
SCHEMA_VERSION = 1
# Exit statuses beyond CONTRACT.md's 0-3 (documented in docs/hypervisor.md).
EXIT_LOCKED = 4
EXIT_STATE = 5
# Formats stored for each run: format -> file name in the run's directory and the latest.* copy.
STORED = {"json": ("report.json", "latest.json"), "html": ("report.html", "latest.html")}
_STATUS_COLUMNS = ("pass", "fail", "warn", "error", "skip", "waived")

_DDL = """
CREATE TABLE IF NOT EXISTS runs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at    TEXT NOT NULL,   -- RFC 3339 UTC, as in the report
    finished_at   TEXT NOT NULL,
    hostname      TEXT,
    root          TEXT,
    libvirt_uri   TEXT,
    policy_source TEXT,
    policy_sha256 TEXT,
    exit_status   INTEGER NOT NULL,
    pass INTEGER NOT NULL, fail INTEGER NOT NULL, warn INTEGER NOT NULL,
    error INTEGER NOT NULL, skip INTEGER NOT NULL, waived INTEGER NOT NULL,
    report_sha256 TEXT NOT NULL,   -- of the JSON report text, as written to report.json
    report        BLOB NOT NULL    -- that text, zlib-compressed
);
CREATE INDEX IF NOT EXISTS runs_started ON runs(started_at);
CREATE TABLE IF NOT EXISTS findings (
    run_id    INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    check_id  TEXT NOT NULL,
    resource  TEXT NOT NULL,
    status    TEXT NOT NULL,
    severity  TEXT NOT NULL,
    waived    INTEGER NOT NULL,
    message   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS findings_run ON findings(run_id);
CREATE INDEX IF NOT EXISTS findings_check ON findings(check_id, resource);
"""


class StateError(Exception):
    """The state directory cannot be used (read-only, full, corrupt). str() is the one-line message."""

    exit_status = EXIT_STATE


class LockTimeout(StateError):
    """Another run held the lock for longer than we were willing to wait."""

    exit_status = EXIT_LOCKED


def resolve_state_dir(flag: str | None, policy: Any = None) -> str:
    """--state-dir, else the policy's [agent] state_dir, else /var/lib/vmaudit."""
    if flag:
        return flag
    if policy is not None and policy.get("agent", "state_dir"):
        return str(policy.get("agent", "state_dir"))
    return DEFAULT_STATE_DIR


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        if exc.errno == errno.ENOSPC:
            return "no space left on device"
        if exc.errno == errno.EROFS:
            return "read-only file system"
        return exc.strerror or str(exc)
    return str(exc)


def _run_dir_name(run_id: int, started_at: str) -> str:
    return f"{run_id:06d}-{re.sub(r'[^0-9TZ]', '', started_at)}"


class StateDir:
    """One state directory. Writers call `lock()` first; readers need not."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.db_path = self.path / DB_NAME
        self.lock_path = self.path / LOCK_NAME
        self.runs_path = self.path / RUNS_DIR
        self._lock_fd: int | None = None
        self._dir_fd: int | None = None

    # --- the directory, opened once -------------------------------------------------------------

    def _refuse_link(self, where: Path) -> StateError:
        return StateError(f"{where} is a symbolic link: refused (vmaudit never follows links in its state "
                          f"directory; remove the link)")

    def _open(self, create: bool) -> int | None:
        """The directory's descriptor (None when it does not exist and `create` is false)."""
        if self._dir_fd is not None:
            return self._dir_fd
        created = False
        if create:
            try:
                os.mkdir(self.path, DIR_MODE)
                created = True
            except FileExistsError:
                pass
            except FileNotFoundError:
                raise StateError(f"state directory {self.path}: {self.path.parent} does not exist (vmaudit "
                                 f"creates the state directory, never its parents)") from None
            except OSError as exc:
                raise StateError(f"state directory {self.path} is not writable: {_why(exc)}") from None
        try:
            fd = open_dir_at(None, str(self.path))
        except IsALink:
            raise self._refuse_link(self.path) from None
        except FileNotFoundError:
            if create:
                raise StateError(f"state directory {self.path} vanished while it was opened") from None
            return None
        except OSError as exc:
            raise StateError(f"state directory {self.path} cannot be opened: {_why(exc)}") from None
        try:
            if created:
                os.fchmod(fd, DIR_MODE)
            st = os.fstat(fd)
            loose = st.st_mode & 0o022
            if loose:
                who = " and ".join(w for bit, w in ((0o020, "its group"), (0o002, "others")) if loose & bit)
                raise StateError(f"state directory {self.path} is writable by {who} (mode "
                                 f"{stat.S_IMODE(st.st_mode):04o}): refused; make it writable by its owner "
                                 f"alone (chmod 0750 {self.path})")
            self._check_links(fd, self.path)
        except BaseException:
            os.close(fd)
            raise
        self._dir_fd = fd
        return fd

    def _check_links(self, dir_fd: int, where: Path) -> None:
        """StateError when an entry of the directory `dir_fd` is a symbolic link."""
        for name in os.listdir(dir_fd):
            try:
                mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(mode):
                raise self._refuse_link(where / name)

    def _exists(self, name: str) -> bool:
        """Whether the entry exists (lstat, relative to the directory); a link is refused."""
        fd = self._open(create=False)
        if fd is None:
            return False
        try:
            mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return False
        if stat.S_ISLNK(mode):
            raise self._refuse_link(self.path / name)
        return True

    def close(self) -> None:
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # --- the lock ---------------------------------------------------------------------------------

    def _holder(self, fd: int) -> str:
        try:
            text = os.pread(fd, 200, 0).decode(errors="replace").strip()
        except OSError:
            return "another vmaudit run"
        return f"another vmaudit run ({clean(text)})" if text else "another vmaudit run"

    @contextmanager
    def lock(self, wait: float = 60.0) -> Iterator[None]:
        """Hold the directory's exclusive lock; wait up to `wait` seconds for another holder.

        Opens the directory (creating it 0750, never its parents), refusing links and a directory
        others may write. Raises StateError when it cannot be used, LockTimeout when the other run does
        not finish in time. The kernel drops the lock when the process dies, even by SIGKILL, so a killed
        run never blocks the next one.
        """
        dir_fd = self._open(create=True)
        try:
            fd = os.open(LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE,
                         dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._refuse_link(self.lock_path) from None
            raise StateError(f"state directory {self.path} is not writable: {_why(exc)}") from None
        try:
            if os.fstat(fd).st_uid == os.geteuid():
                os.fchmod(fd, FILE_MODE)  # created under any umask
            deadline = time.monotonic() + max(wait, 0)
            announced = False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LockTimeout(
                            f"{self._holder(fd)} holds {self.lock_path}; gave up after waiting {wait:g} s "
                            "(try again later, or raise --wait)") from None
                    if not announced:
                        log.info("%s holds %s; waiting up to %g s", self._holder(fd), self.lock_path, wait)
                        announced = True
                    time.sleep(min(0.2, max(deadline - time.monotonic(), 0.01)))
            try:  # who holds it, for the message of a run that waits (best effort: may be full)
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()}, since {_now()}\n".encode(), 0)
            except OSError:
                pass
            self._lock_fd = fd
            yield
        finally:
            self._lock_fd = None
            os.close(fd)  # releases the flock

    # --- the history database -----------------------------------------------------------------------

    def _connect(self, write: bool) -> sqlite3.Connection:
        # SQLite opens its files by path: right before it does, none of them may be a link (the lock
        # and the directory's mode keep anyone but its owner from planting one afterwards)
        dir_fd = self._open(create=write)
        for suffix in ("", "-journal", "-wal", "-shm"):
            self._exists(DB_NAME + suffix)
        if write:
            try:  # created 0640, like the reports: findings are sensitive
                fd = os.open(DB_NAME, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                             FILE_MODE, dir_fd=dir_fd)
                os.fchmod(fd, FILE_MODE)
                os.close(fd)
            except FileExistsError:
                pass
            conn = sqlite3.connect(str(self.db_path), timeout=30, isolation_level=None)
        else:
            # Read-only open; fall back to it only when a normal open is refused (read-only medium),
            # since only a read-write connection can roll back the journal a killed writer left.
            try:
                conn = sqlite3.connect(str(self.db_path), timeout=30, isolation_level=None)
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.OperationalError:
                uri = "file:" + str(self.db_path.resolve()) + "?mode=ro"
                conn = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    def _open_for_write(self) -> sqlite3.Connection:
        try:
            conn = self._connect(write=True)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                conn.close()
                raise StateError(f"{self.db_path}: history schema {version} is newer than this vmaudit "
                                 f"understands ({SCHEMA_VERSION}); upgrade vmaudit")
            if version < SCHEMA_VERSION:
                conn.execute("BEGIN IMMEDIATE")
                for stmt in _DDL.split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            return conn
        except (sqlite3.DatabaseError, OSError) as exc:
            raise StateError(f"cannot open the history {self.db_path}: {_why(exc)}") from None

    @contextmanager
    def reader(self) -> Iterator[sqlite3.Connection | None]:
        """A connection for reading, or None when no run has been recorded yet."""
        if not self._exists(DB_NAME):
            yield None
            return
        try:
            conn = self._connect(write=False)
        except sqlite3.DatabaseError as exc:
            raise StateError(f"cannot open the history {self.db_path}: {exc}") from None
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] < 1:
                yield None
            else:
                yield conn
        except sqlite3.DatabaseError as exc:
            raise StateError(f"cannot read the history {self.db_path}: {exc}") from None
        finally:
            conn.close()

    # --- writing a run ------------------------------------------------------------------------------

    def _require_lock(self) -> None:
        if self._lock_fd is None:
            raise RuntimeError("StateDir writes need the lock (use `with state.lock():`)")

    def record(self, report: dict, exit_status: int, renders: dict[str, Callable[[dict], str]],
               history_days: int | None = None) -> tuple[int, Path]:
        """Store one finished run: history row (the commit point), its report files, latest.*.

        `renders` maps each stored format ("json", "html") to a function rendering the report; the
        JSON text is rendered first because the history keeps it. Returns (run id, run directory).
        Raises StateError when something could not be stored; what was stored before stays intact.
        """
        self._require_lock()
        json_text = renders["json"](report)
        raw = json_text.encode("utf-8")
        summary = report.get("summary", {})
        host = report.get("host", {})
        policy = report.get("policy", {})
        conn = self._open_for_write()
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
                cur = conn.execute(
                    "INSERT INTO runs (started_at, finished_at, hostname, root, libvirt_uri, policy_source,"
                    " policy_sha256, exit_status, pass, fail, warn, error, skip, waived, report_sha256, report)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (report.get("started_at") or _now(), report.get("finished_at") or _now(),
                     host.get("hostname"), host.get("root"), host.get("libvirt_uri"), policy.get("source"),
                     policy.get("sha256"), exit_status, *(int(summary.get(k, 0)) for k in _STATUS_COLUMNS),
                     hashlib.sha256(raw).hexdigest(), zlib.compress(raw, 6)))
                run_id = int(cur.lastrowid)
                self._insert_findings(conn, run_id, report.get("findings", []))
                conn.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise StateError(f"cannot record the run in {self.db_path}: {exc}; this run was not "
                                 "stored, the history and latest.json are unchanged") from None
        finally:
            conn.close()
        run_dir = _run_dir_name(run_id, report.get("started_at") or _now())
        self._write_files(run_dir, report, {"json": json_text}, renders)
        if history_days is not None:
            self.prune(history_days)
        return run_id, self.runs_path / run_dir

    @staticmethod
    def _insert_findings(conn: sqlite3.Connection, run_id: int, findings: list[dict]) -> None:
        conn.executemany(
            "INSERT INTO findings (run_id, check_id, resource, status, severity, waived, message)"
            " VALUES (?,?,?,?,?,?,?)",
            [(run_id, f.get("check_id", ""), f.get("resource", ""), f.get("status", ""),
              f.get("severity", ""), 1 if "waiver" in f else 0, f.get("message", "")) for f in findings])

    def _write_files(self, run_dir: str, report: dict, texts: dict[str, str],
                     renders: dict[str, Callable[[dict], str]]) -> None:
        """Write the run's report files (in runs/`run_dir`), then latest.html, and latest.json last; each
        atomically, relative to the directory's descriptor.

        latest.json last: when it holds the newest recorded run, the other files were written before
        it (`repair` checks both). A renderer that fails still lets the JSON files through.
        """
        dir_fd = self._open(create=True)
        where = self.runs_path / run_dir
        fds: list[int] = []
        try:
            try:
                runs_fd = make_dir_at(dir_fd, RUNS_DIR)[0]
                fds.append(runs_fd)
                self._check_links(runs_fd, self.runs_path)
                run_fd = make_dir_at(runs_fd, run_dir)[0]
                fds.append(run_fd)
                self._check_links(run_fd, where)
            except IsALink as exc:
                raise self._refuse_link(self.path / RUNS_DIR if exc.filename == RUNS_DIR else where) from None
            except OSError as exc:
                raise StateError(f"run recorded in the history, but {where} could not be created: "
                                 f"{_why(exc)}") from None
            problems = []
            for fmt in STORED:
                if fmt not in texts and fmt in renders:
                    try:
                        texts[fmt] = renders[fmt](report)
                    except Exception as exc:  # a renderer defect must not lose the recorded run's JSON
                        problems.append(f"the {fmt} report could not be rendered ({type(exc).__name__}: {exc})")
            order = [(run_fd, where, STORED[f][0], f) for f in STORED if f in texts]
            order += [(dir_fd, self.path, STORED[f][1], f) for f in reversed(STORED) if f in texts]
            for fd, parent, name, fmt in order:
                try:
                    atomic_write_at(fd, name, texts[fmt], mode=FILE_MODE)
                except OSError as exc:
                    problems.append(f"{parent / name} not written: {_why(exc)}")
                    break
        finally:
            for fd in fds:
                os.close(fd)
        if problems:
            raise StateError("run recorded in the history, but " + "; ".join(problems) +
                             " (the previous files are intact; the next run writes them again)")

    # --- repair and retention -------------------------------------------------------------------------

    def repair(self, renders: dict[str, Callable[[dict], str]]) -> None:
        """Finish what a killed run left: temporary files, and report files of the newest recorded run.

        Also checks that the directory can be written before an audit is spent on it, and that no run
        directory holds a link.
        """
        self._require_lock()
        dir_fd = self._open(create=True)
        if not os.access(self.path, os.W_OK):
            raise StateError(f"state directory {self.path} is not writable")
        _remove_temporary(dir_fd)
        with self._runs_dir() as runs_fd:
            if runs_fd is not None:
                for name in os.listdir(runs_fd):
                    if not stat.S_ISDIR(os.stat(name, dir_fd=runs_fd, follow_symlinks=False).st_mode):
                        continue
                    run_fd = open_dir_at(runs_fd, name)
                    try:
                        self._check_links(run_fd, self.runs_path / name)
                        _remove_temporary(run_fd)
                    finally:
                        os.close(run_fd)
        if not self._exists(DB_NAME):
            return
        with self.reader() as conn:
            if conn is None:
                return
            row = conn.execute("SELECT id, started_at, report_sha256, report FROM runs "
                               "ORDER BY id DESC LIMIT 1").fetchone()
            known = {r[0] for r in conn.execute("SELECT id FROM runs")}
        if row is not None:
            run_id, started_at, sha, blob = row
            run_dir = _run_dir_name(run_id, started_at)
            current = _sha256_at(dir_fd, STORED["json"][1])
            complete = all(self._exists(f"{RUNS_DIR}/{run_dir}/{name}")
                           for fmt, (name, _) in STORED.items() if fmt in renders)
            if current != sha or not complete:
                log.info("completing the reports of run %d, which was interrupted after it was recorded",
                         run_id)
                text = zlib.decompress(blob).decode("utf-8")
                try:
                    self._write_files(run_dir, json.loads(text), {"json": text}, renders)
                except StateError as exc:
                    # Not fatal: this run is audited and stored anyway (a renderer defect or a full
                    # disk then shows in its own result).
                    log.warning("could not complete the reports of run %d: %s", run_id, exc)
        self._remove_orphans(known)

    @contextmanager
    def _runs_dir(self) -> Iterator[int | None]:
        """runs/ opened without following a link (None when it does not exist yet)."""
        dir_fd = self._open(create=False)
        fd = None
        if dir_fd is not None:
            try:
                fd = open_dir_at(dir_fd, RUNS_DIR)
            except IsALink:
                raise self._refuse_link(self.runs_path) from None
            except FileNotFoundError:
                fd = None
        try:
            if fd is not None:
                self._check_links(fd, self.runs_path)
            yield fd
        finally:
            if fd is not None:
                os.close(fd)

    def _remove_orphans(self, known: set[int]) -> None:
        """Run directories whose run is no longer (or never was) in the history."""
        with self._runs_dir() as runs_fd:
            if runs_fd is None:
                return
            for name in os.listdir(runs_fd):
                m = re.match(r"^(\d+)-", name)
                if m and int(m.group(1)) not in known and \
                        stat.S_ISDIR(os.stat(name, dir_fd=runs_fd, follow_symlinks=False).st_mode):
                    # rmtree never follows a link inside the tree (it walks by descriptor)
                    shutil.rmtree(self.runs_path / name, ignore_errors=True)

    def prune(self, history_days: int, now: datetime | None = None) -> int:
        """Forget runs that started more than `history_days` ago (always keeping the newest two, so
        `vmaudit diff --last` keeps working on a host audited rarely). Returns how many were removed."""
        self._require_lock()
        cutoff = ((now or datetime.now(timezone.utc)) - timedelta(days=history_days)).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
        conn = self._open_for_write()
        try:
            conn.execute("BEGIN IMMEDIATE")
            keep = [r[0] for r in conn.execute("SELECT id FROM runs ORDER BY id DESC LIMIT 2")]
            old = [r[0] for r in conn.execute(
                f"SELECT id FROM runs WHERE started_at < ? AND id NOT IN ({','.join('?' * len(keep)) or 'NULL'})",
                (cutoff, *keep))]
            for run_id in old:
                conn.execute("DELETE FROM findings WHERE run_id = ?", (run_id,))
                conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))
            conn.execute("COMMIT")
            known = {r[0] for r in conn.execute("SELECT id FROM runs")}
        except sqlite3.DatabaseError as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StateError(f"cannot apply the retention to {self.db_path}: {exc}") from None
        finally:
            conn.close()
        self._remove_orphans(known)
        if old:
            log.debug("history: removed %d run(s) older than %d days", len(old), history_days)
        return len(old)

    # --- reading --------------------------------------------------------------------------------------

    def runs(self, limit: int | None = None) -> list[dict]:
        """Recorded runs, newest first, with their summary."""
        cols = ("id", "started_at", "finished_at", "hostname", "root", "libvirt_uri", "policy_source",
                "exit_status", *_STATUS_COLUMNS)
        with self.reader() as conn:
            if conn is None:
                return []
            sql = f"SELECT {', '.join(cols)} FROM runs ORDER BY id DESC"
            rows = conn.execute(sql + (" LIMIT ?" if limit else ""), (limit,) if limit else ()).fetchall()
        out = []
        for row in rows:
            rec = dict(zip(cols, row))
            rec["summary"] = {k: rec.pop(k) for k in _STATUS_COLUMNS}
            rec["dir"] = str(self.runs_path / _run_dir_name(rec["id"], rec["started_at"]))
            out.append(rec)
        return out

    def report(self, run_id: int) -> dict:
        """The stored JSON report of one run."""
        with self.reader() as conn:
            row = conn.execute("SELECT report FROM runs WHERE id = ?", (run_id,)).fetchone() if conn else None
        if row is None:
            raise PolicyError(f"{self.path}: no run {run_id} in the history")
        return json.loads(zlib.decompress(row[0]).decode("utf-8"))

    def last_reports(self, count: int) -> list[dict]:
        """The newest `count` stored reports, oldest first."""
        with self.reader() as conn:
            rows = (conn.execute("SELECT report FROM runs ORDER BY id DESC LIMIT ?", (count,)).fetchall()
                    if conn else [])
        return [json.loads(zlib.decompress(r[0]).decode("utf-8")) for r in reversed(rows)]


def last_two_reports(state_dir: str) -> tuple[dict, dict]:
    """(previous, latest) report of the state directory's history, for `vmaudit diff --last`.

    Raises PolicyError with a one-line reason when the history holds fewer than two runs.
    """
    state = StateDir(state_dir)
    if not state.path.is_dir():
        raise PolicyError(f"{state_dir}: no such state directory (no run has stored reports there)")
    try:
        reports = state.last_reports(2)
    except StateError as exc:
        raise PolicyError(str(exc)) from None
    if len(reports) < 2:
        raise PolicyError(f"{state_dir}: the history holds {len(reports)} run(s); "
                          "diff --last needs two (run `vmaudit run --state-dir` again)")
    return reports[0], reports[1]


def _sha256_at(dir_fd: int, name: str) -> str | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _remove_temporary(dir_fd: int) -> None:
    """The `.NAME.*.tmp` files atomic_write_at leaves when killed between creating and renaming."""
    for name in os.listdir(dir_fd):
        if name.startswith(".") and name.endswith(".tmp"):
            try:
                os.unlink(name, dir_fd=dir_fd)
            except OSError:
                pass


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
