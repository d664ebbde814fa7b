"""A lab of real OpenSSH servers on distinct loopback addresses (127.0.6.x), for the fleet tests and
bench/bench_collect.py.

Each server is Debian's /usr/sbin/sshd with its own config, host key and pid, started in the
foreground (-D) by the lab and killed by it (by pid). Root logs in with a throw-away ed25519 key
(AuthorizedKeysFile points at the lab's file); so do the non-root users of `BecomeUsers`, which the
become tests create with sudoers rules of their own (sshd reads authorized keys as the login user, so
the lab directory is traversable, 0711, and that file readable). Kinds of host:

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

from vmtest import sshd_privsep_dir

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
        os.chmod(self.dir, 0o711)  # traversable, not listable: non-root users read authorized_keys
        self.servers: dict[str, Server] = {}
        self.client_key = self.dir / "client_key"
        _keygen(self.client_key)
        self.authorized = self.dir / "authorized_keys"
        self.authorized.write_text((self.dir / "client_key.pub").read_text())
        os.chmod(self.authorized, 0o644)
        self.known_hosts = self.dir / "known_hosts"
        self.known_hosts.write_text("")
        self.ssh_config = self.dir / "ssh_config"
        self.ssh_config.write_text("")
        sshd_privsep_dir()
        # The "installed" vmaudit the lab's hosts offer, where every login user can find it: a wrapper
        # for this checkout's venv. A checkout may sit where only root can read (a clone in /root, mode
        # 0700): a login user then still finds the command (`command -v`), and sudo runs it as root.
        self.bin = self.dir / "bin"
        self.bin.mkdir(mode=0o755)
        wrapper = self.bin / "vmaudit"
        wrapper.write_text(f'#!/bin/sh\nexec {VENV_BIN}/vmaudit "$@"\n')
        wrapper.chmod(0o755)

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
        path_env = f"{self.bin}:{VENV_BIN}:/usr/bin:/bin" if kind != "agentless" else "/usr/bin:/bin"
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


SUDOERS_DROPIN = Path("/etc/sudoers.d/vmaudit-test-become")  # no dot: sudo skips names with one
LAB_GECOS = "vmaudit test lab"


def sudo_available() -> str | None:
    for tool in ("/usr/bin/sudo", "/usr/sbin/visudo", "/usr/sbin/useradd", "/usr/sbin/userdel"):
        if not os.path.exists(tool):
            return f"{tool} is not installed (Debian packages sudo, passwd)"
    if not Path("/etc/sudoers.d").is_dir():
        return "/etc/sudoers has no /etc/sudoers.d"
    return None


class BecomeUsers:
    """Three login users for the become tests, removed again by cleanup():

    nopw    may run anything as root with sudo, without a password (NOPASSWD)
    pw      may run anything as anyone with sudo, but only with a password (which it does not have)
    strict  never authenticates (`!authenticate`, as fleets set for an automation account) and may run
            only the agentless zipapp as root, the rule docs/fleet.md gives: nothing else, not even rm;
            sudo says "Sorry, user ... is not allowed" for anything else

    Their rules live in one sudoers drop-in, checked with `visudo -cf` before it is installed."""

    def __init__(self, lab: SSHLab):
        self.lab = lab
        self.nopw, self.pw, self.strict = "vmaudit-nopw", "vmaudit-pw", "vmaudit-strict"
        self._made: list[str] = []

    def setup(self) -> None:
        lab = self.lab
        for user in (self.nopw, self.pw, self.strict):
            _remove_stale_user(user)
            home = lab.dir / f"home-{user}"
            subprocess.run(["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/sh",
                            "--comment", LAB_GECOS, "--user-group",
                            # "*": no password, yet not locked ("!"), which sshd without PAM refuses
                            "--password", "*", user], check=True, capture_output=True,
                           timeout=30)
            self._made.append(user)
            home.mkdir(mode=0o700)
            shutil.chown(home, user, user)
        rules = (f"# vmaudit tests/fleet: removed at teardown\n"
                 f"{self.nopw} ALL=(root) NOPASSWD: ALL\n"
                 f"{self.pw} ALL=(ALL) ALL\n"
                 f"Defaults:{self.strict} !authenticate\n"
                 f"{self.strict} ALL=(root) /usr/bin/python3 /tmp/vmaudit.*/vmaudit.pyz facts *\n")
        draft = lab.dir / "sudoers-draft"
        draft.write_text(rules)
        check = subprocess.run(["visudo", "-cf", str(draft)], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"visudo rejects the test rules: {check.stdout}{check.stderr}")
        tmp = SUDOERS_DROPIN.with_name(SUDOERS_DROPIN.name + "~")  # sudo ignores names ending in ~
        tmp.write_text(rules)
        os.chmod(tmp, 0o440)
        os.replace(tmp, SUDOERS_DROPIN)

    def cleanup(self) -> None:
        SUDOERS_DROPIN.unlink(missing_ok=True)
        for user in self._made:
            subprocess.run(["userdel", user], capture_output=True, timeout=30)
        self._made.clear()


def _remove_stale_user(user: str) -> None:
    """A user left by an interrupted run (recognised by its comment) is removed; any other is an error."""
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return
    if entry.pw_gecos != LAB_GECOS:
        raise RuntimeError(f"user {user} exists and is not the test lab's; not touching it")
    subprocess.run(["userdel", user], check=True, capture_output=True, timeout=30)


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
