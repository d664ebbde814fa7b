"""Collecting facts from many hosts at once: one SSH session per host, a bounded pool of workers, a
watchdog that holds every host to its time budget, and Ctrl-C that keeps what was already collected.

Per host, two ways (inventory variable `vmaudit_mode`, or --mode):

* installed: run `vmaudit facts` on the host (one SSH command, nothing copied);
* agentless: in one remote command, set the exit trap that removes the directory, create a private
  directory with `mktemp -d` (mode 0700), receive the zipapp on standard input, run it with the host's
  python3 (the trap then removes the directory, also when the collector was killed mid-way);
* auto (default): installed when `vmaudit` is on the remote PATH, else agentless. Both are decided in
  the first command, so an installed host costs one round trip.

The remote answer is untrusted data: it is parsed as JSON and checked to be a facts snapshot, nothing
more. Inventory values that go into the remote command are shell-quoted.

Privilege escalation (`vmaudit_become` / `ansible_become`, or --become): the SSH user logs in, and only
the facts command runs as the become user, through `sudo -n -u USER --` or `doas -n -u USER --`. Never
interactively: a password prompt on a channel without a terminal would hang until the timeout, so sudo
is told to fail instead, and its message makes the host unreached at stage `become`. The command is
found on the SSH user's PATH first (`command -v`) and given to sudo by its path, since sudo's
secure_path rarely holds it. Another method than sudo or doas refuses the host: it is never audited
unprivileged instead, which would turn most evidence into errors that look like the host's fault.

Giving up on a slow host closes its SSH channel, but sshd does not kill a command that has no terminal:
a `vmaudit facts` stuck on a hung libvirtd would run on, and keep the agentless directory, for ever.
So the remote command runs under coreutils `timeout` (where the host has one) set a little beyond the
command timeout: it ends by itself soon after we stop waiting, and the exit trap removes the directory.
"""

from __future__ import annotations

import json
import logging
import math
import posixpath
import re
import shlex
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable

from vmaudit.facts import SnapshotError, parse_snapshot
from vmaudit.termsafe import clean_tail

from .hosts import BECOME_METHODS, FleetHost, valid_become_user
from .ssh import Connector, Session, Unreached, run

log = logging.getLogger("vmaudit.fleet")

NOT_INSTALLED = 97  # exit status of the auto-mode probe when vmaudit is not on the remote PATH
NO_BECOME = 98     # exit status of the scripts when the become program is not on the remote PATH
NO_TMPDIR = 94     # agentless: mktemp failed
SHORT_COPY = 93    # agentless: the zipapp on standard input was cut short


@dataclass
class Outcome:
    """What collecting one host gave: its facts, or the reason it could not be audited."""

    host: FleetHost
    facts: dict | None = None
    reason: str | None = None
    stage: str | None = None       # why not: connect, host-key, auth, become, command, timeout, facts, interrupted
    mode: str | None = None        # installed or agentless
    seconds: float = 0.0
    reached: bool = False          # stays True when the facts are dropped after evaluation


@dataclass
class Settings:
    mode: str | None = None              # None: each host's vmaudit_mode (default auto)
    connect: str = "qemu:///system"      # defaults for vmaudit_connect / vmaudit_root
    root: str = "/"
    concurrency: int = 16
    connect_timeout: float = 10.0
    command_timeout: float = 300.0
    become: bool = False                 # defaults for hosts whose inventory says nothing (--become ...)
    become_method: str = "sudo"
    become_user: str = "root"


@dataclass
class Become:
    """How one host's facts command is escalated."""

    method: str   # sudo or doas
    user: str

    def words(self) -> list[str]:
        # -n: fail rather than prompt; --: the command's words are never options of sudo/doas
        return [self.method, "-n", "-u", self.user, "--"]

    def prefix(self) -> str:
        return " ".join(shlex.quote(w) for w in self.words())

    def check(self) -> str:
        """Shell that stops with NO_BECOME when the method's program is missing on the host."""
        m = shlex.quote(self.method)
        return (f"command -v {m} >/dev/null 2>&1 || {{ echo 'vmaudit-collect: become: {self.method} is not "
                f"installed on the host' >&2; exit {NO_BECOME}; }}; ")


def become_for(host: FleetHost, settings: Settings) -> Become | None:
    """The host's escalation (inventory variables win over the run's defaults), None for none.

    Unreached (stage become) for a method vmaudit does not support: refused, never run unprivileged."""
    wanted = host.become
    if wanted is None:
        wanted = settings.become
    if not wanted:
        return None
    method = host.become_method or settings.become_method
    user = host.become_user or settings.become_user
    if method not in BECOME_METHODS:
        raise Unreached(f"become method {method!r} is not supported (vmaudit escalates with "
                        f"{' or '.join(BECOME_METHODS)}, non-interactively); the host is not audited rather "
                        f"than audited unprivileged", "become")
    if not valid_become_user(user):
        raise Unreached(f"become user {user!r} is not a user name", "become")
    return Become(method, user)


def facts_root(host: FleetHost, settings: Settings) -> str:
    """The root vmaudit asks the host to audit (`/`: its live system)."""
    return str(host.vars.get("vmaudit_root") or settings.root)


def facts_args(host: FleetHost, settings: Settings) -> str:
    uri = str(host.vars.get("vmaudit_connect") or settings.connect)
    root = facts_root(host, settings)
    return " ".join(shlex.quote(a) for a in ("facts", "-q", "--output", "-", "--connect", uri, "--root", root))


# Ansible's interpreter discovery keywords: not paths, they mean "find python on the host"
_ANSIBLE_AUTO = ("auto", "auto_silent", "auto_legacy", "auto_legacy_silent")
REMOTE_GRACE = 5  # seconds the remote `timeout` allows beyond the command timeout (ours fires first)


def remote_python(host: FleetHost) -> str:
    """The Python for the agentless run: vmaudit_python, else ansible_python_interpreter, else python3."""
    python = str(host.vars.get("vmaudit_python") or host.vars.get("ansible_python_interpreter") or "python3")
    return "python3" if python.strip() in _ANSIBLE_AUTO else python


def _time_bound(settings: Settings) -> str:
    """Shell that sets $t to a `timeout` prefix ending the remote command soon after we give up on it
    (empty where the host has no working timeout(1))."""
    secs = int(math.ceil(settings.command_timeout)) + REMOTE_GRACE
    return f"t=; if timeout -k 10 {secs} true >/dev/null 2>&1; then t='timeout -k 10 {secs}'; fi; "


def installed_script(host: FleetHost, settings: Settings, probe: bool, become: Become | None = None) -> str:
    words = host.command  # vmaudit_command is a command line: each word quoted, nothing left to the shell
    cmd = shlex.quote(words[0])
    rest = "".join(" " + shlex.quote(w) for w in words[1:])
    absent = (f"echo {shlex.quote(f'vmaudit-collect: {words[0]} is not on the remote PATH')} >&2; "
              f"exit {NOT_INSTALLED}")
    if become is None:
        run_it = f"{_time_bound(settings)}exec $t {cmd}{rest} {facts_args(host, settings)}"
        if not probe:
            return run_it
        return f"if command -v {cmd} >/dev/null 2>&1; then {run_it}; fi; {absent}"
    # the path as the SSH user finds it: sudo's secure_path (doas' safe path) rarely holds vmaudit
    run_it = f"{_time_bound(settings)}exec $t {become.prefix()} \"$p\"{rest} {facts_args(host, settings)}"
    missing = absent if probe else f"echo {shlex.quote(f'vmaudit: {words[0]}: not found')} >&2; exit 127"
    return f"{become.check()}if p=$(command -v {cmd}); then {run_it}; fi; {missing}"


def _sh(script: str) -> str:
    # through sh explicitly: the login shell may be csh or fish
    return "sh -c " + shlex.quote(script)


class Collector:
    """Collects the facts of one host at a time; thread-safe, shared by the pool's workers."""

    def __init__(self, connector: Connector, settings: Settings, zipapp: Callable[[], bytes]):
        self.connector = connector
        self.settings = settings
        self._zipapp = zipapp

    def collect(self, host: FleetHost, session: Session) -> Outcome:
        t0 = time.monotonic()
        out = Outcome(host)
        try:
            become = become_for(host, self.settings)  # an unsupported method: refused before connecting
            target = self.connector.resolve(host.address, host.port, host.user,
                                            host.vars.get("ansible_ssh_private_key_file"))
            transport = self.connector.connect(target, session)
            mode = self.settings.mode or host.mode
            if mode in ("auto", "installed"):
                done = run(transport, _sh(installed_script(host, self.settings, probe=True, become=become)),
                           self.settings.command_timeout, session)
                _check_become(done, become)
                if done.status == NOT_INSTALLED and b"vmaudit-collect:" in done.stderr:
                    if mode == "installed":
                        raise Unreached("vmaudit is not installed on the host (vmaudit_mode = installed)",
                                        "command")
                    mode = "agentless"
                else:
                    out.mode = "installed"
                    out.facts = _parse(done, "vmaudit facts", facts_root(host, self.settings))
                    out.reached = True
            if mode == "agentless":
                out.mode = "agentless"
                out.facts = self._agentless(transport, host, session, become)
                out.reached = True
        except Unreached as exc:
            out.facts, out.reached, out.reason, out.stage = None, False, str(exc), exc.stage
        except (EOFError, OSError) as exc:  # a connection failure paramiko did not wrap
            out.facts, out.reached, out.stage = None, False, "connect"
            out.reason = session.aborted or f"connection failed: {type(exc).__name__}: {exc}"
        except Exception as exc:
            if type(exc).__module__.startswith("paramiko"):
                out.facts, out.reached, out.stage = None, False, "connect"
                out.reason = session.aborted or f"SSH failed: {exc or type(exc).__name__}"
            else:
                raise
        finally:
            out.seconds = round(time.monotonic() - t0, 3)
            session.close()
        return out

    def _agentless(self, transport, host: FleetHost, session: Session, become: Become | None = None) -> dict:
        if become is not None and become.user not in ("root", "#0"):
            # the private directory is the SSH user's (0700): only root can read the zipapp there
            raise Unreached(f"agentless collection can become root only, not {become.user!r} (the zipapp's "
                            f"private directory is readable by the SSH user alone); install vmaudit on the host "
                            f"or become root", "become")
        python = remote_python(host)
        run_py = f"$t {shlex.quote(python)}"
        if become is not None:
            # escalated, the zipapp unpacks psutil as the directory's owner (zipapp.py), so the SSH
            # user's exit trap removes everything even after root's run was killed: no `sudo rm`,
            # which a rule allowing the zipapp alone refuses (and sudo logs as an incident)
            run_py = (f"p=$(command -v {shlex.quote(python)}) || exit 127; "
                      f"$t {become.prefix()} \"$p\"")
        zipapp = self._zipapp()
        done = run(transport, _sh(agentless_script(host, self.settings, become, len(zipapp), run_py)),
                   self.settings.command_timeout, session, stdin=zipapp)
        if done.status == 127:
            raise Unreached(f"agentless: {python} not found on the host", "command")
        _check_become(done, become)
        if done.status in (NO_TMPDIR, SHORT_COPY) and b"vmaudit-collect: agentless:" in done.stderr:
            raise Unreached(_tail(done.stderr).replace("vmaudit-collect: ", ""), "command")
        return _parse(done, "the vmaudit zipapp", facts_root(host, self.settings))


def agentless_script(host: FleetHost, settings: Settings, become: Become | None, size: int, run_py: str) -> str:
    """One remote command: make the private directory, receive the zipapp on standard input, run it.

    The exit trap is set before the directory exists: whenever the shell ends (the zipapp done or
    killed, the upload cut short because the collector died, HUP or TERM), the directory goes with it.
    A directory made by one command and filled by the next would be left behind by a collector killed
    between the two. PIPE is ignored: once we are gone, sh reporting a killed child on the closed
    channel would otherwise die of SIGPIPE without running its EXIT trap."""
    check = become.check() if become is not None else ""
    return (f"d=; trap 'rm -rf \"$d\"' EXIT; trap 'exit 129' HUP; trap 'exit 143' TERM; trap '' PIPE; "
            f"{check}"
            f"d=$(umask 077 && mktemp -d \"${{TMPDIR:-/tmp}}/vmaudit.XXXXXXXXXX\") && [ -n \"$d\" ] || "
            f"{{ d=; echo 'vmaudit-collect: agentless: cannot create a private temporary directory' >&2; "
            f"exit {NO_TMPDIR}; }}; "
            f"cat > \"$d/vmaudit.pyz\" && [ $(($(wc -c < \"$d/vmaudit.pyz\"))) -eq {size} ] || "
            f"{{ echo 'vmaudit-collect: agentless: the zipapp arrived incomplete' >&2; exit {SHORT_COPY}; }}; "
            f"{_time_bound(settings)}"
            f"{run_py} \"$d/vmaudit.pyz\" {facts_args(host, settings)}")


# sudo's refusals that carry no "sudo:" prefix: a command the rules do not allow; no rule for this
# host (1.9: "U is not allowed to run sudo on H.", 1.8: "Sorry, user U may not run sudo on H."); no
# rule at all (also only where the user need not authenticate: else "a password is required" first)
_SUDO_REFUSED = re.compile(r"^(Sorry, user \S+ (is not allowed to execute|may not run sudo on) "
                           r"|\S+ is not (allowed to run sudo on|in the sudoers file))")


def _check_become(done, become: Become | None) -> None:
    """Unreached (stage become) when sudo/doas refused to run the command or is missing.

    sudo exits 1 with its own "sudo: ..." line when it does not run the command (a password is
    required, no tty under requiretty); doas likewise with "doas: ...". Where the user need not
    authenticate (`Defaults:U !authenticate`), sudo refuses a command its rules do not allow without
    the prefix (_SUDO_REFUSED). A command that ran and failed ends its stderr with its own words."""
    if become is None or done.status == 0:
        return
    text = done.stderr.decode(errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    marker = "vmaudit-collect: become: "
    if done.status == NO_BECOME and lines and lines[-1].startswith(marker):
        raise Unreached(f"privilege escalation failed: {lines[-1][len(marker):]}", "become")
    refused = lines and (lines[-1].startswith(become.method + ":")
                         or (become.method == "sudo" and _SUDO_REFUSED.match(lines[-1]) is not None))
    if done.status == 1 and refused:
        why = lines[-1][:300]
        hint = ""
        if "password" in why.lower() or "authoriz" in why.lower() or "authentic" in why.lower():
            hint = (f" (vmaudit never prompts: let the SSH user run the command with {become.method} "
                    f"without a password)")
        elif _SUDO_REFUSED.match(why):
            hint = f" (the SSH user's sudo rules do not allow this command as {become.user})"
        raise Unreached(f"privilege escalation failed: {become.method} -n -u {become.user}: {why}{hint}",
                        "become")


def _tail(data: bytes, limit: int = 300) -> str:
    """The end of a remote process's stderr as one clean line (its last three non-empty lines)."""
    text = bytes(data[-4 * limit:]).decode(errors="replace").strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return clean_tail(" | ".join(lines[-3:]), limit)


def _parse(done, what: str, root: str) -> dict:
    """The snapshot the host answered with, asked to audit `root`; Unreached (stage facts) if it is not one."""
    if done.status != 0:
        raise Unreached(f"{what} exited with status {done.status}: {_tail(done.stderr) or 'no message'}",
                        "command")
    try:
        # the facts contract's limits and envelope; the sources are held to their schemas (a wrong type
        # becomes a marker naming its path) when the host is evaluated: Facts(data)
        data = parse_snapshot(done.stdout, what)
    except SnapshotError as exc:
        raise Unreached(f"{exc}; stderr: {_tail(done.stderr)}" if "JSON" in str(exc) else str(exc),
                        "facts") from None
    host = data["host"]
    if posixpath.normpath(root) == "/" and (host.get("live") is not True or host.get("root") != "/"):
        # a snapshot that is not live skips every live and sysfs fact (skips do not fail the exit
        # status): not an answer to "audit your running system"
        raise Unreached(f"{what}: asked for the live system (root /), the host answered with facts of root "
                        f"{str(host.get('root'))[:200]!r} (live: {json.dumps(host.get('live'))})", "facts")
    return data


def collect_all(hosts: list[FleetHost], collector: Collector, settings: Settings,
                on_done: Callable[[Outcome], None] | None = None) -> tuple[list[Outcome], bool]:
    """Collect every host with at most `settings.concurrency` at a time.

    Returns the outcomes in inventory order and whether the run was interrupted (Ctrl-C): hosts not
    finished by then are reported unreached with that reason, everything collected is kept.
    """
    # connect: TCP + banner + key exchange + authentication, each bounded; then the command(s)
    budget = 4 * settings.connect_timeout + settings.command_timeout
    results: dict[str, Outcome] = {}
    started: dict[str, float] = {}
    sessions: dict[str, Session] = {}
    lock = threading.Lock()

    def work(host: FleetHost) -> Outcome:
        session = Session()
        with lock:
            if host.name in results:     # given up before it started (Ctrl-C)
                return results[host.name]
            sessions[host.name] = session
            started[host.name] = time.monotonic()
        return collector.collect(host, session)

    def finish(outcome: Outcome) -> None:
        with lock:
            if outcome.host.name in results:
                return
            results[outcome.host.name] = outcome
        if on_done is not None:
            on_done(outcome)

    interrupted = False
    pool = ThreadPoolExecutor(max_workers=max(1, settings.concurrency), thread_name_prefix="vmaudit-ssh")
    futures: dict[Future, FleetHost] = {pool.submit(work, h): h for h in hosts}
    pending = set(futures)
    try:
        while pending:
            done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            for fut in done:
                host = futures[fut]
                try:
                    finish(fut.result())
                except Exception as exc:  # a defect must not lose the other hosts
                    log.exception("%s: collection failed", host.name)
                    finish(Outcome(host, reason=f"internal error: {type(exc).__name__}: {exc}", stage="internal"))
            now = time.monotonic()
            with lock:
                overdue = [(n, s) for n, s in started.items() if n not in results and now - s > budget]
            for name, _ in overdue:
                reason = (f"no result within {budget:g} s (4 x connect timeout {settings.connect_timeout:g} s "
                          f"+ command timeout {settings.command_timeout:g} s); abandoned")
                sessions[name].abort(reason)
                host = next(h for h in hosts if h.name == name)
                finish(Outcome(host, reason=reason, stage="timeout", seconds=round(now - started[name], 3)))
    except KeyboardInterrupt:
        interrupted = True
        with lock:
            running = [n for n in sessions if n not in results]
        for fut in pending:
            fut.cancel()
        for h in hosts:
            if h.name not in results:
                was_running = h.name in running
                if was_running:
                    sessions[h.name].abort("interrupted (Ctrl-C)")
                finish(Outcome(h, reason="interrupted (Ctrl-C) " + ("while collecting" if was_running
                                                                      else "before the host was collected"),
                               stage="interrupted"))
    finally:
        pool.shutdown(wait=not interrupted, cancel_futures=True)
    return [results[h.name] for h in hosts], interrupted


__all__ = ["Outcome", "Settings", "Become", "Collector", "collect_all", "become_for", "facts_args",
           "installed_script", "remote_python", "NOT_INSTALLED", "NO_BECOME"]
