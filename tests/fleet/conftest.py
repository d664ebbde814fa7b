"""Fixtures for the fleet tests: a session-wide lab of real OpenSSH servers (see sshlab.py)."""

from __future__ import annotations

import os
import socket
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sshlab import ADDR, PORT, BecomeUsers, SSHLab, available, sudo_available  # noqa: E402


@pytest.fixture(scope="session")
def lab():
    # as tests/conftest.py's REQUIRE_REAL: in CI the real sshd must be there, a missing one fails
    require = os.environ.get("VMAUDIT_REQUIRE_REAL") == "1" or os.environ.get("CI") == "true"
    why = available()
    if why:
        if require:
            pytest.fail(f"SSH lab unavailable: {why}")
        pytest.skip(f"SSH lab unavailable: {why}")
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
    require = os.environ.get("VMAUDIT_REQUIRE_REAL") == "1" or os.environ.get("CI") == "true"
    why = sudo_available()
    if why:
        if require:
            pytest.fail(f"become tests: {why}")
        pytest.skip(f"become tests: {why}")
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
