"""SSH to the audited hosts with paramiko, the way OpenSSH users expect it to behave.

* `~/.ssh/config` (HostName, Port, User, IdentityFile, ProxyJump, UserKnownHostsFile, HostKeyAlias),
  read with paramiko's SSHConfig; inventory variables (ansible_host/port/user) win over it, as with
  Ansible.
* Keys from files (loaded once per run) and from the SSH agent.
* Host keys are verified against known_hosts as OpenSSH's ssh(1) does (hostfile.c, match.c; checked
  against OpenSSH 9.2): each line's host field is a comma list of patterns with `*` and `?`, `!` negation
  (a matching negated pattern makes the line not apply), `[host]:port` names (wildcards allowed inside),
  case-insensitive, or one hashed `|1|salt|hash` name. The name looked up is HostKeyAlias, else the host
  (`[host]:port` off port 22); a non-standard port with no line of its own falls back to the port-less
  name's lines, accepted only if one holds the presented key. Every matching line counts: the key of
  any of them is accepted; if none holds it the key has CHANGED (whatever its type, as in OpenSSH) and
  is always refused. No matching line: unknown, refused unless the user asked for `accept_new` (then
  it is appended to a known_hosts file of their choosing). A key on a `@revoked` line is refused for
  every host, whatever that line's patterns (stricter than OpenSSH, which applies it to matching hosts
  only). `CheckHostIP yes` in ~/.ssh/config also looks up the connected address (not through a jump
  host, not on loopback): another key recorded for it refuses the host, as OpenSSH's strict checking
  does; it never makes an unknown host known. Never AutoAddPolicy. Host certificates
  (`@cert-authority`) are not verified: such hosts need their own key in known_hosts.
* ProxyJump: a direct-tcpip channel through the bastion's transport (one transport per bastion, shared
  by every host behind it).
* Every wait is bounded: TCP connect, SSH banner, key exchange and authentication by the connect
  timeout; a remote command by the command timeout. `close()` from another thread aborts all of it.

paramiko is imported here only: this module belongs to `vmaudit collect` and is never loaded by `run`.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko

from vmaudit.fsutil import MAX_INPUT_BYTES
from vmaudit.termsafe import clean

log = logging.getLogger("vmaudit.fleet")

DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
DEFAULT_KNOWN_HOSTS = ("~/.ssh/known_hosts", "/etc/ssh/ssh_known_hosts")
MAX_OUTPUT = MAX_INPUT_BYTES  # a remote host's answer is untrusted: bound what we hold in memory
MAX_STDERR = 64 * 1024  # the tail of its standard error kept for the message


class Unreached(Exception):
    """A host that could not be audited; str() is the reason shown in F-HOST-UNREACHED."""

    def __init__(self, reason: str, stage: str = "connect"):
        # reasons quote what the remote side sent (stderr, banners, paramiko's words about them): one
        # clean, bounded line wherever it is shown
        super().__init__(clean(reason, 2000))
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
    fallback_name: str | None = None   # the port-less name OpenSSH also tries off port 22 (no alias)
    check_host_ip: bool = False        # CheckHostIP yes: the connected address is looked up too


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
                from vmaudit.errors import SSHConfigError

                raise SSHConfigError(f"{cfg_path}: cannot read SSH config: {exc}") from None
        files = opts.known_hosts or [os.path.expanduser(p) for p in DEFAULT_KNOWN_HOSTS]
        self._known_default = [os.path.expanduser(f) for f in files]
        self._hostkeys: dict[tuple, KnownHosts] = {}
        self._keys: dict[str, Any] = {}          # identity path -> PKey or error string
        self._bastions: dict[str, paramiko.Transport] = {}
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
        fallback = name if port != 22 and not alias else None
        check_ip = str(cfg.get("checkhostip", "no")).strip().lower() == "yes"
        return Target(hostname, port, user, identities, jump, key_name, known, fallback, check_ip)

    def _known(self, files: list) -> KnownHosts:
        key = tuple(files)
        with self._lock:
            hk = self._hostkeys.get(key)
            if hk is None:
                hk = KnownHosts.load(files)
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
        expected = known.lookup(target.key_name) or (known.lookup(target.fallback_name) if target.fallback_name
                                                     else [])
        if expected:
            # prefer the key types we know, as OpenSSH does, so a host with several keys matches
            opts = transport.get_security_options()
            families = {_key_family(e.keytype) for e in expected}
            known_types = [t for t in opts.key_types if _key_family(t) in families]
            opts.key_types = known_types + [t for t in opts.key_types if t not in known_types]
        peer = None
        if not target.proxyjump:
            try:
                peer = sock.getpeername()[0]
            except OSError:
                pass
        try:
            transport.start_client(timeout=timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if session.aborted:
                raise Unreached(session.aborted, "timeout") from None
            raise Unreached(f"SSH handshake with {target.hostname}:{target.port} failed: "
                            f"{_handshake_failure(exc, transport, timeout)}") from None
        try:
            # start_client can return while the transport thread is already failing (a banner timeout
            # racing the wait): no session then, and get_remote_server_key() says so
            self._verify(transport.get_remote_server_key(), target, known, peer)
            self._auth(transport, target)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if session.aborted:
                raise Unreached(session.aborted, "timeout") from None
            raise Unreached(f"SSH handshake with {target.hostname}:{target.port} failed: "
                            f"{_handshake_failure(exc, transport, timeout)}") from None
        return transport

    def _verify(self, key: Any, target: Target, known: KnownHosts, peer: str | None = None) -> None:
        fp = _sha256_fingerprint(key.asbytes())
        blob = key.asbytes()
        verdict = check_host_key(known, blob, target.key_name, target.fallback_name,
                                 _ip_name(peer, target) if target.check_host_ip else None)
        if verdict.status == "revoked":
            where = ", ".join(f"{e.where} ({e.hosts})" for e in verdict.lines)
            raise Unreached(f"host key of {target.key_name} ({key.get_name()} {fp}) is marked @revoked in "
                            f"known_hosts ({where}); refused", "host-key")
        if verdict.status == "changed":
            theirs = _describe(verdict.lines)
            raise Unreached(f"host key CHANGED for {target.key_name}: the server presents {key.get_name()} "
                            f"{fp}, known_hosts has {theirs}; refused (possible man-in-the-middle; "
                            f"if the host was reinstalled, fix known_hosts)", "host-key")
        if verdict.status == "ip-changed":
            theirs = _describe(verdict.lines)
            raise Unreached(f"host key of {target.key_name} ({key.get_name()} {fp}) differs from the key "
                            f"known_hosts has for its address {verdict.name}: {theirs}; refused (CheckHostIP: "
                            f"possible DNS spoofing)", "host-key")
        if verdict.status == "ok":
            return
        if not self.opts.accept_new:
            raise Unreached(f"host key of {target.key_name} is not in known_hosts ({key.get_name()} {fp}); "
                            f"refused (verify it, or run once with --accept-new-host-keys)", "host-key")
        with self._lock:
            if not known.lookup(target.key_name):
                known.add(target.key_name, blob, self.accept_file)
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


def run(transport: paramiko.Transport, command: str, timeout: float, session: Session,
        stdin: bytes = b"") -> Completed:
    """Run `command` with `stdin` as its standard input; its stdout/stderr and exit status. Unreached
    on timeout or a lost connection."""
    try:
        chan = transport.open_session(timeout=timeout)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise Unreached(session.aborted or f"cannot open an SSH session: {exc}", "command") from None
    session.adopt(chan)
    deadline = time.monotonic() + timeout
    out, err = bytearray(), bytearray()
    try:
        chan.exec_command(command)
        if stdin:
            chan.settimeout(timeout)
            try:
                chan.sendall(stdin)
            except socket.timeout:
                raise Unreached(f"the remote command did not read its input within {timeout:g} s "
                                f"(command timeout)", "timeout") from None
            except OSError:
                pass  # it exited without reading all of it: its status and stderr say why
        chan.shutdown_write()
        while True:
            while chan.recv_ready():
                out += chan.recv(1 << 17)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(1 << 16)
                if len(err) > MAX_STDERR:  # only its end is ever shown (the error message)
                    del err[:-MAX_STDERR]
            if len(out) > MAX_OUTPUT:
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


class KnownHostEntry:
    """One usable known_hosts line: its marker, host field as written, and key (type and public blob)."""

    __slots__ = ("path", "lineno", "marker", "hosts", "keytype", "blob", "_subs", "_salt", "_hash")

    def __init__(self, path: str, lineno: int | None, marker: str, hosts: str, keytype: str, blob: bytes):
        self.path, self.lineno, self.marker, self.hosts = path, lineno, marker, hosts
        self.keytype, self.blob = keytype, blob
        self._subs: list | None = None
        self._salt = self._hash = None
        if hosts.startswith("|"):
            self._salt, self._hash = _parse_hashed(hosts)  # ValueError: the line is unusable
        else:
            self._subs = _compile_patterns(hosts)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.lineno}" if self.lineno else self.path

    @property
    def fingerprint(self) -> str:
        return _sha256_fingerprint(self.blob)

    def matches(self, name: str) -> bool:
        """OpenSSH's match_maybe_hashed(): `name` (lower case) against this line's host field."""
        if self._subs is None:
            digest = hmac.new(self._salt, name.encode(), hashlib.sha1).digest()
            return hmac.compare_digest(self._hash, base64.b64encode(digest).decode())
        got = False
        for negated, regex in self._subs:
            if regex is None:  # a sub-pattern too long for OpenSSH's buffer: the list does not match
                return False
            if regex.fullmatch(name):
                if negated:
                    return False  # a negated match makes the whole line not apply
                got = True
        return got


def match_hostname(name: str, patterns: str) -> bool:
    """True if `name` matches the comma-separated OpenSSH pattern list `patterns` (as match_hostname()
    == 1 in OpenSSH's match.c: `*`, `?`, `!` negation winning over any positive match, case-insensitive)."""
    return KnownHostEntry("", None, "", patterns, "", b"").matches(_lower(name))


class KnownHosts:
    """The lines of a set of known_hosts files, read as OpenSSH's hostkeys_foreach() reads them: line by
    line, a line it cannot use (bad marker, truncated, broken key, bad hash) costs that line only."""

    def __init__(self, entries: list | None = None):
        self.entries: list[KnownHostEntry] = list(entries or [])
        self._cache: dict[str, list] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, files: list) -> KnownHosts:
        entries: list[KnownHostEntry] = []
        for f in files:
            if os.path.exists(f):
                try:
                    entries += _parse_known_hosts(f)
                except OSError as exc:
                    log.warning("%s: cannot read known hosts: %s", f, exc)
        return cls(entries)

    def lookup(self, name: str | None) -> list:
        """The unmarked lines (neither @revoked nor @cert-authority) whose host field matches `name`."""
        if not name:
            return []
        name = _lower(name)
        with self._lock:
            hit = self._cache.get(name)
            if hit is None:
                hit = [e for e in self.entries if not e.marker and e.matches(name)]
                self._cache[name] = hit
            return list(hit)

    def revoked(self, blob: bytes) -> list:
        """Every @revoked line holding this key, whatever host it names."""
        return [e for e in self.entries if e.marker == "@revoked" and e.blob == blob]

    def add(self, name: str, blob: bytes, path: str) -> None:
        entry = KnownHostEntry(path, None, "", _lower(name), _blob_type(blob), blob)
        with self._lock:
            self.entries.append(entry)
            self._cache.clear()


@dataclass
class Verdict:
    status: str   # ok, new, changed, revoked, ip-changed
    lines: list   # the known_hosts lines the verdict rests on
    name: str     # the name they were looked up by


def check_host_key(known: KnownHosts, blob: bytes, name: str, fallback: str | None = None,
                   ip_name: str | None = None) -> Verdict:
    """The verdict on the public key `blob` presented by the host known as `name` (OpenSSH's
    check_host_key() with strict checking): revoked, else ok if any line for `name` holds the key,
    changed if lines for `name` exist but none holds it, else ok through `fallback` (the port-less name)
    holding it, else new. `ip_name` (CheckHostIP): lines for the address that all hold other keys make an
    ok or new host ip-changed."""
    revoked = known.revoked(blob)
    if revoked:
        return Verdict("revoked", revoked, name)
    lines = known.lookup(name)
    same = [e for e in lines if e.blob == blob]
    if same:
        verdict = Verdict("ok", same[:1], name)
    elif lines:
        return Verdict("changed", lines, name)
    else:
        via = [e for e in known.lookup(fallback) if e.blob == blob]
        verdict = Verdict("ok", via[:1], fallback) if via else Verdict("new", [], name)
    if ip_name:
        at_ip = known.lookup(ip_name)
        if at_ip and not any(e.blob == blob for e in at_ip):
            return Verdict("ip-changed", at_ip, ip_name)
    return verdict


def _parse_known_hosts(path: str) -> list:
    entries = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for no, raw in enumerate(fh, 1):
            line = raw.rstrip("\n").lstrip(" \t")
            if not line or line.startswith("#"):
                continue
            fields = line.replace("\t", " ").split()
            marker = ""
            if fields[0].startswith("@"):
                marker = fields.pop(0)
                if marker not in ("@revoked", "@cert-authority") or (fields and fields[0].startswith("@")):
                    log.warning("%s, line %d: invalid marker %s", path, no, marker)
                    continue
            if len(fields) < 3 or fields[1].startswith("#"):
                log.warning("%s, line %d: truncated known_hosts entry", path, no)
                continue
            hosts, keytype, b64 = fields[0], fields[1], fields[2]
            try:
                blob = base64.b64decode(b64, validate=True)
                inner = _blob_type(blob)
                if _key_family(inner) != _key_family(keytype):  # as sshkey_read(): the blob must be that type
                    raise ValueError(f"the key is not of type {keytype}")
                entries.append(KnownHostEntry(path, no, marker, hosts, inner, blob))
            except (binascii.Error, ValueError) as exc:
                log.warning("%s, line %d: unreadable known_hosts entry (%s)", path, no, exc)
    return entries


def _blob_type(blob: bytes) -> str:
    """The key type an SSH public key blob starts with (uint32 length, then the name)."""
    if len(blob) < 4:
        raise ValueError("the key is truncated")
    n = int.from_bytes(blob[:4], "big")
    if n == 0 or n > 256 or len(blob) < 4 + n:
        raise ValueError("the key is truncated")
    return blob[4:4 + n].decode("ascii", errors="replace")


def _parse_hashed(field: str) -> tuple:
    """Salt and expected digest of a hashed name `|1|<base64 salt>|<base64 HMAC-SHA1>` (hostfile.c
    host_hash(): the salt must be 20 bytes; the field is compared as a whole, so one name per line)."""
    parts = field.split("|")
    if len(parts) != 4 or parts[1] != "1":
        raise ValueError("bad hashed host name")
    try:
        salt = base64.b64decode(parts[2], validate=True)
    except binascii.Error:
        raise ValueError("bad hashed host name salt") from None
    if len(salt) != 20:
        raise ValueError("bad hashed host name salt")
    # OpenSSH compares against its own encoding of salt and digest: a non-canonical salt never matches
    if base64.b64encode(salt).decode() != parts[2]:
        return salt, "\0"
    return salt, parts[3]


def _compile_patterns(field: str) -> list:
    subs = []
    for sub in field.split(","):
        negated = sub.startswith("!")
        if negated:
            sub = sub[1:]
        if len(sub) >= 1023:  # match.c's 1024-byte buffer
            subs.append((negated, None))
            continue
        rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in _lower(sub))
        subs.append((negated, re.compile(rx, re.DOTALL)))
    return subs


_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _lower(s: str) -> str:
    return s.translate(_LOWER)  # ASCII only, as OpenSSH's tolower() in the C locale


def _ip_name(peer: str | None, target: Target) -> str | None:
    """The known_hosts name of the connected address for CheckHostIP, or None where OpenSSH does not
    check it: through a jump host, to a loopback address, or when the host was named by that address."""
    if not peer or target.proxyjump or peer == target.hostname:
        return None
    try:
        if ipaddress.ip_address(peer.split("%")[0]).is_loopback:
            return None
    except ValueError:
        return None
    return peer if target.port == 22 else f"[{peer}]:{target.port}"


def _describe(lines: list) -> str:
    """The known_hosts lines a refusal rests on, with their keys and where they stand."""
    return "; ".join(f"{e.keytype} {e.fingerprint} at {e.where} ({e.hosts})" for e in lines)


def _handshake_failure(exc: BaseException, transport: paramiko.Transport, timeout: float) -> str:
    """Why a handshake failed, never an empty string (paramiko's EOFError and timeouts carry no text)."""
    text = str(exc)
    if not getattr(transport, "remote_version", ""):
        if "Indecipherable" in text:  # it spoke, but not SSH (a web server, a database)
            return f"not an SSH server: {text}"
        if isinstance(exc, EOFError) or "EOF" in text or "reset" in text.lower():
            return "the server closed the connection before sending its SSH banner"
        return (f"no SSH banner within {timeout:g} s (the port accepts TCP connections but did not "
                f"identify itself as an SSH server)")
    return text or type(exc).__name__


def _sha256_fingerprint(blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob, as ssh-keygen -l prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _key_family(name: str) -> str:
    return "ssh-rsa" if name in ("ssh-rsa", "rsa-sha2-256", "rsa-sha2-512") else name


__all__ = ["Connector", "SSHOptions", "Session", "Target", "Unreached", "Completed", "run", "KnownHosts",
           "check_host_key", "match_hostname"]
