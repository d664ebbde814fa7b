"""A real, private PostgreSQL cluster for the tests: initdb + pg_ctl as user postgres in a temporary
directory, listening on a Unix socket in that directory only (no TCP, no systemd), password
authentication (SCRAM) with the passwords in a PGPASSFILE. Torn down with `stop()`, pass or fail."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid

ROLE = "vmaudit_i14"
ROLE_PASSWORD = "s3cret-" + uuid.uuid4().hex[:12]   # only in the password file, never in a URL


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def unavailable() -> str | None:
    """Why no cluster can be started here, or None."""
    if os.geteuid() != 0:
        return "the PostgreSQL tests run as root (they start a cluster as user postgres)"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no user postgres (install Debian's postgresql: scripts/install-deps.sh --test)"
    if not (_bin("initdb") and _bin("pg_ctl")):
        return "initdb/pg_ctl not found (install Debian's postgresql: scripts/install-deps.sh --test)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg 3 is not installed (pip install -e '.[test]')"
    return None


class Cluster:
    def __init__(self, tag: str = "pg"):
        self.dir = tempfile.mkdtemp(prefix=f"vmaudit-i14-{tag}-")
        pw = pwd.getpwnam("postgres")
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.dir, 0o700)
        self.data = os.path.join(self.dir, "data")
        self.sock = self.dir  # the socket lives here: no other process on the machine sees the port
        self.port = 5432      # a socket file name only (.s.PGSQL.5432 in self.sock), no TCP listener
        self.admin_password = uuid.uuid4().hex
        self.passfile = os.path.join(tempfile.mkdtemp(prefix="vmaudit-i14-pgpass-"), "pgpass")
        with open(self.passfile, "w") as fh:
            fh.write(f"*:*:*:postgres:{self.admin_password}\n*:*:*:{ROLE}:{ROLE_PASSWORD}\n")
        os.chmod(self.passfile, 0o600)
        self.started = False
        self._dbs = 0

    def _as_postgres(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True,
                              check=check, cwd="/", timeout=120)

    def start(self) -> Cluster:
        pwfile = os.path.join(self.dir, "pw")
        with open(pwfile, "w") as fh:
            fh.write(self.admin_password + "\n")
        pw = pwd.getpwnam("postgres")
        os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        try:
            self._as_postgres(_bin("initdb"), "-D", self.data, "-U", "postgres", f"--pwfile={pwfile}",
                              "--auth-local=scram-sha-256", "--auth-host=reject", "-E", "UTF8", "--no-sync")
        finally:
            os.unlink(pwfile)
        self.resume()
        self.psql_admin(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{ROLE_PASSWORD}'")
        return self

    def resume(self) -> None:
        self._as_postgres(_bin("pg_ctl"), "-D", self.data, "-l", os.path.join(self.dir, "log"), "-w", "-t", "60",
                          "-o", f"-c listen_addresses='' -k {self.sock} -p {self.port} -c fsync=off", "start")
        self.started = True

    def halt(self, mode: str = "immediate") -> None:
        self._as_postgres(_bin("pg_ctl"), "-D", self.data, "-m", mode, "-w", "stop", check=False)
        self.started = False

    def stop(self) -> None:
        try:
            if self.started:
                self.halt()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            shutil.rmtree(os.path.dirname(self.passfile), ignore_errors=True)

    def env(self) -> dict:
        """The environment a client needs: the password file (nothing else is secret)."""
        return {**os.environ, "PGPASSFILE": self.passfile}

    def psql_admin(self, sql: str, db: str = "postgres") -> str:
        done = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-h", self.sock, "-p",
                               str(self.port), "-U", "postgres", "-d", db, "-c", sql],
                              capture_output=True, text=True, env=self.env(), timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"psql: {done.stderr.strip()}")
        return done.stdout.strip()

    def new_database(self) -> str:
        self._dbs += 1
        name = f"vmaudit_i14_{self._dbs}"
        self.psql_admin(f"CREATE DATABASE {name} OWNER {ROLE}")
        return name

    def drop_database(self, name: str) -> None:
        self.psql_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def url(self, db: str) -> str:
        """A libpq URL without a password (it comes from PGPASSFILE)."""
        return f"postgresql://{ROLE}@/{db}?host={self.sock}&port={self.port}"
