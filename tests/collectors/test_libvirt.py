"""The libvirt collector on a busy host: objects that vanish between libvirt's list call and the next
RPC about them (transient pools and networks of virt-manager, libguestfs, CI jobs)."""

from __future__ import annotations

import pytest
from vmtest import audit, one

from vmaudit.audit import collect_facts
from vmaudit.collectors import Context

libvirt = pytest.importorskip("libvirt")


class _Gone:
    """A pool or network undefined right after listAllStoragePools/listAllNetworks returned it."""

    def __init__(self, name: str):
        self._name = name

    def name(self) -> str:
        return self._name

    def _gone(self, *args):
        raise libvirt.libvirtError(f"no storage pool or network with matching name '{self._name}'")

    isActive = XMLDesc = listAllVolumes = _gone


class _Conn:
    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def listAllStoragePools(self, flags=0):
        return self._real.listAllStoragePools(flags) + [_Gone("scratch")]

    def listAllNetworks(self, flags=0):
        return self._real.listAllNetworks(flags) + [_Gone("tmpnet")]


def test_a_pool_or_network_that_vanishes_costs_only_itself(monkeypatch):
    real = libvirt.openReadOnly("test:///default")
    monkeypatch.setattr(Context, "libvirt", lambda self: _Conn(real))
    facts = collect_facts(root="/", uri="test:///default", only=["libvirt"])
    src = facts["sources"]["libvirt"]
    assert "unavailable" not in src, src
    assert [d["name"] for d in src["domains"]] == ["test"]
    report = audit(facts=facts)
    # the guests are still judged; the vanished pool is missing evidence for that pool only
    assert one(report, "M8-ORPHAN-VOLUMES", "pool:scratch")["status"] == "error"
    assert one(report, "M8-TRANSIENT", "guest:test")["status"] == "pass"


class _NoFilters:
    """A libvirt connection whose driver refuses listAllDomains' filter flags (an old daemon)."""

    def __init__(self, conn):
        self._conn = conn

    def listAllDomains(self, flags=0):
        if flags:
            raise libvirt.libvirtError("unsupported flags")
        return self._conn.listAllDomains(0)

    def __getattr__(self, name):
        return getattr(self._conn, name)


def test_per_guest_answers_without_list_filters_match_the_filtered_ones():
    from vmtest import driver_uri

    from vmaudit.collectors.libvirt import _domains

    conn = libvirt.openReadOnly(driver_uri("guests-mixed"))
    try:
        filtered = sorted(_domains(conn), key=lambda d: d["uuid"])
        asked = sorted(_domains(_NoFilters(conn)), key=lambda d: d["uuid"])
    finally:
        conn.close()
    assert filtered == asked
    assert {d["state"] for d in filtered} >= {"running", "shutoff"}
    assert any(d["snapshots"] for d in filtered) and any(d["persistent"] is False for d in filtered)


def test_running_persistent_guests_have_both_definitions_others_one():
    """XMLDesc(VIR_DOMAIN_XML_INACTIVE) for an active persistent guest only: a shut-off guest's XML is its
    persistent definition, a transient guest has no other one."""
    from vmtest import driver_uri

    facts = collect_facts(root="/", uri=driver_uri("guests-mixed"), only=["libvirt"])
    domains = facts["sources"]["libvirt"]["domains"]
    kinds = set()
    for d in domains:
        active = d["state"] not in ("shutoff", "crashed", "nostate", "unknown")
        if active and d["persistent"] is True:
            assert isinstance(d["xml_inactive"], str) and d["xml_inactive"].lstrip().startswith("<domain"), d
            kinds.add("both")
        else:
            assert "xml_inactive" not in d, d
            kinds.add("transient" if active else "shutoff")
    assert kinds == {"both", "transient", "shutoff"}


def test_unknown_persistence_makes_the_persistent_definition_missing_evidence():
    from vmaudit.collectors.libvirt import _persistent_definition

    class Dom:
        def XMLDesc(self, flags):
            raise AssertionError("a guest that may be transient must not be asked for its inactive XML")

    record = {"state": "running", "persistent": {"unavailable": "libvirt: timed out"}}
    assert _persistent_definition(Dom(), record) == {"unavailable": "persistence unknown (libvirt: timed out)"}
    assert _persistent_definition(Dom(), {"state": "shutoff", "persistent": True}) is None
