"""What the plan reads: capacity by the checks' rules (and missing or mistyped evidence), guest labels
from the central inventory, peers from the policy, the [plan] policy keys; and what it must not touch
(the agentless zipapp stays free of the planner)."""

from __future__ import annotations

import io
import zipfile

import pytest
from fleetgen import NO_RESERVE, G, H, synth_facts, write_fleet
from planrun import moves, plan_checked

from vmaudit.capacity import host_cpus, host_memory
from vmaudit.facts import EvidenceMissing, Facts
from vmaudit.policy import Policy, PolicyError, parse_policy


def _facts(nodeinfo: object = None, **sources) -> Facts:
    """A snapshot held to the facts contract when it is read (as Facts() does with every snapshot)."""
    data = synth_facts(H("a"))
    data["sources"].update(sources)
    if nodeinfo is not None:
        data["sources"]["libvirt"]["nodeinfo"] = nodeinfo
    return Facts(data)


def test_host_memory_prefers_meminfo_and_applies_the_reserve():
    mem = host_memory(_facts(meminfo={"MemTotal": 64 * 1024 * 1024}), Policy())
    assert mem.total_mib == 65536 and mem.reserve_mib == pytest.approx(6553.6)
    mem = host_memory(_facts(), parse_policy('[limits]\nhost_memory_reserve = "1GiB"\n', "p"))
    assert mem.source == "libvirt getInfo()" and mem.available_mib == 8192 - 2048  # the 2 GiB minimum wins


@pytest.mark.parametrize("meminfo,nodeinfo", [
    ({"MemTotal": "lots"}, {"memory_mib": "8192"}),
    ({"unavailable": "EACCES"}, {"unavailable": "libvirt down"}),
    ({"MemTotal": True}, {"memory_mib": None}),
])
def test_host_memory_wrong_types_are_missing_evidence(meminfo, nodeinfo):
    facts = _facts(nodeinfo, meminfo=meminfo)
    with pytest.raises(EvidenceMissing):
        host_memory(facts, Policy())


def test_host_cpus_falls_back_to_cpuinfo_and_refuses_junk():
    assert host_cpus(_facts({"unavailable": "no"}, cpu={"logical_cpus": 12})) == (12, "/proc/cpuinfo")
    with pytest.raises(EvidenceMissing):
        host_cpus(_facts({"unavailable": "no"}, cpu={"logical_cpus": "12"}))


def test_plan_policy_keys_are_typed():
    p = parse_policy('[plan]\npinned = ["db-*"]\ndrain = ["hv-old*"]\n', "p.toml")
    assert p.get("plan", "pinned") == ["db-*"] and Policy().get("plan", "drain") == []
    with pytest.raises(PolicyError, match="pinned"):
        parse_policy('[plan]\npinned = "db-*"\n', "p.toml")
    with pytest.raises(PolicyError, match="unknown key"):
        parse_policy('[plan]\nfreeze = []\n', "p.toml")


def test_zones_from_the_central_inventory(tmp_path):
    a_guest = G("app", zone=None)
    (tmp_path / "registry.csv").write_text(f"uuid,name,zone\n{a_guest.uuid},app,internal\n")
    policy = NO_RESERVE + f'[inventory]\npath = "{tmp_path / "registry.csv"}"\n'
    f = write_fleet(tmp_path / "f", [H("a", zone="dmz", group="g", guests=[a_guest]),
                                    H("b", zone="internal", group="g")], policy_text=policy, collect=False)
    rc, doc = plan_checked(f)
    assert rc == 0 and moves(doc) == [("app", "a", "b")]


def test_peers_from_the_plan_policy_for_hosts_declaring_none(tmp_path):
    hosts = [H("a", zone="dmz", guests=[G("i1", zone="int")]), H("b", zone="int")]
    f = write_fleet(tmp_path / "f", hosts, collect=False)
    rc, doc = plan_checked(f)
    assert rc == 1 and not doc["moves"]  # no peers: nothing may move
    (f / "peers.toml").write_text(NO_RESERVE + '[host]\nmigration_peers = ["a", "b"]\n')
    rc, doc = plan_checked(f, policy=f / "peers.toml")
    assert rc == 0 and moves(doc) == [("i1", "a", "b")]


def test_zipapp_carries_no_planner():
    from vmaudit.fleet.zipapp import build_zipapp

    names = zipfile.ZipFile(io.BytesIO(build_zipapp(include_native=False))).namelist()
    assert "vmaudit/facts.py" in names  # the collectors' own modules only (zipapp.MODULES)
    assert not [n for n in names if n.startswith("vmaudit/plan/") or "ortools" in n]


@pytest.mark.parametrize("xml", [{"unavailable": "virDomainGetXMLDesc: permission denied"}, 42,
                                 "<domain><name>x</name><memory>lots</memory></domain>", "<domain"])
def test_a_guest_without_usable_xml_makes_its_host_unplanned(tmp_path, xml):
    import json

    f = write_fleet(tmp_path / "f", [H("a", zone="int", group="g", guests=[G("i1", zone="int"), G("i2", zone="int")]),
                                    H("b", zone="int", group="g")], collect=False)
    facts = json.loads((f / "facts" / "a.json").read_text())
    facts["sources"]["libvirt"]["domains"][1]["xml"] = xml
    (f / "facts" / "a.json").write_text(json.dumps(facts))
    rc, doc = plan_checked(f)
    assert rc == 3 and doc["unaudited"][0]["host"] == "a" and "guest i2" in doc["unaudited"][0]["reason"]
    assert not doc["moves"]
