"""M5: security inside the guests (M5-GUEST-AGENT, M5-GUEST-OS, M5-GUEST-OWNER) on the libvirt test-driver
hosts guests-mixed and guests-clean."""

from __future__ import annotations

from guest_helpers import INVENTORY_CSV, clean_facts, mixed_facts, run
from vmtest import one, set_xml, with_sources

from vmaudit.checks.m5_guests import builtin_eol_list
from vmaudit.facts import unavailable


def _domain(facts: dict, name: str) -> dict:
    return next(d for d in facts["sources"]["libvirt"]["domains"] if d["name"] == name)


# --- M5-GUEST-AGENT -----------------------------------------------------------------------------

def test_agent_channel_present_passes_and_missing_warns(tmp_path):
    report = run(mixed_facts(tmp_path))
    good = one(report, "M5-GUEST-AGENT", "guest:web01")
    assert good["status"] == "pass"
    assert good["evidence"]["channel"] == "org.qemu.guest_agent.0"
    bad = one(report, "M5-GUEST-AGENT", "guest:web02")
    assert bad["status"] == "warn" and bad["severity"] == "low"
    assert bad["evidence"] == {"channel": None, "state": "running"}


def test_agent_disconnected_on_a_running_guest_warns(tmp_path):
    facts = clean_facts(tmp_path)
    dom = _domain(facts, "shop-a")
    # the live XML of a running guest carries the channel's state (libvirt sets it from QEMU events)
    dom["xml"] = dom["xml"].replace("name='org.qemu.guest_agent.0'",
                                    "name='org.qemu.guest_agent.0' state='disconnected'")
    f = one(run(facts), "M5-GUEST-AGENT", "guest:shop-a")
    assert f["status"] == "warn"
    assert f["evidence"]["agent_state"] == "disconnected"
    assert (f["expected"], f["actual"]) == ("connected", "disconnected")


def test_agent_errors_when_the_xml_is_missing(tmp_path):
    facts = mixed_facts(tmp_path)
    _domain(facts, "web01")["xml"] = unavailable("libvirt: Domain not found")
    f = one(run(facts), "M5-GUEST-AGENT", "guest:web01")
    assert f["status"] == "error" and "Domain not found" in f["evidence"]["reason"]


# --- M5-GUEST-OS --------------------------------------------------------------------------------

def test_guest_os_end_of_life_fails(tmp_path):
    report = run(mixed_facts(tmp_path))
    f = one(report, "M5-GUEST-OS", "guest:web02")
    assert f["status"] == "fail" and f["severity"] == "medium"
    assert f["evidence"]["os_id"] == "http://centos.org/centos/7.0"
    assert f["evidence"]["matched"] == "http://centos.org/centos/7.*"
    assert f["evidence"]["eol"] == "2024-06-30"
    assert f["evidence"]["as_of"] == "2026-11-28"
    win = one(report, "M5-GUEST-OS", "guest:db01")
    assert win["status"] == "fail" and win["evidence"]["eol"] == "2020-01-14"


def test_guest_os_unlisted_old_releases_fail(tmp_path):
    # releases older than the first listed one, and interim releases, are end-of-life too
    for os_id, eol in (("http://fedoraproject.org/fedora/29", "2019-11-26"),
                       ("http://ubuntu.com/ubuntu/23.10", "2024-07-11"),
                       ("http://ubuntu.com/ubuntu/10.04", "2023-05-31"),
                       ("http://debian.org/debian/3.1", "2012-02-06"),
                       ("http://opensuse.org/opensuse/42.3", "2019-07-01")):
        facts = mixed_facts(tmp_path)
        dom = _domain(facts, "web02")
        dom["xml"] = dom["xml"].replace("http://centos.org/centos/7.0", os_id)
        f = one(run(facts), "M5-GUEST-OS", "guest:web02")
        assert (f["status"], f["evidence"]["os_id"], f["evidence"]["eol"]) == ("fail", os_id, eol)
    facts = mixed_facts(tmp_path)
    dom = _domain(facts, "web02")
    dom["xml"] = dom["xml"].replace("http://centos.org/centos/7.0", "http://ubuntu.com/ubuntu/12.04")
    assert one(run(facts), "M5-GUEST-OS", "guest:web02")["evidence"]["eol"] == "2017-04-28"  # its own entry


def test_guest_os_supported_passes(tmp_path):
    report = run(clean_facts(tmp_path))
    deb = one(report, "M5-GUEST-OS", "guest:shop-a")
    assert deb["status"] == "pass"
    assert deb["evidence"]["eol"] == "2028-06-30"  # listed, not yet reached
    rhel9 = one(report, "M5-GUEST-OS", "guest:mail-a")
    assert rhel9["status"] == "pass" and rhel9["evidence"]["matched"] is None


def test_guest_os_eol_is_judged_at_collection_time_not_now(tmp_path):
    # Debian 12 support ends 2028-06-30: a snapshot collected after that day fails, one before passes
    facts = clean_facts(tmp_path)
    facts["collected_at"] = "2028-07-01T00:00:00Z"
    assert one(run(facts), "M5-GUEST-OS", "guest:shop-a")["status"] == "fail"
    facts["collected_at"] = "2028-06-29T23:59:59Z"
    assert one(run(facts), "M5-GUEST-OS", "guest:shop-a")["status"] == "pass"


def test_guest_os_unknown_skips_with_the_reason(tmp_path):
    f = one(run(mixed_facts(tmp_path)), "M5-GUEST-OS", "guest:lab-old")
    assert f["status"] == "skip"
    assert "read-only" in f["message"] and f["evidence"]["os_id"] is None


def test_guest_os_policy_list_replaces_the_builtin_one(tmp_path):
    policy = '[guests]\neol_os = ["http://redhat.com/rhel/9.*"]\n'
    report = run(clean_facts(tmp_path), policy)
    f = one(report, "M5-GUEST-OS", "guest:mail-a")
    assert f["status"] == "fail"
    assert f["evidence"] == {"os_id": "http://redhat.com/rhel/9.4", "eol_list": "policy [guests] eol_os",
                             "matched": "http://redhat.com/rhel/9.*"}
    # CentOS 7 is not on this policy's list: the built-in list no longer applies
    assert one(run(mixed_facts(tmp_path), policy), "M5-GUEST-OS", "guest:web02")["status"] == "pass"


def test_guest_os_errors_when_the_xml_is_missing(tmp_path):
    facts = mixed_facts(tmp_path)
    set_xml(_domain(facts, "web02"), unavailable("libvirt: Domain not found"))
    f = one(run(facts), "M5-GUEST-OS", "guest:web02")
    assert f["status"] == "error"


def test_guest_os_errors_without_a_collection_time(tmp_path):
    facts = mixed_facts(tmp_path)
    del facts["collected_at"]
    f = one(run(facts), "M5-GUEST-OS", "guest:web02")
    assert f["status"] == "error" and "collected_at" in f["evidence"]["reason"]


def test_builtin_eol_list_is_dated_and_reviewed():
    reviewed, entries = builtin_eol_list()
    assert reviewed == "2026-11-28"
    ids = [i for i, _ in entries]
    assert len(ids) == len(set(ids))
    assert "http://microsoft.com/win/2k8r2" in ids and "http://debian.org/debian/10" in ids


# --- M5-GUEST-OWNER -----------------------------------------------------------------------------

def test_owner_from_metadata_or_patch_group_passes(tmp_path):
    report = run(mixed_facts(tmp_path))
    web01 = one(report, "M5-GUEST-OWNER", "guest:web01")
    assert web01["status"] == "pass"
    assert web01["evidence"]["owner"] == "web-team" and web01["evidence"]["sources"] == {"owner": "metadata"}
    never = one(report, "M5-GUEST-OWNER", "guest:never")
    assert never["status"] == "pass" and never["evidence"]["patch_group"] == "wave-2"


def test_owner_missing_warns(tmp_path):
    f = one(run(mixed_facts(tmp_path)), "M5-GUEST-OWNER", "guest:web02")
    assert f["status"] == "warn" and f["severity"] == "low"
    assert f["evidence"] == {"owner": None, "patch_group": None, "sources": {}}


def test_owner_from_the_inventory(tmp_path):
    f = one(run(mixed_facts(tmp_path), inventory=INVENTORY_CSV), "M5-GUEST-OWNER", "guest:web02")
    assert f["status"] == "pass"
    assert f["evidence"]["sources"] == {"owner": "inventory", "patch_group": "inventory"}


def test_owner_errors_without_the_guest_list(tmp_path):
    facts = with_sources(mixed_facts(tmp_path), libvirt=unavailable("cannot connect"))
    f = one(run(facts), "M5-GUEST-OWNER")
    assert f["status"] == "error"
