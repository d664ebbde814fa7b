"""Fixtures for the fleet tests: a session-wide lab of real OpenSSH servers (see sshlab.py)."""

from __future__ import annotations

import socket
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sshlab import ADDR, PORT, BecomeUsers, SSHLab, available, sudo_available  # noqa: E402
from vmtest import REQUIRE_REAL  # noqa: E402


def _require_real(what: str, why: str | None) -> None:
    """A missing real part skips the tests, except in CI (vmtest.REQUIRE_REAL) where it fails them."""
    if why:
        (pytest.fail if REQUIRE_REAL else pytest.skip)(f"{what}: {why}")


@pytest.fixture(scope="session")
def lab():
    _require_real("SSH lab unavailable", available())
    lab = SSHLab()
    try:
        lab.add("inst", ADDR["inst"])
        lab.add("agentless", ADDR["agentless"], kind="agentless")
        lab.add("hang", ADDR["hang"], kind="hang")
        lab.add("down", ADDR["down"], kind="down")
        lab.add("changed", ADDR["changed"], kind="changed")
        lab.add("unknown", ADDR["unknown"], kind="unknown")
        lab.add("bastion", ADDR["bastion"], kind="bastion", options=[f"PermitOpen {ADDR['inst']}:{PORT}"])
        lab.start()
        yield lab
    finally:
        lab.cleanup()


@pytest.fixture(scope="session")
def become_users(lab):
    """Non-root login users with sudoers rules (see sshlab.BecomeUsers); needs the Debian package sudo."""
    _require_real("become tests", sudo_available())
    users = BecomeUsers(lab)
    try:
        users.setup()
        yield users
    finally:
        users.cleanup()


@pytest.fixture(scope="session")
def silent_server():
    """Accepts TCP connections and never says a word (no SSH banner): a host that hangs on connect."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((ADDR["silent"], PORT))
    srv.listen(16)
    held: list = []
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                held.append(conn)
            except OSError:
                continue

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield ADDR["silent"]
    stop.set()
    t.join(timeout=5)
    for c in held:
        c.close()
    srv.close()
