"""libvirt's configuration as files under the audited root: the daemons' and QEMU driver's config
files, the daemons' environment files, and libvirt's systemd socket units (enabled, and their modes).

Sources:
  libvirt_config  {"qemu.conf": {"path", "present", "values"}, "libvirtd.conf": ..., ...}
  daemon_env      {"/etc/default/libvirtd": {"present", "values"}, ...}
  systemd_units   {"enabled": [unit, ...], "masked": [unit, ...], "sockets": {unit: {"path", "SocketMode",
                   "SocketGroup", "ListenStream": [...], ...}}}
                  A masked unit (a link to /dev/null or an empty file in /etc/systemd/system or
                  /run/systemd/system) cannot start: it is listed under "masked", never under "enabled"
                  (`systemctl mask` leaves the .wants links of an enabled unit in place), and has no
                  "sockets" entry.
"""

from __future__ import annotations

import fnmatch
import os

from vmaudit.confparse import ConfSyntaxError, parse_env_file, parse_libvirt_conf
from vmaudit.facts import unavailable
from vmaudit.schema import Bool, Int, ListOf, Optional, Record, Str, TableOf

from . import ABSENT, Context, collector

CONF_FILES = ("qemu.conf", "libvirtd.conf", "virtqemud.conf", "virtproxyd.conf")
ENV_FILES = tuple(f"/etc/{d}/{n}" for d in ("default", "sysconfig")
                  for n in ("libvirtd", "virtqemud", "virtproxyd"))
UNIT_DIRS = ("/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")  # first wins
SOCKET_UNITS = ("libvirtd*.socket", "virtqemud*.socket", "virtproxyd*.socket")


def _parsed(ctx: Context, path: str, parse) -> dict:
    try:
        text = ctx.read(path)
    except OSError as exc:
        return unavailable(f"cannot read {path}: {exc.strerror or exc}")
    if text is ABSENT:
        return {"path": path, "present": False, "values": {}}
    try:
        return {"path": path, "present": True, "values": parse(text)}
    except ConfSyntaxError as exc:
        return unavailable(f"{path}: {exc}")


# What confparse.parse_libvirt_conf gives: strings, integers, lists of them.
_CONF_VALUE = Str() | Int() | ListOf(Str() | Int())


def _conf_file(keys: dict) -> Record:
    """One parsed file; the keys checks read are typed, any other key is a libvirt setting value."""
    return Record({"path": Str(), "present": Bool(), "values": Record(optional=keys, extra=_CONF_VALUE)})


_DAEMON_KEYS = {"auth_unix_rw": Str(), "auth_unix_ro": Str(), "auth_tcp": Str(), "auth_tls": Str(),
                "unix_sock_rw_perms": Str(), "unix_sock_ro_perms": Str(), "unix_sock_admin_perms": Str(),
                "unix_sock_group": Str(), "unix_sock_dir": Str(), "listen_tcp": Int(), "listen_tls": Int(),
                "listen_addr": Str(), "tcp_port": Str(), "tls_no_verify_certificate": Int(),
                "tls_allowed_dn_list": ListOf(Str()), "sasl_allowed_username_list": ListOf(Str()),
                "tls_port": Str(),
                "access_drivers": ListOf(Str())}
_QEMU_KEYS = {"user": Str(), "group": Str(), "dynamic_ownership": Int(), "security_driver": Str() | ListOf(Str()),
              "security_default_confined": Int(), "security_require_confined": Int(),
              "seccomp_sandbox": Int(), "namespaces": Str() | ListOf(Str()),
              "cgroup_device_acl": Str() | ListOf(Str()), "cgroup_controllers": Str() | ListOf(Str()),
              "clear_emulator_capabilities": Int(), "migration_address": Str(), "migration_host": Str(),
              "migrate_tls_force": Int(), "migrate_tls_x509_verify": Int(), "vnc_listen": Str(),
              "spice_listen": Str(), "vnc_tls": Int(), "spice_tls": Int(), "vnc_sasl": Int(), "spice_sasl": Int(),
              "vnc_auto_unix_socket": Int(), "default_tls_x509_verify": Int(), "remote_display_port_min": Int(),
              "remote_display_port_max": Int(), "chardev_tls": Int(), "chardev_tls_x509_verify": Int()}
LIBVIRT_CONFIG_SCHEMA = Record(optional={"qemu.conf": _conf_file(_QEMU_KEYS),
                                  **{name: _conf_file(_DAEMON_KEYS)
                                     for name in ("libvirtd.conf", "virtqemud.conf", "virtproxyd.conf")}},
                        extra=_conf_file(_DAEMON_KEYS))


@collector("libvirt_config", schema=LIBVIRT_CONFIG_SCHEMA)
def collect_libvirt_config(ctx: Context) -> dict:
    """`{"qemu.conf": {path, present, values}, "libvirtd.conf": ..., "virtqemud.conf": ..., "virtproxyd.conf":
    ...}`; each entry may be a marker (unreadable, or a syntax error with its line); `values` parsed with
    `vmaudit.confparse.parse_libvirt_conf` (str, int, list)
    """
    return {name: _parsed(ctx, f"/etc/libvirt/{name}", parse_libvirt_conf) for name in CONF_FILES}


# parse_env_file joins a variable's words: every value is one string
DAEMON_ENV_SCHEMA = TableOf(Record({"path": Str(), "present": Bool(), "values": TableOf(Str())}))


@collector("daemon_env", schema=DAEMON_ENV_SCHEMA)
def collect_daemon_env(ctx: Context) -> dict:
    """`{"/etc/default/libvirtd": {present, values}, "/etc/sysconfig/libvirtd": ..., same for virtproxyd and
    virtqemud}`; values from `parse_env_file`
    """
    return {path: _parsed(ctx, path, parse_env_file) for path in ENV_FILES}


def parse_unit(text: str) -> dict:
    """systemd unit syntax: [Section] Key=Value; repeated keys accumulate, an empty value resets."""
    out: dict[str, dict[str, list[str]]] = {}
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = out.setdefault(line[1:-1], {})
            continue
        if section is None or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if value == "":
            section[key] = []
        else:
            section.setdefault(key, []).append(value)
    return out


def _merge(base: dict, drop_in: dict) -> None:
    for sect, keys in drop_in.items():
        target = base.setdefault(sect, {})
        for key, values in keys.items():
            if not values:
                target[key] = []
            elif key in ("ListenStream", "ListenDatagram"):
                target.setdefault(key, []).extend(values)
            else:
                target[key] = values


MASK_DIRS = ("/etc/systemd/system", "/run/systemd/system")


def _masked(ctx: Context) -> set[str]:
    """Units masked by a link to /dev/null or an empty file (systemd's two ways of masking)."""
    out: set[str] = set()
    for d in MASK_DIRS:
        for name in ctx.listdir(d) or []:
            p = ctx.path(f"{d}/{name}")
            try:
                if os.path.islink(p):
                    if os.readlink(p) == "/dev/null":
                        out.add(name)
                elif os.path.isfile(p) and os.path.getsize(p) == 0:
                    out.add(name)
            except OSError:
                continue
    return out


SYSTEMD_UNITS_SCHEMA = Record({"enabled": ListOf(Str()), "masked": ListOf(Str()),
                               "sockets": TableOf(Record({"path": Str(), "ListenStream": ListOf(Str())},
                                                         optional={"drop_ins": ListOf(Str()),
                                                                   "SocketMode": Optional(Str()),
                                                                   "SocketUser": Optional(Str()),
                                                                   "SocketGroup": Optional(Str())}))})


@collector("systemd_units", schema=SYSTEMD_UNITS_SCHEMA)
def collect_systemd_units(ctx: Context) -> dict:
    """`{"enabled": ["libvirtd-tcp.socket", ...] (symlinks in /etc/systemd/system/*.wants and *.requires),
    "sockets": {"libvirtd.socket": {"path", "SocketMode", "SocketGroup", "ListenStream": [...]}, ...}}` for
    libvirt's socket units, /etc overriding /usr/lib and /lib, drop-ins applied
    """
    enabled: set[str] = set()
    etc = "/etc/systemd/system"
    for entry in ctx.listdir(etc) or []:
        if entry.endswith((".wants", ".requires")):
            enabled.update(u for u in ctx.listdir(f"{etc}/{entry}") or [] if not u.startswith("."))
    masked = _masked(ctx)
    enabled -= masked
    sockets: dict[str, dict] = {}
    for unit_dir in UNIT_DIRS:
        for name in ctx.listdir(unit_dir) or []:
            if name in sockets or name in masked or not any(fnmatch.fnmatch(name, p) for p in SOCKET_UNITS):
                continue
            path = f"{unit_dir}/{name}"
            try:
                text = ctx.read(path)
            except OSError as exc:
                sockets[name] = unavailable(f"cannot read {path}: {exc.strerror or exc}")
                continue
            if text is ABSENT:  # a dangling link, e.g. masked to /dev/null under another root
                continue
            unit = parse_unit(text)
            drop_ins = []
            for d in UNIT_DIRS:
                for conf in ctx.listdir(f"{d}/{name}.d") or []:
                    if conf.endswith(".conf"):
                        drop_ins.append((conf, f"{d}/{name}.d/{conf}"))
            seen = set()
            for conf, dpath in sorted(drop_ins):  # same name: the earlier directory wins
                if conf in seen:
                    continue
                seen.add(conf)
                dtext = ctx.read(dpath)
                if dtext is not ABSENT:
                    _merge(unit, parse_unit(dtext))
            sock = unit.get("Socket", {})
            sockets[name] = {"path": path, "drop_ins": [p for _, p in sorted(drop_ins)],
                             "SocketMode": (sock.get("SocketMode") or [None])[-1],
                             "SocketUser": (sock.get("SocketUser") or [None])[-1],
                             "SocketGroup": (sock.get("SocketGroup") or [None])[-1],
                             "ListenStream": sock.get("ListenStream", [])}
    return {"enabled": sorted(enabled), "masked": sorted(masked), "sockets": sockets}
