"""Host-hardening facts for the M3 checks: package history (patch age), pending updates (live, opt-in),
reboot-required markers, LSM state (SELinux, AppArmor), KSM, CPU vulnerabilities / SMT / thread
siblings, the kvm modules' `nested` parameter, and /etc/os-release (to know the distro's build
defaults, e.g. the QEMU user).

Sources (a value or any part of it may be a marker, see vmaudit.facts):

  os_release        {"present": bool, "ID": "debian", "ID_LIKE": "...", "VERSION_ID": "12", ...}
  package_history   {"manager": "dpkg" | "rpm" | None,
                     "logs": [{"path", "kind": "apt-history"|"dpkg"|"dnf-rpm", "upgrades": n, "installs": n,
                               "newest_upgrade": ts|None, "newest_install": ts|None} | {"path", "unavailable"}],
                     "rpm_db": {"newest_install": ts, "packages": n} | marker | None}
                    ts = "YYYY-MM-DDTHH:MM:SS" (UTC when the log says its offset, else the host's local
                    time, see `local_time`), "local_time": [kinds whose times carry no offset]
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
import re
import shutil
import subprocess
import zlib
from datetime import datetime, timezone
from typing import Any

from vmaudit.facts import not_collected, unavailable

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


@collector("os_release")
def collect_os_release(ctx: Context) -> Any:
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


LOGS = (  # (directory, file-name prefix, kind, parser)
    ("/var/log/apt", "history.log", "apt-history", parse_apt_history),
    ("/var/log", "dpkg.log", "dpkg", parse_dpkg_log),
    ("/var/log", "dnf.rpm.log", "dnf-rpm", parse_dnf_rpm_log),
)


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


@collector("package_history")
def collect_package_history(ctx: Context) -> dict:
    logs = []
    for directory, prefix, kind, parse in LOGS:
        names = ctx.listdir(directory)
        if names is ABSENT:
            continue
        for name in names:
            if not _rotated(name, prefix):
                continue
            path = f"{directory}/{name}"
            try:
                entry = parse(_read_log(ctx, path))
            except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; bad data: zlib.error
                logs.append({"path": path, "kind": kind,
                             "unavailable": f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"})
                continue
            logs.append({"path": path, "kind": kind, **entry})
    manager = None
    if ctx.exists("/var/lib/dpkg/status"):
        manager = "dpkg"
    elif ctx.exists("/var/lib/rpm") or ctx.exists("/usr/lib/sysimage/rpm"):
        manager = "rpm"
    return {"manager": manager, "logs": logs, "rpm_db": _rpm_db(ctx),
            # apt and dpkg write the host's local time without an offset; dnf states it
            "local_time": ["apt-history", "dpkg"]}


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


@collector("pending_updates", live=True)
def collect_pending_updates(ctx: Context) -> Any:
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


@collector("reboot_required")
def collect_reboot_required(ctx: Context) -> Any:
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


@collector("lsm")
def collect_lsm(ctx: Context) -> Any:
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


@collector("ksm")
def collect_ksm(ctx: Context) -> Any:
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


@collector("cpu_security")
def collect_cpu_security(ctx: Context) -> Any:
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


@collector("kvm_nested")
def collect_kvm_nested(ctx: Context) -> Any:
    marker = _sysfs(ctx)
    if marker is not None:
        return marker
    return {mod: _text(ctx, f"/sys/module/{mod}/parameters/nested") for mod in ("kvm_intel", "kvm_amd")}
