"""`vmaudit collect` facing hostile or odd hosts and inputs (issue 12), against the real sshd lab."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sshlab import ADDR, PORT
from test_collect_ssh import VMAUDIT, collect, host_line, hosts_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hardening"))
from hardhelp import assert_terminal_clean, run_in_pty  # noqa: E402


def test_remote_stderr_reaches_the_terminal_clean_and_bounded(lab, tmp_path):
    """A host's vmaudit writes escape sequences and 100 MB of NULs to stderr: one clean, short line."""
    script = tmp_path / "hostile-vmaudit"
    script.write_text("#!/bin/sh\nprintf 'boom\\033]0;pwned\\007\\n\\033[2J\\r' >&2\n"
                      "head -c 100000000 /dev/zero >&2\nprintf 'last words\\033[31m\\n' >&2\nexit 1\n")
    script.chmod(0o755)
    inv = tmp_path / "hosts.ini"
    inv.write_text(f"[all:vars]\nansible_port={PORT}\nansible_user=root\n[hv]\n"
                   + host_line("hv-hostile", ADDR["inst"], vmaudit_command=str(script)) + "\n")
    out = tmp_path / "fleet"
    rc, seen = run_in_pty([VMAUDIT, "collect", "-i", str(inv), "--output", str(out), "--identity",
                           str(lab.client_key), "--no-agent", "--known-hosts", str(lab.known_hosts),
                           "--ssh-config", str(lab.ssh_config), "--connect-timeout", "5",
                           "--command-timeout", "60", "--no-progress"], timeout=180)
    assert rc == 3, seen
    assert_terminal_clean(seen)
    assert len(seen) < 4096, len(seen)
    line = [x for x in seen.decode().splitlines() if "hv-hostile: not audited" in x]
    assert len(line) == 1 and "last words?[31m" in line[0], seen
    reason = hosts_of(json.loads((out / "fleet.json").read_text()))["hv-hostile"]["reason"]
    assert reason.isprintable() and len(reason) < 400 and reason.endswith("last words?[31m"), reason


def test_a_port_that_never_speaks_ssh_has_a_reason(lab, silent_server, tmp_path):
    out = tmp_path / "fleet"
    r = collect(lab, out, inventory=f"[hv]\nhv-silent ansible_host={silent_server} ansible_port={PORT}\n")
    assert r.returncode == 3, r.stderr
    silent = hosts_of(json.loads((out / "fleet.json").read_text()))["hv-silent"]
    assert silent["stage"] == "connect", silent
    assert silent["reason"] == (f"SSH handshake with {silent_server}:{PORT} failed: no SSH banner within 3 s "
                                f"(the port accepts TCP connections but did not identify itself as an SSH "
                                f"server)"), silent


def test_a_port_that_speaks_something_else(lab, tmp_path):
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.6.18", PORT))
    srv.listen(4)

    def serve():
        for _ in range(2):
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        out = tmp_path / "fleet"
        r = collect(lab, out, inventory=f"[hv]\nhv-web ansible_host=127.0.6.18 ansible_port={PORT}\n")
    finally:
        srv.close()
    assert r.returncode == 3, r.stderr
    reason = hosts_of(json.loads((out / "fleet.json").read_text()))["hv-web"]["reason"]
    assert reason.startswith(f"SSH handshake with 127.0.6.18:{PORT} failed: ") and reason.split("failed: ")[1], reason
    assert "banner" in reason or "not an SSH server" in reason, reason


@pytest.mark.parametrize("moment", ["directory made", "zipapp running"])
def test_sigkilled_collector_leaves_no_agentless_directory(lab, tmp_path, moment):
    """The exit trap is set before the directory exists: killed at any moment, nothing stays in /tmp."""
    before = set(glob.glob("/tmp/vmaudit.*"))
    inv = tmp_path / "hosts.ini"
    inv.write_text(f"[all:vars]\nansible_port={PORT}\nansible_user=root\n[hv]\n"
                   + host_line("hv-b", ADDR["agentless"], vmaudit_python="/usr/bin/python3") + "\n")
    proc = subprocess.Popen([VMAUDIT, "collect", "-i", str(inv), "--output", str(tmp_path / "out"), "--identity",
                             str(lab.client_key), "--no-agent", "--known-hosts", str(lab.known_hosts),
                             "--ssh-config", str(lab.ssh_config), "--connect-timeout", "5",
                             "--command-timeout", "20", "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        new: set = set()
        while time.monotonic() < deadline and proc.poll() is None:
            new = set(glob.glob("/tmp/vmaudit.*")) - before
            if new and (moment == "directory made" or any(os.path.exists(f"{d}/native") or
                                                          os.path.getsize(f"{d}/vmaudit.pyz") > 0
                                                          for d in new if os.path.exists(f"{d}/vmaudit.pyz"))):
                break
            time.sleep(0.005)
        assert new, "the collection never made its directory"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and set(glob.glob("/tmp/vmaudit.*")) - before:
        time.sleep(0.2)
    assert not set(glob.glob("/tmp/vmaudit.*")) - before, "a killed collector left its directory behind"


@pytest.mark.parametrize("mask", [0o000, 0o022])
def test_collect_output_is_private_whatever_the_umask(lab, tmp_path, mask):
    """Reports, snapshots, hosts/ and facts/, fleet-history.sqlite: 0640 files, 0750 directories."""
    import stat

    inv = tmp_path / "hosts.ini"
    inv.write_text(f"[all:vars]\nansible_port={PORT}\nansible_user=root\n[hv]\n"
                   + host_line("hv-a", ADDR["inst"]) + "\n")
    out = tmp_path / "reports" / "fleet"
    r = subprocess.run([VMAUDIT, "collect", "-i", str(inv), "--output", str(out), "--identity", str(lab.client_key),
                        "--no-agent", "--known-hosts", str(lab.known_hosts), "--ssh-config", str(lab.ssh_config),
                        "--connect-timeout", "5", "--command-timeout", "60", "--no-progress"],
                       capture_output=True, text=True, timeout=180, preexec_fn=lambda: os.umask(mask))
    assert r.returncode in (0, 1, 3), r.stderr
    found = {str(p.relative_to(tmp_path)): stat.S_IMODE(p.lstat().st_mode) for p in [out.parent, *out.parent.rglob("*")]}
    wrong = {p: f"{m:04o}" for p, m in found.items() if m != (0o750 if (tmp_path / p).is_dir() else 0o640)}
    assert not wrong, wrong
    assert {"reports/fleet/fleet-history.sqlite", "reports/fleet/hosts/hv-a.json", "reports/fleet/facts/hv-a.json",
            "reports/fleet/fleet.html"} <= set(found)
