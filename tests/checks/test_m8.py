"""M8: deployment and maintenance processes (M8-UNREGISTERED, M8-IDLE-GUEST, M8-TRANSIENT, M8-SAVED-STATE,
M8-SNAPSHOTS, M8-ORPHAN-VOLUMES, M8-AUTOSTART), and the guest_files / libvirt_hooks collectors.

The libvirt test-driver host guests-mixed runs web01, web02 and the transient scratch; db01, lab-old
(with a managed save) and never are shut off. Their QEMU logs, configs and save files are written into
a temporary root with fixed ages (guest_helpers.MIXED_*), and the snapshot's collected_at is fixed: every
age is measured against it.
"""

from __future__ import annotations

import itertools
import os

from guest_helpers import (
    INVENTORY_CSV,
    INVENTORY_JSON,
    MIXED_CONFIGS,
    MIXED_LOGS,
    NOW_ISO,
    clean_facts,
    facts_of,
    guest_root,
    mixed_facts,
    run,
)
from vmtest import findings, host_root, one, set_xml, with_sources

from vmaudit.audit import collect_facts
from vmaudit.facts import unavailable


def _domain(facts: dict, name: str) -> dict:
    return next(d for d in facts["sources"]["libvirt"]["domains"] if d["name"] == name)


# --- collectors ---------------------------------------------------------------------------------

def test_guest_files_lists_regular_files_with_mtimes(tmp_path):
    root = guest_root(tmp_path, logs={"web01": 2}, configs={"web01": 10}, saves={"web01.save": 3})
    (root / "var/log/libvirt/qemu/web01.log.1.gz").write_bytes(b"\x1f\x8b")
    os.symlink("/etc/shadow", root / "var/log/libvirt/qemu/evil.log")
    facts = collect_facts(root=str(root), uri="test:///nonexistent", only=["guest_files", "libvirt_hooks"])
    files = facts["sources"]["guest_files"]
    logs = files["qemu_logs"]
    assert logs["dir"] == "/var/log/libvirt/qemu" and logs["present"] is True
    assert set(logs["entries"]) == {"web01.log", "web01.log.1.gz"}  # the symlink is not followed
    assert set(logs["entries"]["web01.log"]) == {"mtime", "size"}
    assert set(files["qemu_configs"]["entries"]) == {"web01.xml"}  # networks/ is a directory
    assert set(files["saved_images"]["entries"]) == {"web01.save"}
    assert facts["sources"]["libvirt_hooks"] == {
        "qemu": {"path": "/etc/libvirt/hooks/qemu", "present": False, "executable": False}}


def test_guest_files_marks_missing_directories(tmp_path):
    root = guest_root(tmp_path, log_dir=False, config_dir=True)
    files = collect_facts(root=str(root), uri="test:///nonexistent", only=["guest_files"])["sources"]["guest_files"]
    assert "does not exist" in files["qemu_logs"]["unavailable"]
    assert files["saved_images"] == {"dir": "/var/lib/libvirt/qemu/save", "present": False, "entries": {}}


def test_libvirt_hooks_reports_an_executable_hook(tmp_path):
    root = guest_root(tmp_path)
    hook = root / "etc/libvirt/hooks/qemu"
    hook.parent.mkdir(parents=True)
    hook.write_text("#!/bin/sh\n# veto migrations to hosts outside this zone\nexit 0\n")
    hook.chmod(0o755)
    facts = collect_facts(root=str(root), uri="test:///nonexistent", only=["libvirt_hooks"])
    assert facts["sources"]["libvirt_hooks"]["qemu"] == {"path": "/etc/libvirt/hooks/qemu", "present": True,
                                                         "executable": True}
    hook.chmod(0o644)
    facts = collect_facts(root=str(root), uri="test:///nonexistent", only=["libvirt_hooks"])
    assert facts["sources"]["libvirt_hooks"]["qemu"]["executable"] is False


def test_libvirt_hooks_resolves_absolute_links_inside_the_root(tmp_path):
    root = guest_root(tmp_path)
    (root / "usr/local/sbin").mkdir(parents=True)
    target = root / "usr/local/sbin/libvirt-hook"
    target.write_text("#!/bin/sh\nexit 0\n")
    target.chmod(0o750)
    (root / "etc/libvirt/hooks").mkdir(parents=True)
    os.symlink("/usr/local/sbin/libvirt-hook", root / "etc/libvirt/hooks/qemu")
    facts = collect_facts(root=str(root), uri="test:///nonexistent", only=["libvirt_hooks"])
    assert facts["sources"]["libvirt_hooks"]["qemu"]["present"] is True


# --- M8-UNREGISTERED ----------------------------------------------------------------------------

def test_unregistered_without_inventory_warns_once_for_the_host(tmp_path):
    report = run(mixed_facts(tmp_path))
    f = one(report, "M8-UNREGISTERED")
    assert f["status"] == "warn" and f["evidence"] == {"inventory": None, "guests": 6}
    assert len(findings(report, "M8-UNREGISTERED")) == 1


def test_unregistered_guests_fail_and_registered_pass(tmp_path):
    report = run(mixed_facts(tmp_path), inventory=INVENTORY_CSV)
    bad = one(report, "M8-UNREGISTERED", "guest:lab-old")
    assert bad["status"] == "fail" and bad["severity"] == "high"
    assert bad["evidence"] == {"uuid": "6b3c9f10-4d1e-4f3a-9a53-0a1d2c3e4f04", "inventory": str(INVENTORY_CSV)}
    assert one(report, "M8-UNREGISTERED", "guest:scratch")["status"] == "fail"
    # registered with an upper-case UUID and under another name: still the same guest
    db = one(report, "M8-UNREGISTERED", "guest:db01")
    assert db["status"] == "pass" and db["evidence"]["inventory_name"] == "db-primary"


def test_unregistered_errors_without_the_guest_list(tmp_path):
    facts = with_sources(mixed_facts(tmp_path), libvirt=unavailable("cannot connect"))
    f = one(run(facts, inventory=INVENTORY_CSV), "M8-UNREGISTERED")
    assert f["status"] == "error"


# --- M8-IDLE-GUEST ------------------------------------------------------------------------------

def test_idle_guest_warns_for_a_long_shut_off_guest(tmp_path):
    f = one(run(mixed_facts(tmp_path)), "M8-IDLE-GUEST", "guest:db01")
    assert f["status"] == "warn" and f["severity"] == "medium"
    ev = f["evidence"]
    assert ev["log"] == "/var/log/libvirt/qemu/db01.log" and ev["config"] == "/etc/libvirt/qemu/db01.xml"
    assert ev["days_since_activity"] == 200.0 and ev["idle_days"] == 90
    assert ev["collected_at"] == NOW_ISO


def test_idle_guest_warns_for_a_guest_never_started(tmp_path):
    f = one(run(mixed_facts(tmp_path)), "M8-IDLE-GUEST", "guest:never")
    assert f["status"] == "warn"
    assert f["evidence"]["never_started"] is True and f["evidence"]["log_mtime"] is None
    assert f["evidence"]["days_since_activity"] == 45.0


def test_idle_guest_passes_recent_and_running_guests(tmp_path):
    report = run(mixed_facts(tmp_path))
    lab = one(report, "M8-IDLE-GUEST", "guest:lab-old")
    assert lab["status"] == "pass" and lab["evidence"]["days_since_activity"] == 40.0
    web = one(report, "M8-IDLE-GUEST", "guest:web01")
    assert web["status"] == "pass" and web["evidence"] == {"state": "running"}


def test_idle_guest_a_recent_config_change_counts_as_care(tmp_path):
    facts = mixed_facts(tmp_path, configs=dict(MIXED_CONFIGS, db01=10))
    f = one(run(facts), "M8-IDLE-GUEST", "guest:db01")
    assert f["status"] == "pass" and f["evidence"]["days_since_activity"] == 10.0


def test_idle_guest_thresholds_come_from_the_policy(tmp_path):
    report = run(mixed_facts(tmp_path), "[guests]\nidle_days = 30\nnever_started_days = 60\n")
    assert one(report, "M8-IDLE-GUEST", "guest:lab-old")["status"] == "warn"
    assert one(report, "M8-IDLE-GUEST", "guest:never")["status"] == "pass"


def test_idle_guest_errors_without_the_log_directory(tmp_path):
    facts = facts_of("guests-mixed", guest_root(tmp_path, configs=MIXED_CONFIGS, log_dir=False))
    report = run(facts)
    f = one(report, "M8-IDLE-GUEST", "guest:db01")
    assert f["status"] == "error" and "/var/log/libvirt/qemu" in f["evidence"]["reason"]
    assert one(report, "M8-IDLE-GUEST", "guest:web01")["status"] == "pass"  # running: no file needed


def test_idle_guest_errors_when_nothing_dates_the_guest(tmp_path):
    facts = mixed_facts(tmp_path, logs=MIXED_LOGS, configs={})
    f = one(run(facts), "M8-IDLE-GUEST", "guest:never")
    assert f["status"] == "error" and "cannot be dated" in f["evidence"]["reason"]


def test_idle_guest_names_never_reach_other_files(tmp_path):
    # a log that a path-building implementation would find for the name "../../../../etc/hostname"
    root = guest_root(tmp_path, logs=MIXED_LOGS, configs=MIXED_CONFIGS)
    (root / "etc/hostname.log").write_text("hv-broken\n")
    facts = facts_of("guests-mixed", root)
    _domain(facts, "never")["name"] = "../../../../etc/hostname"
    f = one(run(facts), "M8-IDLE-GUEST", "guest:../../../../etc/hostname")
    assert f["status"] == "error" and f["evidence"]["reason"].count("cannot be dated") == 1


# --- M8-TRANSIENT -------------------------------------------------------------------------------

def test_transient_guest_warns_and_persistent_passes(tmp_path):
    report = run(mixed_facts(tmp_path))
    f = one(report, "M8-TRANSIENT", "guest:scratch")
    assert f["status"] == "warn" and f["evidence"] == {"persistent": False, "state": "running"}
    assert one(report, "M8-TRANSIENT", "guest:web01")["evidence"] == {"persistent": True}


def test_transient_errors_when_persistence_is_unknown(tmp_path):
    facts = mixed_facts(tmp_path)
    _domain(facts, "web01")["persistent"] = unavailable("libvirt: Domain not found")
    f = one(run(facts), "M8-TRANSIENT", "guest:web01")
    assert f["status"] == "error" and "Domain not found" in f["evidence"]["reason"]


# --- M8-SAVED-STATE -----------------------------------------------------------------------------

def test_saved_state_warns_for_an_old_managed_save_and_a_stray_file(tmp_path):
    report = run(mixed_facts(tmp_path))
    lab = one(report, "M8-SAVED-STATE", "guest:lab-old")
    assert lab["status"] == "warn" and lab["severity"] == "medium"
    assert lab["evidence"]["path"] == "/var/lib/libvirt/qemu/save/lab-old.save"
    assert lab["evidence"]["age_days"] == 40.0 and lab["evidence"]["max_age_days"] == 30
    stray = one(report, "M8-SAVED-STATE", "file:/var/lib/libvirt/qemu/save/old-erp.save")
    assert stray["status"] == "warn" and stray["evidence"]["guest_managed_save"] is False


def test_saved_state_within_the_policy_age_passes(tmp_path):
    report = run(mixed_facts(tmp_path), "[saved_state]\nmax_age_days = 180\n")
    assert one(report, "M8-SAVED-STATE", "guest:lab-old")["status"] == "pass"
    assert one(report, "M8-SAVED-STATE", "file:/var/lib/libvirt/qemu/save/old-erp.save")["status"] == "pass"


def test_saved_state_passes_without_saves(tmp_path):
    f = one(run(clean_facts(tmp_path)), "M8-SAVED-STATE")
    assert f["status"] == "pass" and f["evidence"]["managed_saves"] == 0


def test_saved_state_errors_when_the_image_is_missing(tmp_path):
    facts = mixed_facts(tmp_path, saves={})
    f = one(run(facts), "M8-SAVED-STATE", "guest:lab-old")
    assert f["status"] == "error"
    assert f["evidence"] == {"managed_save": True, "path": "/var/lib/libvirt/qemu/save/lab-old.save"}


def test_saved_state_errors_when_the_save_directory_is_unreadable(tmp_path):
    facts = mixed_facts(tmp_path)
    facts["sources"]["guest_files"]["saved_images"] = unavailable(
        "cannot list /var/lib/libvirt/qemu/save: Permission denied")
    report = run(facts)
    f = one(report, "M8-SAVED-STATE", "guest:lab-old")
    assert f["status"] == "error" and "Permission denied" in f["evidence"]["reason"]
    host = one(report, "M8-SAVED-STATE")  # stray files cannot be listed either
    assert host["status"] == "error" and "Permission denied" in host["evidence"]["reason"]


def test_saved_state_errors_when_managed_save_is_unknown(tmp_path):
    facts = clean_facts(tmp_path)
    _domain(facts, "shop-a")["managed_save"] = unavailable("libvirt: unsupported")
    f = one(run(facts), "M8-SAVED-STATE", "guest:shop-a")
    assert f["status"] == "error" and f["evidence"] == {"reason": "libvirt: unsupported"}


# --- M8-SNAPSHOTS -------------------------------------------------------------------------------

def test_snapshots_too_many_and_too_old_warn(tmp_path):
    f = one(run(mixed_facts(tmp_path)), "M8-SNAPSHOTS", "guest:web01")
    assert f["status"] == "warn" and f["severity"] == "medium"
    ev = f["evidence"]
    assert ev["count"] == 4 and ev["max_count"] == 3 and ev["with_memory"] == 1
    oldest = ev["snapshots"][0]
    assert (oldest["name"], oldest["age_days"], oldest["memory"]) == ("before-upgrade", 400.0, True)
    assert "4 snapshots (limit 3)" in f["message"] and "1 older than 30 days" in f["message"]


def test_snapshots_only_count_warns(tmp_path):
    f = one(run(mixed_facts(tmp_path), "[snapshots]\nmax_age_days = 500\n"), "M8-SNAPSHOTS", "guest:web01")
    assert f["status"] == "warn" and "older" not in f["message"]


def test_snapshots_within_policy_pass(tmp_path):
    report = run(mixed_facts(tmp_path), "[snapshots]\nmax_age_days = 500\nmax_count = 4\n")
    f = one(report, "M8-SNAPSHOTS", "guest:web01")
    assert f["status"] == "pass" and f["evidence"]["count"] == 4
    none = one(report, "M8-SNAPSHOTS", "guest:web02")
    assert none["status"] == "pass" and none["evidence"]["count"] == 0


def test_snapshots_error_when_the_list_is_missing(tmp_path):
    facts = mixed_facts(tmp_path)
    _domain(facts, "web01")["snapshots"] = unavailable("libvirt: this function is not supported")
    f = one(run(facts), "M8-SNAPSHOTS", "guest:web01")
    assert f["status"] == "error" and "not supported" in f["evidence"]["reason"]


# --- M8-ORPHAN-VOLUMES --------------------------------------------------------------------------

def test_orphan_volumes_warn_per_volume(tmp_path):
    report = run(mixed_facts(tmp_path))
    orphans = {f["resource"]: f for f in findings(report, "M8-ORPHAN-VOLUMES")}
    assert set(orphans) == {"volume:/var/lib/libvirt/images/old-erp.qcow2",
                            "volume:/var/lib/libvirt/images/debian-12.11.0-amd64-netinst.iso"}
    f = orphans["volume:/var/lib/libvirt/images/old-erp.qcow2"]
    assert f["status"] == "warn" and f["severity"] == "low"
    assert f["evidence"] == {"pool": "default", "name": "old-erp.qcow2",
                             "path": "/var/lib/libvirt/images/old-erp.qcow2", "format": "qcow2", "backing": None}


def test_orphan_volumes_follow_backing_chains(tmp_path):
    # base.qcow2 is only named in web02's <backingStore>; golden-win.qcow2 only as db01.qcow2's backing
    report = run(mixed_facts(tmp_path))
    for path in ("base.qcow2", "golden-win.qcow2", "db01.qcow2", "web01.qcow2", "lab-old.qcow2"):
        assert findings(report, "M8-ORPHAN-VOLUMES", f"volume:/var/lib/libvirt/images/{path}") == []


def test_orphan_volumes_pass_when_every_volume_is_used(tmp_path):
    f = one(run(clean_facts(tmp_path)), "M8-ORPHAN-VOLUMES")
    assert f["status"] == "pass"
    assert (f["evidence"]["volumes"], f["evidence"]["orphans"]) == (2, 0)


def test_orphan_volumes_error_without_pools(tmp_path):
    facts = mixed_facts(tmp_path)
    facts["sources"]["libvirt"]["pools"] = unavailable("libvirt: storage driver not running")
    f = one(run(facts), "M8-ORPHAN-VOLUMES")
    assert f["status"] == "error" and "storage driver" in f["evidence"]["reason"]


def test_orphan_volumes_error_while_a_guests_disks_are_unknown(tmp_path):
    facts = mixed_facts(tmp_path)
    set_xml(_domain(facts, "web02"), unavailable("libvirt: Domain not found"))
    report = run(facts)
    f = one(report, "M8-ORPHAN-VOLUMES")
    assert f["status"] == "error"
    assert list(f["evidence"]["unreadable_guests"]) == ["web02"]
    assert "/var/lib/libvirt/images/web02.qcow2" in f["evidence"]["candidates"]
    assert [x["resource"] for x in findings(report, "M8-ORPHAN-VOLUMES")] == ["host"]


# --- M8-AUTOSTART -------------------------------------------------------------------------------
# The test driver cannot load an autostart flag from its node XML, so these set it in the snapshot.

def test_autostart_on_an_unregistered_guest_warns(tmp_path):
    facts = mixed_facts(tmp_path)
    _domain(facts, "scratch")["autostart"] = True
    f = one(run(facts, inventory=INVENTORY_CSV), "M8-AUTOSTART", "guest:scratch")
    assert f["status"] == "warn" and f["severity"] == "low"
    assert f["evidence"]["registered"] is False and f["evidence"]["idle"] is False


def test_autostart_on_an_idle_guest_warns(tmp_path):
    facts = mixed_facts(tmp_path)
    _domain(facts, "db01")["autostart"] = True
    f = one(run(facts, inventory=INVENTORY_CSV), "M8-AUTOSTART", "guest:db01")
    assert f["status"] == "warn"
    assert f["evidence"]["registered"] is True and f["evidence"]["idle"] is True
    assert f["evidence"]["idle_evidence"]["days_since_activity"] == 200.0


def test_autostart_on_a_maintained_guest_passes(tmp_path):
    facts = mixed_facts(tmp_path)
    _domain(facts, "web01")["autostart"] = True
    report = run(facts, inventory=INVENTORY_CSV)
    f = one(report, "M8-AUTOSTART", "guest:web01")
    assert f["status"] == "pass" and f["evidence"]["registered"] is True
    off = one(report, "M8-AUTOSTART", "guest:web02")
    assert off["status"] == "pass" and off["evidence"] == {"autostart": False}


def test_autostart_errors_when_the_flag_is_unknown(tmp_path):
    facts = mixed_facts(tmp_path)
    _domain(facts, "web01")["autostart"] = unavailable("libvirt: Domain not found")
    f = one(run(facts), "M8-AUTOSTART", "guest:web01")
    assert f["status"] == "error"


def test_autostart_errors_when_idleness_cannot_be_dated(tmp_path):
    facts = mixed_facts(tmp_path)
    _domain(facts, "db01")["autostart"] = True
    facts["sources"]["guest_files"]["qemu_logs"] = unavailable("/var/log/libvirt/qemu does not exist")
    f = one(run(facts, inventory=INVENTORY_CSV), "M8-AUTOSTART", "guest:db01")
    assert f["status"] == "error" and "/var/log/libvirt/qemu" in f["evidence"]["reason"]


# --- the shared fixture host trees --------------------------------------------------------------
# Their files carry checkout-time mtimes, so the snapshot's collection time is set relative to them.

def _shared(host: str, node: str, days_after: float) -> dict:
    from datetime import datetime, timezone

    root = host_root(host)
    newest = max(p.stat().st_mtime for d in ("var/log/libvirt/qemu", "etc/libvirt/qemu")
                 for p in (root / d).iterdir() if p.is_file())
    at = datetime.fromtimestamp(newest + days_after * 86400, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return facts_of(node, root, collected_at=at)


def test_shared_broken_trees_date_their_guests(tmp_path):
    for host in ("debian-broken", "rhel-broken"):
        fresh = run(_shared(host, "guests-mixed", 1))
        assert one(fresh, "M8-IDLE-GUEST", "guest:db01")["status"] == "pass"
        assert one(fresh, "M8-IDLE-GUEST", "guest:never")["evidence"]["never_started"] is True
        later = run(_shared(host, "guests-mixed", 200))
        assert one(later, "M8-IDLE-GUEST", "guest:db01")["status"] == "warn"
        assert one(later, "M8-IDLE-GUEST", "guest:never")["status"] == "warn"
        assert one(later, "M8-SAVED-STATE", "guest:lab-old")["status"] == "warn"
        assert one(later, "M8-SAVED-STATE", "file:/var/lib/libvirt/qemu/save/old-erp.save")["status"] == "warn"


def test_shared_trees_hooks():
    hooks = {h: collect_facts(root=str(host_root(h)), uri="test:///nonexistent",
                              only=["libvirt_hooks"])["sources"]["libvirt_hooks"]["qemu"]
             for h in ("debian-hardened", "rhel-hardened", "debian-broken", "rhel-broken")}
    assert hooks["debian-hardened"]["executable"] and hooks["rhel-hardened"]["executable"]
    assert hooks["debian-broken"] == {"path": "/etc/libvirt/hooks/qemu", "present": True, "executable": False}
    assert hooks["rhel-broken"]["present"] is False


def test_shared_hardened_trees_pass_the_maintenance_checks():
    for host in ("debian-hardened", "rhel-hardened"):
        report = run(_shared(host, "guests-clean", 1), inventory=INVENTORY_JSON)
        for check_id in ("M8-IDLE-GUEST", "M8-UNREGISTERED", "M8-TRANSIENT", "M8-SNAPSHOTS", "M8-AUTOSTART"):
            assert {f["status"] for f in findings(report, check_id)} == {"pass"}, (host, check_id)
        assert one(report, "M8-SAVED-STATE")["status"] == "pass"
        assert one(report, "M8-ORPHAN-VOLUMES")["status"] == "pass"


def test_snapshot_ages_are_not_rounded_away(tmp_path):
    # a snapshot one minute old is older than "0 days": the comparison uses seconds, not rounded days
    facts = mixed_facts(tmp_path)
    from guest_helpers import NOW
    _domain(facts, "web02")["snapshots"] = [{"name": "just-now", "creation_time": int(NOW) - 60,
                                             "state": "running", "memory": False}]
    f = one(run(facts, "[snapshots]\nmax_age_days = 0\n"), "M8-SNAPSHOTS", "guest:web02")
    assert f["status"] == "warn" and f["evidence"]["snapshots"][0]["age_days"] == 0.0


def test_disk_paths_are_normalised_as_normpath_does():
    """_norm's shortcut (a path with no empty, '.' or '..' component is left alone) must agree with
    os.path.normpath on every absolute path, or a volume would not match the disk naming it."""
    from vmaudit.checks.m8_maintenance import _norm

    parts = ["", ".", "..", "img", ".hidden", "..x", "x.", "a.qcow2"]
    for n in range(1, 5):
        for combo in itertools.product(parts, repeat=n):
            path = "/" + "/".join(combo)
            for p in (path, "/" + path, path + "/", path + "/."):
                assert _norm(p) == os.path.normpath(p), p
    assert _norm("pool/vol//x") == "pool/vol//x"  # a network image name is not a path
