"""The engine: missing evidence becomes error/skip, defects stay contained, exit statuses."""

from __future__ import annotations

import pytest

from vmaudit.engine import REGISTRY, CheckSpec, Result, evaluate, exit_status
from vmaudit.facts import SCHEMA, Facts, NotApplicable, need, unavailable
from vmaudit.policy import Policy

DOMAIN = "<domain type='{t}'><name>{n}</name><uuid>{u}</uuid><memory>1024</memory></domain>"


def snapshot(domains, **sources) -> Facts:
    return Facts({"schema": SCHEMA, "host": {"hostname": "hv", "live": False}, "collected_at": "2026-11-28T00:00:00Z",
                  "sources": {"libvirt": {"domains": domains}, **sources}})


def spec(func, scope="host", id="M2-TEST-ONLY") -> dict:
    return {id: CheckSpec(id=id, measure="M2", severity="high", title="t", remediation="r", scope=scope, func=func)}


def test_partial_results_survive_missing_evidence():
    def host_check(facts, policy):
        yield Result("fail", "first file is bad", "file:/etc/a")
        need(facts.raw("cpu"), "cpu")

    found = evaluate(snapshot([], cpu=unavailable("cannot read /proc/cpuinfo: Permission denied")), Policy(),
                     spec(host_check))
    assert [(f["resource"], f["status"]) for f in found] == [("file:/etc/a", "fail"), ("host", "error")]
    assert "Permission denied" in found[1]["message"] and found[1]["evidence"]["reason"]


def test_a_defective_check_is_an_error_not_a_crash():
    def broken(facts, policy):
        yield from ()
        raise KeyError("oops")

    found = evaluate(snapshot([]), Policy(), spec(broken))
    assert found[0]["status"] == "error" and "KeyError" in found[0]["message"]


def test_guest_checks_fail_per_guest_on_bad_xml():
    def guest_check(guest, facts, policy):
        yield Result("pass", "ok", guest.resource, {"type": guest.domain_type})

    domains = [{"name": "good", "uuid": "1", "state": "running", "xml": DOMAIN.format(t="kvm", n="good", u="1")},
               {"name": "bad", "uuid": "2", "state": "running", "xml": "<domain"},
               {"name": "gone", "uuid": "3", "state": "running", "xml": unavailable("libvirt: domain vanished")}]
    found = {f["resource"]: f for f in evaluate(snapshot(domains), Policy(), spec(guest_check, "guest"))}
    assert found["guest:good"]["status"] == "pass"
    assert found["guest:bad"]["status"] == "error" and "does not parse" in found["guest:bad"]["message"]
    assert found["guest:gone"]["status"] == "error" and "domain vanished" in found["guest:gone"]["message"]


def test_no_guest_list_means_error_for_guest_checks_and_skip_for_not_applicable():
    def guest_check(guest, facts, policy):
        yield Result("pass", "ok", guest.resource)

    facts = Facts({"schema": SCHEMA, "host": {}, "sources": {"libvirt": unavailable("cannot connect")}})
    found = evaluate(facts, Policy(), spec(guest_check, "guest"))
    assert [(f["resource"], f["status"]) for f in found] == [("host", "error")]

    def live_check(facts, policy):
        raise NotApplicable("processes: live fact, not collected when auditing root /mnt")
        yield

    found = evaluate(snapshot([]), Policy(), spec(live_check))
    assert found[0]["status"] == "skip" and "/mnt" in found[0]["message"]


@pytest.mark.parametrize("findings, fail_on, expected", [
    ([{"status": "fail", "severity": "low"}], "low", 1),
    ([{"status": "fail", "severity": "low"}], "medium", 0),
    ([{"status": "fail", "severity": "low"}, {"status": "error", "severity": "high"}], "medium", 3),
    ([{"status": "fail", "severity": "critical", "waiver": {}}], "low", 0),
    ([{"status": "warn", "severity": "critical"}], "low", 0),
    ([{"status": "error", "severity": "low", "waiver": {}}], "low", 0),
])
def test_exit_status(findings, fail_on, expected):
    assert exit_status(findings, fail_on) == expected


def test_every_registered_check_is_documented():
    from vmaudit.engine import load_checks

    for c in load_checks().values():
        assert "Rule" in c.doc or c.scope == "fleet" or len(c.doc) > 80, c.id
    assert "M2-TEST-ONLY" not in REGISTRY


def test_merging_two_definitions_keeps_the_worse_and_says_when():
    from vmaudit.engine import merge_definitions

    live = [Result("pass", "ok", "guest:a", {"x": 1}), Result("warn", "only now", "file:/live")]
    persistent = [Result("error", "evidence missing: gone", "guest:a", {"reason": "gone"}),
                  Result("fail", "only later", "file:/saved", severity="critical")]
    merged = {r.resource: r for r in merge_definitions(live, persistent)}
    a = merged["guest:a"]
    assert a.status == "error" and a.message == "after the next start: evidence missing: gone (now: pass, ok)"
    assert a.evidence["now"]["evidence"] == {"x": 1} and a.evidence["after_next_start"]["status"] == "error"
    assert merged["file:/live"].message == "only now (now)" and merged["file:/live"].status == "warn"
    saved = merged["file:/saved"]
    assert saved.message == "only later (after the next start)" and saved.severity == "critical"
    same = merge_definitions([Result("fail", "bad", "guest:b")], [Result("fail", "bad", "guest:b")])
    assert [(r.status, r.message) for r in same] == [("fail", "bad (now and after the next start)")]


def test_an_audited_snapshot_is_freed_without_the_cyclic_collector(monkeypatch):
    """A one-shot command runs without the cyclic garbage collector: nothing may keep a snapshot's guests
    alive through a reference cycle once it is evaluated (a running guest's two definitions refer to each
    other; a check that keeps an exception makes exception -> traceback -> frame -> exception)."""
    import gc
    import json
    import weakref

    from vmtest import host_root, test_uri

    from vmaudit import gcpolicy
    from vmaudit.audit import collect_facts

    data = json.loads(json.dumps(collect_facts(root=str(host_root("debian-broken")), uri=test_uri("m3-broken"))))
    enabled = gc.isenabled()
    gc.disable()  # as gcpolicy.disable_for_process(), undone below
    monkeypatch.setattr(gcpolicy, "_process_without_gc", True)
    try:
        facts = Facts(data)
        guests = facts.guests()
        assert any("persistent" in g.definitions() and "live" in g.definitions() for g in guests)
        with gcpolicy.paused():
            found = evaluate(facts, Policy())
        assert any(f["message"].startswith("evidence missing") for f in found)  # exceptions were raised
        refs = [weakref.ref(facts)] + [weakref.ref(g) for g in guests]
        refs += [weakref.ref(d) for g in guests for d in g.definitions().values()]
        del facts, guests
        assert [r() for r in refs if r() is not None] == []
    finally:
        if enabled:
            gc.enable()
