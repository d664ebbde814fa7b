"""Helpers for the state-directory tests: run the installed command line, inspect a state directory,
mount small tmpfs file systems (full / read-only state directories)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from vmtest import REQUIRE_REAL, host_root

VMAUDIT = str(Path(sys.executable).with_name("vmaudit"))
HERE = Path(__file__).resolve().parent
KILLPOINT = HERE / "killpoint.py"
REPO = HERE.parents[1]
# A fixture host: the empty tree, with libvirt's built-in test driver (one running guest, "test").
FIXTURE = ["--root", str(host_root("empty")), "--connect", "test:///default"]
OK = (0, 1, 3)  # audit results; 4 and 5 are the state directory's own statuses


def vmaudit(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([VMAUDIT, *args], capture_output=True, text=True, timeout=timeout, **kw)


def run_into(state: Path, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return vmaudit("run", *FIXTURE, "--state-dir", str(state), *extra, timeout=timeout)


def rows(state: Path) -> list[tuple]:
    """Every history row (without the report blob) and the findings count per run."""
    conn = sqlite3.connect(f"file:{state / 'history.sqlite'}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        runs = conn.execute("SELECT id, started_at, finished_at, exit_status, pass, fail, warn, error, skip,"
                            " waived, report_sha256 FROM runs ORDER BY id").fetchall()
        counts = dict(conn.execute("SELECT run_id, count(*) FROM findings GROUP BY run_id").fetchall())
    finally:
        conn.close()
    return [(*r, counts.get(r[0], 0)) for r in runs]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(state: Path) -> dict:
    """What a killed or refused run must leave unchanged: latest.* bytes, history rows, run dirs."""
    latest = state / "latest.json"
    json.loads(latest.read_text())  # readable, complete JSON
    return {"latest.json": sha(latest), "latest.html": sha(state / "latest.html"), "rows": rows(state),
            "runs": sorted(p.name for p in (state / "runs").iterdir())}


def tmp_leftovers(state: Path) -> list[str]:
    return sorted(str(p.relative_to(state)) for p in state.rglob(".*.tmp"))


@contextmanager
def small_tmpfs(where: Path, size: str = "2m"):
    """A tmpfs of `size` mounted at `where` (root only); skipped where mounting is not allowed."""
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        if REQUIRE_REAL:
            pytest.fail(f"cannot mount a tmpfs for the state directory: {proc.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs: {proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(fs: Path) -> None:
    """Fill the file system holding `fs` to the last block."""
    fd = os.open(fs / "filler", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 16, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


def environ(**extra: str) -> dict:
    env = dict(os.environ)
    env.update(extra)
    return env
