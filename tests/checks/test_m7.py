"""M7 checks (remote access to libvirt, TLS verification, migration TLS, network and peers) on the shared
fixture hosts: Debian monolithic libvirtd, RHEL modular virtqemud + virtproxyd."""

from __future__ import annotations

from access_helpers import facts, run, tree
from vmtest import audit, one

from vmaudit.collectors import Context
from vmaudit.collectors.config import collect_systemd_units
from vmaudit.facts import unavailable

PEERS = '[host]\nmigration_peers = ["hv02", "hv03"]\n'
LISTENER_16509 = {"proto": "tcp", "address": "0.0.0.0", "port": 16509, "pid": 812, "process": "libvirtd",
                  "exe": "/usr/sbin/libvirtd"}


# --- M7-REMOTE-TCP ------------------------------------------------------------------------------

def test_remote_tcp_pass():
    f = one(run("debian-hardened"), "M7-REMOTE-TCP")
    assert f["status"] == "pass" and f["actual"] == "none"
    d = f["evidence"]["daemons"]["libvirtd"]
    assert d["socket_activated"] is True and d["tcp"] is False and d["tls"] is False
    f = one(run("rhel-hardened"), "M7-REMOTE-TCP")
    assert f["status"] == "pass" and f["actual"] == "TLS only"
    assert f["evidence"]["daemons"]["virtproxyd"]["why"] == ["virtproxyd-tls.socket enabled"]
    assert "virtqemud" not in f["evidence"]["daemons"]  # virtqemud has no network listener


def test_remote_tcp_fail_auth_none_critical():
    f = one(run("debian-broken"), "M7-REMOTE-TCP")
    assert f["status"] == "fail" and f["severity"] == "critical"
    d = f["evidence"]["daemons"]["libvirtd"]
    assert d["listen_flag"] is True and d["args_file"] == "/etc/default/libvirtd"
    assert d["auth_tcp"] == "none" and d["tcp"] is True and d["socket_activated"] is False


def test_remote_tcp_fail_sasl_high():
    f = one(run("rhel-broken"), "M7-REMOTE-TCP")
    assert f["status"] == "fail" and f["severity"] == "high"
    assert f["evidence"]["daemons"]["virtproxyd"]["auth_tcp"] == "sasl"  # libvirt's default
    assert f["evidence"]["daemons"]["virtproxyd"]["tcp_ports"] == [16509]


def test_remote_tcp_listen_flag_refused_under_socket_activation():
    snap = facts("debian-hardened")
    env = snap["sources"]["daemon_env"]["/etc/default/libvirtd"]
    env["values"]["LIBVIRTD_ARGS"] = "--listen"
    f = one(run(snap), "M7-REMOTE-TCP")
    assert f["status"] == "pass"
    assert "refused under socket activation" in f["evidence"]["daemons"]["libvirtd"]["why"][0]


def test_remote_tcp_live_listener():
    snap = facts("debian-hardened")
    snap["sources"]["listeners"] = [LISTENER_16509]
    f = one(run(snap), "M7-REMOTE-TCP")
    assert f["status"] == "fail" and f["evidence"]["live_listeners"][0]["port"] == 16509


def test_remote_tcp_masked_units_do_not_count_as_socket_activation(tmp_path):
    # libvirtd(8): to go back to --listen, mask every libvirtd socket unit. `systemctl mask` leaves the
    # sockets.target.wants links of the once-enabled units in place: masked units cannot start.
    root = tree(tmp_path, {
        "/etc/libvirt/libvirtd.conf": 'listen_tcp = 1\nauth_tcp = "none"\nlisten_tls = 0\n',
        "/etc/default/libvirtd": 'LIBVIRTD_ARGS="--listen"\n',
        "/lib/systemd/system/libvirtd.socket": "[Socket]\nListenStream=/run/libvirt/libvirt-sock\n",
        "/lib/systemd/system/libvirtd-tcp.socket": "[Socket]\nListenStream=16509\n",
    })
    wants = tmp_path / "etc/systemd/system/sockets.target.wants"
    wants.mkdir(parents=True)
    for unit in ("libvirtd.socket", "libvirtd-tcp.socket"):
        (wants / unit).symlink_to(f"/lib/systemd/system/{unit}")
        (tmp_path / "etc/systemd/system" / unit).symlink_to("/dev/null")
    (tmp_path / "etc/systemd/system/libvirtd-admin.socket").write_text("")  # an empty file masks too
    units = collect_systemd_units(Context(root=tmp_path, live=False))
    assert units["masked"] == ["libvirtd-admin.socket", "libvirtd-tcp.socket", "libvirtd.socket"]
    assert units["enabled"] == [] and units["sockets"] == {}
    f = one(audit(root), "M7-REMOTE-TCP")
    assert f["status"] == "fail" and f["severity"] == "critical"
    d = f["evidence"]["daemons"]["libvirtd"]
    assert d["socket_activated"] is False and d["listen_flag"] is True


def test_remote_tcp_debian9_libvirtd_opts(tmp_path):
    """Debian 9 and older: /etc/default/libvirtd sets libvirtd_opts="-d -l" (no socket activation)."""
    files = {
        "/etc/libvirt/libvirtd.conf": 'listen_tcp = 1\nauth_tcp = "none"\nlisten_tls = 0\n',
        "/etc/default/libvirtd": '# Start libvirtd to handle qemu/kvm:\nstart_libvirtd="yes"\n'
                                 '# options passed to libvirtd, add "-l" to listen on tcp\nlibvirtd_opts="-d -l"\n',
        "/lib/systemd/system/libvirtd.service": "[Service]\nEnvironmentFile=-/etc/default/libvirtd\n"
                                                "ExecStart=/usr/sbin/libvirtd $libvirtd_opts\n",
    }
    f = one(audit(tree(tmp_path / "listening", files)), "M7-REMOTE-TCP")
    assert f["status"] == "fail" and f["resource"] == "host"
    d = f["evidence"]["daemons"]["libvirtd"]
    assert d["listen_flag"] is True and d["args"] == "-d -l" and d["args_file"] == "/etc/default/libvirtd"
    files["/etc/default/libvirtd"] = 'libvirtd_opts="-d"\n'
    f = one(audit(tree(tmp_path / "local", files)), "M7-REMOTE-TCP")
    assert f["status"] == "pass" and f["evidence"]["daemons"]["libvirtd"]["listen_flag"] is False


def test_remote_tcp_error():
    snap = facts("debian-hardened")
    snap["sources"]["listeners"] = unavailable("psutil: permission denied")
    f = one(run(snap), "M7-REMOTE-TCP")
    assert f["status"] == "error" and "permission denied" in f["evidence"]["reason"]
    snap = facts("debian-hardened")
    snap["sources"]["daemon_env"] = unavailable("cannot read /etc/default/libvirtd: Permission denied")
    assert one(run(snap), "M7-REMOTE-TCP")["status"] == "error"


# --- M7-TLS-VERIFY ------------------------------------------------------------------------------

def test_tls_verify_pass():
    f = one(run("rhel-hardened"), "M7-TLS-VERIFY")
    assert f["status"] == "pass"
    d = f["evidence"]["daemons"]["virtproxyd"]
    assert d["tls_listening"] is True and len(d["tls_allowed_dn_list"]) == 2
    assert one(run("debian-hardened"), "M7-TLS-VERIFY")["status"] == "pass"


def test_tls_verify_fail_and_warn():
    f = one(run("debian-broken"), "M7-TLS-VERIFY")
    assert f["status"] == "fail"
    assert f["evidence"]["daemons"]["libvirtd"]["tls_no_verify_certificate"] == 1
    f = one(run("rhel-broken"), "M7-TLS-VERIFY")
    assert f["status"] == "warn" and "sasl_allowed_username_list" in f["message"]
    snap = facts("rhel-hardened")
    del snap["sources"]["libvirt_config"]["virtproxyd.conf"]["values"]["tls_allowed_dn_list"]
    f = one(run(snap), "M7-TLS-VERIFY")
    assert f["status"] == "warn" and f["evidence"]["daemons"]["virtproxyd"]["tls_allowed_dn_list"] == []


def test_tls_verify_dormant_no_verify_warns():
    snap = facts("debian-hardened")
    snap["sources"]["libvirt_config"]["libvirtd.conf"]["values"]["tls_no_verify_certificate"] = 1
    f = one(run(snap), "M7-TLS-VERIFY")
    assert f["status"] == "warn" and f["evidence"]["daemons"]["libvirtd"]["tls_listening"] is False


def test_tls_verify_error():
    snap = facts("rhel-hardened")
    snap["sources"]["libvirt_config"]["virtproxyd.conf"] = unavailable("/etc/libvirt/virtproxyd.conf: line 9: x")
    f = one(run(snap), "M7-TLS-VERIFY")
    assert f["status"] == "error" and "virtproxyd.conf" in f["evidence"]["reason"]


# --- M7-MIGRATION-TLS ---------------------------------------------------------------------------

def test_migration_tls():
    f = one(run("debian-hardened"), "M7-MIGRATION-TLS")
    assert f["status"] == "pass" and f["evidence"]["effective"] == {"force": 1, "verify": 1}
    f = one(run("rhel-hardened"), "M7-MIGRATION-TLS")  # verify from default_tls_x509_verify
    assert f["status"] == "pass" and f["evidence"]["default_tls_x509_verify"] == 1
    f = one(run("debian-broken"), "M7-MIGRATION-TLS")
    assert f["status"] == "fail" and f["evidence"]["migrate_tls_x509_verify"] == 0
    f = one(run("rhel-broken"), "M7-MIGRATION-TLS")
    assert f["status"] == "warn" and f["evidence"]["migrate_tls_force"] is None


def test_migration_tls_default_verify_off_inherited():
    snap = facts("rhel-hardened")
    snap["sources"]["libvirt_config"]["qemu.conf"]["values"]["default_tls_x509_verify"] = 0
    f = one(run(snap), "M7-MIGRATION-TLS")
    assert f["status"] == "fail" and "default_tls_x509_verify" in f["message"]


def test_migration_tls_error():
    snap = facts("debian-hardened")
    snap["sources"]["libvirt_config"]["qemu.conf"] = unavailable("cannot read /etc/libvirt/qemu.conf: EACCES")
    f = one(run(snap), "M7-MIGRATION-TLS")
    assert f["status"] == "error" and "qemu.conf" in f["evidence"]["reason"]


# --- M7-MIGRATION-NETWORK -----------------------------------------------------------------------

def test_migration_network():
    f = one(run("debian-hardened"), "M7-MIGRATION-NETWORK")
    assert f["status"] == "pass" and f["evidence"]["migration_address"] == "10.20.0.11"
    assert f["evidence"]["migration_host"] == "hv01-mig.example.org"
    f = one(run("debian-broken"), "M7-MIGRATION-NETWORK")
    assert f["status"] == "warn" and f["actual"] == "0.0.0.0"
    f = one(run("rhel-broken"), "M7-MIGRATION-NETWORK")
    assert f["status"] == "warn" and f["evidence"]["migration_address"] is None


def test_migration_network_error():
    snap = facts("debian-hardened")
    snap["sources"]["libvirt_config"] = unavailable("cannot list /etc/libvirt")
    assert one(run(snap), "M7-MIGRATION-NETWORK")["status"] == "error"


# --- M7-MIGRATION-PEERS -------------------------------------------------------------------------

def test_migration_peers_undeclared_warns():
    f = one(run("debian-hardened"), "M7-MIGRATION-PEERS")
    assert f["status"] == "warn" and f["evidence"]["migration_peers"] is None


def test_migration_peers_declared_without_remote_access_pass():
    f = one(run("debian-hardened", PEERS), "M7-MIGRATION-PEERS")
    assert f["status"] == "pass" and f["evidence"]["migration_peers"] == ["hv02", "hv03"]
    assert f["evidence"]["remote_tls"] is False


def test_migration_peers_remote_with_hook_pass_without_hook_warn():
    # rhel-hardened listens on TLS and ships an executable /etc/libvirt/hooks/qemu that vetoes migrations
    f = one(run("rhel-hardened", PEERS), "M7-MIGRATION-PEERS")
    assert f["status"] == "pass" and f["evidence"]["remote_tls"] is True
    assert f["evidence"]["qemu_hook"]["executable"] is True
    snap = facts("rhel-hardened")
    snap["sources"]["libvirt_hooks"] = {"qemu": {"path": "/etc/libvirt/hooks/qemu", "present": True,
                                                 "executable": False}}
    f = one(run(snap, PEERS), "M7-MIGRATION-PEERS")
    assert f["status"] == "warn" and "not executable" in f["message"]
    snap["sources"]["libvirt_hooks"]["qemu"]["present"] = False
    f = one(run(snap, PEERS), "M7-MIGRATION-PEERS")
    assert f["status"] == "warn" and f["actual"] == "hook absent"


def test_migration_peers_error():
    snap = facts("rhel-hardened")
    snap["sources"]["libvirt_hooks"] = {"qemu": unavailable("cannot stat /etc/libvirt/hooks/qemu: EACCES")}
    f = one(run(snap, PEERS), "M7-MIGRATION-PEERS")
    assert f["status"] == "error" and "hooks/qemu" in f["evidence"]["reason"]
