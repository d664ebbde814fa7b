"""Which libvirt daemons a host really runs, and what their sockets and remote listeners look like,
shared by M6-SOCKET-PERMS and the M7 checks.

libvirt ships two layouts: the monolithic `libvirtd` (Debian's default) and the modular daemons
(`virtqemud` for QEMU guests, `virtproxyd` for remote and legacy-socket clients; RHEL 9's default). With
systemd socket activation (libvirt >= 5.6) the socket units own the sockets: their SocketMode /
SocketGroup win over the daemon's unix_sock_* settings, and the *-tcp / *-tls socket units decide remote
listening (`--listen` is then refused by the daemon). A live stat of the socket wins over both.
"""

from __future__ import annotations

import re
from typing import Any

from vmaudit.facts import EvidenceMissing, NotApplicable, need

DAEMONS: dict[str, dict[str, Any]] = {
    "libvirtd": {
        "conf": "libvirtd.conf", "env_vars": ("LIBVIRTD_ARGS", "libvirtd_opts"), "service": "libvirtd.service",
        "rw": ("libvirtd.socket", "/run/libvirt/libvirt-sock"),
        "admin": ("libvirtd-admin.socket", "/run/libvirt/libvirt-admin-sock"),
        "tcp": "libvirtd-tcp.socket", "tls": "libvirtd-tls.socket", "remote": True,
        "unique": "/run/libvirt/libvirt-admin-sock",
    },
    "virtqemud": {
        "conf": "virtqemud.conf", "env_vars": ("VIRTQEMUD_ARGS",), "service": "virtqemud.service",
        "rw": ("virtqemud.socket", "/run/libvirt/virtqemud-sock"),
        "admin": ("virtqemud-admin.socket", "/run/libvirt/virtqemud-admin-sock"),
        "tcp": None, "tls": None, "remote": False,
        "unique": "/run/libvirt/virtqemud-sock",
    },
    "virtproxyd": {
        # virtproxyd serves the legacy path /run/libvirt/libvirt-sock and forwards to virtqemud
        "conf": "virtproxyd.conf", "env_vars": ("VIRTPROXYD_ARGS",), "service": "virtproxyd.service",
        "rw": ("virtproxyd.socket", "/run/libvirt/libvirt-sock"),
        "admin": ("virtproxyd-admin.socket", "/run/libvirt/virtproxyd-admin-sock"),
        "tcp": "virtproxyd-tcp.socket", "tls": "virtproxyd-tls.socket", "remote": True,
        "unique": "/run/libvirt/virtproxyd-admin-sock",
    },
}
TCP_PORT, TLS_PORT = 16509, 16514


def live_sockets(facts) -> dict | None:
    """The live socket stats, None when not collected (--root); raises when they could not be read."""
    sockets, gap = facts.lookup("libvirt_sockets")
    if isinstance(gap, NotApplicable):
        return None
    if gap is not None:
        raise gap
    return sockets


def daemons_in_use(facts) -> list[tuple[str, str]]:
    """[(daemon, why)] for the daemons this host runs: enabled units, live sockets, else config files."""
    units = need(facts.source("systemd_units"), "systemd_units")
    enabled = set(need(units.get("enabled", []), "systemd_units.enabled"))
    live = live_sockets(facts) or {}
    out = []
    for name, d in DAEMONS.items():
        units_on = sorted(u for u in (d["service"], d["rw"][0], d["admin"][0], d["tcp"], d["tls"])
                          if u and u in enabled)
        if units_on:
            out.append((name, f"enabled units: {', '.join(units_on)}"))
        elif d["unique"] in live:
            out.append((name, f"live socket {d['unique']}"))
    if out:
        return out
    conf = need(facts.source("libvirt_config"), "libvirt_config")
    for name, d in DAEMONS.items():
        entry = conf.get(d["conf"])  # a marker raises: an unreadable file may be the daemon in use
        if entry is not None and entry["present"]:
            out.append((name, f"/etc/libvirt/{d['conf']} present (no enabled unit or live socket seen)"))
    if not out:
        raise EvidenceMissing("no libvirt daemon found: no enabled libvirtd/virtqemud/virtproxyd unit, "
                              "no live socket and no daemon configuration file")
    return out


def daemon_conf(facts, daemon: str) -> dict:
    """{'path', 'present', 'values'} of the daemon's config file (raises if unreadable)."""
    conf = need(facts.source("libvirt_config"), "libvirt_config")
    name = DAEMONS[daemon]["conf"]
    return need(conf.get(name, {"unavailable": "not collected"}), f"/etc/libvirt/{name}")


def enabled_units(facts) -> set[str]:
    return set(need(facts.source("systemd_units"), "systemd_units").get("enabled", []))


def socket_unit(facts, unit: str) -> dict | None:
    sockets = need(facts.source("systemd_units"), "systemd_units").get("sockets", {})
    entry = sockets.get(unit)
    return need(entry, f"socket unit {unit}") if entry is not None else None


def daemon_args(facts, daemon: str) -> tuple[str | None, str | None]:
    """(arguments, file) from /etc/default/<daemon> or /etc/sysconfig/<daemon>, the first present.

    Debian 9 and older name the variable `libvirtd_opts` (its init script and unit pass it), later
    releases and RHEL `LIBVIRTD_ARGS`; several set in one file are joined, as the daemon would get both."""
    env = need(facts.source("daemon_env"), "daemon_env")
    for base in ("/etc/sysconfig", "/etc/default"):
        path = f"{base}/{daemon}"
        entry = env.get(path)  # a marker (or a null the schema turned into one) raises
        if entry is None:
            continue
        values = entry["values"] if entry["present"] else {}
        found = [values[var] for var in DAEMONS[daemon]["env_vars"] if var in values]
        if found:
            return " ".join(found), path
    return None, None


def has_listen_flag(args: str | None) -> bool:
    if not args:
        return False
    return any(tok == "--listen" or re.fullmatch(r"-[a-zA-Z]*l[a-zA-Z]*", tok) for tok in args.split())


def unit_ports(unit: dict | None, default: int) -> set[int]:
    ports = set()
    for ls in (unit or {}).get("ListenStream", []) or []:
        m = re.search(r"(\d+)$", str(ls))
        if m:
            ports.add(int(m.group(1)))
    return ports or {default}


def _port(value: Any, default: int) -> int:
    """tcp_port / tls_port are strings in libvirtd.conf ("16509"); a service name stays the default."""
    try:
        return int(str(value)) if value is not None else default
    except ValueError:
        return default


def remote_access(facts) -> dict:
    """Remote listening of every remote-capable daemon in use.

    {"daemons": {name: {"tcp": bool, "tls": bool, "why": [...], "auth_tcp", "auth_tls", "conf": {...},
     "socket_activated": bool, "listen_flag": bool, "args_file"}}, "live": [listeners] | None}
    """
    in_use = dict(daemons_in_use(facts))
    enabled = enabled_units(facts)
    listeners, gap = facts.lookup("listeners")
    listeners_error = str(gap) if isinstance(gap, EvidenceMissing) else None
    out: dict = {"daemons": {}, "listeners_error": listeners_error,
                 "live": None if listeners is None else []}
    for name in in_use:
        d = DAEMONS[name]
        if not d["remote"]:
            continue
        conf = daemon_conf(facts, name)
        values = conf.get("values", {})
        activated = d["rw"][0] in enabled
        args, args_file = daemon_args(facts, name)
        listen = has_listen_flag(args)
        info = {"tcp": False, "tls": False, "why": [], "socket_activated": activated,
                "listen_flag": listen, "args": args, "args_file": args_file,
                "conf": conf.get("path"), "conf_present": conf.get("present"),
                "auth_tcp": values.get("auth_tcp", "sasl"), "auth_tls": values.get("auth_tls", "none"),
                "listen_tcp": values.get("listen_tcp", 0), "listen_tls": values.get("listen_tls", 1)}
        tcp_ports = {_port(values.get("tcp_port"), TCP_PORT)}
        tls_ports = {_port(values.get("tls_port"), TLS_PORT)}
        for kind in ("tcp", "tls"):
            unit = d[kind]
            if unit in enabled:
                info[kind] = True
                info["why"].append(f"{unit} enabled")
                ports = unit_ports(socket_unit(facts, unit), TCP_PORT if kind == "tcp" else TLS_PORT)
                (tcp_ports if kind == "tcp" else tls_ports).update(ports)
        if listen:
            if activated:
                info["why"].append(f"--listen in {args_file} is refused under socket activation "
                                   f"({d['rw'][0]} enabled): the *-tcp/*-tls units decide")
            else:
                if values.get("listen_tcp", 0):
                    info["tcp"] = True
                    info["why"].append(f"--listen in {args_file} with listen_tcp = 1")
                if values.get("listen_tls", 1):
                    info["tls"] = True
                    info["why"].append(f"--listen in {args_file} with listen_tls = "
                                       f"{values.get('listen_tls', 1)}{'' if 'listen_tls' in values else ' (default)'}")
        info["tcp_ports"], info["tls_ports"] = sorted(tcp_ports), sorted(tls_ports)
        out["daemons"][name] = info
    if listeners is not None:
        ports = {TCP_PORT: "tcp", TLS_PORT: "tls"}
        for info in out["daemons"].values():
            ports.update({p: "tcp" for p in info["tcp_ports"]})
            ports.update({p: "tls" for p in info["tls_ports"]})
        for entry in listeners:
            if str(entry.get("proto", "tcp")).startswith("tcp") and entry.get("port") in ports:
                out["live"].append({**entry, "kind": ports[entry["port"]]})
    return out


def remote_summary(access: dict) -> tuple[bool, bool]:
    """(plain TCP on, TLS on) over the daemons, the live listeners included."""
    tcp = any(i["tcp"] for i in access["daemons"].values())
    tls = any(i["tls"] for i in access["daemons"].values())
    for entry in access.get("live") or []:
        tcp = tcp or entry["kind"] == "tcp"
        tls = tls or entry["kind"] == "tls"
    return tcp, tls
