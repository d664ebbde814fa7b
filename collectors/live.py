"""Live facts of the running host: the QEMU and libvirt processes, listening sockets, running services.
Only collected when auditing `/` (they are `not_collected` under --root).

Sources:
  processes  [{pid, name, exe, cmdline: [...], uid (effective), user, gid (effective), guest (the
             libvirt guest name from QEMU's `-name guest=...`, None for daemons), kind ("qemu" |
             "libvirt"), seccomp: int | None (the "Seccomp:" line of /proc/<pid>/status; None when the
             kernel has none), deleted_maps: [paths of executable or shared-object mappings whose file
             was deleted or replaced, from /proc/<pid>/maps]}] for QEMU processes (qemu-system-*,
             qemu-kvm, /usr/libexec/qemu-kvm) and libvirt daemons (libvirtd, virtqemud, virtproxyd,
             virtlogd, virtlockd and every other virt*d). A process that exits while being read is
             skipped; a detail that cannot be read (exe, status, maps) becomes an `unavailable` marker.
  listeners  [{proto: "tcp"|"tcp6"|"udp"|"udp6", address, port, pid (None when the owner is not
             visible, e.g. a kernel socket), process, exe, cmdline (its first 16 arguments)}] for every listening TCP socket
             and every unconnected (receiving) UDP socket, from psutil.net_connections. A socket
             without owner also gets `hidden_owners`: [{pid, name}] of the processes whose open files
             could not be read (any of them may hold it; e.g. a PID 1 another user namespace protects).
  services   {"systemd": true, "running": [unit names]} from `systemctl list-units --type=service
             --state=running`, or `not_collected` when PID 1 is not systemd (no unit states exist).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess

from vmaudit.facts import not_collected, unavailable
from vmaudit.schema import AnyJSON, Bool, Int, ListOf, Optional, Record, Str

from . import Context, collector

_QEMU = re.compile(r"^(qemu-system-[\w.-]+|qemu-kvm)$")
# libvirtd and the modular daemons (virtqemud, virtproxyd, virtlogd, virtlockd, virtnetworkd, ...).
_LIBVIRT = re.compile(r"^(libvirtd|virt[a-z]*d)$")
# comm is cut at 15 characters: "qemu-system-x86_64" shows as "qemu-system-x86"
_QEMU_COMM = re.compile(r"^qemu-system-")


def _kind(names: list[str]) -> str | None:
    for n in names:
        if _QEMU.match(n) or _QEMU_COMM.match(n):
            return "qemu"
    for n in names:
        if _LIBVIRT.match(n):
            return "libvirt"
    return None


def _guest_name(cmdline: list[str]) -> str | None:
    """libvirt starts QEMU with `-name guest=NAME,debug-threads=on` (older: `-name NAME`)."""
    for i, arg in enumerate(cmdline[:-1]):
        if arg == "-name":
            value = cmdline[i + 1]
            # QEMU option syntax: ',' separates properties and ',,' is a literal comma
            parts = re.split(r"(?<!,),(?!,)", value)
            for part in parts:
                if part.startswith("guest="):
                    return part[len("guest="):].replace(",,", ",")
            if "=" not in parts[0]:
                return parts[0].replace(",,", ",")
    return None


def _seccomp(pid: int):
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("Seccomp:"):
                    return int(line.split()[1])
        return None  # kernel built without CONFIG_SECCOMP
    except FileNotFoundError:
        raise
    except (OSError, ValueError, IndexError) as exc:
        return unavailable(f"cannot read /proc/{pid}/status: {getattr(exc, 'strerror', None) or exc}")


def deleted_maps(maps_text: str) -> list[str]:
    """Executable or shared-object mappings whose file is gone: "/usr/bin/qemu-system-x86_64 (deleted)".

    Anonymous shared memory (memfd:, /dev/shm, SYSV segments) also reads "(deleted)" and is not a stale
    binary: QEMU maps guest RAM that way.
    """
    out = set()
    for line in maps_text.splitlines():
        fields = line.split(None, 5)
        if len(fields) < 6 or not fields[5].endswith(" (deleted)"):
            continue
        perms, path = fields[1], fields[5][: -len(" (deleted)")]
        if not path.startswith("/") or path.startswith(("/memfd:", "/dev/", "/SYSV")):
            continue
        if "x" in perms or re.search(r"\.so(\.|$)", os.path.basename(path)):
            out.add(path)
    return sorted(out)


def _maps(pid: int):
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as fh:
            return deleted_maps(fh.read())
    except FileNotFoundError:
        raise
    except OSError as exc:
        return unavailable(f"cannot read /proc/{pid}/maps: {exc.strerror or exc}")


PROCESSES_SCHEMA = ListOf(Record({"pid": Int(min=0), "name": Str(), "cmdline": ListOf(Str())},
                          optional={"exe": Optional(Str()), "kind": Optional(Str()), "uid": Optional(Int()),
                                    "user": Optional(Str()), "gid": Optional(Int()), "guest": Optional(Str()),
                                    "seccomp": Optional(Int()), "deleted_maps": ListOf(AnyJSON())}))


@collector("processes", schema=PROCESSES_SCHEMA, live=True)
def collect_processes(ctx: Context) -> list:
    """(live) `[{pid, name, exe, cmdline: [...], kind ("qemu"/"libvirt"), uid, user, gid (effective), guest
    (from QEMU's -name guest=), seccomp (int from /proc/<pid>/status, null without CONFIG_SECCOMP),
    deleted_maps: [deleted executable / .so mappings]}]` for qemu-system-*, qemu-kvm and libvirtd / virt*d;
    details that cannot be read are markers, vanished processes are skipped
    """
    import psutil

    out = []
    for proc in psutil.process_iter():
        try:
            name = proc.name()
            try:
                cmdline = proc.cmdline()
            except psutil.AccessDenied:
                cmdline = []
            try:
                exe = proc.exe()
            except psutil.AccessDenied as exc:
                exe = unavailable(f"cannot read /proc/{proc.pid}/exe: {exc}")
            candidates = [name]
            if isinstance(exe, str) and exe:
                candidates.append(os.path.basename(exe.removesuffix(" (deleted)")))
            if cmdline:
                candidates.append(os.path.basename(cmdline[0]))
            kind = _kind(candidates)
            if kind is None:
                continue
            uids, gids = proc.uids(), proc.gids()
            try:
                user = proc.username()
            except (KeyError, psutil.Error):
                user = None  # uid without a passwd entry
            out.append({
                "pid": proc.pid, "name": name, "exe": exe, "cmdline": cmdline, "kind": kind,
                "uid": uids.effective, "user": user, "gid": gids.effective,
                "guest": _guest_name(cmdline) if kind == "qemu" else None,
                "seccomp": _seccomp(proc.pid), "deleted_maps": _maps(proc.pid),
            })
        except (psutil.NoSuchProcess, psutil.ZombieProcess, FileNotFoundError, ProcessLookupError):
            continue  # exited while we read it
    return sorted(out, key=lambda p: p["pid"])


def _proto(conn) -> str:
    tcp = conn.type == socket.SOCK_STREAM
    v6 = conn.family == socket.AF_INET6
    return ("tcp" if tcp else "udp") + ("6" if v6 else "")


LISTENERS_SCHEMA = ListOf(Record({"proto": Str(), "address": Str(), "port": Int(min=0, max=65535)},
                          optional={"pid": Optional(Int(min=0)), "process": Optional(Str()),
                                    "exe": Optional(Str()), "cmdline": Optional(ListOf(Str())),
                                    "hidden_owners": ListOf(Record({"pid": Int(min=0)},
                                                                   optional={"name": Optional(Str())}))}))


@collector("listeners", schema=LISTENERS_SCHEMA, live=True)
def collect_listeners(ctx: Context) -> list:
    """(live) `[{proto: tcp/tcp6/udp/udp6, address, port, pid (null: owner not visible), process, exe, cmdline
    (first 16 args)}]`: listening TCP and unconnected UDP sockets (psutil)
    """
    import psutil

    procs: dict = {}

    def owner(pid):
        if pid is None:
            return None, None, []
        if pid not in procs:
            try:
                p = psutil.Process(pid)
                name = p.name()
                try:
                    exe, cmdline = p.exe(), p.cmdline()
                except psutil.AccessDenied:
                    exe, cmdline = None, []
                # the first arguments identify a daemon (dnsmasq --conf-file=...); QEMU's run to pages
                procs[pid] = (name, exe, cmdline[:16])
            except psutil.Error:
                procs[pid] = (None, None, [])
        return procs[pid]

    seen = set()
    out = []
    for conn in psutil.net_connections(kind="inet"):
        if not conn.laddr:
            continue
        if conn.type == socket.SOCK_STREAM and conn.status != psutil.CONN_LISTEN:
            continue
        if conn.type == socket.SOCK_DGRAM and conn.raddr:
            continue  # a connected UDP socket is a client's, it receives from one peer only
        key = (_proto(conn), conn.laddr.ip, conn.laddr.port, conn.pid)
        if key in seen:
            continue  # one socket shared by several fds of a process
        seen.add(key)
        name, exe, cmdline = owner(conn.pid)
        out.append({"proto": key[0], "address": conn.laddr.ip, "port": conn.laddr.port, "pid": conn.pid,
                    "process": name, "exe": exe, "cmdline": cmdline})
    if any(s["pid"] is None for s in out):
        hidden = _hidden_owners(psutil)
        for s in out:
            if s["pid"] is None:
                s["hidden_owners"] = hidden
    return sorted(out, key=lambda s: (s["proto"], s["address"], s["port"], s["pid"] or 0))


def _hidden_owners(psutil) -> list:
    """Processes whose open files (/proc/<pid>/fd links) cannot be read: the owner of a socket psutil could
    not place may be one of them (first 10 by pid), rather than the kernel or another namespace."""
    out = []
    for pid in psutil.pids():
        try:
            for fd in os.listdir(f"/proc/{pid}/fd")[:1]:
                os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue  # exited
        except OSError:
            try:
                name = psutil.Process(pid).name()
            except psutil.Error:
                name = None
            out.append({"pid": pid, "name": name})
            if len(out) >= 10:
                break
    return out


def systemd_booted() -> bool:
    """sd_booted(3): the system was booted with systemd iff /run/systemd/system/ exists."""
    return os.path.isdir("/run/systemd/system")


SERVICES_SCHEMA = Record({"systemd": Bool()}, optional={"running": ListOf(Str())})


@collector("services", schema=SERVICES_SCHEMA, live=True, skips="always")
def collect_services(ctx: Context):
    """(live) `{systemd: true, running: [unit names]}` from `systemctl list-units --type=service
    --state=running`, or `not_collected` when PID 1 is not systemd
    """
    if not systemd_booted():
        try:
            with open("/proc/1/comm", encoding="utf-8") as fh:
                init = fh.read().strip()
        except OSError:
            init = "unknown"
        return not_collected(f"PID 1 is not systemd (it is {init!r}): no service unit states to list")
    try:
        proc = subprocess.run(
            ["systemctl", "list-units", "--type=service", "--state=running", "--no-legend", "--plain",
             "--no-pager", "--full"],
            capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        return unavailable("systemd runs but systemctl is not on PATH")
    except subprocess.TimeoutExpired:
        return unavailable("systemctl list-units did not answer within 60 s")
    if proc.returncode != 0:
        return unavailable(f"systemctl list-units failed ({proc.returncode}): {proc.stderr.strip()[:300]}")
    return {"systemd": True, "running": parse_list_units(proc.stdout)}


def parse_list_units(text: str) -> list[str]:
    """`systemctl list-units --no-legend --plain`: UNIT LOAD ACTIVE SUB DESCRIPTION per line."""
    units = []
    for line in text.splitlines():
        fields = line.split()
        # older systemd prints a "●" marker column for failed units even with --plain
        if fields and fields[0] in ("●", "*"):
            fields = fields[1:]
        if fields and fields[0].endswith(".service"):
            units.append(fields[0])
    return sorted(set(units))
