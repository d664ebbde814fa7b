"""M3: what a guest's devices open on the host — the image files QEMU reads and writes (and who else
can), consoles (VNC/SPICE) and character devices listening on the network, host directories shared
into the guest, memory shared with the host or other guests.

Sources: libvirt (domain XML); guest_paths (collectors/guest_paths.py: stat of every file and directory
a guest names); accounts (collectors/access.py: owner and group names, login accounts); libvirt_config
(qemu.conf user, group, chardev_tls, chardev_tls_x509_verify); os_release (the distro's QEMU user).
"""

from __future__ import annotations

import posixpath
import stat
from functools import lru_cache
from typing import Any

from vmaudit.checks._cache import per_snapshot
from vmaudit.checks._net import loopback
from vmaudit.checks._qemu import conf_value, distro_ids, distro_qemu_default, qemu_conf
from vmaudit.checks._xml import find_all, find_first
from vmaudit.collectors.guest_paths import definition_file_refs
from vmaudit.engine import Result, check
from vmaudit.facts import EvidenceMissing, NotApplicable, lookup, need, partial

RANK = {"pass": 0, "error": 1, "warn": 2, "fail": 3}

# uid of the first ordinary account (login.defs UID_MIN on Debian, RHEL, SUSE) and nobody's
UID_MIN = 1000
NOBODY = 65534
NO_LOGIN_SHELLS = ("nologin", "false", "sync", "halt", "shutdown")


# --- accounts and the QEMU user --------------------------------------------------------------------


def _id_of(name: str | None, table: dict) -> int | None:
    """A uid/gid from a DAC label part: "+N" is the number itself, else the entry of that name."""
    if name is None:
        return None
    if name.startswith("+") and name[1:].isdigit():
        return int(name[1:])
    return next((i for i, e in table.items() if e.get("name") == name), None)


class Accounts:
    """uid/gid -> names and login accounts of the audited host; empty when /etc/passwd or /etc/group
    could not be read (the reason is kept: a rule needing a name then cannot decide)."""

    def __init__(self, facts):
        self.users: dict[int, dict] = {}
        self.groups: dict[int, dict] = {}
        self.missing: str | None = None
        try:
            acc = facts.source("accounts")
            passwd = need(acc.get("passwd"), "/etc/passwd")
            group = need(acc.get("group"), "/etc/group")
        except (EvidenceMissing, NotApplicable) as exc:
            self.missing = str(exc)
            return
        for _i, p, gap in partial(passwd):
            if gap is None:  # an unreadable line costs that account only
                self.users.setdefault(p["uid"], p)
        for _i, g, gap in partial(group):
            if gap is None:
                self.groups.setdefault(g["gid"], g)

    def user(self, uid: Any) -> str:
        return str(self.users[uid]["name"]) if uid in self.users else str(uid)

    def group(self, gid: Any) -> str:
        return str(self.groups[gid]["name"]) if gid in self.groups else str(gid)

    def uid_of(self, name: str | None) -> int | None:
        return _id_of(name, self.users)

    def gid_of(self, name: str | None) -> int | None:
        return _id_of(name, self.groups)

    def login_account(self, uid: Any) -> bool:
        """An ordinary person's account: uid from UID_MIN, not nobody, with a login shell."""
        p = self.users.get(uid)
        if p is None or not isinstance(uid, int) or uid < UID_MIN or uid == NOBODY:
            return False
        return str(p.get("shell") or "").rsplit("/", 1)[-1] not in NO_LOGIN_SHELLS


def qemu_account(facts) -> dict:
    """The user and group QEMU runs as: qemu.conf, else the distro's build default (None: unknown),
    and the distro family."""
    try:
        values, _present = qemu_conf(facts)
    except (EvidenceMissing, NotApplicable):
        values = {}
    ids = distro_ids(facts)
    default = distro_qemu_default(ids) or (None, None)
    debian = any(i in ("debian", "ubuntu") for i in ids)
    return {"user": values.get("user") or default[0], "group": values.get("group") or default[1],
            "debian": debian}


# --- M3-IMAGE-PERMS --------------------------------------------------------------------------------

def _follow(paths, path: str) -> tuple[str, dict | None, str | None]:
    """(resolved path, its stat entry, None) following recorded links, or (path, None, why not)."""
    for _hop in range(40):
        entry, gap = lookup(paths, path)
        if gap is not None:
            return path, None, getattr(gap, "reason", str(gap))
        if entry is None:
            return path, None, "not in the snapshot (defined after collection?)"
        if entry["type"] != "link":
            return path, entry, None
        target, gap = lookup(entry, "target")
        if gap is not None or target is None:
            return path, None, getattr(gap, "reason", "link target not recorded")
        path = target
    return path, None, "too many levels of symbolic links"


@lru_cache(maxsize=4096)  # many guests' images share a directory: its ancestors once
def _ancestors(path: str) -> tuple[str, ...]:
    out = []
    while True:
        parent = posixpath.dirname(path.rstrip("/")) or "/"
        if parent == path:
            return tuple(out)
        out.append(parent)
        path = parent


def _stat_entries(facts) -> tuple[dict, dict]:
    """guest_paths' (paths, volumes)."""
    gp = facts.source("guest_paths")
    return gp["paths"], gp["volumes"]


def _host_accounts(facts) -> tuple[Accounts, dict, frozenset, frozenset, frozenset]:
    """(accounts, the QEMU account, uids and gids allowed to write images, gids also allowed to write a
    block device) of the host: the same for every guest of one snapshot (parsing /etc/passwd and
    /etc/group per guest cost more than the rule)."""
    accounts = Accounts(facts)
    qemu = qemu_account(facts)
    ok_uids = {0} | {u for u in [accounts.uid_of(qemu["user"])] if u is not None}
    ok_gids = {0} | {g for g in [accounts.gid_of(qemu["group"]),
                                 accounts.gid_of("kvm") if qemu["debian"] else None] if g is not None}
    # block devices are root:disk 0660 by udev rule; the disk group is root-equivalent (M6-ADMINS)
    disk_gid = accounts.gid_of("disk")
    ok_block_gids = ok_gids | ({disk_gid} if disk_gid is not None else set())
    return accounts, qemu, frozenset(ok_uids), frozenset(ok_gids), frozenset(ok_block_gids)


@check("M3-IMAGE-PERMS", severity="high", scope="guest", definitions="both",
       title="Permissions of the guest's image, firmware and kernel files on the host",
       remediation="Keep images root- or QEMU-owned (root:<qemu group> 0660, or 0600) in a directory no one "
                   "else can write (0711 or 0751, like /var/lib/libvirt/images): chmod o-rwx the images, "
                   "chmod o-w (or +t) the directories, chown them away from personal accounts.",
       sources="/domain/devices/disk (source file/dev/dir, backingStore chain, pool volumes), os/loader, "
               "os/nvram, os/kernel, os/initrd; lstat of each file and of every directory above it under "
               "the audited root; /etc/passwd, /etc/group; qemu.conf user/group")
def image_perms(guest, facts, policy):
    """Whoever can write a guest's disk image, its backing file, its firmware variables or the kernel it
    boots owns the guest (and, through a crafted image, attacks the QEMU that parses it); whoever can
    write a directory holding them can replace the file; whoever can read an image reads the guest's
    data. libvirt's own directories are 0711 root with root or QEMU-owned images.

    Rule: per guest, every disk source file (and its backingStore chain, and the file of a pool volume),
    os/loader, os/nvram, os/kernel and os/initrd, followed through symlinks inside the audited root, and
    every directory above each (above the link as written, and above the file it leads to): writable by others than the owner, root and the QEMU user/group (mode
    o+w; g+w for a group other than root's and QEMU's (on Debian also kvm; for a block device also disk,
    udev's default and root-equivalent anyway); for a directory, o+w without
    the sticky bit) -> fail; a disk image or NVRAM file readable by others (o+r; read-only media, the
    shared firmware code and kernels excepted) -> warn; any of these files owned by an ordinary login
    account -> warn. A file that does not exist or could not be stat'ed cannot be judged: error when
    nothing else was found. Files are only stat'ed, never opened.
    Definitions: both (the files QEMU has open now, and those it opens after the next start; the
    collector stats the files of both).
    """
    paths, volumes = per_snapshot(facts, _stat_entries)
    accounts, qemu, ok_uids, ok_gids, ok_block_gids = per_snapshot(facts, _host_accounts)
    tree = guest.tree
    # guest_file_refs(tree) without its <filesystem> shares (M3-HOST-SHARE judges those)
    refs = definition_file_refs(find_all(tree, "devices", "disk"), tree.find("os"), [])
    read_only: set | None = None  # read-only media, looked up only once a file readable by others needs it
    files: list[dict] = []
    dirs: dict[str, dict] = {}
    fails: list[str] = []
    warns: list[str] = []
    unknown: list[str] = []

    def writable_by_others(entry: dict, is_dir: bool) -> str | None:
        mode = int(entry["mode"], 8)
        if mode & stat.S_IWOTH and not (is_dir and mode & stat.S_ISVTX):
            return "writable by everyone (o+w)"
        allowed = ok_block_gids if entry.get("type") == "block" else ok_gids
        if mode & stat.S_IWGRP and entry.get("gid") not in allowed and not (is_dir and mode & stat.S_ISVTX):
            if accounts.missing and entry.get("gid") != 0:
                unknown.append(f"group of {entry['mode']} {entry.get('gid')}: {accounts.missing}")
                return None
            return f"writable by group {accounts.group(entry.get('gid'))} (g+w)"
        return None

    for what, ref in refs:
        path = ref
        if ref.startswith("volume:"):
            vol, gap = lookup(volumes, ref[len("volume:"):])
            if not isinstance(vol, str):
                unknown.append(f"{what} {ref[len('volume:'):]}: "
                               + (getattr(gap, "reason", str(gap)) if gap else "volume path not in the snapshot"))
                continue
            path = vol
        real, entry, why = _follow(paths, path)
        if entry is not None and entry["type"] == "absent":
            entry, why = None, "does not exist under the audited root"
        if entry is None:
            unknown.append(f"{what} {path}: {why}")
            continue
        record = {"what": what, "path": path, "type": entry["type"], "mode": entry.get("mode"),
                  "owner": accounts.user(entry.get("uid")), "group": accounts.group(entry.get("gid"))}
        if real != path:
            record["resolved"] = real
        problems = []
        problem = writable_by_others(entry, entry["type"] == "dir")
        if problem:
            problems.append(problem)
            fails.append(f"{path} {problem}")
        if int(entry["mode"], 8) & stat.S_IROTH and entry["type"] != "dir":
            if read_only is None:
                read_only = _read_only_refs(guest)
            if what.startswith("disk") and (what, ref) not in read_only or what == "nvram":  # the guest's data
                problems.append("readable by everyone (o+r)")
                warns.append(f"{path} readable by everyone ({entry['mode']})")
        if entry.get("uid") not in ok_uids and accounts.login_account(entry.get("uid")):
            problems.append(f"owned by the login account {record['owner']}")
            warns.append(f"{path} owned by the login account {record['owner']}")
        record["problems"] = problems
        files.append(record)
        above = _ancestors(path)
        for d in above + (tuple(a for a in _ancestors(real) if a not in above) if real != path else ()):
            if d in dirs:
                continue
            dentry, gap = lookup(paths, d)
            if gap is not None or dentry is None or "mode" not in dentry:
                why = getattr(gap, "reason", str(gap)) if gap is not None else "not in the snapshot"
                unknown.append(f"directory {d}: {why}")
                dirs[d] = {"path": d, "unknown": why}
                continue
            drec = {"path": d, "mode": dentry["mode"], "owner": accounts.user(dentry.get("uid")),
                    "group": accounts.group(dentry.get("gid"))}
            dproblem = writable_by_others(dentry, True)
            if dproblem:
                drec["problem"] = dproblem
                fails.append(f"directory {d} {dproblem} (holds {path})")
            dirs[d] = drec
    evidence = {"files": files, "directories_with_problems": [d for d in dirs.values() if d.get("problem")],
                "directories_checked": len(dirs), "qemu_user": qemu["user"], "qemu_group": qemu["group"]}
    if unknown:
        evidence["not_judged"] = unknown
    if fails:
        yield Result("fail", "others can change this guest's files: " + "; ".join(fails[:5])
                     + (f" (+{len(fails) - 5} more)" if len(fails) > 5 else ""), guest.resource, evidence,
                     "writable only by root and the QEMU user/group", "; ".join(fails))
    elif warns:
        yield Result("warn", "; ".join(warns[:5]), guest.resource, evidence,
                     "not readable by others, not owned by a personal account", "; ".join(warns),
                     severity="medium")
    elif unknown:
        reason = "; ".join(unknown[:5])
        yield Result("error", f"evidence missing: {reason}", guest.resource, {**evidence, "reason": reason})
    elif not files:
        yield Result("pass", "the guest uses no host files (network or no disks)", guest.resource, evidence)
    else:
        yield Result("pass", f"{len(files)} file(s) and {len(dirs)} directories writable only by root and QEMU",
                     guest.resource, evidence, "writable only by root and the QEMU user/group", "so")


def _read_only_refs(guest) -> set[tuple[str, str]]:
    """(what, ref) of disks QEMU opens read-only (CD-ROMs, <readonly/>): installation media, often
    world-readable on purpose. Backing files are read-only for QEMU but hold the guest's data: not here."""
    out = set()
    for disk in guest.findall("devices/disk"):
        if disk.get("device") in ("cdrom", "floppy") or disk.find("readonly") is not None:
            source = disk.find("source")
            if source is None:
                continue
            target = disk.find("target")
            dev = target.get("dev") if target is not None else None
            what = f"disk {dev}" if dev else "disk"
            for attr in ("file", "dev", "dir"):
                if source.get(attr):
                    out.add((what, source.get(attr)))
            if source.get("pool") and source.get("volume"):
                out.add((f"{what} (volume)", f"volume:{source.get('pool')}/{source.get('volume')}"))
    return out


# --- M3-CHARDEV-EXPOSED ----------------------------------------------------------------------------

CHARDEV_TAGS = ("serial", "parallel", "console", "channel")
_CHARDEV_PATHS = tuple((tag, f"devices/{tag}") for tag in CHARDEV_TAGS)  # built once, not per guest


def _chardev_tls(facts) -> tuple[bool, bool]:
    """qemu.conf's chardev_tls = 1, and chardev_tls_x509_verify = 1 (default: default_tls_x509_verify,
    default 1)."""
    values, _present = qemu_conf(facts)
    return (conf_value(values, "chardev_tls") == 1,
            values.get("chardev_tls_x509_verify", values.get("default_tls_x509_verify", 1)) == 1)


@check("M3-CHARDEV-EXPOSED", severity="high", scope="guest", definitions="both",
       title="Network exposure of the guest's serial consoles and channels",
       remediation="Use <serial type='pty'> or a UNIX socket (reach it with virsh console), bind TCP "
                   "character devices to 127.0.0.1, or set chardev_tls = 1 in qemu.conf (with "
                   "chardev_tls_x509_verify = 1 and client certificates) and drop tls='no'.",
       sources="/domain/devices/{serial,parallel,console,channel}[@type='tcp' or 'udp'] source (mode, host, "
               "service, tls), protocol/@type; qemu.conf chardev_tls, chardev_tls_x509_verify "
               "(default: default_tls_x509_verify, default 1)")
def chardev_exposed(guest, facts, policy):
    """A serial console or channel on a TCP port is a login prompt (often a root shell, always the boot
    loader) for anyone who reaches the port: QEMU asks no password and, without TLS, sends everything
    in the clear. UDP has no TLS at all.

    Rule: per guest, a serial, parallel, console or channel device of type tcp with source mode='bind'
    (QEMU listens), or of type udp with a bind source, on a non-loopback host address (no host, '',
    0.0.0.0 and :: mean every address; a host name may resolve to anything) -> fail unless TLS covers it:
    the source's tls='yes', else qemu.conf chardev_tls = 1 (tls='no' on the device overrides it). A
    TLS listener that does not verify client certificates (chardev_tls_x509_verify = 0) -> warn: the
    traffic is encrypted, but anyone can still connect. protocol type 'telnet' is plain text; libvirt's
    QEMU driver gives no TLS for the 'telnets'/'tls' protocol values, so they do not count as TLS.
    Definitions: both (the live listener is reachable now, the persistent one after the next start).
    """
    chardev_tls, verify = per_snapshot(facts, _chardev_tls)
    devices: list[dict] = []
    seen: set[tuple] = set()
    worst = "pass"
    for tag, path in _CHARDEV_PATHS:
        for dev in guest.findall(path):
            kind = dev.get("type")
            if kind not in ("tcp", "udp"):
                continue
            # tcp: mode='bind' makes QEMU the server; udp: the bind source is where QEMU receives (the
            # connect source is where it sends)
            listening = [s for s in dev.findall("source") if s.get("mode") == "bind"]
            target = dev.find("target")
            protocol = dev.find("protocol")
            for src in listening:
                host = src.get("host") or ""
                service = src.get("service")
                key = (kind, host, service)
                if key in seen:  # <console> repeating the first <serial>
                    continue
                seen.add(key)
                everywhere = host in ("", "0.0.0.0", "::", "[::]", "*")
                exposed = everywhere or not loopback(host)
                tls_attr = src.get("tls")
                tls = kind == "tcp" and (tls_attr == "yes" or (tls_attr != "no" and chardev_tls))
                if not exposed:
                    verdict = "pass"
                elif not tls:
                    verdict = "fail"
                else:
                    verdict = "pass" if verify else "warn"
                worst = max(worst, verdict, key=RANK.get)
                devices.append({"device": tag, "type": kind, "target": target.get("type") if target is not None
                                else None, "host": host or "(all addresses)", "service": service,
                                "protocol": protocol.get("type") if protocol is not None else "raw",
                                "tls": tls, "exposed": exposed, "verdict": verdict})
    evidence = {"listening": devices, "chardev_tls": int(chardev_tls), "chardev_tls_x509_verify": int(verify)}
    bad = [d for d in devices if d["verdict"] != "pass"]
    desc = "; ".join(f"{d['device']} {d['type']} on {d['host']}:{d['service']}"
                     + (f" ({d['protocol']})" if d["protocol"] != "raw" else "") for d in bad)
    if worst == "fail":
        yield Result("fail", f"character device reachable from the network without TLS: {desc}", guest.resource,
                     evidence, "pty, UNIX socket, loopback or TLS", desc)
    elif worst == "warn":
        yield Result("warn", f"character device on the network with TLS but no client verification: {desc}",
                     guest.resource, evidence, "chardev_tls_x509_verify = 1", desc, severity="medium")
    else:
        yield Result("pass", "no character device listens on the network without TLS"
                     if devices else "no TCP/UDP character device", guest.resource, evidence)


# --- M3-HOST-SHARE ---------------------------------------------------------------------------------

SENSITIVE_PATHS = ("/", "/etc", "/root", "/boot", "/usr", "/var/lib/libvirt", "/proc", "/sys", "/dev", "/home")


def _at_or_above(share: str, sensitive: str) -> bool:
    share = posixpath.normpath(share)
    sensitive = posixpath.normpath(sensitive)
    return share == "/" or sensitive == share or sensitive.startswith(share.rstrip("/") + "/")


@check("M3-HOST-SHARE", severity="high", scope="guest", definitions="both",
       title="Host directories shared into the guest",
       remediation="Share a dedicated data directory, read-only (<readonly/>), never /, /etc, /root, /boot, "
                   "/usr, /var/lib/libvirt or a directory above them; for 9p use accessmode='mapped' or "
                   "'squash', never 'passthrough' on a writable share.",
       sources="/domain/devices/filesystem (type, driver/@type virtiofs/path, @accessmode, source dir/socket, "
               "<readonly/>); guest_paths (the shared directory resolved inside the audited root); policy "
               "[guests] sensitive_paths")
def host_share(guest, facts, policy):
    """A host directory exported with virtiofs or 9p lets the guest read, and unless read-only write,
    host files: a share of /etc or / is a guest-to-host escape (write /etc/cron.d, root's keys). 9p
    passthrough makes guest files host files with the ids the guest chooses.

    Rule: per guest, each <filesystem type='mount'> whose source directory (symlinks followed inside the
    audited root) is at or above a sensitive path (/, /etc, /root, /boot, /usr, /var/lib/libvirt, /proc,
    /sys, /dev, /home and policy [guests] sensitive_paths) -> fail, critical when writable, high when
    <readonly/>; a writable 9p share with accessmode 'passthrough' (the default) -> fail; any other
    writable share -> warn; read-only shares of other directories -> pass. A virtiofs share served by an
    externally started virtiofsd (source socket) shows no directory: warn, its directory cannot be
    judged. Shared memory and ivshmem stay with M3-SHARED-MEMORY.
    Definitions: both.
    """
    shares = [fs for fs in guest.findall("devices/filesystem") if fs.get("type", "mount") == "mount"]
    if not shares:
        yield Result("pass", "no host directory is shared into the guest", guest.resource, {"shares": []})
        return
    sensitive = list(SENSITIVE_PATHS) + [p for p in (policy.get("guests", "sensitive_paths") or [])
                                         if p not in SENSITIVE_PATHS]
    paths: dict = {}
    paths_missing = None
    try:
        paths = facts.source("guest_paths")["paths"]
    except (EvidenceMissing, NotApplicable) as exc:
        paths_missing = str(exc)
    records, worst, severity = [], "pass", None
    unknown: list[str] = []  # shares whose real directory (through links) could not be seen
    for fs in shares:
        driver = fs.find("driver")
        kind = driver.get("type") if driver is not None and driver.get("type") else "path"
        fs_kind = "virtiofs" if kind == "virtiofs" else "9p"
        src = fs.find("source")
        target = fs.find("target")
        source_dir = src.get("dir") if src is not None else None
        socket = src.get("socket") if src is not None else None
        writable = fs.find("readonly") is None
        accessmode = fs.get("accessmode") or "passthrough"
        rec: dict = {"driver": fs_kind, "source": source_dir or (f"socket {socket}" if socket else None),
                     "target": target.get("dir") if target is not None else None,
                     "readonly": not writable}
        if fs_kind == "9p":
            rec["accessmode"] = accessmode
        verdict, sev, why = "pass", None, "read-only share of a non-sensitive directory"
        if not source_dir:
            verdict, sev, why = "warn", "medium", ("served by an external virtiofsd: the shared directory is "
                                                   "not in the guest's definition" if socket else "no source")
        else:
            resolved = source_dir
            if paths_missing is None:
                resolved, entry, why = _follow(paths, posixpath.normpath(source_dir))
                if resolved != posixpath.normpath(source_dir):
                    rec["resolved"] = resolved
                if entry is None:
                    rec["resolved"] = f"unknown: {why}"
                    unknown.append(f"{source_dir}: {why}")
            else:
                rec["resolved"] = f"unknown: {paths_missing}"
                unknown.append(f"{source_dir}: {paths_missing}")
            hit = sorted({s for s in sensitive if _at_or_above(source_dir, s) or _at_or_above(resolved, s)})
            if hit:
                rec["sensitive"] = hit
                verdict, sev = "fail", "critical" if writable else "high"
                why = f"{'writable' if writable else 'read-only'} share at or above {', '.join(hit)}"
            elif writable and fs_kind == "9p" and accessmode == "passthrough":
                verdict, sev, why = "fail", "high", "writable 9p share with accessmode 'passthrough'"
            elif writable:
                verdict, sev, why = "warn", "medium", "writable share"
        rec["verdict"], rec["why"] = verdict, why
        records.append(rec)
        if RANK[verdict] > RANK[worst] or (verdict == worst and sev == "critical"):
            worst, severity = verdict, sev
    evidence = {"shares": records, "sensitive_paths": sensitive}
    bad = [r for r in records if r["verdict"] != "pass"]
    desc = "; ".join(f"{r['driver']} {r['source']} -> {r['target']}: {r['why']}" for r in bad)
    if worst in ("fail", "warn"):
        yield Result(worst, f"host directory shared into the guest: {desc}", guest.resource, evidence,
                     "no sensitive or writable host directory", desc, severity=severity)
    elif unknown:
        reason = "shared directory not resolved (a link could lead anywhere): " + "; ".join(unknown)
        yield Result("error", f"evidence missing: {reason}", guest.resource, {**evidence, "reason": reason})
    else:
        yield Result("pass", "only read-only shares of non-sensitive directories", guest.resource, evidence)


@check("M3-SHARED-MEMORY", severity="medium", scope="guest", definitions="both",
       title="Guest's memory shared with the host or other guests",
       remediation="Remove <shmem> and shared memoryBacking access unless a device requires them.",
       sources="/domain/devices/shmem, /domain/memoryBacking/access[@mode='shared']")
def shared_memory(guest, facts, policy):
    """Shared memory regions (ivshmem) and shared memory backing (for vhost-user devices and virtiofs)
    map guest RAM into other processes or guests, a channel past the usual virtual-hardware boundary.
    Host directories exported into the guest (<filesystem>) are judged by M3-HOST-SHARE, once.

    Rule: per guest, any <shmem> or memoryBacking/access mode='shared' -> warn, listing them.
    Definitions: both.
    """
    found = []
    for shm in guest.findall("devices/shmem"):
        found.append(f"shmem {shm.get('name')!r}")
    access = find_first(guest.tree, "memoryBacking", "access")
    if access is not None and access.get("mode") == "shared":
        found.append("memoryBacking access mode='shared'")
    if found:
        yield Result("warn", "guest shares memory: " + "; ".join(found), guest.resource,
                     {"shared": found}, "no shared memory", "; ".join(found))
    else:
        yield Result("pass", "no shared memory", guest.resource, {"shared": []})


# libvirt's <graphics type='spice'><channel name=...> names (virDomainGraphicsSpiceChannelName)
SPICE_CHANNELS = {"main", "display", "inputs", "cursor", "playback", "record", "smartcard", "usbredir"}


@check("M3-GRAPHICS-EXPOSED", severity="high", scope="guest", definitions="both",
       title="Network exposure of the guest console (VNC/SPICE)",
       remediation="Listen on 127.0.0.1 or a UNIX socket (tunnel over SSH), or enable vnc_tls / spice_tls "
                   "with defaultMode='secure'.",
       sources="/domain/devices/graphics (listen, <listen>, autoport, passwd); qemu.conf vnc_listen, vnc_tls, "
               "spice_listen, spice_tls, vnc_auto_unix_socket, vnc_password, spice_password, vnc_sasl")
def graphics_exposed(guest, facts, policy):
    """A VNC or SPICE console gives keyboard, screen and often boot-menu control of the guest. On a
    non-loopback address without TLS its traffic and its (at most 8-character, DES-challenge) VNC
    password cross the network in the clear.

    Rule: per guest, a VNC/SPICE display listening on a non-loopback address (the <listen> element or
    listen attribute, else qemu.conf vnc_listen/spice_listen, default 127.0.0.1; type 'network' counts as
    non-loopback) without TLS (vnc_tls = 1; spice_tls = 1 with defaultMode='secure') -> fail; with
    vnc_sasl or a qemu.conf default password but no TLS -> warn. A read-only libvirt connection never
    returns the passwd attribute, so a per-guest password cannot be seen and never makes this pass.
    Definitions: both (the live listener is what is reachable now, the persistent one after the next
    start).
    """
    graphics = [g for g in guest.findall("devices/graphics") if g.get("type") in ("vnc", "spice")]
    if not graphics:
        yield Result("pass", "no VNC/SPICE console", guest.resource, {"graphics": []})
        return
    values, _present = qemu_conf(facts)
    displays, worst = [], "pass"
    rank = {"pass": 0, "warn": 1, "fail": 2}  # the worst display decides
    for gr in graphics:
        kind = gr.get("type")
        listen = gr.find("listen")
        ltype = listen.get("type") if listen is not None else ("address" if gr.get("listen") else None)
        if ltype == "address":
            address = (listen.get("address") if listen is not None else None) or gr.get("listen") \
                or conf_value(values, f"{kind}_listen")
        elif ltype == "network":
            address = f"network:{listen.get('network')}"
        elif ltype in ("socket", "none"):
            address = ltype
        elif kind == "vnc" and conf_value(values, "vnc_auto_unix_socket") == 1:
            address = "socket"
        else:
            address = conf_value(values, f"{kind}_listen")
        tls = conf_value(values, f"{kind}_tls") == 1
        if kind == "spice":
            # a channel not listed takes defaultMode ('any': the client may pick the plain port)
            secure = {c.get("name") for c in gr.findall("channel") if c.get("mode") == "secure"}
            insecure = {c.get("name") for c in gr.findall("channel") if c.get("mode") != "secure"}
            tls = tls and not insecure and (gr.get("defaultMode") == "secure" or SPICE_CHANNELS <= secure)
        auth = []
        if conf_value(values, f"{kind}_sasl") == 1:
            auth.append(f"{kind}_sasl")
        if values.get(f"{kind}_password"):
            auth.append(f"{kind}_password (qemu.conf)")
        if gr.get("passwd") is not None:
            auth.append("passwd (domain XML)")
        exposed = address not in ("socket", "none") and (address.startswith("network:") or not loopback(address))
        status = "pass" if not exposed or tls else ("warn" if auth else "fail")
        if rank[status] > rank[worst]:
            worst = status
        displays.append({"type": kind, "listen": address, "autoport": gr.get("autoport"), "port": gr.get("port"),
                         "tls": tls, "auth": auth, "exposed": exposed, "verdict": status})
    evidence = {"graphics": displays,
                "password_visibility": "the passwd attribute is never returned over a read-only libvirt "
                                       "connection; a per-guest password cannot be verified"}
    exposed = [d for d in displays if d["verdict"] != "pass"]
    desc = "; ".join(f"{d['type']} on {d['listen']}" for d in exposed)
    if worst == "fail":
        yield Result("fail", f"console reachable from the network without TLS: {desc}", guest.resource, evidence,
                     "loopback, a UNIX socket or TLS", desc)
    elif worst == "warn":
        yield Result("warn", f"console on the network with authentication but no TLS: {desc}", guest.resource,
                     evidence, "loopback, a UNIX socket or TLS", desc)
    else:
        yield Result("pass", "consoles listen locally or use TLS", guest.resource, evidence)
