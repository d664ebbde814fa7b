"""M3 checks (checks/m3_patching.py, m3_confinement.py, m3_kernel_cpu.py, m3_guest_devices.py) and their collectors (collectors/hardening.py), on the shared fixture
hosts (debian-/rhel-, hardened/broken) with the libvirt test-driver nodes m3-hardened / m3-broken.

Ages are measured against a fixed collected_at, never the clock. The libvirt test driver always
reports the security model 'testSecurity'; tests that need a real model replace the capabilities.
"""

from __future__ import annotations

import copy
import functools
import gzip
import re

import pytest
import rpmcache
from vmtest import (
    REQUIRE_REAL,
    audit,
    domain_parses,
    findings,
    host_root,
    make_root,
    one,
    put_guest_images,
    set_xml,
    test_uri,
    with_sources,
)

from vmaudit.audit import collect_facts
from vmaudit.checks.m3_kernel_cpu import parse_cpuset
from vmaudit.checks.m3_patching import kernel_flavour, version_key
from vmaudit.collectors import Context
from vmaudit.collectors.hardening import (
    collect_cpu_security,
    collect_lsm,
    collect_package_history,
    collect_reboot_required,
    parse_apparmor_profiles,
    parse_apt_history,
    parse_apt_simulation,
    parse_dnf_check_update,
    parse_dnf_rpm_log,
    parse_dpkg_log,
)
from vmaudit.facts import not_collected, unavailable

NOW = "2026-11-25T12:00:00Z"
NOW_TS = 1795608000
PAIRS = {"debian-hardened": "m3-hardened", "rhel-hardened": "m3-hardened",
         "debian-broken": "m3-broken", "rhel-broken": "m3-broken"}


@functools.cache
def _snapshot(host: str, node: str) -> dict:
    facts = collect_facts(root=str(host_root(host)), uri=test_uri(node))
    facts["collected_at"] = NOW
    return facts


def snap(host: str, node: str | None = None, **overrides) -> dict:
    facts = copy.deepcopy(_snapshot(host, node or PAIRS[host]))
    return with_sources(facts, **overrides) if overrides else facts


def caps(*models: str) -> str:
    body = "".join(f"<secmodel><model>{m}</model><doi>0</doi></secmodel>" for m in models)
    return f"<capabilities><host><cpu><arch>x86_64</arch></cpu>{body}</host></capabilities>"


def with_caps(facts: dict, *models: str) -> dict:
    facts["sources"]["libvirt"]["capabilities"] = caps(*models)
    return facts


def qemu_conf(facts: dict, **values) -> dict:
    facts["sources"]["libvirt_config"]["qemu.conf"] = {"path": "/etc/libvirt/qemu.conf", "present": True,
                                                        "values": values}
    return facts


def qemu_proc(pid=4242, **kw) -> dict:
    proc = {"pid": pid, "name": "qemu-system-x86", "exe": "/usr/bin/qemu-system-x86_64", "kind": "qemu",
            "cmdline": ["/usr/bin/qemu-system-x86_64", "-name", "guest=web01"], "guest": "web01",
            "uid": 64055, "user": "libvirt-qemu", "gid": 64055, "seccomp": 2, "deleted_maps": []}
    proc.update(kw)
    return proc


def run(facts: dict, policy: str = "") -> dict:
    return audit(facts=facts, policy=policy)


# --- M3-PATCH-AGE -------------------------------------------------------------------------------

def test_patch_age_pass_recent_upgrade_from_apt_and_dpkg():
    f = one(run(snap("debian-hardened")), "M3-PATCH-AGE")
    assert f["status"] == "pass"
    assert f["evidence"]["newest"] == "2026-11-20T06:25:31"  # apt End-Date beats the dpkg line
    assert f["evidence"]["basis"] == "upgrade" and f["evidence"]["age_days"] == pytest.approx(5.2, abs=0.1)
    assert "/var/log/apt/history.log.1.gz" in f["evidence"]["logs"]


def test_patch_age_warn_and_policy_thresholds():
    facts = snap("rhel-hardened")
    facts["collected_at"] = "2026-12-08T00:00:00Z"  # 20 days after the dnf upgrade
    f = one(run(facts), "M3-PATCH-AGE")
    assert f["status"] == "warn" and f["evidence"]["newest_from"] == "/var/log/dnf.rpm.log"
    assert one(run(facts, "[patch]\nwarn_days = 21\nfail_days = 40\n"), "M3-PATCH-AGE")["status"] == "pass"


def test_patch_age_fail_old_upgrades_rotated_logs():
    f = one(run(snap("debian-broken")), "M3-PATCH-AGE")
    assert f["status"] == "fail" and f["severity"] == "high"
    # the later 'Install: htop' does not count as patching
    assert f["evidence"]["newest"] == "2026-08-14T09:04:45"
    g = one(run(snap("rhel-broken")), "M3-PATCH-AGE")
    assert g["status"] == "fail"
    assert g["evidence"]["newest"] == "2026-08-02T09:40:21"  # +0200 converted to UTC
    assert g["evidence"]["newest_from"] == "/var/log/dnf.rpm.log-20260901"


def test_patch_age_error_without_any_history(tmp_path):
    (tmp_path / "var/log/apt").mkdir(parents=True)
    facts = collect_facts(root=str(tmp_path), uri="test:///default")
    f = one(run(facts), "M3-PATCH-AGE")
    assert f["status"] == "error" and "no package history" in f["evidence"]["reason"]
    g = one(run(snap("debian-hardened", package_history=unavailable("boom"))), "M3-PATCH-AGE")
    assert g["status"] == "error" and "boom" in g["evidence"]["reason"]


def test_patch_age_unreadable_gzip_is_reported(tmp_path):
    (tmp_path / "var/log").mkdir(parents=True)
    (tmp_path / "var/log/dpkg.log.2.gz").write_bytes(b"not gzip")
    hist = collect_package_history(Context(root=tmp_path, live=False))
    assert hist["logs"][0]["path"] == "/var/log/dpkg.log.2.gz" and "unavailable" in hist["logs"][0]
    facts = collect_facts(root=str(tmp_path), uri="test:///default")
    f = one(run(facts), "M3-PATCH-AGE")
    assert f["status"] == "error" and "/var/log/dpkg.log.2.gz" in f["evidence"]["unreadable"]


def test_patch_age_corrupt_rotated_gzip_keeps_the_other_logs(tmp_path):
    (tmp_path / "var/log").mkdir(parents=True)
    good = gzip.compress(b"2026-11-20 10:00:00 upgrade libc6:amd64 1 2\n"
                         b"2026-11-20 10:00:05 status installed libc6:amd64 2\n")
    (tmp_path / "var/log/dpkg.log.1.gz").write_bytes(good)
    # a valid gzip header over damaged deflate data: zlib.error, not BadGzipFile
    (tmp_path / "var/log/dpkg.log.2.gz").write_bytes(good[:12] + bytes(b ^ 0xFF for b in good[12:30]) + good[30:])
    facts = collect_facts(root=str(tmp_path), uri="test:///default")
    facts["collected_at"] = NOW
    f = one(run(facts), "M3-PATCH-AGE")
    assert f["status"] == "pass" and f["evidence"]["newest"] == "2026-11-20T10:00:05"
    assert "/var/log/dpkg.log.2.gz" in f["evidence"]["unreadable"]


def test_package_log_parsers():
    dpkg = ("2026-11-01 10:00:00 upgrade libc6:amd64 2.36-9 2.36-9+deb12u1\n"
            "2026-11-01 10:00:05 status installed libc6:amd64 2.36-9+deb12u1\n"
            "2026-11-02 10:00:00 upgrade qemu:amd64 1 2\n"  # never completed: not an upgrade
            "2026-11-03 10:00:00 install htop:amd64 <none> 3.2\n"
            "2026-11-03 10:00:01 status installed htop:amd64 3.2\n")
    out = parse_dpkg_log(dpkg)
    assert out["newest_upgrade"] == "2026-11-01T10:00:05" and out["newest_install"] == "2026-11-03T10:00:01"
    assert out["upgrades"] == 1
    dnf = ("2026-01-02T03:04:05Z SUBDEBUG Upgrade: a-1.x86_64\n"
           "2026-01-03T03:04:05+0100 SUBDEBUG Upgraded: a-0.x86_64\n")
    assert parse_dnf_rpm_log(dnf)["newest_upgrade"] == "2026-01-02T03:04:05"
    hist = "Start-Date: 2026-01-02  03:04:05\nUpgrade: x (1, 2)\n"  # a run cut off before End-Date
    assert parse_apt_history(hist)["newest_upgrade"] == "2026-01-02T03:04:05"


# --- M3-PENDING-UPDATES -------------------------------------------------------------------------

APT_SIM = """NOTE: This is only a simulation!
Reading package lists...
Inst libssl3 [3.0.15-1~deb12u1] (3.0.17-1~deb12u2 Debian-Security:12/stable-security [amd64])
Inst tzdata [2024b-0+deb12u1] (2025b-0+deb12u1 Debian:12.11/stable [all])
Inst linux-image-6.1.0-37-amd64 (6.1.140-1 Debian-Security:12/stable-security [amd64])
Conf libssl3 (3.0.17-1~deb12u2 Debian-Security:12/stable-security [amd64])
"""


def test_pending_updates_parsers():
    out = parse_apt_simulation(APT_SIM)
    assert [s["package"] for s in out["security"]] == ["libssl3", "linux-image-6.1.0-37-amd64"]
    assert out["other"] == 1
    dnf = ("\nopenssl-libs.x86_64   1:3.2.2-6.el9_5.1   rhel-9-for-x86_64-baseos-rpms\n"
           "qemu-kvm.x86_64       17:9.0.0-10.el9_5.2 rhel-9-for-x86_64-appstream-rpms\n")
    assert [p["package"] for p in parse_dnf_check_update(dnf)] == ["openssl-libs.x86_64", "qemu-kvm.x86_64"]


def test_pending_updates_online_fail_pass_error():
    """With --online (pending_updates collected) the package manager's answer decides; the offline
    default is tested in tests/checks/test_m3_pending_offline.py."""
    pending = {"tool": "apt-get", "command": ["apt-get", "-s", "dist-upgrade"],
               **parse_apt_simulation(APT_SIM), "lists_mtime": 1795000000}
    f = one(run(snap("debian-hardened", pending_updates=pending)), "M3-PENDING-UPDATES")
    assert f["status"] == "fail" and f["evidence"]["count"] == 2
    assert f["evidence"]["security_updates"][0]["package"] == "libssl3"
    assert "package_lists_age_days" in f["evidence"]
    clean = {"tool": "dnf", "command": ["dnf"], "security": [], "other": None, "lists_mtime": None}
    assert one(run(snap("rhel-hardened", pending_updates=clean)), "M3-PENDING-UPDATES")["status"] == "pass"
    off = one(run(snap("rhel-hardened", pending_updates=not_collected("asking the package manager needs "
                                                                        "--online"))), "M3-PENDING-UPDATES")
    # offline, the dnf cache is read (tests/checks/test_m3_pending_rpm.py); the fixture's rpmdb.sqlite is empty
    assert off["status"] == "error" and "not a readable rpm database" in off["message"]
    stale = dict(pending, security=[], lists_mtime=1795000000 - 30 * 86400)
    w = one(run(snap("debian-hardened", pending_updates=stale)), "M3-PENDING-UPDATES")
    assert w["status"] == "warn" and w["severity"] == "medium" and "days old" in w["message"]
    err = one(run(snap("rhel-hardened", pending_updates=unavailable("dnf exited 1"))), "M3-PENDING-UPDATES")
    assert err["status"] == "error" and "dnf exited 1" in err["evidence"]["reason"]


# --- M3-STALE-BINARIES --------------------------------------------------------------------------

def test_kernel_versions_compare_within_flavour():
    assert version_key("6.1.0-27-amd64") < version_key("6.1.0-28-amd64")
    assert version_key("6.1.0-9-amd64") < version_key("6.1.0-10-amd64")
    assert version_key("5.14.0-427.el9.x86_64") < version_key("5.14.0-503.el9.x86_64")
    assert version_key("5.14.0-427.42.1.el9_4.x86_64") < version_key("5.14.0-503.11.1.el9_5.x86_64")
    assert kernel_flavour("6.1.0-28-cloud-amd64") == "cloud-amd64" != kernel_flavour("6.1.0-28-amd64")
    assert kernel_flavour("5.14.0-503.el9.x86_64+debug") == "x86_64+debug"
    # Debian 13 dropped the ABI number: a newer cloud kernel must not count for the generic one
    assert kernel_flavour("6.12.38+deb13-amd64") == "amd64"
    assert kernel_flavour("6.12.41+deb13-cloud-amd64") == "cloud-amd64"
    assert kernel_flavour("6.12.12+bpo-amd64") == "amd64"
    assert version_key("6.12.38+deb13-amd64") < version_key("6.12.41+deb13-amd64")
    trixie = {"running": "6.12.38+deb13-amd64", "installed": ["6.12.38+deb13-amd64", "6.12.41+deb13-cloud-amd64"]}
    f = one(run(snap("debian-hardened", kernel=trixie)), "M3-STALE-BINARIES")
    assert f["status"] == "pass" and f["evidence"]["kernel"]["newer"] == []
    trixie["installed"].append("6.12.41+deb13-amd64")
    f = one(run(snap("debian-hardened", kernel=trixie)), "M3-STALE-BINARIES")
    assert f["status"] == "warn" and f["evidence"]["kernel"]["newer"] == ["6.12.41+deb13-amd64"]


def test_stale_binaries_warn_reboot_pending():
    f = one(run(snap("debian-broken")), "M3-STALE-BINARIES")
    assert f["status"] == "warn" and f["severity"] == "medium"
    assert f["evidence"]["reboot_required"]["present"] is True
    assert f["evidence"]["kernel"]["newer"] == ["6.1.0-28-amd64"]  # not the cloud flavour
    g = one(run(snap("rhel-broken")), "M3-STALE-BINARIES")
    assert g["status"] == "warn" and g["evidence"]["kernel"]["newer"] == ["5.14.0-503.11.1.el9_5.x86_64"]


def test_stale_binaries_fail_on_deleted_code_and_pass():
    procs = [qemu_proc(deleted_maps=["/usr/lib/x86_64-linux-gnu/libgnutls.so.30.34.3"]),
             {"pid": 900, "name": "libvirtd", "exe": "/usr/sbin/libvirtd", "kind": "libvirt", "uid": 0,
              "gid": 0, "seccomp": 0, "deleted_maps": []}]
    f = one(run(snap("debian-hardened", processes=procs)), "M3-STALE-BINARIES")
    assert f["status"] == "fail" and f["severity"] == "high"
    assert f["evidence"]["stale_processes"][0]["pid"] == 4242
    p = one(run(snap("debian-hardened", processes=[qemu_proc()])), "M3-STALE-BINARIES")
    assert p["status"] == "pass" and p["evidence"]["processes_checked"] == 1
    assert p["evidence"]["kernel"]["newer"] == []


def test_stale_binaries_reports_the_process_part_without_lib_modules():
    """A VM or container without /lib/modules: the processes were examined, so that verdict stands and
    only the kernel part is an error (issue 11: report what was decided, error only what was not)."""
    kernel = {"running": "6.18.44-fc-v1272", "installed": unavailable("/lib/modules does not exist")}
    report = run(snap("debian-hardened", processes=[qemu_proc()], kernel=kernel))
    f = one(report, "M3-STALE-BINARIES")
    assert f["status"] == "pass" and f["evidence"]["processes_checked"] == 1
    assert "/lib/modules" in f["evidence"]["not_decided"][0]
    e = one(report, "M3-STALE-BINARIES", "kernel")
    assert e["status"] == "error" and "/lib/modules does not exist" in e["evidence"]["reason"]
    # a stale process is still a failure, whatever the kernel part
    bad = one(run(snap("debian-hardened", processes=[qemu_proc(deleted_maps=["/usr/bin/qemu-system-x86_64"])],
                       kernel=kernel)), "M3-STALE-BINARIES")
    assert bad["status"] == "fail"


def test_stale_binaries_error_when_processes_unreadable():
    f = one(run(snap("debian-hardened", processes=unavailable("psutil missing"))), "M3-STALE-BINARIES")
    assert f["status"] == "error" and "psutil missing" in f["evidence"]["reason"]


def test_reboot_required_does_not_follow_var_run_symlink(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "var").mkdir()
    (tmp_path / "var/run").symlink_to("/run")  # would point at the auditing host's /run
    assert collect_reboot_required(Context(root=tmp_path, live=False))["present"] is False
    (tmp_path / "run/reboot-required").write_text("*** System restart required ***\n")
    assert collect_reboot_required(Context(root=tmp_path, live=False))["path"] == "/run/reboot-required"


# --- M3-SECURITY-DRIVER -------------------------------------------------------------------------

def test_security_driver_pass_with_apparmor_model():
    f = one(run(with_caps(snap("debian-hardened"), "apparmor", "dac")), "M3-SECURITY-DRIVER")
    assert f["status"] == "pass" and f["evidence"]["secmodels"] == ["apparmor", "dac"]
    assert f["evidence"]["security_require_confined"] == 1


def test_security_driver_fail_none_and_unconfined_default():
    f = one(run(snap("debian-broken")), "M3-SECURITY-DRIVER")
    assert f["status"] == "fail" and f["severity"] == "critical"
    assert f["evidence"]["security_driver"] == "none" and f["evidence"]["security_default_confined"] == 0
    # only DAC (as on a host without an LSM): fail even with a clean qemu.conf
    g = one(run(with_caps(snap("rhel-hardened"), "dac")), "M3-SECURITY-DRIVER")
    assert g["status"] == "fail" and g["evidence"]["secmodels"] == ["dac"]
    h = one(run(qemu_conf(with_caps(snap("rhel-hardened"), "selinux", "dac"), security_driver=["none"])),
            "M3-SECURITY-DRIVER")
    assert h["status"] == "fail"


def test_security_driver_warn_when_not_required():
    facts = qemu_conf(with_caps(snap("rhel-hardened"), "selinux", "dac"))  # every default
    f = one(run(facts), "M3-SECURITY-DRIVER")
    assert f["status"] == "warn" and f["evidence"]["security_require_confined"] == 0
    assert f["severity"] == "medium"  # a review item below the check's critical
    assert f["evidence"]["security_driver"] == "(probe)"


def test_security_driver_error_without_capabilities():
    facts = snap("debian-hardened", libvirt=unavailable("cannot connect"))
    f = one(run(facts), "M3-SECURITY-DRIVER")
    assert f["status"] == "error" and "cannot connect" in f["evidence"]["reason"]
    # a config that is bad on its own still fails without libvirt
    assert one(run(snap("debian-broken", libvirt=unavailable("x"))), "M3-SECURITY-DRIVER")["status"] == "fail"
    err = one(run(snap("debian-hardened", libvirt_config={"qemu.conf": unavailable("permission denied")})),
              "M3-SECURITY-DRIVER")
    assert err["status"] == "error" and "permission denied" in err["evidence"]["reason"]


# --- M3-GUEST-SECLABEL --------------------------------------------------------------------------

def test_guest_seclabel_fail_cases_and_pass():
    report = run(with_caps(snap("debian-broken"), "apparmor", "dac"))
    lab01 = one(report, "M3-GUEST-SECLABEL", "guest:lab01")
    assert lab01["status"] == "fail" and "type='none'" in lab01["message"]
    lab02 = one(report, "M3-GUEST-SECLABEL", "guest:lab02")
    assert lab02["status"] == "fail" and lab02["evidence"]["disks_relabel_no"] == ["vda", "vdb"]
    assert any("shared with lab03" in p for p in lab02["evidence"]["problems"])
    lab03 = one(report, "M3-GUEST-SECLABEL", "guest:lab03")
    assert lab03["status"] == "fail" and "shared with lab02" in lab03["message"]
    mgmt = one(report, "M3-GUEST-SECLABEL", "guest:mgmt01")
    assert mgmt["status"] == "pass" and mgmt["evidence"]["seclabels"][0]["model"] == "apparmor"


def test_guest_seclabel_running_guest_needs_an_lsm_label():
    facts = with_caps(snap("debian-hardened"), "apparmor", "dac")
    report = run(facts)
    assert one(report, "M3-GUEST-SECLABEL", "guest:web01")["status"] == "pass"
    xml = facts["sources"]["libvirt"]["domains"]
    web = next(d for d in xml if d["name"] == "web01")
    web["xml"] = web["xml"].replace("model='apparmor'", "model='dac'", 1)
    f = one(run(facts), "M3-GUEST-SECLABEL", "guest:web01")
    assert f["status"] == "fail" and "without an apparmor label" in f["message"]
    # a host whose libvirt offers only DAC (as this CI machine): every guest is unconfined
    dac_only = run(with_caps(snap("debian-hardened"), "none", "dac"))
    for name, verb in (("web01", "runs"), ("db01", "will start")):
        g = one(dac_only, "M3-GUEST-SECLABEL", f"guest:{name}")
        assert g["status"] == "fail" and verb in g["message"] and g["evidence"]["host_lsm_models"] == []


def test_guest_seclabel_error_per_guest_and_without_libvirt():
    facts = snap("debian-hardened")
    facts["sources"]["libvirt"]["domains"][0]["xml"] = unavailable("libvirt: domain vanished")
    name = facts["sources"]["libvirt"]["domains"][0]["name"]
    f = one(run(facts), "M3-GUEST-SECLABEL", f"guest:{name}")
    assert f["status"] == "error" and "vanished" in f["evidence"]["reason"]
    g = one(run(snap("debian-hardened", libvirt=unavailable("no libvirtd"))), "M3-GUEST-SECLABEL")
    assert g["status"] == "error" and "no libvirtd" in g["evidence"]["reason"]


# --- M3-LSM-ENFORCING ---------------------------------------------------------------------------

def test_lsm_enforcing_pass_apparmor_and_selinux():
    f = one(run(snap("debian-hardened")), "M3-LSM-ENFORCING")
    assert f["status"] == "pass" and f["evidence"]["running_guests_without_profile"] == []
    assert {p["name"] for p in f["evidence"]["libvirt_profiles"]} >= {"libvirtd",
                                                                       "libvirt-6c3e2c0a-5b0e-4f52-9a3e-1d2f3a4b5c61"}
    g = one(run(snap("rhel-hardened")), "M3-LSM-ENFORCING")
    assert g["status"] == "pass" and g["evidence"]["selinux"]["enforce"] == "1"


def test_lsm_enforcing_fail_complain_permissive_none(tmp_path):
    f = one(run(snap("debian-broken")), "M3-LSM-ENFORCING")
    assert f["status"] == "fail" and "libvirtd in complain mode" in f["message"]
    assert "lab01" in f["evidence"]["running_guests_without_profile"]
    g = one(run(snap("rhel-broken")), "M3-LSM-ENFORCING")
    assert g["status"] == "fail" and "SELINUX=permissive" in g["message"]
    assert g["evidence"]["selinux"]["enforce"] == "0"
    (tmp_path / "sys/kernel").mkdir(parents=True)
    (tmp_path / "etc/selinux").mkdir(parents=True)
    (tmp_path / "etc/selinux/config").write_text("SELINUX=enforcing\nSELINUXTYPE=targeted\n")
    lsm = collect_lsm(Context(root=tmp_path, live=False))
    h = one(run(snap("rhel-hardened", lsm=lsm)), "M3-LSM-ENFORCING")
    assert h["status"] == "fail" and "not enabled in the kernel" in h["message"]


def test_lsm_enforcing_error_and_image_without_sys(tmp_path):
    assert collect_lsm(Context(root=tmp_path, live=False)) == {
        "not_collected": f"no /sys under root {tmp_path}: a file-system image carries no kernel state"}
    lsm = copy.deepcopy(_snapshot("debian-hardened", "m3-hardened")["sources"]["lsm"])
    lsm["apparmor"]["profiles"] = unavailable("cannot read /sys/kernel/security/apparmor/profiles: Permission denied")
    f = one(run(snap("debian-hardened", lsm=lsm)), "M3-LSM-ENFORCING")
    assert f["status"] == "error" and "Permission denied" in f["evidence"]["reason"]
    lsm["apparmor"] = {"enabled": unavailable("cannot read /sys/module/apparmor/parameters/enabled: "
                                              "Permission denied"), "profiles": None}
    g = one(run(snap("debian-hardened", lsm=lsm)), "M3-LSM-ENFORCING")
    assert g["status"] == "error" and "apparmor/parameters/enabled" in g["evidence"]["reason"]


def test_lsm_enforcing_fails_without_libvirt_daemon_profile():
    lsm = copy.deepcopy(_snapshot("debian-hardened", "m3-hardened")["sources"]["lsm"])
    lsm["apparmor"]["profiles"] = [p for p in lsm["apparmor"]["profiles"]
                                   if not p["name"].startswith(("libvirtd", "virt-aa-helper"))]
    f = one(run(snap("debian-hardened", lsm=lsm)), "M3-LSM-ENFORCING")
    assert f["status"] == "fail" and "no libvirt daemon profile" in f["message"]


def test_apparmor_profile_names_with_spaces():
    assert parse_apparmor_profiles("/opt/my app (complain)\nx (enforce)\n") == [
        {"name": "/opt/my app", "mode": "complain"}, {"name": "x", "mode": "enforce"}]


# --- M3-SECCOMP / M3-QEMU-USER / M3-QEMU-ISOLATION ----------------------------------------------

def test_seccomp_pass_fail_error():
    f = one(run(snap("debian-hardened")), "M3-SECCOMP")
    assert f["status"] == "pass" and f["evidence"]["seccomp_sandbox"] == 1
    assert f["evidence"]["processes"].startswith("skip")
    g = one(run(snap("debian-broken")), "M3-SECCOMP")
    assert g["status"] == "fail" and g["evidence"]["seccomp_sandbox"] == 0
    h = one(run(snap("debian-hardened", processes=[qemu_proc(seccomp=0), qemu_proc(pid=7, seccomp=2)])),
            "M3-SECCOMP")
    assert h["status"] == "fail" and h["evidence"]["qemu_processes"] == {"qemu-system-x86[4242]": 0,
                                                                          "qemu-system-x86[7]": 2}
    e = one(run(snap("debian-hardened", processes=unavailable("no /proc"))), "M3-SECCOMP")
    assert e["status"] == "error" and "no /proc" in e["evidence"]["reason"]


def test_qemu_user_pass_fail_error():
    f = one(run(snap("debian-hardened")), "M3-QEMU-USER")
    assert f["status"] == "pass" and f["evidence"]["user"] == "libvirt-qemu"
    assert f["evidence"]["from"] == "distro default"
    assert one(run(snap("rhel-hardened")), "M3-QEMU-USER")["evidence"]["user"] == "qemu"
    g = one(run(snap("rhel-broken")), "M3-QEMU-USER")
    assert g["status"] == "fail" and g["severity"] == "critical" and g["evidence"]["user"] == "+0"
    h = one(run(snap("debian-hardened", processes=[qemu_proc(uid=0, user="root", gid=0)])), "M3-QEMU-USER")
    assert h["status"] == "fail" and "qemu-system-x86[4242]" in h["evidence"]["qemu_processes"]
    e = one(run(snap("debian-hardened", os_release={"present": False})), "M3-QEMU-USER")
    assert e["status"] == "error" and "build default is unknown" in e["evidence"]["reason"]
    # live, but no QEMU runs: nothing shows the user (upstream's build default is root) -> not a pass
    n = one(run(snap("debian-hardened", os_release={"present": False}, processes=[])), "M3-QEMU-USER")
    assert n["status"] == "error" and "no QEMU process runs" in n["evidence"]["reason"]
    p = one(run(snap("debian-hardened", os_release={"present": False}, processes=[qemu_proc()])),
            "M3-QEMU-USER")
    assert p["status"] == "pass" and "qemu-system-x86[4242]" in p["evidence"]["qemu_processes"]


def test_qemu_isolation_pass_warn_error():
    f = one(run(snap("debian-hardened")), "M3-QEMU-ISOLATION")
    assert f["status"] == "pass" and f["evidence"]["namespaces"] == ["mount"]
    g = one(run(snap("debian-broken")), "M3-QEMU-ISOLATION")
    assert g["status"] == "warn" and g["evidence"]["cgroup_device_acl_extra"] == ["/dev/mem", "/dev/sda"]
    assert g["evidence"]["dynamic_ownership"] == 0 and g["evidence"]["namespaces"] == []
    h = one(run(qemu_conf(snap("rhel-hardened"), cgroup_controllers=["cpu", "memory"])), "M3-QEMU-ISOLATION")
    assert h["status"] == "warn" and "devices" in h["message"]
    e = one(run(snap("rhel-hardened", libvirt_config={"qemu.conf": unavailable("line 3: expected '='")})),
            "M3-QEMU-ISOLATION")
    assert e["status"] == "error" and "expected '='" in e["evidence"]["reason"]


# --- M3-KSM / M3-SHARED-MEMORY ------------------------------------------------------------------

def test_ksm_pass_fail_severity_error():
    assert one(run(snap("rhel-hardened")), "M3-KSM")["evidence"]["run"] == 2
    f = one(run(snap("debian-broken")), "M3-KSM")
    assert f["status"] == "fail" and f["severity"] == "high"
    assert f["evidence"]["zones"] == ["dmz", "internal", "mgmt"]
    assert sorted(f["evidence"]["guests_without_nosharepages"]) == ["lab01", "lab02", "lab03"]
    one_zone = snap("debian-hardened", ksm={"present": True, "run": 1, "pages_shared": 1, "pages_sharing": 2})
    g = one(run(one_zone), "M3-KSM")
    assert g["status"] == "fail" and g["severity"] == "medium" and g["evidence"]["guests_without_nosharepages"] == []
    e = one(run(snap("debian-hardened", ksm=unavailable("cannot read /sys/kernel/mm/ksm/run"))), "M3-KSM")
    assert e["status"] == "error" and "ksm/run" in e["evidence"]["reason"]


def test_ksm_reads_the_guests_without_parsing_them_again(monkeypatch):
    """M3-KSM runs after the guests' trees are dropped: it reads a view, so each definition is parsed
    once per audit (parsing every guest again cost as much as the first parse on a large host)."""

    facts = snap("debian-broken")  # SMT on, two zones: M3-CORE-SHARING reads pinning from a view too
    parsed = domain_parses(monkeypatch)
    f = one(run(facts), "M3-KSM")
    assert f["status"] == "fail" and sorted(f["evidence"]["guests_without_nosharepages"]) == ["lab01", "lab02", "lab03"]
    domains = facts["sources"]["libvirt"]["domains"]
    assert len(parsed) == sum(1 + isinstance(d.get("xml_inactive"), str) for d in domains)


def test_shared_memory_warn_pass_error():
    report = run(snap("debian-broken"))
    lab03 = one(report, "M3-SHARED-MEMORY", "guest:lab03")
    assert lab03["status"] == "warn"
    # its virtiofs share is M3-HOST-SHARE's to judge (tests/checks/test_m3_guest_devices.py), not here
    assert lab03["evidence"]["shared"] == ["memoryBacking access mode='shared'"]
    assert one(report, "M3-SHARED-MEMORY", "guest:lab01")["evidence"]["shared"] == ["shmem 'ivshmem0'"]
    assert one(report, "M3-SHARED-MEMORY", "guest:lab02")["status"] == "pass"
    facts = snap("debian-broken")
    facts["sources"]["libvirt"]["domains"][1]["xml"] = unavailable("libvirt: gone")
    name = facts["sources"]["libvirt"]["domains"][1]["name"]
    e = one(run(facts), "M3-SHARED-MEMORY", f"guest:{name}")
    assert e["status"] == "error" and "gone" in e["evidence"]["reason"]


# --- M3-CPU-VULNS / M3-CORE-SHARING / M3-NESTED -------------------------------------------------

# This machine's own command line (Linux 6.18): attack-vector controls switch guest protection off
THIS_CMDLINE = ("mitigations=auto,no_guest_host,no_guest_guest console=ttyS0 quiet reboot=k panic=1 nomodule "
                "random.trust_cpu=1 swiotlb=noforce psi=1 -- --firecracker-init --addr 0.0.0.0:2024")


def test_cpu_vulns_attack_vector_controls():
    kernel = {"running": "6.18.44-fc-v1272", "installed": ["6.18.44-fc-v1272"]}
    f = one(run(snap("debian-hardened", cmdline=THIS_CMDLINE, kernel=kernel)), "M3-CPU-VULNS")
    assert f["status"] == "fail" and "no_guest_host" in f["message"] and "no_guest_guest" in f["message"]
    assert f["evidence"]["mitigations"] == "auto,no_guest_host,no_guest_guest"
    assert "mitigations=off" not in f["remediation"]  # it is not set: never told to drop it
    assert f["remediation"].startswith("Remove no_guest_host, no_guest_guest from mitigations=")
    # the last mitigations= wins; a later plain one restores every vector
    g = one(run(snap("debian-hardened", cmdline=THIS_CMDLINE.replace("quiet", "quiet mitigations=auto"),
                     kernel=kernel)), "M3-CPU-VULNS")
    assert g["status"] == "pass"
    # a kernel before 6.17 rejects the options and keeps every mitigation
    old = one(run(snap("debian-hardened", cmdline=THIS_CMDLINE,
                       kernel={"running": "6.1.0-37-amd64", "installed": []})), "M3-CPU-VULNS")
    assert old["status"] == "pass" and "predates" in old["evidence"]["attack_vectors"]
    w = one(run(snap("debian-hardened", cmdline="mitigations=auto,no_cross_thread", kernel=kernel)),
            "M3-CPU-VULNS")
    assert w["status"] == "warn" and w["severity"] == "medium" and "no_cross_thread" in w["message"]
    off = one(run(snap("debian-hardened", cmdline="ro mitigations=off", kernel=kernel)), "M3-CPU-VULNS")
    assert off["status"] == "fail" and off["remediation"].startswith("Remove mitigations=off")
    e = one(run(snap("debian-hardened", cmdline=THIS_CMDLINE, kernel=kernel,
                     cpu_security=unavailable("cannot read /sys/devices/system/cpu/vulnerabilities"))),
            "M3-CPU-VULNS")
    assert e["status"] == "error"


def test_cpu_vulns_pass_fail_warn_error():
    f = one(run(snap("debian-hardened")), "M3-CPU-VULNS")
    assert f["status"] == "pass" and f["evidence"]["smt_control"] == "off"
    assert f["evidence"]["vulnerabilities"]["mds"] == "Mitigation: Clear CPU buffers; SMT disabled"
    g = one(run(snap("rhel-broken")), "M3-CPU-VULNS")
    assert g["status"] == "fail" and "spec_rstack_overflow" in g["message"]
    cs = copy.deepcopy(_snapshot("rhel-hardened", "m3-hardened")["sources"]["cpu_security"])
    cs["vulnerabilities"]["mds"] = "Mitigation: Clear CPU buffers; SMT vulnerable"
    w = one(run(snap("rhel-hardened", cpu_security=cs)), "M3-CPU-VULNS")
    assert w["status"] == "warn" and w["severity"] == "medium" and w["evidence"]["smt_control"] == "on"
    m = one(run(snap("rhel-hardened", cmdline="BOOT_IMAGE=/vmlinuz ro mitigations=off")), "M3-CPU-VULNS")
    assert m["status"] == "fail" and m["evidence"]["cmdline_params"] == ["mitigations=off"]
    cs["vulnerabilities"] = unavailable("/sys/devices/system/cpu/vulnerabilities is absent")
    e = one(run(snap("rhel-hardened", cpu_security=cs)), "M3-CPU-VULNS")
    assert e["status"] == "error" and "vulnerabilities is absent" in e["evidence"]["reason"]


@pytest.mark.parametrize("name,text,status", [
    ("itlb_multihit", "KVM: Vulnerable", "fail"),  # kvm.nx_huge_pages=off: a guest can hang the host
    ("l1tf", "Mitigation: PTE Inversion; VMX: vulnerable", "fail"),  # no L1D flush on VM entry
    ("l1tf", "Mitigation: PTE Inversion; VMX: vulnerable, SMT disabled", "fail"),
    ("spectre_v2", "Mitigation: Enhanced / Automatic IBRS; IBPB: conditional; RSB filling; "
                   "PBRSB-eIBRS: SW sequence; BHI: Vulnerable", "fail"),
    ("spectre_v2", "Mitigation: Enhanced / Automatic IBRS; IBPB: conditional; RSB filling; "
                   "PBRSB-eIBRS: Not affected; BHI: Vulnerable, KVM: SW loop", "pass"),
    ("itlb_multihit", "KVM: Mitigation: Split huge pages", "pass"),
    ("l1tf", "Mitigation: PTE Inversion; VMX: conditional cache flushes, SMT disabled", "pass"),
])
def test_cpu_vulns_vulnerable_components(name, text, status):
    cs = copy.deepcopy(_snapshot("rhel-hardened", "m3-hardened")["sources"]["cpu_security"])
    cs["vulnerabilities"][name] = text
    f = one(run(snap("rhel-hardened", cpu_security=cs)), "M3-CPU-VULNS")
    assert f["status"] == status, f["message"]
    if status == "fail":
        assert name in f["message"]


def test_cpuset_syntax():
    assert parse_cpuset("0-3,^2,8") == {0, 1, 3, 8}
    assert parse_cpuset(" 0-1, 16383") == {0, 1, 16383}
    assert parse_cpuset("^2,0-3") == {0, 1, 2, 3}  # items apply in order, as in libvirt
    assert parse_cpuset("0-1,") == {0, 1}
    # libvirt refuses CPU numbers beyond its mask (a range is refused before it is expanded), negated
    # ranges, and a set of no CPU: a guest "pinned nowhere" must not escape every pairing
    for bad in ("x", "3-1", "16384", "0-99999999999", "0-", "-1", "1--2", "^", "0x10", "^0-3", "", "0,^0",
                "1,,2", ",1", ","):
        with pytest.raises(ValueError):
            parse_cpuset(bad)


@pytest.mark.parametrize("old,new,judged", [
    ("<vcpu placement='static'>", "<vcpu placement='static' cpuset='0-99999999999'>", False),
    (re.compile(r"<vcpu placement='static'>[0-9]+</vcpu>"), "<vcpu placement='static'>two</vcpu>", False),
    # 10^23 vCPUs: not every one is pinned, so the guest may run on any CPU (judged, not looped over)
    (re.compile(r"<vcpu placement='static'>[0-9]+</vcpu>"), "<vcpu placement='static'>99999999999999999999999</vcpu>",
     True),
])
def test_core_sharing_refuses_an_endless_cpuset_or_vcpu_count(old, new, judged):
    """A hand-edited definition (or a hostile agent) must not make the check expand a range of 10^11 CPUs
    or loop over 10^23 vCPUs; a guest whose CPUs are unknown is not judged, and the evidence says so."""
    facts = snap("debian-broken")
    lab01 = next(d for d in facts["sources"]["libvirt"]["domains"] if d["name"] == "lab01")
    changed = old.sub(new, lab01["xml"], count=1) if isinstance(old, re.Pattern) else lab01["xml"].replace(old, new, 1)
    assert changed != lab01["xml"]
    lab01["xml"] = changed
    f = one(run(facts), "M3-CORE-SHARING")
    assert f["status"] in ("warn", "error")
    if judged:
        assert "not_judged" not in f["evidence"] and any("lab01" in p["guests"] for p in f["evidence"]["pairs"])
    else:
        assert any("lab01" in e for e in f["evidence"]["not_judged"]), f["evidence"]
        assert all("lab01" not in p["guests"] for p in f["evidence"]["pairs"])


def test_core_sharing_warn_pass_error():
    f = one(run(snap("debian-broken")), "M3-CORE-SHARING")
    assert f["status"] == "warn"
    pair = next(p for p in f["evidence"]["pairs"] if p["guests"] == ["lab01", "mgmt01"])
    assert pair["cores"] == ["1,5"]  # vcpupin 5 and vcpupin 1 are siblings of one core
    assert one(run(snap("debian-hardened")), "M3-CORE-SHARING")["status"] == "pass"  # one zone
    # the same guests on a host with SMT off: no core runs two threads
    no_smt = snap("debian-broken",
                  cpu_security=copy.deepcopy(_snapshot("debian-hardened", "m3-hardened")["sources"]["cpu_security"]))
    p = one(run(no_smt), "M3-CORE-SHARING")
    assert p["status"] == "pass" and p["evidence"]["smt"] is False
    cs = copy.deepcopy(_snapshot("debian-broken", "m3-broken")["sources"]["cpu_security"])
    cs["thread_siblings"] = unavailable("no thread_siblings_list")
    e = one(run(snap("debian-broken", cpu_security=cs)), "M3-CORE-SHARING")
    assert e["status"] == "error" and "thread_siblings_list" in e["evidence"]["reason"]
    # what does not need the topology is decided without it: SMT switched off, or a single zone
    cs_off = dict(cs, smt_control="off")
    o = one(run(snap("debian-broken", cpu_security=cs_off)), "M3-CORE-SHARING")
    assert o["status"] == "pass" and "smt/control off" in o["message"]
    z = one(run(snap("debian-hardened", cpu_security=unavailable("no /sys"))), "M3-CORE-SHARING")
    assert z["status"] == "pass" and "one zone" in z["message"]


def test_core_sharing_pinned_apart_passes():
    facts = snap("debian-broken")
    for d in facts["sources"]["libvirt"]["domains"]:
        # dmz on core {0,4}, every other zone on core {1,5} or {2,6}
        pin = {"lab01": "0,4", "lab02": "1", "lab03": "5", "mgmt01": "2,6"}[d["name"]]
        xml = d["xml"].replace("<vcpu placement='static'>", f"<vcpu placement='static' cpuset='{pin}'>")
        for old in ("cpuset='5'", "cpuset='1'"):
            xml = xml.replace(old, f"cpuset='{pin}'")
        d["xml"] = xml
    f = one(run(facts), "M3-CORE-SHARING")
    assert f["status"] == "pass" and f["evidence"]["pairs"] == []


def test_nested_warn_pass_skip_error():
    f = one(run(snap("debian-broken")), "M3-NESTED")
    assert f["status"] == "warn" and f["evidence"]["kvm_intel"] == "Y"
    assert one(run(snap("rhel-broken"), "[host]\nallow_nested = true\n"), "M3-NESTED")["status"] == "pass"
    p = one(run(snap("rhel-hardened")), "M3-NESTED")
    assert p["status"] == "pass" and p["evidence"]["kvm_amd"] == "0"
    s = one(run(snap("rhel-hardened", kvm_nested={"kvm_intel": None, "kvm_amd": None})), "M3-NESTED")
    assert s["status"] == "skip"
    e = one(run(snap("rhel-hardened", kvm_nested={"kvm_intel": None, "kvm_amd": unavailable("EACCES")})),
            "M3-NESTED")
    assert e["status"] == "error" and "EACCES" in e["evidence"]["reason"]


# --- M3-GRAPHICS-EXPOSED ------------------------------------------------------------------------

def test_graphics_exposed_fail_warn_pass():
    report = run(snap("debian-broken"))
    lab02 = one(report, "M3-GRAPHICS-EXPOSED", "guest:lab02")
    assert lab02["status"] == "fail" and lab02["evidence"]["graphics"][0]["listen"] == "network:default"
    lab01 = one(report, "M3-GRAPHICS-EXPOSED", "guest:lab01")
    # vnc_password in qemu.conf: authenticated, not encrypted. The guest's own passwd is never visible.
    assert lab01["status"] == "warn" and lab01["evidence"]["graphics"][0]["auth"] == ["vnc_password (qemu.conf)"]
    assert "read-only" in lab01["evidence"]["password_visibility"]
    mgmt = one(report, "M3-GRAPHICS-EXPOSED", "guest:mgmt01")  # no listen: qemu.conf vnc_listen 0.0.0.0
    assert mgmt["evidence"]["graphics"][0]["listen"] == "0.0.0.0"
    hardened = run(snap("debian-hardened"))
    assert one(hardened, "M3-GRAPHICS-EXPOSED", "guest:web01")["evidence"]["graphics"][0]["exposed"] is False
    assert one(hardened, "M3-GRAPHICS-EXPOSED", "guest:db01")["evidence"]["graphics"][0]["listen"] == "socket"


def test_graphics_exposed_without_password_fails_and_tls_passes():
    facts = qemu_conf(snap("debian-broken"), vnc_listen="0.0.0.0")  # no vnc_password
    f = one(run(facts), "M3-GRAPHICS-EXPOSED", "guest:lab01")
    assert f["status"] == "fail" and f["evidence"]["graphics"][0]["auth"] == []
    facts = qemu_conf(snap("debian-broken"), vnc_listen="0.0.0.0", vnc_tls=1, spice_tls=1)
    report = run(facts)
    assert one(report, "M3-GRAPHICS-EXPOSED", "guest:lab01")["status"] == "pass"
    # spice_tls without defaultMode='secure' still lets clients connect in the clear
    assert one(report, "M3-GRAPHICS-EXPOSED", "guest:lab02")["status"] == "fail"


def _spice_channels(channels: str, default_mode: str | None = None) -> dict:
    facts = qemu_conf(snap("debian-broken"), spice_tls=1)
    dom = next(d for d in facts["sources"]["libvirt"]["domains"] if d["name"] == "lab02")
    mode = f" defaultMode='{default_mode}'" if default_mode else ""
    set_xml(dom, dom["xml"].replace("<graphics type='spice' autoport='yes'>",
                                    f"<graphics type='spice' autoport='yes'{mode}>{channels}"))
    return one(run(facts), "M3-GRAPHICS-EXPOSED", "guest:lab02")


def test_graphics_spice_unlisted_channels_take_the_default_mode():
    # only main is secure: display, inputs ... take defaultMode 'any' and can be reached in the clear
    assert _spice_channels("<channel name='main' mode='secure'/>")["status"] == "fail"
    every = "".join(f"<channel name='{n}' mode='secure'/>" for n in
                    ("main", "display", "inputs", "cursor", "playback", "record", "smartcard", "usbredir"))
    assert _spice_channels(every)["status"] == "pass"
    assert _spice_channels("", "secure")["status"] == "pass"
    assert _spice_channels("<channel name='display' mode='insecure'/>", "secure")["status"] == "fail"


def test_graphics_exposed_error_without_qemu_conf():
    facts = snap("debian-broken", libvirt_config={"qemu.conf": unavailable("cannot read qemu.conf: EACCES")})
    f = one(run(facts), "M3-GRAPHICS-EXPOSED", "guest:lab02")
    assert f["status"] == "error" and "EACCES" in f["evidence"]["reason"]


# --- collectors and the whole fixture hosts -----------------------------------------------------

def test_cpu_security_collector_reads_real_sysfs_shape():
    cs = collect_cpu_security(Context(root=host_root("debian-broken"), live=False))
    assert cs["thread_siblings"]["1"] == "1,5" and cs["smt_control"] == "on"
    assert cs["vulnerabilities"]["meltdown"] == "Vulnerable"


def test_rotated_gz_history_is_read(tmp_path):
    (tmp_path / "var/log/apt").mkdir(parents=True)
    (tmp_path / "var/log/apt/history.log.3.gz").write_bytes(gzip.compress(
        b"\nStart-Date: 2026-01-01  00:00:00\nUpgrade: a (1, 2)\nEnd-Date: 2026-01-01  00:01:00\n"))
    hist = collect_package_history(Context(root=tmp_path, live=False))
    assert hist["logs"] == [{"path": "/var/log/apt/history.log.3.gz", "kind": "apt-history", "upgrades": 1,
                             "installs": 0, "newest_upgrade": "2026-01-01T00:01:00", "newest_install": None}]


@pytest.mark.parametrize("host", ["debian-hardened", "rhel-hardened"])
def test_hardened_hosts_have_no_m3_failures(host, tmp_path):
    """False-positive guard: with a real LSM model in the capabilities (the test driver only offers
    'testSecurity'), a hardened host yields no M3 fail/warn/error. Its guests' images are made here with
    the modes a distro gives them (git keeps no modes): a 0600 image in libvirt's 0711 directory, an LVM
    volume as udev makes it (root:disk 0660)."""
    model = "apparmor" if host.startswith("debian") else "selinux"
    root = make_root(tmp_path, host)
    put_guest_images(root, {"/var/lib/libvirt/images/web01.qcow2": (0o600, 0, 0), "/dev/vg0/db01": (0o660, 0, 6)})
    if host.startswith("rhel"):  # a real rpm database and dnf cache, nothing pending (tests/rpmcache.py)
        if not rpmcache.have_tools() and not REQUIRE_REAL:
            pytest.skip("rpm/rpmbuild/createrepo_c (scripts/install-deps.sh --test) make the RHEL package state")
        rpmcache.hardened_rhel(root, NOW_TS - 86400)
    facts = collect_facts(root=str(root), uri=test_uri(PAIRS[host]))
    facts["collected_at"] = NOW
    report = run(with_caps(facts, model, "dac"))
    bad = [(f["check_id"], f["resource"], f["status"], f["message"]) for f in report["findings"]
           if f["check_id"].startswith("M3-") and f["status"] in ("fail", "warn", "error")]
    assert bad == []
    assert len([f for f in report["findings"] if f["check_id"].startswith("M3-")]) >= 15


@pytest.mark.parametrize("host", ["debian-broken", "rhel-broken"])
def test_broken_hosts_fail_the_host_checks(host):
    report = run(snap(host))
    for cid in ("M3-PATCH-AGE", "M3-SECURITY-DRIVER", "M3-LSM-ENFORCING", "M3-QEMU-USER", "M3-KSM",
                "M3-CPU-VULNS"):
        assert one(report, cid)["status"] == "fail", cid
    assert one(report, "M3-NESTED")["status"] == "warn"
    assert findings(report, "M3-GRAPHICS-EXPOSED", "guest:lab02")[0]["status"] == "fail"


def test_core_sharing_names_a_bounded_number_of_pairs_on_a_large_host():
    """2,000 unpinned guests of two zones on an SMT host: a million pairs may share a core. The check
    finds them through the shared cores, not guest by guest, and names the first PAIRS_SHOWN."""
    from vmaudit.checks.m3_kernel_cpu import PAIRS_SHOWN

    facts = snap("debian-broken")
    domains = facts["sources"]["libvirt"]["domains"]
    template = next(d for d in domains if d["name"] == "lab01")
    xml = re.sub(r"<cputune>.*?</cputune>", "", template["xml"], flags=re.S)  # unpinned
    xml = re.sub(r" cpuset='[^']*'", "", xml)
    zone = re.search(r"<vmaudit:zone>([^<]*)</vmaudit:zone>", xml)
    assert zone, "fixture guest carries no zone label"
    clones = []
    for i in range(2000):
        record = copy.deepcopy(template)
        name, uuid = f"big{i:04d}", f"00000000-0000-4000-8000-{i:012d}"
        record.update(name=name, uuid=uuid)
        record["xml"] = (xml.replace(f"<name>{template['name']}</name>", f"<name>{name}</name>")
                            .replace(f"<uuid>{template['uuid']}</uuid>", f"<uuid>{uuid}</uuid>")
                            .replace(zone[0], zone[0].replace(zone[1], ("dmz", "internal")[i % 2])))
        record.pop("xml_inactive", None)
        record["persistent"], record["state"] = False, "running"
        clones.append(record)
    facts["sources"]["libvirt"]["domains"] = clones
    f = one(run(facts), "M3-CORE-SHARING")
    assert f["status"] == "warn" and len(f["evidence"]["pairs"]) == PAIRS_SHOWN
    assert "pairs_truncated" in f["evidence"] and f"more than {PAIRS_SHOWN} pairs" in f["message"]
    assert all(p["zones"][0] != p["zones"][1] for p in f["evidence"]["pairs"])
