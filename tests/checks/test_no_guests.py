"""A hypervisor with no guest defined at all (a new or drained host): checks about guests have nothing
to judge and say so, instead of warning about inventories, network zones or migration peers that no
guest uses (issue 11). Guests present, the same checks still warn."""

from __future__ import annotations

from vmtest import audit, host_root, one

from vmaudit.audit import collect_facts


def no_guest_facts(tmp_path) -> dict:
    node = tmp_path / "node.xml"
    node.write_text("<node/>\n")
    facts = collect_facts(root=str(host_root("debian-hardened")), uri=f"test://{node}")
    facts["collected_at"] = "2026-11-25T12:00:00Z"
    return facts


def test_no_guests_no_registration_zone_or_peer_warnings(tmp_path):
    facts = no_guest_facts(tmp_path)
    assert facts["sources"]["libvirt"]["domains"] == []
    report = audit(facts=facts)
    for check in ("M1-NET-ZONE", "M8-UNREGISTERED", "M7-MIGRATION-PEERS"):
        f = one(report, check)
        assert f["status"] == "pass" and "no guest" in f["message"], (check, f["message"])


def test_guests_present_still_warn(tmp_path):
    report = audit("debian-hardened", "test:///default")  # the test driver's default guest
    assert one(report, "M8-UNREGISTERED")["status"] == "warn"
    assert one(report, "M1-NET-ZONE")["status"] == "warn"
    assert one(report, "M7-MIGRATION-PEERS")["status"] == "warn"
