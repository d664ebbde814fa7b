"""M4: limit consolidation (M4-GUEST-COUNT, M4-CPU-OVERCOMMIT, M4-REDUNDANCY, M4-INDEPENDENT-SERVICES)
on the libvirt test-driver hosts guests-mixed (4 host CPUs; web01 6 vCPUs, web02 4 of 8 online and the
transient scratch 2 running; db01, lab-old, never shut off) and guests-clean."""

from __future__ import annotations

import copy

from guest_helpers import INVENTORY_CSV, clean_facts, mixed_facts, run
from vmtest import one, with_sources

from vmaudit.facts import unavailable

# --- M4-GUEST-COUNT -----------------------------------------------------------------------------

def test_guest_count_counts_running_and_defined_separately(tmp_path):
    f = one(run(mixed_facts(tmp_path)), "M4-GUEST-COUNT")
    assert f["status"] == "pass"
    assert f["evidence"]["running"] == 3 and f["evidence"]["defined"] == 6
    assert f["evidence"]["running_guests"] == ["scratch", "web01", "web02"]


def test_guest_count_fails_above_the_running_limit(tmp_path):
    f = one(run(mixed_facts(tmp_path), "[limits]\nmax_running_guests = 2\n"), "M4-GUEST-COUNT")
    assert f["status"] == "fail" and f["severity"] == "medium"
    assert f["evidence"]["max_running_guests"] == 2 and f["evidence"]["running"] == 3
    assert f["actual"] == "3"


def test_guest_count_warns_when_defined_guests_exceed_twice_the_limit(tmp_path):
    # with web02 stopped: 2 running (not above the limit of 2) but 6 defined (above 2 x 2)
    facts = mixed_facts(tmp_path)
    for d in facts["sources"]["libvirt"]["domains"]:
        if d["name"] == "web02":
            d["state"] = "shutoff"
    f = one(run(facts, "[limits]\nmax_running_guests = 2\n"), "M4-GUEST-COUNT")
    assert f["status"] == "warn"
    assert (f["evidence"]["running"], f["evidence"]["defined"], f["evidence"]["max_defined_guests"]) == (2, 6, 4)


def test_guest_count_errors_without_the_domain_list(tmp_path):
    facts = with_sources(mixed_facts(tmp_path), libvirt=unavailable("cannot connect to qemu:///system"))
    f = one(run(facts), "M4-GUEST-COUNT")
    assert f["status"] == "error" and "cannot connect" in f["evidence"]["reason"]


# --- M4-CPU-OVERCOMMIT --------------------------------------------------------------------------

def test_cpu_overcommit_uses_current_vcpus_of_running_guests(tmp_path):
    f = one(run(mixed_facts(tmp_path)), "M4-CPU-OVERCOMMIT")
    assert f["status"] == "pass"
    assert f["evidence"]["vcpus"] == {"scratch": 2, "web01": 6, "web02": 4}  # web02: current='4' of 8
    assert (f["evidence"]["running_vcpus"], f["evidence"]["host_cpus"]) == (12, 4)
    assert f["evidence"]["host_cpus_source"] == "libvirt nodeinfo"
    assert f["evidence"]["ratio"] == 3.0


def test_cpu_overcommit_warns_above_the_policy_ratio(tmp_path):
    f = one(run(mixed_facts(tmp_path), "[limits]\ncpu_overcommit = 2.5\n"), "M4-CPU-OVERCOMMIT")
    assert f["status"] == "warn"
    assert (f["expected"], f["actual"]) == ("<= 2.5", "3")


def test_cpu_overcommit_falls_back_to_proc_cpuinfo(tmp_path):
    facts = mixed_facts(tmp_path)
    facts["sources"]["libvirt"]["nodeinfo"] = unavailable("libvirt: this function is not supported")
    facts["sources"]["cpu"] = {"flags": ["vmx"], "vendor": "GenuineIntel", "model": "x", "logical_cpus": 2}
    f = one(run(facts), "M4-CPU-OVERCOMMIT")
    assert f["status"] == "warn"  # 12 vCPUs on 2 CPUs
    assert f["evidence"]["host_cpus_source"] == "/proc/cpuinfo" and f["evidence"]["ratio"] == 6.0


def test_cpu_overcommit_errors_without_host_cpus(tmp_path):
    facts = mixed_facts(tmp_path)
    facts["sources"]["libvirt"]["nodeinfo"] = unavailable("libvirt: not supported")
    facts["sources"]["cpu"] = unavailable("cannot read /proc/cpuinfo: Permission denied")
    f = one(run(facts), "M4-CPU-OVERCOMMIT")
    assert f["status"] == "error"
    assert "Permission denied" in f["evidence"]["reason"]


def test_cpu_overcommit_errors_when_a_running_guests_vcpus_are_unknown(tmp_path):
    facts = mixed_facts(tmp_path)
    for d in facts["sources"]["libvirt"]["domains"]:
        if d["name"] == "web01":
            d["xml"] = unavailable("libvirt: domain is not running")
    f = one(run(facts), "M4-CPU-OVERCOMMIT")
    assert f["status"] == "error"
    assert list(f["evidence"]["unknown"]) == ["web01"]


# --- M4-REDUNDANCY ------------------------------------------------------------------------------

def test_redundancy_fails_with_both_members_on_the_host(tmp_path):
    f = one(run(mixed_facts(tmp_path)), "M4-REDUNDANCY")
    assert f["status"] == "fail" and f["severity"] == "high"
    assert f["evidence"]["shared"] == {"shop-fe": ["web01", "web02"]}


def test_redundancy_passes_with_one_member_per_group(tmp_path):
    f = one(run(clean_facts(tmp_path)), "M4-REDUNDANCY")
    assert f["status"] == "pass"
    assert f["evidence"]["groups"] == {"mx": ["mail-a"], "shop-fe": ["shop-a"]}
    assert f["evidence"]["shared"] == {}


def test_redundancy_errors_when_a_guests_labels_are_unreadable(tmp_path):
    facts = clean_facts(tmp_path)
    facts["sources"]["libvirt"]["domains"][0]["xml"] = unavailable("libvirt: internal error")
    f = one(run(facts), "M4-REDUNDANCY")
    assert f["status"] == "error"
    assert len(f["evidence"]["unreadable"]) == 1


# --- M4-INDEPENDENT-SERVICES --------------------------------------------------------------------

def test_services_have_no_limit_by_default(tmp_path):
    f = one(run(mixed_facts(tmp_path), inventory=INVENTORY_CSV), "M4-INDEPENDENT-SERVICES")
    assert f["status"] == "pass"
    # db01's service comes from the inventory (its metadata has none)
    assert f["evidence"]["services"] == {"erp": ["db01"], "shop": ["web01", "web02"]}
    assert f["evidence"]["max_services"] is None


def test_services_warn_above_the_policy_limit(tmp_path):
    f = one(run(mixed_facts(tmp_path), "[limits]\nmax_services = 1\n", inventory=INVENTORY_CSV),
            "M4-INDEPENDENT-SERVICES")
    assert f["status"] == "warn" and f["severity"] == "low"
    assert f["evidence"]["count"] == 2 and f["actual"] == "2"


def test_services_within_the_limit_pass(tmp_path):
    f = one(run(clean_facts(tmp_path), "[limits]\nmax_services = 2\n"), "M4-INDEPENDENT-SERVICES")
    assert f["status"] == "pass" and f["evidence"]["count"] == 2


def test_services_error_when_labels_are_unreadable_and_a_limit_is_set(tmp_path):
    facts = copy.deepcopy(clean_facts(tmp_path))
    facts["sources"]["libvirt"]["domains"][1]["xml"] = unavailable("libvirt: internal error")
    f = one(run(facts, "[limits]\nmax_services = 1\n"), "M4-INDEPENDENT-SERVICES")
    assert f["status"] == "error"
    assert f["evidence"]["unreadable"]
