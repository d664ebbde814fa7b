"""Collectors: each gathers one named source of facts from libvirt or the host, before any check runs.

A collector is a function `(ctx: Context) -> JSON-serialisable value`, registered with `@collector`
together with the schema of what it returns (vmaudit.schema): the one declaration of that source's
shape, which every snapshot is held to when it is evaluated and docs/architecture.md is generated from.
It never raises for evidence it cannot get: it returns `unavailable(reason)` (or lets an OSError /
libvirt error escape, which `collect()` records the same way). `live=True` collectors read the running
system (processes, sockets, units) and are recorded `not_collected` when auditing a `--root` other
than `/`. Modules in this package register themselves when imported; `collect()` imports them all.
"""

from __future__ import annotations

import errno
import importlib
import os
import pkgutil
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from vmaudit import __version__
from vmaudit.facts import SCHEMA, not_collected, unavailable
from vmaudit.schema import Schema


@dataclass(frozen=True)
class Collector:
    name: str
    func: Callable[[Context], Any]
    schema: Schema
    live: bool = False
    # when the collector itself may record the whole source `not_collected` (see may_skip)
    skips: str = "never"

    def may_skip(self, live: bool) -> bool:
        """Whether `{"not_collected": ...}` is a state this source can be in, in a snapshot whose
        host is `live` or not. Anywhere else the marker is a broken or hostile agent's: a skip does
        not count against the exit status, so Facts() turns it into missing evidence (`error`)."""
        return self.skips == "always" or (not live and (self.live or self.skips == "offline"))


# Collector.skips: "never"; "offline" (a file-system image has no such state: sysfs sources);
# "always" (a live host may lack it too: services without systemd, pending updates without --online)
SKIPS = ("never", "offline", "always")

COLLECTORS: dict[str, Collector] = {}


def collector(name: str, *, schema: Schema, live: bool = False, skips: str = "never") -> Callable:
    """Register `func` as the collector of source `name`, whose value has the shape `schema` (a marker
    is allowed at every position; `not_collected` only for the whole source, as `skips` says)."""
    if not isinstance(schema, Schema):
        raise TypeError(f"collector {name}: schema must be a vmaudit.schema.Schema")
    if skips not in SKIPS:
        raise ValueError(f"collector {name}: skips must be one of {SKIPS}")

    def register(func: Callable) -> Callable:
        if name in COLLECTORS and COLLECTORS[name].func.__qualname__ != func.__qualname__:
            raise ValueError(f"collector {name} registered twice")
        COLLECTORS[name] = Collector(name, func, schema, live, skips)
        return func
    return register


_SCHEMAS: dict[str, Schema] = {}


def source_schemas() -> dict[str, Schema]:
    """Every source's declared schema (the collectors are imported once)."""
    if not _SCHEMAS:
        _SCHEMAS.update((name, col.schema) for name, col in load_collectors().items())
    return _SCHEMAS


_SKIPPABLE: dict[tuple, frozenset] = {}


def skippable_sources(live: bool, libvirt: str | None = None) -> frozenset:
    """The sources that may be `not_collected` as a whole in a snapshot whose host is `live` or not,
    with `libvirt` as host.libvirt says: on a host without libvirt, every libvirt source (LIBVIRT_SOURCES)."""
    key = (live, libvirt == "absent")
    if key not in _SKIPPABLE:
        names = {name for name, col in load_collectors().items() if col.may_skip(live)}
        if libvirt == "absent":
            names.update(LIBVIRT_SOURCES)
        _SKIPPABLE[key] = frozenset(names)
    return _SKIPPABLE[key]


class Absent:
    """Returned by Context.read() for a file that does not exist (often meaningful: defaults apply)."""

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = Absent()


@dataclass
class Context:
    """Where and how to collect: the audited root, whether the system is live, the libvirt URI."""

    root: Path = Path("/")
    uri: str | None = "qemu:///system"  # None: contact no libvirt (--root without --connect)
    live: bool = True
    online: bool = False  # --online: collectors may ask the package manager (slow, may use the network)
    _conn: Any = field(default=None, repr=False)
    _conn_error: str | None = field(default=None, repr=False)
    _resolved_dirs: dict = field(default_factory=dict, repr=False, compare=False)  # guest_paths' memo
    _shared: dict = field(default_factory=dict, repr=False, compare=False)  # see once()

    def path(self, path: str) -> Path:
        """`path` (absolute, as on the audited host) under the audited root, its directories' symlinks
        resolved inside the root, the last component left as it is (so islink/readlink see it)."""
        return self._walk(path, follow_last=False)

    def resolve(self, path: str) -> Path:
        """Like path(), with a symlink in the last component followed too (inside the root)."""
        return self._walk(path, follow_last=True)

    def _walk(self, path: str, follow_last: bool) -> Path:
        # Under another root an absolute symlink (/var/run -> /run, /etc/alternatives/...) means that
        # root's file, as it would inside a chroot: never the auditing host's.
        if str(self.root) == "/":
            return Path(path)  # the kernel resolves links on the live host
        todo = [p for p in path.split("/") if p not in ("", ".")]
        done: list[str] = []
        links = 0
        while todo:
            name = todo.pop(0)
            if name == "..":
                if done:
                    done.pop()
                continue
            candidate = self.root.joinpath(*done, name)
            if (todo or follow_last) and candidate.is_symlink():
                links += 1
                if links > 40:
                    raise OSError(errno.ELOOP, "Too many levels of symbolic links", path)
                target = os.readlink(candidate)
                if target.startswith("/"):
                    done = []
                todo = [p for p in target.split("/") if p not in ("", ".")] + todo
                continue
            done.append(name)
        return self.root.joinpath(*done)

    def read(self, path: str, *, binary: bool = False) -> Any:
        """The file's text; ABSENT if it does not exist; raises OSError for any other failure."""
        p = self.resolve(path)
        try:
            return p.read_bytes() if binary else p.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ABSENT
        except NotADirectoryError:
            return ABSENT

    def read_fact(self, path: str, absent: Any = None) -> Any:
        """Like read(), but a read failure becomes an `unavailable` marker naming the file."""
        try:
            text = self.read(path)
        except OSError as exc:
            return unavailable(f"cannot read {path}: {exc.strerror or exc}")
        if text is ABSENT:
            return absent
        return text

    def listdir(self, path: str) -> list[str] | Absent:
        try:
            return sorted(os.listdir(self.resolve(path)))
        except (FileNotFoundError, NotADirectoryError):
            return ABSENT

    def exists(self, path: str) -> bool:
        return os.path.lexists(self.path(path))

    def mtime(self, path: str) -> float | None:
        try:
            return self.resolve(path).stat().st_mtime
        except FileNotFoundError:
            return None

    def once(self, key: str, make: Callable[[], Any]) -> Any:
        """make()'s value, computed once per collection: for reads that several sources share (every
        guest's definitions feed both `libvirt` and `guest_paths`). A failure is not kept: the next
        source that asks tries again and records its own error."""
        if key not in self._shared:
            self._shared[key] = make()
        return self._shared[key]

    def libvirt(self) -> Any:
        """The read-only libvirt connection, opened once; raises ConnectionError with the reason."""
        if self.uri is None:  # auditing an image: the auditing host's libvirt is not the image's
            raise ConnectionError(f"no libvirt is contacted when auditing root {self.root} without --connect")
        if self._conn is None and self._conn_error is None:
            try:
                import libvirt
            except ImportError as exc:
                self._conn_error = f"the libvirt Python binding is not installed ({exc})"
            else:
                libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # no stderr noise
                try:
                    self._conn = libvirt.openReadOnly(self.uri)
                except libvirt.libvirtError as exc:
                    self._conn_error = f"cannot connect to {self.uri}: {exc.get_error_message() or exc}"
        if self._conn is None:
            raise ConnectionError(self._conn_error)
        return self._conn

    def close(self) -> None:
        """Close the libvirt connection and drop what once() kept (the guests' definitions are in the
        snapshot by now; a collector's recursive closure may keep this object alive in a cycle)."""
        self._shared.clear()
        self._resolved_dirs.clear()
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None


# Sources that only mean something where libvirt is installed: on a host without any libvirt (a
# Proxmox node runs QEMU without it) they are `not_collected`, so the checks reading them say `skip`.
LIBVIRT_SOURCES = ("libvirt", "libvirt_config", "daemon_env", "systemd_units", "guest_files",
                   "libvirt_hooks", "libvirt_sockets", "guest_paths")

# What an installed libvirt leaves under a root: its daemons, their units, its configuration, its sockets.
LIBVIRT_TRACES = (
    "/usr/sbin/libvirtd", "/usr/sbin/virtqemud", "/usr/sbin/virtproxyd", "/usr/local/sbin/libvirtd",
    "/usr/local/sbin/virtqemud", "/etc/libvirt", "/etc/init.d/libvirtd", "/etc/init.d/libvirt-bin",
    *(f"{d}/{u}" for d in ("/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")
      for u in ("libvirtd.service", "libvirtd.socket", "virtqemud.service", "virtqemud.socket",
                "virtproxyd.socket")),
    "/run/libvirt/libvirt-sock", "/run/libvirt/virtqemud-sock", "/var/run/libvirt/libvirt-sock",
)


def libvirt_traces(ctx: Context) -> list[str]:
    """The paths of LIBVIRT_TRACES present under the root (empty: libvirt is not installed there)."""
    found = []
    for path in LIBVIRT_TRACES:
        try:
            if ctx.exists(path):
                found.append(path)
        except OSError:
            found.append(path)  # unreadable is not proof of absence
    return found


def _local_uri(uri: str | None) -> bool:
    """A URI served by a daemon of the audited host itself (qemu:///system, not qemu+ssh://host/ nor
    the in-process test driver): only then does its absence say anything about the host."""
    if uri is None:
        return True
    scheme, sep, rest = uri.partition("://")
    return bool(sep) and scheme in ("qemu", "qemu+unix") and rest.startswith("/")


def libvirt_state(ctx: Context, libvirt_value: Any) -> str:
    """host.libvirt where libvirt is installed: "offline" (the image's definitions read from files,
    no daemon contacted), "reachable" or "unreachable"."""
    if ctx.uri is None:
        return "offline"
    if isinstance(libvirt_value, dict) and len(libvirt_value) == 1 and "unavailable" in libvirt_value:
        return "unreachable"
    return "reachable"


def load_collectors() -> dict[str, Collector]:
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")
    return dict(sorted(COLLECTORS.items()))


def _error_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename:
        return f"cannot read {exc.filename}: {exc.strerror or exc}"
    if type(exc).__name__ == "libvirtError":
        return f"libvirt: {exc.get_error_message() if hasattr(exc, 'get_error_message') else exc}"
    if isinstance(exc, ConnectionError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


LIBVIRT_ABSENT = ("libvirt is not installed on this host (no daemon binary, unit, configuration or "
                  "socket): nothing for libvirt's checks to judge")


def _answers(ctx: Context) -> bool:
    """Whether the (local) libvirt URI answers after all, when nothing of libvirt shows under the root
    (a daemon installed somewhere unusual); never asked without a URI."""
    if ctx.uri is None:
        return False
    try:
        ctx.libvirt()
    except ConnectionError:
        return False
    return True


def _hostname(ctx: Context) -> str:
    """This host's name; under another root, the root's /etc/hostname, else what its libvirt says.
    (libvirt's getHostname() may wait on DNS, so it is asked only when nothing else tells.)"""
    if ctx.live:
        return socket.gethostname()
    text = ctx.read_fact("/etc/hostname")
    if isinstance(text, str) and text.strip():
        return text.strip()
    if ctx._conn is not None:
        try:
            return ctx._conn.getHostname()
        except Exception:
            pass
    return "unknown"


def collect(ctx: Context, only: list[str] | None = None) -> dict:
    """Run every collector and return one facts snapshot (see vmaudit.facts)."""
    collectors = load_collectors()
    started = time.time()
    sources: dict[str, Any] = {}
    timings: dict[str, float] = {}
    traces = libvirt_traces(ctx)
    absent = not traces and _local_uri(ctx.uri) and not _answers(ctx)
    # libvirt first: it fetches every guest's definitions, which guest_paths then shares (ctx.once),
    # so each source's timing is its own
    for name, col in sorted(collectors.items(), key=lambda item: item[0] != "libvirt"):
        if only is not None and name not in only:
            continue
        t0 = time.perf_counter()
        if absent and name in LIBVIRT_SOURCES:
            sources[name] = not_collected(LIBVIRT_ABSENT)
        elif col.live and not ctx.live:
            sources[name] = not_collected(f"live fact, not collected when auditing root {ctx.root}")
        else:
            try:
                sources[name] = col.func(ctx)
            except Exception as exc:  # recorded as missing evidence; the audit goes on
                sources[name] = unavailable(_error_reason(exc))
        timings[name] = round(time.perf_counter() - t0, 4)
    hostname = _hostname(ctx)
    ctx.close()
    return {
        "schema": SCHEMA,
        "tool": {"name": "vmaudit", "version": __version__},
        "collected_at": datetime.fromtimestamp(started, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": {"hostname": hostname,
                 "root": str(ctx.root), "live": ctx.live, "libvirt_uri": ctx.uri,
                 "libvirt": "absent" if absent else libvirt_state(ctx, sources.get("libvirt"))},
        "sources": dict(sorted(sources.items())),
        "timings": dict(sorted(timings.items())),
    }
