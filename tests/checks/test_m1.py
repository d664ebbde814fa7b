"""M1: one security zone per host (M1-ZONE-MIX, M1-ZONE-UNLABELLED, M1-NET-ZONE), on the libvirt test
driver hosts guests-mixed (dmz + internal guests, a trunk network with VLAN portgroups) and
guests-clean (two dmz guests)."""

from __future__ import annotations

import copy

from guest_helpers import INVENTORY_JSON, MIXED_POLICY, clean_facts, mixed_facts, run
from vmtest import domain_parses, one, set_xml, with_sources

from vmaudit.facts import unavailable

CLEAN_POLICY = MIXED_POLICY


def _domain(facts: dict, name: str) -> dict:
    return next(d for d in facts["sources"]["libvirt"]["domains"] if d["name"] == name)


def _without_guests(facts: dict, keep: set) -> dict:
    out = copy.deepcopy(facts)
    lv = out["sources"]["libvirt"]
    lv["domains"] = [d for d in lv["domains"] if d["name"] in keep]
    return out


# --- M1-ZONE-MIX ---------------------------------------------------------------------------------

def test_zone_mix_fails_with_guests_of_two_zones(tmp_path):
    f = one(run(mixed_facts(tmp_path), MIXED_POLICY), "M1-ZONE-MIX")
    assert f["status"] == "fail" and f["severity"] == "critical"
    assert f["evidence"]["zones"] == {"dmz": ["never", "web01", "web02"], "internal": ["db01"]}
    assert f["evidence"]["unlabelled"] == ["lab-old", "scratch"]
    assert f["evidence"]["host_zone"] == "dmz"


def test_zone_mix_fails_when_the_only_zone_is_not_the_hosts(tmp_path):
    facts = _without_guests(mixed_facts(tmp_path), {"db01"})
    f = one(run(facts, MIXED_POLICY), "M1-ZONE-MIX")
    assert f["status"] == "fail"
    assert f["evidence"]["foreign_guests"] == ["db01"]
    assert (f["expected"], f["actual"]) == ("dmz", "internal")


def test_zone_mix_passes_on_a_single_zone_host(tmp_path):
    f = one(run(clean_facts(tmp_path), CLEAN_POLICY), "M1-ZONE-MIX")
    assert f["status"] == "pass"
    assert f["evidence"]["zones"] == {"dmz": ["mail-a", "shop-a"]}
    assert f["evidence"]["unlabelled"] == []


def test_zone_mix_warns_when_unlabelled_guests_hide_the_answer(tmp_path):
    facts = _without_guests(mixed_facts(tmp_path), {"web01", "lab-old"})
    f = one(run(facts, MIXED_POLICY), "M1-ZONE-MIX")
    assert f["status"] == "warn"
    assert f["evidence"]["unlabelled"] == ["lab-old"]
    assert f["severity"] == "medium"  # a review item, M1-ZONE-UNLABELLED's severity, never critical


def test_zone_mix_takes_the_zone_from_the_inventory_when_metadata_has_none(tmp_path):
    # guests.json labels lab-old "internal": now the mix is proven with it, too
    facts = _without_guests(mixed_facts(tmp_path), {"web01", "lab-old"})
    f = one(run(facts, MIXED_POLICY, inventory=INVENTORY_JSON), "M1-ZONE-MIX")
    assert f["status"] == "fail"
    assert f["evidence"]["zones"] == {"dmz": ["web01"], "internal": ["lab-old"]}


def test_zone_mix_metadata_wins_over_the_inventory(tmp_path):
    facts = _without_guests(mixed_facts(tmp_path), {"web01", "web02"})
    f = one(run(facts, MIXED_POLICY, inventory=INVENTORY_JSON), "M1-ZONE-MIX")
    assert f["status"] == "pass"


def test_zone_mix_errors_without_the_guest_list(tmp_path):
    facts = with_sources(mixed_facts(tmp_path), libvirt=unavailable("cannot connect to qemu:///system"))
    f = one(run(facts, MIXED_POLICY), "M1-ZONE-MIX")
    assert f["status"] == "error"
    assert "qemu:///system" in f["evidence"]["reason"]


def test_zone_mix_errors_when_a_guests_xml_is_unreadable(tmp_path):
    facts = _without_guests(mixed_facts(tmp_path), {"web01", "never"})
    _domain(facts, "never")["xml"] = unavailable("libvirt: domain not found")
    f = one(run(facts, MIXED_POLICY), "M1-ZONE-MIX")
    assert f["status"] == "error"
    assert set(f["evidence"]["unreadable"]) == {"never"}


# --- M1-ZONE-UNLABELLED -------------------------------------------------------------------------

def test_unlabelled_guest_warns_and_labelled_guest_passes(tmp_path):
    report = run(mixed_facts(tmp_path), MIXED_POLICY)
    bad = one(report, "M1-ZONE-UNLABELLED", "guest:lab-old")
    assert bad["status"] == "warn" and bad["severity"] == "medium"
    assert bad["evidence"] == {"zone": None, "source": None, "inventory": False}
    good = one(report, "M1-ZONE-UNLABELLED", "guest:web01")
    assert good["status"] == "pass"
    assert good["evidence"] == {"zone": "dmz", "source": "metadata"}


def test_unlabelled_is_satisfied_by_the_inventory(tmp_path):
    report = run(mixed_facts(tmp_path), MIXED_POLICY, inventory=INVENTORY_JSON)
    f = one(report, "M1-ZONE-UNLABELLED", "guest:lab-old")
    assert f["status"] == "pass"
    assert f["evidence"] == {"zone": "internal", "source": "inventory"}


def test_unlabelled_errors_when_the_xml_is_missing(tmp_path):
    facts = mixed_facts(tmp_path)
    _domain(facts, "web01")["xml"] = unavailable("libvirt: operation failed")
    f = one(run(facts, MIXED_POLICY), "M1-ZONE-UNLABELLED", "guest:web01")
    assert f["status"] == "error"
    assert "operation failed" in f["evidence"]["reason"]


# --- M1-NET-ZONE --------------------------------------------------------------------------------

def test_net_zone_fails_for_a_dmz_guest_on_the_internal_portgroup(tmp_path):
    report = run(mixed_facts(tmp_path), MIXED_POLICY)
    f = one(report, "M1-NET-ZONE", "guest:web02")
    assert f["status"] == "fail" and f["severity"] == "high"
    iface = f["evidence"]["interfaces"][0]
    # network 'trunk' forwards to bridge br-trunk; portgroup 'internal' carries VLAN 20
    assert iface["attached_to"] == ["trunk", "br-trunk"]
    assert iface["vlans"] == ["20"] and iface["zones"] == ["internal"]
    assert (f["expected"], f["actual"]) == ("dmz", "internal")


def test_net_zone_resolves_bridge_networks_and_default_portgroups(tmp_path):
    report = run(mixed_facts(tmp_path), MIXED_POLICY)
    web01 = one(report, "M1-NET-ZONE", "guest:web01")
    assert web01["status"] == "pass"
    # network dmz-net is forward mode='bridge' onto br-dmz, which the policy maps to dmz
    assert web01["evidence"]["interfaces"][0]["attached_to"] == ["dmz-net", "br-dmz"]
    never = one(report, "M1-NET-ZONE", "guest:never")
    assert never["status"] == "pass"
    assert never["evidence"]["interfaces"][0]["vlans"] == ["30"]  # the default portgroup's VLAN
    db01 = one(report, "M1-NET-ZONE", "guest:db01")
    assert db01["status"] == "pass" and db01["evidence"]["interfaces"][0]["attached_to"] == ["br-int"]


def test_net_zone_reads_the_guests_without_parsing_them_again(tmp_path, monkeypatch):
    """M1-NET-ZONE runs after the guests' trees are dropped: it reads their interfaces from a view, so
    each definition is parsed once per audit (with networks mapped to zones it parsed every one again)."""

    facts = mixed_facts(tmp_path)
    parsed = domain_parses(monkeypatch)
    report = run(facts, MIXED_POLICY)
    assert one(report, "M1-NET-ZONE", "guest:web01")["evidence"]["interfaces"][0]["attached_to"] == \
        ["dmz-net", "br-dmz"]
    domains = facts["sources"]["libvirt"]["domains"]
    assert len(parsed) == sum(1 + isinstance(d.get("xml_inactive"), str) for d in domains)


def test_net_zone_warns_for_unmapped_networks(tmp_path):
    f = one(run(mixed_facts(tmp_path), MIXED_POLICY), "M1-NET-ZONE", "guest:lab-old")
    assert f["status"] == "warn"
    assert f["evidence"]["interfaces"][0]["attached_to"] == ["eno3"]
    assert f["evidence"]["interfaces"][0]["zones"] == []


def test_net_zone_host_fails_when_networks_span_zones(tmp_path):
    f = one(run(mixed_facts(tmp_path), MIXED_POLICY), "M1-NET-ZONE")
    assert f["status"] == "fail"
    assert f["evidence"]["network_zones"] == {"dmz": ["never", "web01"], "internal": ["db01", "web02"]}


def test_net_zone_passes_on_a_clean_host(tmp_path):
    report = run(clean_facts(tmp_path), CLEAN_POLICY)
    host = one(report, "M1-NET-ZONE")
    assert host["status"] == "pass"
    assert host["evidence"]["network_zones"] == {"dmz": ["mail-a", "shop-a"]}
    # mail-a: bridge br-dmz with its own <vlan> tag 30 -> dmz
    mail = one(report, "M1-NET-ZONE", "guest:mail-a")
    assert mail["status"] == "pass" and mail["evidence"]["interfaces"][0]["vlans"] == ["30"]


def test_net_zone_interface_vlan_overrides_the_portgroup(tmp_path):
    facts = mixed_facts(tmp_path)
    dom = _domain(facts, "web02")
    set_xml(dom, dom["xml"].replace("<source network='trunk' portgroup='internal'/>",
                                    "<source network='trunk' portgroup='internal'/><vlan><tag id='30'/></vlan>"))
    f = one(run(facts, MIXED_POLICY), "M1-NET-ZONE", "guest:web02")
    assert f["status"] == "pass"
    assert f["evidence"]["interfaces"][0]["vlans"] == ["30"]


def test_net_zone_warns_for_an_unmapped_vlan_on_a_mapped_bridge(tmp_path):
    # db01 sits on br-int (internal); tagged into VLAN 99, its segment is VLAN 99, which has no zone
    facts = mixed_facts(tmp_path)
    dom = _domain(facts, "db01")
    dom["xml"] = dom["xml"].replace("<source bridge='br-int'/>",
                                    "<source bridge='br-int'/><vlan><tag id='99'/></vlan>")
    f = one(run(facts, MIXED_POLICY), "M1-NET-ZONE", "guest:db01")
    assert f["status"] == "warn" and "VLAN 99 not mapped" in f["message"]
    assert f["evidence"]["interfaces"][0]["unmapped_vlans"] == ["99"]


def test_net_zone_without_a_network_map_warns_once(tmp_path):
    report = run(mixed_facts(tmp_path), '[host]\nzone = "dmz"\n')
    f = one(report, "M1-NET-ZONE")
    assert f["status"] == "warn"
    assert f["evidence"] == {"zones.networks": {}}
    assert [x for x in report["findings"] if x["check_id"] == "M1-NET-ZONE"] == [f]


def test_net_zone_errors_when_the_network_definitions_are_missing(tmp_path):
    facts = mixed_facts(tmp_path)
    facts["sources"]["libvirt"]["networks"] = unavailable("libvirt: network driver not running")
    report = run(facts, MIXED_POLICY)
    f = one(report, "M1-NET-ZONE", "guest:never")
    assert f["status"] == "error"
    assert "network driver" in f["evidence"]["interfaces"][0]["error"]
    # a bridge interface needs no network definition
    assert one(report, "M1-NET-ZONE", "guest:db01")["status"] == "pass"


def test_net_zone_host_errors_while_a_guests_network_is_unresolved(tmp_path):
    # shop-a's libvirt network cannot be resolved: it may sit in another zone, so the host is not proven
    facts = clean_facts(tmp_path)
    facts["sources"]["libvirt"]["networks"] = unavailable("libvirt: network driver not running")
    report = run(facts, CLEAN_POLICY)
    assert one(report, "M1-NET-ZONE", "guest:shop-a")["status"] == "error"
    f = one(report, "M1-NET-ZONE")
    assert f["status"] == "error" and "shop-a" in f["evidence"]["unreadable"]
    assert f["evidence"]["network_zones"] == {"dmz": ["mail-a"]}


def test_net_zone_errors_without_the_guest_list(tmp_path):
    facts = with_sources(mixed_facts(tmp_path), libvirt=unavailable("cannot connect"))
    f = one(run(facts, MIXED_POLICY), "M1-NET-ZONE")
    assert f["status"] == "error" and "cannot connect" in f["evidence"]["reason"]


def test_hostile_guest_names_and_portgroups_are_data(tmp_path):
    facts = mixed_facts(tmp_path)
    dom = _domain(facts, "web02")
    set_xml(dom, dom["xml"].replace("portgroup='internal'", "portgroup=\"x' or '1'='1\""))
    f = one(run(facts, MIXED_POLICY), "M1-NET-ZONE", "guest:web02")
    # an unknown portgroup: no VLAN from it, the network's bridge br-trunk is unmapped
    assert f["status"] == "warn"


def test_net_zone_resolves_sr_iov_and_macvtap_networks(tmp_path):
    facts = mixed_facts(tmp_path)
    for net in facts["sources"]["libvirt"]["networks"]:
        if net["name"] == "dmz-net":  # now a pool of VFs of the internal-facing NIC
            net["xml"] = ("<network><name>dmz-net</name><forward mode='hostdev' managed='yes'>"
                          "<pf dev='ens1f0'/></forward></network>")
    policy = MIXED_POLICY + '"ens1f0" = "internal"\n'
    f = one(run(facts, policy), "M1-NET-ZONE", "guest:web01")
    assert f["status"] == "fail"
    assert f["evidence"]["interfaces"][0]["attached_to"] == ["dmz-net", "ens1f0"]
