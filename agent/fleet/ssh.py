"""SSH to the audited hosts with paramiko, the way OpenSSH users expect it to behave.

* `~/.ssh/config` (HostName, Port, User, IdentityFile, ProxyJump, UserKnownHostsFile, HostKeyAlias),
  read with paramiko's SSHConfig; inventory variables (ansible_host/port/user) win over it, as with
  Ansible.
* Keys from files (loaded once per run) and from the SSH agent.
* Host keys are verified against known_hosts. An unknown key is refused unless the user asked for
  `accept_new` (then it is appended to a known_hosts file of their choosing); a CHANGED key is always
  refused, and so is a key of a `@revoked` line. Never AutoAddPolicy. Host certificates
  (`@cert-authority`) are not verified: such hosts need their own key in known_hosts.
* ProxyJump: a direct-tcpip channel through the bastion's transport (one transport per bastion, shared
  by every host behind it).
* Every wait is bounded: TCP connect, SSH banner, key exchange and authentication by the connect
  timeout; a remote command by the command timeout. `close()` from another thread aborts all of it.

paramiko is imported here only: this module belongs to `vmaudit collect` and is never loaded by `run`.
"""

from __future__ import annotations

import getpass
import logging
import os
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko

log = logging.getLogger("vmaudit.fleet")

DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
DEFAULT_KNOWN_HOSTS = ("~/.ssh/known_hosts", "/etc/ssh/ssh_known_hosts")
MAX_OUTPUT = 512 * 1024 * 1024  # a remote host's answer is untrusted: bound what we hold in memory


class Unreached(Exception):
    """A host that could not be audited; str() is the reason shown in F-HOST-UNREACHED."""

    def __init__(self, reason: str, stage: str = "connect"):
        super().__init__(reason)
        self.stage = stage  # connect, host-key, auth, become, command, timeout, interrupted, facts


@dataclass
class SSHOptions:
    ssh_config: str | None = None           # None: ~/.ssh/config when it exists
    known_hosts: list = field(default_factory=list)   # empty: ~/.ssh/known_hosts, /etc/ssh/ssh_known_hosts
    accept_new: bool = False                # record unknown keys in accept_new_file (never changed ones)
    accept_new_file: str | None = None      # default: the first known_hosts file
    identities: list = field(default_factory=list)
    user: str | None = None
    use_agent: bool = True
    connect_timeout: float = 10.0
    command_timeout: float = 300.0


@dataclass
class Target:
    """Where one host really is, after the inventory and ~/.ssh/config are applied."""

    hostname: str
    port: int
    user: str
    identities: list
    proxyjump: str | None
    key_name: str          # known_hosts lookup name: host or [host]:port (HostKeyAlias if set)
    known_hosts: list


class Connector:
    """Opens verified, authenticated SSH sessions; shared by every worker thread of one run."""

    def __init__(self, opts: SSHOptions):
        self.opts = opts
        self._lock = threading.Lock()
        self._config = paramiko.SSHConfig()
        cfg_path = opts.ssh_config or os.path.expanduser("~/.ssh/config")
        if opts.ssh_config or os.path.exists(cfg_path):
            try:
                self._config = paramiko.SSHConfig.from_path(cfg_path)
            except (OSError, Exception) as exc:
                from vmaudit.policy import PolicyError

                raise PolicyError(f"{cfg_path}: cannot read SSH config: {exc}") from None
        files = opts.known_hosts or [os.path.expanduser(p) for p in DEFAULT_KNOWN_HOSTS]
        self._known_default = [os.path.expanduser(f) for f in files]
        self._hostkeys: dict[tuple, paramiko.HostKeys] = {}
        self._keys: dict[str, Any] = {}          # identity path -> PKey or error string
        self._bastions: dict[str, paramiko.Transport] = {}
        self._revoked: set[bytes] = set()       # keys of "@revoked" known_hosts lines, in any file
        self.accept_file = os.path.expanduser(opts.accept_new_file or self._known_default[0])

    # --- configuration --------------------------------------------------------------------------
    def resolve(self, address: str, port: int | None = None, user: str | None = None,
                identity: str | None = None) -> Target:
        cfg = self._config.lookup(address)
        hostname = cfg.get("hostname", address)
        port = int(port or cfg.get("port") or 22)
        user = user or self.opts.user or cfg.get("user") or getpass.getuser()
        if identity:
            identities = [os.path.expanduser(identity)]
        elif self.opts.identities:
            identities = [os.path.expanduser(i) for i in self.opts.identities]
        elif cfg.get("identityfile"):
            identities = [os.path.expanduser(i) for i in cfg["identityfile"]]
        else:
            identities = [p for p in (os.path.expanduser(i) for i in DEFAULT_IDENTITIES) if os.path.exists(p)]
        jump = cfg.get("proxyjump")
        if jump and jump.strip().lower() == "none":
            jump = None
        alias = cfg.get("hostkeyalias")
        name = alias or hostname
        key_name = name if port == 22 or alias else f"[{name}]:{port}"
        if self.opts.known_hosts:
            known = self._known_default
        elif cfg.get("userknownhostsfile"):
            known = [os.path.expanduser(f) for f in cfg["userknownhostsfile"].split()]
            known.append(DEFAULT_KNOWN_HOSTS[1])
        else:
            known = self._known_default
        return Target(hostname, port, user, identities, jump, key_name, known)

    def _known(self, files: list) -> paramiko.HostKeys:
        key = tuple(files)
        with self._lock:
            hk = self._hostkeys.get(key)
            if hk is None:
                hk = paramiko.HostKeys()
                for f in files:
                    if os.path.exists(f):
                        try:
                            _load_known_hosts(hk, f, self._revoked)
                        except OSError as exc:
                            log.warning("%s: cannot read known hosts: %s", f, exc)
                self._hostkeys[key] = hk
            return hk

    def _key(self, path: str) -> Any:
        with self._lock:
            if path not in self._keys:
                try:
                    self._keys[path] = paramiko.PKey.from_path(path)
                except paramiko.PasswordRequiredException:
                    self._keys[path] = f"{path} is encrypted (add it to the ssh-agent)"
                except (OSError, paramiko.SSHException, ValueError) as exc:
                    self._keys[path] = f"{path}: {getattr(exc, 'strerror', None) or exc}"
            return self._keys[path]

    # --- connecting -----------------------------------------------------------------------------
    def connect(self, target: Target, session: Session, depth: int = 0) -> paramiko.Transport:
        """An authenticated transport to `target` (through its bastion if any), or Unreached."""
        timeout = self.opts.connect_timeout
        if target.proxyjump:
            if depth > 5:
                raise Unreached(f"ProxyJump chain too long at {target.proxyjump}")
            sock = self._via_bastion(target, session, depth)
        else:
            try:
                sock = socket.create_connection((target.hostname, target.port), timeout=timeout)
            except socket.timeout:
                raise Unreached(f"TCP connect to {target.hostname}:{target.port} timed out after {timeout:g} s",
                                "timeout") from None
            except OSError as exc:
                raise Unreached(f"cannot connect to {target.hostname}:{target.port}: "
                                f"{exc.strerror or exc}") from None
        session.adopt(sock)
        transport = paramiko.Transport(sock)
        session.adopt(transport)
        transport.banner_timeout = timeout
        transport.handshake_timeout = timeout
        transport.auth_timeout = timeout
        known = self._known(target.known_hosts)
        expected = known.lookup(target.key_name)
        if expected:
            # prefer the key types we know, as OpenSSH does, so a host with several keys matches
            opts = transport.get_security_options()
            known_types = [t for t in opts.key_types if _key_family(t) in {_key_family(k) for k in expected.keys()}]
            opts.key_types = known_types + [t for t in opts.key_types if t not in known_types]
        try:
            transport.start_client(timeout=timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if session.aborted:
                raise Unreached(session.aborted, "timeout") from None
            raise Unreached(f"SSH handshake with {target.hostname}:{target.port} failed: {exc or type(exc).__name__}") from None
        try:
            # start_client can return while the transport thread is already failing (a banner timeout
            # racing the wait): no session then, and get_remote_server_key() says so
            self._verify(transport.get_remote_server_key(), target, known, expected)
            self._auth(transport, target)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if session.aborted:
                raise Unreached(session.aborted, "timeout") from None
            raise Unreached(f"SSH handshake with {target.hostname}:{target.port} failed: "
                            f"{exc or type(exc).__name__}") from None
        return transport

    def _verify(self, key: Any, target: Target, known: paramiko.HostKeys, expected: Any) -> None:
        fp = _fingerprint(key)
        if key.asbytes() in self._revoked:  # as OpenSSH: a revoked key is never accepted, listed or not
            raise Unreached(f"host key of {target.key_name} ({key.get_name()} {fp}) is marked @revoked in "
                            f"known_hosts; refused", "host-key")
        if expected:
            mine = expected.get(key.get_name())
            if mine is None or mine != key:
                theirs = ", ".join(f"{t} {_fingerprint(k)}" for t, k in expected.items())
                raise Unreached(f"host key CHANGED for {target.key_name}: the server presents {key.get_name()} "
                                f"{fp}, known_hosts has {theirs}; refused (possible man-in-the-middle; "
                                f"if the host was reinstalled, fix known_hosts)", "host-key")
            return
        if not self.opts.accept_new:
            raise Unreached(f"host key of {target.key_name} is not in known_hosts ({key.get_name()} {fp}); "
                            f"refused (verify it, or run once with --accept-new-host-keys)", "host-key")
        with self._lock:
            if known.lookup(target.key_name) is None:
                known.add(target.key_name, key.get_name(), key)
                line = f"{target.key_name} {key.get_name()} {key.get_base64()}\n"
                Path(self.accept_file).parent.mkdir(parents=True, exist_ok=True)
                with open(self.accept_file, "a", encoding="utf-8") as fh:
                    fh.write(line)
        log.warning("recorded the new host key of %s (%s %s) in %s", target.key_name, key.get_name(), fp,
                    self.accept_file)

    def _auth(self, transport: paramiko.Transport, target: Target) -> None:
        tried: list[str] = []
        problems: list[str] = []
        for path in target.identities:
            key = self._key(path)
            if isinstance(key, str):
                problems.append(key)
                continue
            tried.append(path)
            if self._try_key(transport, target.user, key):
                return
        if self.opts.use_agent and os.environ.get("SSH_AUTH_SOCK"):
            agent = paramiko.Agent()  # one agent connection per session: agent sockets are not thread-safe
            try:
                for key in agent.get_keys():
                    tried.append(f"agent:{key.get_name()}")
                    if self._try_key(transport, target.user, key):
                        return
            finally:
                agent.close()
        detail = f"tried {', '.join(tried)}" if tried else "no key to offer"
        if problems:
            detail += "; " + "; ".join(problems)
        raise Unreached(f"authentication as {target.user}@{target.hostname} failed ({detail})", "auth")

    @staticmethod
    def _try_key(transport: paramiko.Transport, user: str, key: Any) -> bool:
        try:
            transport.auth_publickey(user, key)
        except paramiko.AuthenticationException:
            return False
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise Unreached(f"authentication as {user} failed: {exc}", "auth") from None
        return transport.is_authenticated()

    def _via_bastion(self, target: Target, session: Session, depth: int) -> Any:
        spec = target.proxyjump.split(",")[-1].strip()
        rest = ",".join(target.proxyjump.split(",")[:-1]) or None
        user, _, hostport = spec.rpartition("@")
        host, port = hostport, None
        if hostport.count(":") == 1:
            host, _, p = hostport.partition(":")
            port = int(p)
        with self._lock:
            transport = self._bastions.get(target.proxyjump)
        if transport is None or not transport.is_active():
            bastion = self.resolve(host, port, user or None)
            if rest:
                bastion.proxyjump = rest
            holder = Session()  # the bastion outlives any one host's session
            try:
                transport = self.connect(bastion, holder, depth + 1)
            except Unreached as exc:
                raise Unreached(f"bastion {spec}: {exc}", exc.stage) from None
            with self._lock:
                self._bastions[target.proxyjump] = transport
        try:
            return transport.open_channel("direct-tcpip", (target.hostname, target.port), ("127.0.0.1", 0),
                                          timeout=self.opts.connect_timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise Unreached(f"bastion {spec} cannot reach {target.hostname}:{target.port}: {exc}") from None

    def close(self) -> None:
        with self._lock:
            for t in self._bastions.values():
                t.close()
            self._bastions.clear()


class Session:
    """Everything one host's audit has open; `abort()` (from the watchdog or Ctrl-C) closes it all."""

    def __init__(self) -> None:
        self._things: list[Any] = []
        self._lock = threading.Lock()
        self.aborted: str | None = None

    def adopt(self, thing: Any) -> None:
        with self._lock:
            self._things.append(thing)
        if self.aborted:
            self.close()

    def abort(self, reason: str) -> None:
        self.aborted = reason
        self.close()

    def close(self) -> None:
        with self._lock:
            things, self._things = self._things[::-1], []
        for t in things:
            try:
                t.close()
            except Exception:
                pass


@dataclass
class Completed:
    status: int
    stdout: bytes
    stderr: bytes


def run(transport: paramiko.Transport, command: str, timeout: float, session: Session) -> Completed:
    """Run `command`; its stdout/stderr and exit status. Unreached on timeout or a lost connection."""
    try:
        chan = transport.open_session(timeout=timeout)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise Unreached(session.aborted or f"cannot open an SSH session: {exc}", "command") from None
    session.adopt(chan)
    deadline = time.monotonic() + timeout
    out, err = bytearray(), bytearray()
    try:
        chan.exec_command(command)
        chan.shutdown_write()
        while True:
            while chan.recv_ready():
                out += chan.recv(1 << 17)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(1 << 16)
            if len(out) + len(err) > MAX_OUTPUT:
                raise Unreached(f"the remote command wrote more than {MAX_OUTPUT >> 20} MiB", "command")
            if chan.exit_status_ready() and chan.eof_received and not chan.recv_ready() \
                    and not chan.recv_stderr_ready():
                break
            if chan.closed and not chan.recv_ready() and not chan.recv_stderr_ready():
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise Unreached(f"the remote command did not finish within {timeout:g} s "
                                f"(command timeout)", "timeout")
            select.select([chan], [], [], min(left, 1.0))
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise Unreached(session.aborted or f"connection lost while running the command: {exc}", "command") from None
    if session.aborted:
        raise Unreached(session.aborted, "timeout")
    status = chan.recv_exit_status() if chan.exit_status_ready() else -1
    chan.close()
    return Completed(status, bytes(out), bytes(err))


def _load_known_hosts(hk: paramiko.HostKeys, path: str, revoked: set) -> None:
    """Load a known_hosts file as paramiko's HostKeys.load() does, but line by line as OpenSSH reads it:
    HostKeys.load() gives up on the whole file at the first line it cannot parse (a `@revoked` or
    `@cert-authority` line, a broken key), and every host then fails. `@revoked` keys are collected
    into `revoked`; `@cert-authority` lines are ignored (host certificates are not verified, so such
    hosts stay unknown and are refused)."""
    import base64
    import binascii

    from paramiko.hostkeys import HostKeyEntry

    with open(path, encoding="utf-8", errors="replace") as fh:
        for no, raw in enumerate(fh, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("@"):
                fields = line.split()
                if fields[0] == "@revoked" and len(fields) >= 4:
                    try:
                        revoked.add(base64.b64decode(fields[3], validate=True))
                    except (binascii.Error, ValueError):
                        log.warning("%s, line %d: unreadable @revoked key", path, no)
                continue
            try:
                entry = HostKeyEntry.from_line(line, no)
            except Exception as exc:  # InvalidHostKey, SSHException, ValueError: skip this line only
                log.warning("%s, line %d: unreadable known_hosts entry (%s)", path, no, exc)
                continue
            if entry is None:  # a key type paramiko does not know
                continue
            for h in list(entry.hostnames):
                if hk.check(h, entry.key):
                    entry.hostnames.remove(h)
            if entry.hostnames:
                hk._entries.append(entry)


def _fingerprint(key: Any) -> str:
    import base64
    import hashlib

    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _key_family(name: str) -> str:
    return "ssh-rsa" if name in ("ssh-rsa", "rsa-sha2-256", "rsa-sha2-512") else name


__all__ = ["Connector", "SSHOptions", "Session", "Target", "Unreached", "Completed", "run"]
