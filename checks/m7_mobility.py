"""M7: restrict mobility — guests move only between hosts of the same administrators and security level,
over authenticated, encrypted channels.

Remote access to libvirt (the daemon's TCP and TLS listeners), how TLS peers are verified, whether
QEMU's migration stream is encrypted and verified, where it listens, and whether the host declares its
migration peers and can veto others.
"""

from __future__ import annotations

from vmaudit.engine import Result, check
from vmaudit.facts import EvidenceMissing, NotApplicable, need

from ._libvirtd import daemon_conf, remote_access, remote_summary

ALL_ADDRESSES = ("", "0.0.0.0", "::", "[::]", "*")


def _access(facts) -> dict:
    return remote_access(facts)


def _qemu_conf(facts) -> dict:
    conf = need(facts.source("libvirt_config"), "libvirt_config")
    return need(conf.get("qemu.conf", {"unavailable": "not collected"}), "/etc/libvirt/qemu.conf")


@check("M7-REMOTE-TCP", severity="critical",
       title="libvirt remote access over plain TCP",
       remediation="Disable libvirtd-tcp.socket / virtproxyd-tcp.socket (or listen_tcp = 0); use TLS "
                   "(the *-tls.socket units, listen_tls) with client certificates, or qemu+ssh.",
       sources="libvirtd.conf / virtproxyd.conf; /etc/default|sysconfig/<daemon>; socket units; listeners")
def remote_tcp(facts, policy):
    """libvirt's plain TCP transport (port 16509) carries every management command unencrypted; with
    auth_tcp = none anyone who can reach the port controls every guest, and with SASL the traffic is
    still only as strong as the SASL mechanism.

    Rule: for the remote-capable daemon in use (libvirtd, or virtproxyd on modular hosts): TCP listening
    — an enabled *-tcp.socket unit under socket activation, else --listen in LIBVIRTD_ARGS (Debian <= 9:
    libvirtd_opts) / VIRTPROXYD_ARGS with listen_tcp = 1 (--listen is refused when the daemon is socket-activated), or
    (live) a listener on the TCP port — with auth_tcp = none -> fail, critical; TCP listening at all
    -> fail (high); TLS only or no remote listener -> pass.
    Sources: /etc/libvirt/libvirtd.conf, virtproxyd.conf, /etc/default|sysconfig/<daemon>, systemd
    socket units, (live) listening sockets.
    """
    access = _access(facts)
    tcp, tls = remote_summary(access)
    evidence = {"daemons": access["daemons"], "live_listeners": access["live"]}
    if access["listeners_error"]:
        evidence["listeners_error"] = access["listeners_error"]
    if tcp:
        daemons = [n for n, i in access["daemons"].items() if i["tcp"]] or list(access["daemons"])
        none_auth = [n for n in daemons if access["daemons"].get(n, {}).get("auth_tcp") == "none"]
        why = "; ".join(w for i in access["daemons"].values() for w in i["why"]) or "live listener on the TCP port"
        if none_auth:
            yield Result("fail", f"libvirt listens on plain TCP with auth_tcp = none ({why}): anyone reaching "
                         "the port controls every guest", "host", evidence,
                         expected="no TCP listener", actual="TCP, auth none")
        else:
            auths = sorted({str(access["daemons"][n]["auth_tcp"]) for n in daemons if n in access["daemons"]})
            yield Result("fail", f"libvirt listens on plain TCP ({why}; auth_tcp {', '.join(auths) or '?'})",
                         "host", evidence, expected="no TCP listener", actual=f"TCP, auth {', '.join(auths)}",
                         severity="high")
        return
    if access["listeners_error"]:
        raise EvidenceMissing(access["listeners_error"])
    msg = "libvirt listens remotely on TLS only" if tls else "libvirt does not listen on the network"
    yield Result("pass", msg, "host", evidence, expected="no TCP listener", actual="TLS only" if tls else "none")


@check("M7-TLS-VERIFY", severity="high",
       title="Client verification of libvirt's TLS listener",
       remediation="tls_no_verify_certificate = 0; list the peers' certificate DNs in tls_allowed_dn_list "
                   "(and SASL users in sasl_allowed_username_list).",
       sources="libvirtd.conf / virtproxyd.conf: tls_no_verify_certificate, tls_allowed_dn_list, "
               "sasl_allowed_username_list")
def tls_verify(facts, policy):
    """TLS without client-certificate verification lets any client in; without a DN allowlist every
    certificate the CA ever signed (any host of any zone) may manage this host's guests.

    Rule: for each remote-capable daemon in use: tls_no_verify_certificate = 1 -> fail when TLS listens
    (warn when it does not: a dormant setting); TLS listening with an empty or unset tls_allowed_dn_list
    -> warn; a SASL transport listening (auth_tcp / auth_tls = sasl) with no
    sasl_allowed_username_list -> warn. No remote listener -> pass.
    Sources: /etc/libvirt/libvirtd.conf, virtproxyd.conf, and how the daemon listens (M7-REMOTE-TCP).
    """
    access = _access(facts)
    if access["listeners_error"]:
        raise EvidenceMissing(access["listeners_error"])
    live_kinds = {e["kind"] for e in access["live"] or []}
    fails, warns = [], []
    evidence: dict = {"daemons": {}}
    for name, info in access["daemons"].items():
        values = daemon_conf(facts, name).get("values", {})
        tls_on = info["tls"] or "tls" in live_kinds
        tcp_on = info["tcp"] or "tcp" in live_kinds
        no_verify = int(values.get("tls_no_verify_certificate", 0) or 0)
        dns = values.get("tls_allowed_dn_list") or []
        sasl_users = values.get("sasl_allowed_username_list") or []
        sasl_on = (tcp_on and info["auth_tcp"] == "sasl") or (tls_on and info["auth_tls"] == "sasl")
        evidence["daemons"][name] = {"conf": info["conf"], "tls_listening": tls_on, "tcp_listening": tcp_on,
                                     "tls_no_verify_certificate": no_verify, "tls_allowed_dn_list": dns,
                                     "sasl_allowed_username_list": sasl_users, "auth_tcp": info["auth_tcp"],
                                     "auth_tls": info["auth_tls"]}
        if no_verify:
            (fails if tls_on else warns).append(
                f"{name}: tls_no_verify_certificate = 1" + ("" if tls_on else " (TLS not listening now)"))
        if tls_on and not dns:
            warns.append(f"{name}: TLS listens with no tls_allowed_dn_list (any certificate of the CA is accepted)")
        if sasl_on and not sasl_users:
            warns.append(f"{name}: SASL authentication with no sasl_allowed_username_list")
    listening = any(d["tls_listening"] or d["tcp_listening"] for d in evidence["daemons"].values()) or live_kinds
    if fails:
        yield Result("fail", "; ".join(fails + warns), "host", evidence,
                     expected="certificates verified, peers allowlisted", actual="no verification")
    elif warns:
        yield Result("warn", "; ".join(warns), "host", evidence,
                     expected="certificates verified, peers allowlisted", actual="not allowlisted")
    elif listening:
        yield Result("pass", "remote clients are verified and allowlisted", "host", evidence)
    else:
        yield Result("pass", "libvirt does not listen on the network; nothing to verify", "host", evidence)


@check("M7-MIGRATION-TLS", severity="high",
       title="Encryption and peer verification of live migration",
       remediation="In qemu.conf set migrate_tls_force = 1 and keep migrate_tls_x509_verify (and "
                   "default_tls_x509_verify) = 1, with certificates in migrate_tls_x509_cert_dir.",
       sources="/etc/libvirt/qemu.conf: migrate_tls_force, migrate_tls_x509_verify, default_tls_x509_verify")
def migration_tls(facts, policy):
    """A live migration streams the guest's whole memory (keys, passwords, data) to the peer. Without TLS
    anyone on the path reads it; without certificate verification any host can pose as the peer.

    Rule: migrate_tls_x509_verify (default: default_tls_x509_verify, default 1) = 0 -> fail;
    migrate_tls_force = 0 (the default: a migration without --tls is plain) -> warn; both on -> pass.
    Source: /etc/libvirt/qemu.conf (absent: libvirt's defaults).
    """
    conf = _qemu_conf(facts)
    v = conf.get("values", {})
    force = int(v.get("migrate_tls_force", 0) or 0)
    default_verify = int(v.get("default_tls_x509_verify", 1))
    verify = int(v.get("migrate_tls_x509_verify", default_verify))
    evidence = {"path": conf.get("path"), "present": conf.get("present"),
                "migrate_tls_force": v.get("migrate_tls_force"),
                "migrate_tls_x509_verify": v.get("migrate_tls_x509_verify"),
                "default_tls_x509_verify": v.get("default_tls_x509_verify"),
                "effective": {"force": force, "verify": verify}}
    actual = f"migrate_tls_force={force}, verify={verify}"
    if not verify:
        src = "migrate_tls_x509_verify" if "migrate_tls_x509_verify" in v else "default_tls_x509_verify"
        yield Result("fail", f"migration TLS does not verify the peer's certificate ({src} = 0)", "host",
                     evidence, "verify=1, force=1", actual)
    elif not force:
        yield Result("warn", "migrations are not forced to use TLS (migrate_tls_force = 0"
                     f"{'' if 'migrate_tls_force' in v else ', the default'})", "host", evidence,
                     "verify=1, force=1", actual)
    else:
        yield Result("pass", "every migration uses TLS with a verified peer", "host", evidence,
                     "verify=1, force=1", actual)


@check("M7-MIGRATION-NETWORK", severity="medium",
       title="Address incoming migrations listen on",
       remediation="Set migration_address (and migration_host) in qemu.conf to the host's address on a "
                   "dedicated migration network.",
       sources="/etc/libvirt/qemu.conf: migration_address, migration_host")
def migration_network(facts, policy):
    """An incoming migration opens a port that accepts a guest's memory; on every address of the host
    it is reachable from the guests' and users' networks too, not only from the migration peers.

    Rule: migration_address unset (libvirt's default 0.0.0.0, or :: with IPv6) or a wildcard -> warn;
    a specific address -> pass. migration_host is reported as evidence.
    Source: /etc/libvirt/qemu.conf.
    """
    conf = _qemu_conf(facts)
    v = conf.get("values", {})
    addr = str(v.get("migration_address", "")).strip()
    evidence = {"path": conf.get("path"), "present": conf.get("present"),
                "migration_address": v.get("migration_address"), "migration_host": v.get("migration_host"),
                "migration_port_min": v.get("migration_port_min"), "migration_port_max": v.get("migration_port_max")}
    if addr in ALL_ADDRESSES:
        what = "unset (all addresses)" if not addr else addr
        yield Result("warn", f"incoming migrations listen on every address (migration_address {what})", "host",
                     evidence, "a migration-network address", what)
    else:
        yield Result("pass", f"incoming migrations listen on {addr}"
                     + (f", announced as {v['migration_host']}" if v.get("migration_host") else ""),
                     "host", evidence, "a migration-network address", addr)


@check("M7-MIGRATION-PEERS", severity="medium",
       title="Declared migration peers",
       remediation="Declare [host] migration_peers in the policy; with remote access on, install an "
                   "/etc/libvirt/hooks/qemu hook that refuses 'migrate' from hosts outside the peers.",
       sources="policy [host] migration_peers; /etc/libvirt/hooks/qemu; remote listeners")
def migration_peers(facts, policy):
    """Guests may only move between hosts of the same administrators and zone. That set has to be
    written down to be checked (here and by F-MIGRATION-PARITY), and a host reachable remotely should
    refuse incoming guests from anyone else: libvirt's qemu hook is called with 'migrate' and can veto.

    Rule: [host] migration_peers unset -> warn (pass when no guest is defined and libvirt does not
    listen remotely: nothing can migrate in or out); declared, with libvirt listening remotely (TCP or
    TLS) and no executable /etc/libvirt/hooks/qemu -> warn; otherwise pass.
    Sources: the policy, /etc/libvirt/hooks/qemu (source libvirt_hooks), the remote listeners.
    """
    peers = policy.get("host", "migration_peers")
    access = _access(facts)
    tcp, tls = remote_summary(access)
    hooks = need(facts.source("libvirt_hooks"), "libvirt_hooks")
    hook = need(hooks.get("qemu", {"present": False}), "/etc/libvirt/hooks/qemu")
    hook_ok = bool(hook.get("present") and hook.get("executable"))
    evidence = {"migration_peers": peers, "remote_tcp": tcp, "remote_tls": tls, "qemu_hook": hook}
    try:
        guest_count = len(facts.guests())
    except (EvidenceMissing, NotApplicable):
        guest_count = None  # unknown: judged as a host with guests
    evidence["guests"] = guest_count
    if peers is None and guest_count == 0 and not (tcp or tls) and not access["listeners_error"]:
        # nothing can leave (no guest) and nothing can arrive (libvirt is not reachable from elsewhere)
        yield Result("pass", "no guests are defined and libvirt does not listen remotely: no migration "
                     "in or out", "host", evidence)
    elif peers is None:
        yield Result("warn", "the policy declares no migration peers ([host] migration_peers)", "host",
                     evidence, "migration_peers declared", "not declared")
    elif hook_ok:
        yield Result("pass", f"migration peers declared ({', '.join(peers) or 'none'}); the qemu hook can veto "
                     "migrations from other hosts", "host", evidence)
    elif tcp or tls:
        state = "not executable" if hook.get("present") else "absent"
        yield Result("warn", f"libvirt accepts remote connections ({'TCP' if tcp else 'TLS'}) but "
                     f"/etc/libvirt/hooks/qemu is {state}: nothing vetoes migrations from hosts outside "
                     f"{', '.join(peers) or 'the (empty) peer list'}", "host", evidence,
                     "a qemu hook vetoing other hosts", f"hook {state}")
    elif access["listeners_error"]:
        raise EvidenceMissing(access["listeners_error"])
    else:
        yield Result("pass", f"migration peers declared ({', '.join(peers) or 'none'}); libvirt does not "
                     "listen remotely", "host", evidence)
