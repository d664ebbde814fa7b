"""Opening a fleet store: a SQLite file, or a PostgreSQL database through psycopg 3 (libpq).

`--store postgresql://…` (or `postgres://…`) is PostgreSQL with libpq's conventions: host, port, user
and database from the URL or PGHOST/PGPORT/PGUSER/PGDATABASE, `?service=NAME` from the service file
(PGSERVICEFILE, ~/.pg_service.conf), the password from PGPASSFILE / ~/.pgpass (never from the command
line: a URL carrying one is refused, since the process list shows it), TLS by `sslmode` and friends.
Anything else is the path of a SQLite file. Either is migrated forward on first use (schema.py).
"""

from __future__ import annotations

import os
import re
import sqlite3
import stat
from typing import Any

from vmaudit.fsutil import FILE_MODE, make_dir

from . import schema
from .base import FleetStore, StoreError, StoreTooNew

_PG_SCHEMES = ("postgresql://", "postgres://")
# any key=value pair whose key mentions a password, in a URL query or a keyword string
_SECRET_PARAM = re.compile(r"(?i)\b(password|sslpassword)=([^&\s]*)")
_USERINFO = re.compile(r"^(postgres(?:ql)?://)([^@/?#]*)@")


def is_postgresql(target: str) -> bool:
    return target.startswith(_PG_SCHEMES)


def redact(target: str) -> str:
    """The store as messages may show it: no password, whether in the user part or a parameter."""
    def user_only(m: re.Match) -> str:
        user = m.group(2).split(":", 1)[0]
        return f"{m.group(1)}{user}{':***' if ':' in m.group(2) else ''}@"

    return _SECRET_PARAM.sub(lambda m: f"{m.group(1)}=***", _USERINFO.sub(user_only, target, count=1))


def open_store(target: str) -> FleetStore:
    """The store at `target` (a PostgreSQL URL or a SQLite path), created or migrated as needed.
    StoreError (with the target redacted) when it cannot be opened or is of a newer schema."""
    if is_postgresql(target):
        return PostgresStore(target)
    return SQLiteStore(target)


def _check_version(store: FleetStore, found: int) -> None:
    if found > schema.VERSION:
        raise StoreTooNew(f"store {store.display}: schema version {found} is newer than this vmaudit's "
                          f"({schema.VERSION}); upgrade vmaudit to use it (nothing was changed)")


class SQLiteStore(FleetStore):
    """The embedded store: one file, one writer at a time (a second waits up to `busy` seconds)."""

    engine = "sqlite"

    def __init__(self, path: str, busy: float = 60.0):
        super().__init__(str(path))
        parent = os.path.dirname(os.path.abspath(path))
        try:
            make_dir(parent, parents=True)
            # created FILE_MODE whatever the umask, and never through a symbolic link; SQLite gives its
            # journal files the database file's mode
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise StoreError(f"store {path}: not a regular file")
                if st.st_size == 0:
                    os.fchmod(fd, FILE_MODE)
            finally:
                os.close(fd)
            self.db = sqlite3.connect(path, timeout=busy, isolation_level=None, check_same_thread=False)
        except OSError as exc:
            if getattr(exc, "errno", None) == 40:  # ELOOP: the path is a symbolic link
                raise StoreError(f"store {path}: is a symbolic link; refused (never followed)") from None
            raise StoreError(f"store {path}: cannot open: {exc.strerror or exc}") from None
        except sqlite3.Error as exc:
            raise self.fail(exc, "cannot open") from None
        try:
            self.db.execute("PRAGMA journal_mode = WAL")  # readers (dashboards) never block the writer
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise self.fail(exc, "not a usable SQLite fleet store") from None
        except StoreError:
            self.db.close()
            raise

    def _migrate(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")  # one migrating writer at a time
        try:
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            tables = self.db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
            if version == 0 and tables:
                raise StoreError(f"store {self.display}: a SQLite database that is not a vmaudit fleet store; "
                                 f"refused (nothing was changed)")
            _check_version(self, version)
            for v in range(version + 1, schema.VERSION + 1):
                for stmt in schema.statements(v, "sqlite"):
                    self.db.execute(stmt)
                self.db.execute(f"PRAGMA user_version = {v}")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def _execute(self, sql: str, params: tuple = ()) -> Any:
        return self.db.execute(sql, params)

    def _executemany(self, sql: str, rows: list) -> None:
        self.db.executemany(sql, rows)

    def _begin(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def _commit(self) -> None:
        if self.db.in_transaction:
            self.db.execute("COMMIT")

    def _rollback(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    def _errors(self) -> tuple:
        return (sqlite3.Error,)

    def close(self) -> None:
        self.db.close()


class PostgresStore(FleetStore):
    """PostgreSQL through psycopg 3. The schema version is the one row of table vmaudit_store; the
    tables live in the connection's search_path (a database or schema of vmaudit's own)."""

    engine = "postgresql"

    def __init__(self, url: str):
        super().__init__(redact(url))
        try:
            import psycopg
            from psycopg.conninfo import conninfo_to_dict
        except ImportError:
            raise StoreError(f"store {self.display}: PostgreSQL needs psycopg 3, not installed here "
                             f"(pip install 'vmaudit[postgresql]', or the Debian package python3-psycopg)") from None
        self._psycopg = psycopg
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise self.fail(exc, "not a PostgreSQL URL") from None
        if "password" in params:
            raise StoreError(f"store {self.display}: a password in the store URL is visible to every user "
                             f"of this machine (the process list); put it in a password file (PGPASSFILE, "
                             f"~/.pgpass) or a service file (?service=NAME) instead")
        extra: dict = {"application_name": "vmaudit"}
        if "connect_timeout" not in params and not os.environ.get("PGCONNECT_TIMEOUT"):
            extra["connect_timeout"] = 10
        # a server or network gone silent mid-run is noticed within about a minute, not TCP's hours
        for key, value in (("keepalives", 1), ("keepalives_idle", 30), ("keepalives_interval", 10),
                           ("keepalives_count", 3)):
            if key not in params:
                extra[key] = value
        try:
            self.db = psycopg.connect(url, autocommit=False, **extra)
        except psycopg.Error as exc:
            raise self.fail(exc, "cannot connect") from None
        try:
            self._migrate()
        except psycopg.Error as exc:
            self._safe_rollback()
            self.db.close()
            raise self.fail(exc, "cannot prepare the schema") from None
        except StoreError:
            self._safe_rollback()
            self.db.close()
            raise

    def _migrate(self) -> None:
        # the first collectors of a new store may start at once: one migrates, the others wait and
        # then find the store current (DDL is transactional in PostgreSQL)
        cur = self.db.execute("SELECT pg_advisory_xact_lock(hashtext('vmaudit fleet store'))")
        marker, runs = cur.execute("SELECT to_regclass('vmaudit_store'), to_regclass('runs')").fetchone()
        if marker is None:
            if runs is not None:
                raise StoreError(f"store {self.display}: the database has a table `runs` that is not a "
                                 f"vmaudit fleet store's; refused (nothing was changed)")
            self.db.execute("CREATE TABLE vmaudit_store (version INTEGER NOT NULL)")
            self.db.execute("INSERT INTO vmaudit_store VALUES (0)")
        version = self.db.execute("SELECT version FROM vmaudit_store").fetchone()[0]
        _check_version(self, version)
        for v in range(version + 1, schema.VERSION + 1):
            for stmt in schema.statements(v, "postgresql"):
                self.db.execute(stmt)
            self.db.execute("UPDATE vmaudit_store SET version = %s", (v,))
        self.db.commit()

    def _execute(self, sql: str, params: tuple = ()) -> Any:
        return self.db.execute(sql.replace("?", "%s"), params)

    def _executemany(self, sql: str, rows: list) -> None:
        with self.db.cursor() as cur:
            cur.executemany(sql.replace("?", "%s"), rows)

    def _begin(self) -> None:
        pass  # psycopg opens a transaction with the first statement

    def _commit(self) -> None:
        self.db.commit()

    def _rollback(self) -> None:
        self.db.rollback()

    def _errors(self) -> tuple:
        return (self._psycopg.Error,)

    def close(self) -> None:
        self.db.close()


__all__ = ["open_store", "redact", "is_postgresql", "SQLiteStore", "PostgresStore", "StoreError", "StoreTooNew"]
