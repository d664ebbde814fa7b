"""Host-hardening facts for the M3 checks: package history (patch age), pending updates (live, opt-in),
reboot-required markers, LSM state (SELinux, AppArmor), KSM, CPU vulnerabilities / SMT / thread
siblings, the kvm modules' `nested` parameter, and /etc/os-release (to know the distro's build
defaults, e.g. the QEMU user).

Sources (a value or any part of it may be a marker, see vmaudit.facts):

  os_release        {"present": bool, "ID": "debian", "ID_LIKE": "...", "VERSION_ID": "12", ...}
  package_history   {"manager": "dpkg" | "rpm" | None,
                     "logs": [{"path", "kind": "apt-history"|"dpkg"|"dnf-rpm"|"yum"|"dnf-history"|
                               "dnf5-history", "upgrades": n, "installs": n, "newest_upgrade": ts|None,
                               "newest_install": ts|None, ...} | {"path", "kind", "unavailable"}],
                     "rpm_db": {"newest_install": ts, "packages": n} | marker | None}
                    ts = "YYYY-MM-DDTHH:MM:SS" (UTC when the source says its offset or stores epoch
                    seconds, else the host's local time, see `local_time`), "local_time": [kinds whose
                    times carry no offset]. For the dnf history databases `upgrades`/`installs` count
                    successful transactions that upgraded / installed rpms.
  reboot_required   {"present": bool, "path": str|None, "packages": [..]}   (/run/reboot-required, Debian)
  lsm               {"sysfs": bool, "active": [..] | None (/sys/kernel/security/lsm),
                     "selinux": {"enabled": bool, "enforce": "1"|"0"|None, "config": {SELINUX, SELINUXTYPE}|None},
                     "apparmor": {"enabled": "Y"|"N"|None, "profiles": [{"name", "mode"}] | marker | None}}
  ksm               {"present": bool, "run": int|None, "pages_shared": int|None, "pages_sharing": int|None}
  cpu_security      {"vulnerabilities": {name: text} | marker, "smt_control": str|None,
                     "smt_active": str|None, "thread_siblings": {cpu: "0,4"} | marker}
  kvm_nested        {"kvm_intel": "Y"|"N"|"1"|"0"|None, "kvm_amd": ...}   (None: module not loaded)
  pending_updates   (live, only with --online) {"tool": "apt-get"|"dnf", "command": [..],
                     "security": [{"package", "version", "origin"}], "other": n, "lists_mtime": epoch|None}

Sysfs-based sources are `not_collected` when the audited root carries no /sys (a file-system image has
no kernel state) and `unavailable` when a live host has none.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import sqlite3
import struct
import subprocess
import tempfile
import zlib
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

from vmaudit.facts import not_collected, unavailable
from vmaudit.schema import (
    AnyJSON,
    Bool,
    Enum,
    Float,
    Int,
    ListOf,
    Null,
    Optional,
    Presence,
    Record,
    Str,
    TableOf,
)

from . import ABSENT, Context, collector

# --- helpers --------------------------------------------------------------------------------------


def _sysfs(ctx: Context) -> Any:
    """None when /sys under the root looks like a mounted sysfs, else the marker to return."""
    if ctx.exists("/sys/kernel") or ctx.exists("/sys/devices") or ctx.exists("/sys/module"):
        return None
    if ctx.live:
        return unavailable("/sys is not mounted")
    return not_collected(f"no /sys under root {ctx.root}: a file-system image carries no kernel state")


def _text(ctx: Context, path: str) -> Any:
    """Stripped file text, None when absent, a marker when unreadable."""
    value = ctx.read_fact(path)
    return value.strip() if isinstance(value, str) else value


def _int(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return int(value.split()[0])
        except (ValueError, IndexError):
            return unavailable(f"not a number: {value!r}")
    return value


def parse_os_release(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        m = re.match(r'\s*([A-Z_][A-Z0-9_]*)=(.*)$', line)
        if m:
            value = m.group(2).strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            out[m.group(1)] = value
    return out


OS_RELEASE_SCHEMA = Record({"present": Bool()}, optional={"path": Str()}, extra=Str())


@collector("os_release", schema=OS_RELEASE_SCHEMA)
def collect_os_release(ctx: Context) -> Any:
    """`{present, path, ID, ID_LIKE, VERSION_ID, ...}` from /etc/os-release (else /usr/lib/os-release)"""
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        text = ctx.read_fact(path)
        if isinstance(text, str):
            return {"present": True, "path": path, **parse_os_release(text)}
        if text is not None:
            return text  # unreadable: marker
    return {"present": False}


# --- package history ------------------------------------------------------------------------------

_APT_DATE = re.compile(r"^(Start|End)-Date:\s*(\d{4}-\d{2}-\d{2})\s+(\d{2}:\d{2}:\d{2})")
_DPKG_LINE = re.compile(r"^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}) (\S+) (.*)$")
# dnf 4: "2024-05-01T06:25:13+0000 SUBDEBUG Upgrade: pkg" (older dnf wrote "Z" for UTC)
_DNF_LINE = re.compile(r"^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(Z|[+-]\d{2}:?\d{2})?\s+\S+\s+(\w+):\s")


def _iso(day: str, clock: str, offset: str | None = None) -> str:
    """'YYYY-MM-DDTHH:MM:SS', converted to UTC when the log states its offset."""
    stamp = f"{day}T{clock}"
    if offset:
        off = "+0000" if offset == "Z" else offset.replace(":", "")
        dt = datetime.strptime(stamp + off, "%Y-%m-%dT%H:%M:%S%z").astimezone(timezone.utc)
        return dt.strftime("%Y-%m-%dT%H:%M:%S")
    return stamp


def parse_apt_history(text: str) -> dict:
    """/var/log/apt/history.log: one stanza per apt run; its End-Date (else Start-Date) dates it."""
    out = {"upgrades": 0, "installs": 0, "newest_upgrade": None, "newest_install": None}
    stanza: dict = {}

    def close() -> None:
        when = stanza.get("End") or stanza.get("Start")
        if when:
            for key, field in (("Upgrade", "upgrade"), ("Install", "install")):
                if stanza.get(key):
                    out[field + "s"] += 1
                    if out["newest_" + field] is None or when > out["newest_" + field]:
                        out["newest_" + field] = when
        stanza.clear()

    for line in text.splitlines():
        m = _APT_DATE.match(line)
        if m:
            if m.group(1) == "Start":
                close()
            stanza[m.group(1)] = _iso(m.group(2), m.group(3))
        elif line.startswith(("Upgrade:", "Install:")) and line.split(":", 1)[1].strip():
            stanza[line.split(":", 1)[0]] = True
    close()
    return out


def parse_dpkg_log(text: str) -> dict:
    """/var/log/dpkg.log: an upgrade counts once dpkg reports the new version 'status installed'."""
    out = {"upgrades": 0, "installs": 0, "newest_upgrade": None, "newest_install": None}
    pending: dict[tuple[str, str], str] = {}
    for line in text.splitlines():
        m = _DPKG_LINE.match(line)
        if not m:
            continue
        when, action, rest = _iso(m.group(1), m.group(2)), m.group(3), m.group(4).split()
        if action in ("upgrade", "install") and len(rest) >= 3:
            # "upgrade libc6:amd64 2.36-9+deb12u4 2.36-9+deb12u7"; "install pkg <none> 1.0"
            pending[(rest[0], rest[2])] = action
        elif action == "status" and len(rest) >= 3 and rest[0] == "installed":
            kind = pending.pop((rest[1], rest[2]), None)
            if kind:
                out[kind + "s"] += 1
                if out["newest_" + kind] is None or when > out["newest_" + kind]:
                    out["newest_" + kind] = when
    return out


def parse_dnf_rpm_log(text: str) -> dict:
    """/var/log/dnf.rpm.log: 'Upgrade:'/'Upgraded:' lines are upgrades, 'Installed:'/'Install:' installs."""
    out = {"upgrades": 0, "installs": 0, "newest_upgrade": None, "newest_install": None}
    for line in text.splitlines():
        m = _DNF_LINE.match(line)
        if not m:
            continue
        word = m.group(4)
        if word == "Upgrade":
            kind = "upgrade"
        elif word in ("Install", "Installed"):
            kind = "install"
        else:  # Upgraded (the old version leaving), Erase, Obsoleted, Reinstall, ...
            continue
        when = _iso(m.group(1), m.group(2), m.group(3))
        out[kind + "s"] += 1
        if out["newest_" + kind] is None or when > out["newest_" + kind]:
            out["newest_" + kind] = when
    return out


_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                                         "Nov", "Dec"), 1)}
# yum (RHEL/CentOS 7): "May 23 18:10:05 Updated: 1:openssl-libs-1.0.1e-51.el7_2.5.x86_64", local time, no year
_YUM_LINE = re.compile(r"^([A-Z][a-z]{2})\s+(\d{1,2}) (\d{2}):(\d{2}):(\d{2}) (Installed|Updated|Erased|Obsoleted): ")
_SLACK = timedelta(days=1)  # local time vs a UTC reference, clock jitter


def parse_yum_log(text: str, reference: datetime) -> dict:
    """/var/log/yum.log: 'Updated:' lines are upgrades, 'Installed:' installs. The lines carry no year:
    the newest line is not after `reference` (the file's last write, or the date logrotate put in its
    name), and walking back each earlier line is not after the one that follows it, so a line dated
    later in the year than its successor belongs to the year before (December -> January)."""
    out = {"upgrades": 0, "installs": 0, "newest_upgrade": None, "newest_install": None}
    bound = reference + _SLACK
    for line in reversed(text.splitlines()):
        m = _YUM_LINE.match(line)
        if not m or m.group(1) not in _MONTHS:
            continue
        month, day, clock = _MONTHS[m.group(1)], int(m.group(2)), [int(m.group(i)) for i in (3, 4, 5)]
        year, when = bound.year + 1, None
        while when is None or when > bound:
            year -= 1
            try:
                when = datetime(year, month, day, *clock)
            except ValueError:  # Feb 29 outside a leap year, or a damaged line
                if year < bound.year - 8:
                    break
                when = None
        if when is None:
            continue
        bound = when + _SLACK
        kind = {"Updated": "upgrade", "Installed": "install"}.get(m.group(6))
        if kind:
            stamp = when.strftime("%Y-%m-%dT%H:%M:%S")
            out[kind + "s"] += 1
            if out["newest_" + kind] is None or stamp > out["newest_" + kind]:
                out["newest_" + kind] = stamp
    return out


def _yum_reference(ctx: Context, path: str) -> tuple[datetime, str]:
    """When the yum log was last written: logrotate's dateext name (yum.log-20250101: rotated that day)
    or, for the live file and numbered rotations, its mtime."""
    m = re.search(r"-(\d{8})(?:\.gz)?$", path)
    if m:
        try:
            return datetime.strptime(m.group(1), "%Y%m%d") + timedelta(days=1), f"file name ({m.group(1)})"
        except ValueError:
            pass
    mtime = ctx.mtime(path)
    if mtime is None:
        raise FileNotFoundError(2, "No such file or directory", path)
    when = datetime.fromtimestamp(mtime, timezone.utc).replace(tzinfo=None)
    return when, f"mtime ({when.strftime('%Y-%m-%dT%H:%M:%S')})"


LOGS = (  # (directory, file-name prefix, kind, parser)
    ("/var/log/apt", "history.log", "apt-history", parse_apt_history),
    ("/var/log", "dpkg.log", "dpkg", parse_dpkg_log),
    ("/var/log", "dnf.rpm.log", "dnf-rpm", parse_dnf_rpm_log),
    ("/var/log", "yum.log", "yum", parse_yum_log),
)


# --- dnf transaction history (sqlite) -------------------------------------------------------------
#
# dnf keeps every transaction in a database that logrotate never touches, so it outlives the
# rotated dnf.rpm.log, and dnf5 (Fedora 41+) writes no dnf.rpm.log at all. Schemas: libdnf
# libdnf/transaction/sql/create_tables.sql (dnf4: trans.state 1 = DONE; trans_item.action 1 = INSTALL,
# 6 = UPGRADE) and dnf5 libdnf5/transaction/db/sql/create_tables.sql (state and action ids named in
# the trans_state / trans_item_action tables: 'Ok', 'Install', 'Upgrade'). dt_begin/dt_end are epoch
# seconds. Only rpm items count (rpm.item_id), not comps groups or environments.

_DNF4_QUERY = """
    SELECT t.id, COALESCE(t.dt_end, t.dt_begin), SUM(ti.action = 6), SUM(ti.action = 1)
    FROM trans t JOIN trans_item ti ON ti.trans_id = t.id JOIN rpm r ON r.item_id = ti.item_id
    WHERE t.state = 1 GROUP BY t.id"""
_DNF5_QUERY = """
    SELECT t.id, COALESCE(t.dt_end, t.dt_begin), SUM(a.name = 'Upgrade'), SUM(a.name = 'Install')
    FROM trans t JOIN trans_state s ON s.id = t.state_id
    JOIN trans_item ti ON ti.trans_id = t.id JOIN trans_item_action a ON a.id = ti.action_id
    JOIN rpm r ON r.item_id = ti.item_id
    WHERE s.name = 'Ok' GROUP BY t.id"""

HISTORY_DBS = (  # (path, kind, query)
    ("/var/lib/dnf/history.sqlite", "dnf-history", _DNF4_QUERY),
    ("/usr/lib/sysimage/libdnf5/transaction_history.sqlite", "dnf5-history", _DNF5_QUERY),
    # early dnf5 releases kept their state in /usr/lib/sysimage/dnf (the dnf5 spec file still owns it)
    ("/usr/lib/sysimage/dnf/transaction_history.sqlite", "dnf5-history", _DNF5_QUERY),
)

_SQLITE_MAGIC = b"SQLite format 3\x00"
_DESERIALIZE = hasattr(sqlite3.Connection, "deserialize")  # Python 3.11+ with SQLite 3.36+
_WAL_MAGIC = (0x377F0682, 0x377F0683)
_JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")


def _wal_checksum(data: bytes, s0: int, s1: int, big_endian: bool) -> tuple[int, int]:
    words = struct.unpack((">" if big_endian else "<") + f"{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def apply_wal(db: bytes, wal: bytes) -> tuple[bytes, int]:
    """The database as SQLite reads it: `db` with the committed frames of its write-ahead log applied,
    and how many frames that took. SQLite's own rules (sqlite.org/fileformat2.html, WAL): a frame
    counts when its salts match the header's and its running checksum is right; only frames up to
    the last commit frame (non-zero database size) apply. A torn or stale tail is ignored."""
    if len(wal) < 32:
        return db, 0
    magic, _version, page_size, _seq, salt1, salt2, c1, c2 = struct.unpack(">8I", wal[:32])
    if magic not in _WAL_MAGIC or not 512 <= page_size <= 65536 or page_size & (page_size - 1):
        return db, 0
    big = bool(magic & 1)
    s = _wal_checksum(wal[:24], 0, 0, big)
    if s != (c1, c2):
        return db, 0
    frames: list[tuple[int, int]] = []
    commit_at, size = 0, 0
    off = 32
    while off + 24 + page_size <= len(wal):
        pgno, commit, fs1, fs2, fc1, fc2 = struct.unpack(">6I", wal[off:off + 24])
        if pgno == 0 or (fs1, fs2) != (salt1, salt2):
            break
        s = _wal_checksum(wal[off:off + 8], s[0], s[1], big)
        s = _wal_checksum(wal[off + 24:off + 24 + page_size], s[0], s[1], big)
        if s != (fc1, fc2):
            break
        frames.append((pgno, off + 24))
        if commit:
            commit_at, size = len(frames), commit
        off += 24 + page_size
    if not commit_at:
        return db, 0
    # a database can only grow by the pages its log holds: a larger size is a damaged log, not a
    # reason to allocate gigabytes
    limit = len(db) // page_size + commit_at
    if size > limit or any(pgno > limit for pgno, _ in frames[:commit_at]):
        return db, 0
    image = bytearray(db)
    for pgno, start in frames[:commit_at]:
        end = pgno * page_size
        if len(image) < end:
            image.extend(bytes(end - len(image)))
        image[end - page_size:end] = wal[start:start + page_size]
    del image[size * page_size:]
    return bytes(image), commit_at


def _query_history(uri: str, query: str) -> list:
    con = sqlite3.connect(uri, uri=True, timeout=0)
    try:
        con.execute("PRAGMA query_only = 1")
        return con.execute(query).fetchall()
    finally:
        con.close()


def _query_image(image: bytes, query: str) -> list:
    """Query a database image held in memory (the main file with its WAL applied)."""
    image = bytearray(image)
    image[18:20] = b"\x01\x01"  # rollback-journal mode: the image is whole, there is no WAL to look for
    if _DESERIALIZE:  # nothing touches a disk
        con = sqlite3.connect(":memory:")
        try:
            con.deserialize(bytes(image))
            con.execute("PRAGMA query_only = 1")
            return con.execute(query).fetchall()
        finally:
            con.close()
    # Python 3.9/3.10 cannot load an image: one scratch copy in the auditing user's private temp
    # directory (never on the audited root), opened immutable and removed at once.
    with tempfile.TemporaryDirectory(prefix="vmaudit-") as tmp:
        path = os.path.join(tmp, "history.sqlite")
        with open(path, "wb") as fh:
            fh.write(image)
        return _query_history(f"file:{quote(path)}?mode=ro&immutable=1", query)


def read_history_db(ctx: Context, path: str, query: str) -> Any:
    """One dnf history database, read-only: ABSENT, the counts, or raises OSError / sqlite3.Error /
    ValueError with the reason. The file is opened with immutable=1 (no locks, no -shm or -journal
    created, a lock held by a running dnf ignored). immutable also ignores the -wal file, where dnf5
    (journal_mode WAL, persistent) keeps its latest transactions until a checkpoint: a non-empty WAL
    is applied in memory instead."""
    real = ctx.resolve(path)
    with open(real, "rb") as fh:  # FileNotFoundError: absent; PermissionError: its reason
        header = fh.read(100)
    out: dict = {"upgrades": 0, "installs": 0, "newest_upgrade": None, "newest_install": None,
                 "transactions": 0}
    if not header:
        return {**out, "note": "empty file: no transaction recorded yet"}
    if not header.startswith(_SQLITE_MAGIC):
        raise ValueError("not an SQLite 3 database")
    journal = ctx.read(path + "-journal", binary=True)
    if journal and journal[:8] == _JOURNAL_MAGIC:
        # a hot rollback journal: a write in progress, or one interrupted that dnf rolls back on its
        # next run. The main file may hold half of it; vmaudit does not roll back in the host's place.
        raise ValueError(f"{path}-journal holds an unfinished write (dnf running or interrupted); "
                         "the database may be inconsistent until dnf runs again")
    wal = ctx.read(path + "-wal", binary=True)
    frames = 0
    if wal:
        db = ctx.read(path, binary=True)
        image, frames = apply_wal(db if db is not ABSENT else b"", wal)
    if frames:
        rows = _query_image(image, query)
        out["wal_frames"] = frames
    else:
        rows = _query_history(f"file:{quote(str(real))}?mode=ro&immutable=1", query)
    for _tid, at, upgraded, installed in rows:
        out["transactions"] += 1
        try:
            stamp = datetime.fromtimestamp(int(at), timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        except (TypeError, ValueError, OverflowError, OSError):
            # a damaged row (NULL, text, a time out of range): undatable, the others still count; it
            # must not take the whole package history (apt/dnf logs, the other database) down with it
            out["undated"] = out.get("undated", 0) + 1
            continue
        for kind, n in (("upgrade", upgraded), ("install", installed)):
            if n:
                out[kind + "s"] += 1
                if out["newest_" + kind] is None or stamp > out["newest_" + kind]:
                    out["newest_" + kind] = stamp
    return out


def _rotated(name: str, prefix: str) -> bool:
    # history.log, history.log.1, history.log.2.gz, dnf.rpm.log-20240501(.gz)
    return name == prefix or re.fullmatch(re.escape(prefix) + r"([.-]\d+)(\.gz)?", name) is not None


def _read_log(ctx: Context, path: str) -> str:
    data = ctx.read(path, binary=True)
    if data is ABSENT:
        raise FileNotFoundError(2, "No such file or directory", path)
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace")


def _rpm_db(ctx: Context) -> Any:
    """Live only: the newest package install time from the rpm database (locale-independent epoch)."""
    if not ctx.live or not shutil.which("rpm") or not ctx.exists("/var/lib/rpm"):
        return None
    try:
        proc = subprocess.run(["rpm", "-qa", "--qf", "%{INSTALLTIME}\n"], capture_output=True, text=True,
                              timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return unavailable(f"rpm -qa: {exc}")
    if proc.returncode != 0:
        return unavailable(f"rpm -qa exited {proc.returncode}: {proc.stderr.strip()[:200]}")
    times = [int(t) for t in proc.stdout.split() if t.isdigit()]
    if not times:
        return {"packages": 0, "newest_install": None}
    newest = datetime.fromtimestamp(max(times), timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return {"packages": len(times), "newest_install": newest}


_PACKAGE_LOG = Record({"path": Str(), "kind": Str()},
                      optional={"upgrades": Int(min=0), "installs": Int(min=0), "newest_upgrade": Optional(Str()),
                                "newest_install": Optional(Str()), "transactions": Int(min=0),
                                "undated": Int(min=0), "wal_frames": Int(min=0), "note": Str(),
                                "year_from": Str(), "unavailable": Str()})
PACKAGE_HISTORY_SCHEMA = Record({"manager": Optional(Str()), "logs": ListOf(_PACKAGE_LOG)},
                         optional={"rpm_db": Optional(Record(optional={"packages": Int(min=0),
                                                                       "newest_install": Optional(Int() | Str())})),
                                   "local_time": ListOf(Str())})


@collector("package_history", schema=PACKAGE_HISTORY_SCHEMA)
def collect_package_history(ctx: Context) -> dict:
    """`{manager: "dpkg"/"rpm"/null, logs: [{path, kind ("apt-history"/"dpkg"/"dnf-rpm"/"yum"/"dnf-
    history"/"dnf5-history"), upgrades, installs, newest_upgrade, newest_install, (yum: year_from;
    databases: transactions, wal_frames)} or {path, kind, unavailable}], rpm_db: {packages, newest_install}
    (live) or null/marker, local_time: [kinds logged in local time]}`; times "YYYY-MM-DDTHH:MM:SS" (UTC
    where the log has an offset or the database stores epoch seconds); rotated and .gz logs included; for
    the dnf databases `upgrades`/`installs` count successful transactions
    """
    logs = []
    for directory, prefix, kind, parse in LOGS:
        names = ctx.listdir(directory)
        if names is ABSENT:
            continue
        for name in names:
            if not _rotated(name, prefix):
                continue
            path = f"{directory}/{name}"
            extra: dict = {}
            try:
                if kind == "yum":
                    reference, extra["year_from"] = _yum_reference(ctx, path)
                    entry = parse_yum_log(_read_log(ctx, path), reference)
                else:
                    entry = parse(_read_log(ctx, path))
            except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; bad data: zlib.error
                logs.append({"path": path, "kind": kind,
                             "unavailable": f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"})
                continue
            logs.append({"path": path, "kind": kind, **entry, **extra})
    for path, kind, query in HISTORY_DBS:
        try:
            entry = read_history_db(ctx, path, query)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            logs.append({"path": path, "kind": kind,
                         "unavailable": f"cannot read {path}: {exc.strerror or exc}"})
            continue
        except (sqlite3.Error, ValueError, struct.error) as exc:
            logs.append({"path": path, "kind": kind, "unavailable": f"cannot query {path}: {exc}"})
            continue
        logs.append({"path": path, "kind": kind, **entry})
    manager = None
    if ctx.exists("/var/lib/dpkg/status"):
        manager = "dpkg"
    elif ctx.exists("/var/lib/rpm") or ctx.exists("/usr/lib/sysimage/rpm"):
        manager = "rpm"
    return {"manager": manager, "logs": logs, "rpm_db": _rpm_db(ctx),
            # apt, dpkg and yum write the host's local time without an offset; dnf states it, the
            # dnf history databases store epoch seconds
            "local_time": ["apt-history", "dpkg", "yum"]}


# --- pending updates (live, --online) -------------------------------------------------------------

_APT_INST = re.compile(r"^Inst (\S+) (?:\[(\S+)\] )?\((\S+) (.+?)(?: \[[^\]]*\])?\)")


def parse_apt_simulation(text: str) -> dict:
    """`apt-get -s dist-upgrade`: 'Inst pkg [old] (new Origin:codename-security [arch])' lines."""
    security, other = [], 0
    for line in text.splitlines():
        m = _APT_INST.match(line)
        if not m:
            continue
        origins = m.group(4)
        if re.search(r"security", origins, re.I):
            security.append({"package": m.group(1), "version": m.group(3), "origin": origins})
        else:
            other += 1
    return {"security": security, "other": other}


def parse_dnf_check_update(text: str) -> list[dict]:
    """`dnf -q check-update --security`: 'name.arch  version  repo' lines (continuations skipped)."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and "." in parts[0] and not line.startswith(" "):
            out.append({"package": parts[0], "version": parts[1], "origin": parts[2]})
        elif line.startswith("Obsoleting"):
            break
    return out


_UPDATE = Record({"package": Str()}, optional={"version": Str(), "origin": AnyJSON()})
PENDING_UPDATES_SCHEMA = Record({"tool": Str(), "security": ListOf(_UPDATE)},
                         optional={"command": ListOf(Str()), "other": Optional(Int(min=0)),
                                   "lists_mtime": Optional(Float())})


@collector("pending_updates", schema=PENDING_UPDATES_SCHEMA, live=True, skips="always")
def collect_pending_updates(ctx: Context) -> Any:
    """(live, only with `--online`, else not_collected) `{tool: "apt-get"/"dnf", command, security: [{package,
    version, origin}], other: n or null, lists_mtime: epoch or null}`
    """
    if not ctx.online:
        return not_collected("asking the package manager needs --online")
    if shutil.which("apt-get") and ctx.exists("/var/lib/dpkg/status"):
        # dist-upgrade, not upgrade: a kernel security update that brings a new ABI package is only
        # "kept back" by `upgrade`. NoLocking: a simulation needs no lock and must not wait for one.
        cmd = ["apt-get", "-s", "-o", "Debug::NoLocking=1", "dist-upgrade"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False,
                              env={"LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        if proc.returncode != 0:
            return unavailable(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()[:300]}")
        lists = ctx.mtime("/var/lib/apt/lists")
        return {"tool": "apt-get", "command": cmd, **parse_apt_simulation(proc.stdout), "lists_mtime": lists}
    if shutil.which("dnf"):
        cmd = ["dnf", "-q", "check-update", "--security"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False,
                              env={"LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        if proc.returncode not in (0, 100):  # 100: updates available; 1: error
            return unavailable(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()[:300]}")
        security = parse_dnf_check_update(proc.stdout) if proc.returncode == 100 else []
        return {"tool": "dnf", "command": cmd, "security": security, "other": None, "lists_mtime": None}
    return unavailable("neither apt-get (with a dpkg database) nor dnf found")


# --- reboot required ------------------------------------------------------------------------------


REBOOT_REQUIRED_SCHEMA = Record({"present": Bool(), "packages": ListOf(Str())},
                         optional={"path": Optional(Str()), "message": Str()})


@collector("reboot_required", schema=REBOOT_REQUIRED_SCHEMA)
def collect_reboot_required(ctx: Context) -> Any:
    """`{present, path, message, packages: [...]}` from /run/reboot-required(.pkgs) (/var/run when not a
    symlink)
    """
    # /var/run is a link to /run on current systems (ctx resolves it inside the audited root)
    for path in ("/run/reboot-required", "/var/run/reboot-required"):
        text = ctx.read_fact(path)
        if text is None:
            continue
        if not isinstance(text, str):
            return text
        pkgs = ctx.read_fact(path + ".pkgs")
        return {"present": True, "path": path, "message": text.strip(),
                "packages": sorted(set(pkgs.split())) if isinstance(pkgs, str) else []}
    return {"present": False, "path": None, "packages": []}


# --- LSM ------------------------------------------------------------------------------------------


def parse_apparmor_profiles(text: str) -> list[dict]:
    """/sys/kernel/security/apparmor/profiles: 'name (mode)' per line; names may contain spaces."""
    out = []
    for line in text.splitlines():
        m = re.match(r"^(.*) \((\w+)\)\s*$", line)
        if m:
            out.append({"name": m.group(1), "mode": m.group(2)})
    return out


LSM_SCHEMA = Record({"sysfs": Bool(), "active": Optional(ListOf(Str())),
               "selinux": Record({"enabled": Bool(), "enforce": Optional(Str())},
                                 optional={"config": Optional(TableOf(Optional(Str())))}),
               "apparmor": Record({"enabled": Optional(Str()),
                                   "profiles": Optional(ListOf(Record({"name": Str(), "mode": Str()})))})})


@collector("lsm", schema=LSM_SCHEMA, skips="offline")
def collect_lsm(ctx: Context) -> Any:
    """`{sysfs: true, active: [/sys/kernel/security/lsm], selinux: {enabled, enforce: "1"/"0"/null, config:
    {SELINUX, SELINUXTYPE} or null}, apparmor: {enabled: "Y"/"N"/null, profiles: [{name, mode}] or marker or
    null}}`
    """
    marker = _sysfs(ctx)
    if marker is not None:
        return marker
    active = _text(ctx, "/sys/kernel/security/lsm")
    enforce = _text(ctx, "/sys/fs/selinux/enforce")
    config_text = ctx.read_fact("/etc/selinux/config")
    config = None
    if isinstance(config_text, str):
        values = parse_os_release(config_text)
        config = {k: values.get(k) for k in ("SELINUX", "SELINUXTYPE")}
    aa_enabled = _text(ctx, "/sys/module/apparmor/parameters/enabled")
    profiles: Any = None
    if aa_enabled == "Y":
        text = ctx.read_fact("/sys/kernel/security/apparmor/profiles",
                             absent=unavailable("AppArmor is enabled but securityfs shows no profiles "
                                                "file (/sys/kernel/security not mounted?)"))
        profiles = parse_apparmor_profiles(text) if isinstance(text, str) else text
    return {
        "sysfs": True,
        "active": active.split(",") if isinstance(active, str) else active,
        "selinux": {"enabled": ctx.exists("/sys/fs/selinux/enforce"), "enforce": enforce, "config": config},
        "apparmor": {"enabled": aa_enabled, "profiles": profiles},
    }


# --- KSM, CPU, nested -----------------------------------------------------------------------------


KSM_SCHEMA = Presence(Record({"present": Bool(), "run": Optional(Enum(0, 1, 2)),
                              "pages_shared": Optional(Int(min=0)), "pages_sharing": Optional(Int(min=0))}),
                       Record({"present": Enum(False), "run": Null(), "pages_shared": Null(),
                               "pages_sharing": Null()}))


@collector("ksm", schema=KSM_SCHEMA, skips="offline")
def collect_ksm(ctx: Context) -> Any:
    """`{present, run, pages_shared, pages_sharing}` from /sys/kernel/mm/ksm"""
    marker = _sysfs(ctx)
    if marker is not None:
        return marker
    if not ctx.exists("/sys/kernel/mm/ksm"):
        return {"present": False, "run": None, "pages_shared": None, "pages_sharing": None}
    out: dict = {"present": True}
    for name in ("run", "pages_shared", "pages_sharing"):
        value = _text(ctx, f"/sys/kernel/mm/ksm/{name}")
        out[name] = _int(value) if value is not None else unavailable(f"/sys/kernel/mm/ksm/{name} is absent")
    return out


CPU_SECURITY_SCHEMA = Record({"vulnerabilities": TableOf(Optional(Str())), "thread_siblings": TableOf(Str())},
                      optional={"smt_control": Optional(Str()), "smt_active": Optional(Str())})


@collector("cpu_security", schema=CPU_SECURITY_SCHEMA, skips="offline")
def collect_cpu_security(ctx: Context) -> Any:
    """`{vulnerabilities: {name: text} or marker, smt_control, smt_active, thread_siblings: {"<cpu>": "0,4"} or
    marker}` from /sys/devices/system/cpu
    """
    marker = _sysfs(ctx)
    if marker is not None:
        return marker
    base = "/sys/devices/system/cpu"
    names = ctx.listdir(f"{base}/vulnerabilities")
    if names is ABSENT:
        vulns: Any = unavailable(f"{base}/vulnerabilities is absent (kernel older than 4.15?)")
    else:
        vulns = {name: _text(ctx, f"{base}/vulnerabilities/{name}") for name in names}
    siblings: Any = {}
    cpus = ctx.listdir(base)
    for name in cpus or []:
        if re.fullmatch(r"cpu\d+", name):
            value = _text(ctx, f"{base}/{name}/topology/thread_siblings_list")
            if value is not None:  # an offline CPU has no topology directory
                siblings[name[3:]] = value
    if not siblings:
        siblings = unavailable(f"no {base}/cpu*/topology/thread_siblings_list")
    return {"vulnerabilities": vulns, "smt_control": _text(ctx, f"{base}/smt/control"),
            "smt_active": _text(ctx, f"{base}/smt/active"), "thread_siblings": siblings}


KVM_NESTED_SCHEMA = Record({"kvm_intel": Optional(Str()), "kvm_amd": Optional(Str())})


@collector("kvm_nested", schema=KVM_NESTED_SCHEMA, skips="offline")
def collect_kvm_nested(ctx: Context) -> Any:
    """`{kvm_intel: "Y"/"N"/"1"/"0"/null, kvm_amd: ...}` (null: module not loaded)"""
    marker = _sysfs(ctx)
    if marker is not None:
        return marker
    return {mod: _text(ctx, f"/sys/module/{mod}/parameters/nested") for mod in ("kvm_intel", "kvm_amd")}
