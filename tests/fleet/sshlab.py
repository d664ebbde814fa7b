"""A lab of real OpenSSH servers on distinct loopback addresses (127.0.6.x), for the fleet tests and
bench/bench_collect.py.

Each server is Debian's /usr/sbin/sshd with its own config, host key and pid, started in the
foreground (-D) by the lab and killed by it (by pid). Root logs in with a throw-away ed25519 key
(AuthorizedKeysFile points at the lab's file). Kinds of host:

    installed   SetEnv PATH includes the venv's bin: `vmaudit` is found on the remote PATH
    agentless   PATH=/usr/bin:/bin: no vmaudit; the zipapp runs with Debian's /usr/bin/python3
    hang        ForceCommand sleep: the command never finishes
    bastion     allows TCP forwarding only to the addresses given (PermitOpen)
    changed     runs with a host key other than the one the lab writes to known_hosts
    unknown     its key is not written to known_hosts at all
    down        no server at that address

The lab writes known_hosts and an ssh config file; nothing under ~/.ssh is touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
PORT = 2206
VENV_BIN = str(Path(sys.executable).parent)
FLEET = Path(__file__).resolve().parents[1] / "fixtures" / "fleet"
# the test lab's addresses (issue 6: 127.0.6.x), away from other engineers' test servers
ADDR = {"inst": "127.0.6.11", "agentless": "127.0.6.12", "hang": "127.0.6.13", "down": "127.0.6.14",
        "changed": "127.0.6.15", "unknown": "127.0.6.16", "silent": "127.0.6.17", "bastion": "127.0.6.20"}


def available() -> str | None:
    if os.geteuid() != 0:
        return "the SSH lab needs root (sshd must switch to the login user)"
    for tool in (SSHD, shutil.which("ssh-keygen"), "/usr/lib/openssh/sftp-server"):
        if not tool or not os.path.exists(tool):
            return f"{tool or 'ssh-keygen'} is not installed (openssh-server)"
    return None


@dataclass
class Server:
    name: str
    addresses: list
    kind: str
    dir: Path
    proc: subprocess.Popen | None = None
    host_key: Path | None = None
    options: list = field(default_factory=list)


class SSHLab:
    def __init__(self, base: str | None = None):
        self.dir = Path(tempfile.mkdtemp(prefix="vmaudit-sshlab-", dir=base))
        os.chmod(self.dir, 0o700)
        self.servers: dict[str, Server] = {}
        self.client_key = self.dir / "client_key"
        _keygen(self.client_key)
        self.authorized = self.dir / "authorized_keys"
        self.authorized.write_text((self.dir / "client_key.pub").read_text())
        self.known_hosts = self.dir / "known_hosts"
        self.known_hosts.write_text("")
        self.ssh_config = self.dir / "ssh_config"
        self.ssh_config.write_text("")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory

    def add(self, name: str, addresses: list[str] | str, kind: str = "installed", options: list | None = None,
            known: bool = True) -> Server:
        addresses = [addresses] if isinstance(addresses, str) else list(addresses)
        d = self.dir / name
        d.mkdir()
        srv = Server(name, addresses, kind, d, options=list(options or []))
        self.servers[name] = srv
        if kind == "down":
            return srv
        srv.host_key = d / "host_key"
        _keygen(srv.host_key)
        recorded = srv.host_key
        if kind == "changed":  # known_hosts gets another key than the one the server presents
            recorded = d / "old_host_key"
            _keygen(recorded)
        if known and kind != "unknown":
            pub = (recorded.parent / (recorded.name + ".pub")).read_text().split()
            with open(self.known_hosts, "a") as fh:
                for a in addresses:
                    fh.write(f"[{a}]:{PORT} {pub[0]} {pub[1]}\n")
        path_env = f"{VENV_BIN}:/usr/bin:/bin" if kind != "agentless" else "/usr/bin:/bin"
        lines = [f"ListenAddress {a}:{PORT}" for a in addresses] + [
            f"HostKey {srv.host_key}", f"PidFile {d / 'sshd.pid'}", f"AuthorizedKeysFile {self.authorized}",
            "StrictModes no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password", "UsePAM no", "PrintMotd no", "PrintLastLog no",
            "Subsystem sftp /usr/lib/openssh/sftp-server", f"SetEnv PATH={path_env}",
            "MaxStartups 500", "MaxSessions 100", "LogLevel ERROR", "UseDNS no",
        ]
        if kind == "hang":
            lines.append("ForceCommand exec sleep 120")
        if kind == "bastion":
            lines.append("AllowTcpForwarding yes")
        else:
            lines.append("AllowTcpForwarding no")
        lines += srv.options
        (d / "sshd_config").write_text("\n".join(lines) + "\n")
        return srv

    def start(self) -> None:
        for srv in self.servers.values():
            if srv.kind == "down" or srv.proc is not None:
                continue
            cfg = srv.dir / "sshd_config"
            subprocess.run([SSHD, "-t", "-f", str(cfg)], check=True, capture_output=True, timeout=30)
            log = open(srv.dir / "sshd.log", "ab")
            srv.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stdout=log, stderr=log,
                                        start_new_session=True)
        for srv in self.servers.values():
            if srv.proc is not None:
                for a in srv.addresses:
                    _wait_port(a, PORT, srv)

    def stop(self) -> None:
        for srv in self.servers.values():
            if srv.proc is not None and srv.proc.poll() is None:
                # the session leader's group: sshd and the sessions it forked (e.g. the hanging sleep)
                try:
                    os.killpg(srv.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    srv.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(srv.proc.pid, signal.SIGKILL)
                    srv.proc.wait(timeout=10)
            srv.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def write_ssh_config(self, text: str) -> Path:
        self.ssh_config.write_text(text)
        return self.ssh_config


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vmaudit-lab", "-f", str(path)],
                   check=True, capture_output=True, timeout=30)


def _wait_port(addr: str, port: int, srv: Server, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if srv.proc.poll() is not None:
            raise RuntimeError(f"sshd {srv.name} exited: {(srv.dir / 'sshd.log').read_text()[-500:]}")
        try:
            with socket.create_connection((addr, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd {srv.name} does not listen on {addr}:{port}")
