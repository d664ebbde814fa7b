"""The F-* fleet checks over facts of fixture hosts (tests/fixtures/fleet), evaluated as `collect` does.

The fixture fleet: hv-a (dmz) holds both guests of redundancy group shop-fe; hv-b (internal) holds a
dmz guest too and db01, whose UUID is also defined (shut off) on hv-c; hv-c and hv-d split group api;
the registry lists ghost01, found nowhere.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vmaudit.audit import collect_facts
from vmaudit.fleet.collect import Outcome
from vmaudit.fleet.evaluate import FleetView, evaluate_fleet, host_view, peer_map
from vmaudit.fleet.hosts import parse_hosts_text
from vmaudit.inventory import load_inventory, parse_inventory
from vmaudit.policy import Policy, parse_policy

FLEET = Path(__file__).resolve().parents[1] / "fixtures" / "fleet"
HOSTS = Path(__file__).resolve().parents[1] / "fixtures" / "hosts"
_FACTS: dict = {}


def facts_of(name: str, root: str | None = None) -> dict:
    key = (name, root)
    if key not in _FACTS:
        _FACTS[key] = collect_facts(root=root or str(FLEET / "roots" / name), uri=f"test://{FLEET}/{name}.xml")
    return _FACTS[key]


def run_fleet(ini: str, policy_text: str = "", registry: object = "default", down: dict | None = None) -> list[dict]:
    """Evaluate the fleet the way `vmaudit collect` does, with facts collected locally."""
    down = down or {}
    hosts = list(parse_hosts_text(ini, "fleet.ini").hosts.values())
    policy = parse_policy(policy_text, "central.toml") if policy_text else Policy()
    if registry == "default":
        policy.inventory = load_inventory(str(FLEET / "registry.csv"))
    elif registry is not None:
        policy.inventory = registry
    peers = peer_map(hosts, policy)
    views = []
    for h in hosts:
        if h.name in down:
            out = Outcome(h, reason=down[h.name], stage="connect")
        else:
            out = Outcome(h, facts=facts_of(h.name, h.vars.get("vmaudit_root")), reached=True, mode="installed")
        views.append(host_view(out, policy, peers[h.name]))
    return evaluate_fleet(FleetView(views, peers, policy.inventory), policy)


def pick(findings: list[dict], check_id: str, resource: str | None = None) -> list[dict]:
    return [f for f in findings if f["check_id"] == check_id and (resource is None or f["resource"] == resource)]


def only(findings: list[dict], check_id: str, resource: str) -> dict:
    found = pick(findings, check_id, resource)
    assert len(found) == 1, [(f["resource"], f["status"], f["message"]) for f in pick(findings, check_id)]
    assert found[0]["measure"] == "F" and found[0]["remediation"]
    return found[0]


FULL = """\
[dmz]
hv-a vmaudit_zone=dmz vmaudit_migration_group=mg-ab
[internal]
hv-b vmaudit_migration_group=mg-ab
hv-c vmaudit_migration_group=mg-cd
hv-d vmaudit_migration_group=mg-cd
[internal:vars]
vmaudit_zone=internal
"""


@pytest.fixture(scope="module")
def full() -> list[dict]:
    return run_fleet(FULL)


# --- F-ZONE-HOSTS -------------------------------------------------------------------------------

def test_zone_hosts_pass_and_fail(full):
    a = only(full, "F-ZONE-HOSTS", "host:hv-a")
    assert a["status"] == "pass" and a["evidence"]["zones"] == {"dmz": ["web01", "web02"]}
    b = only(full, "F-ZONE-HOSTS", "host:hv-b")
    assert b["status"] == "fail" and b["severity"] == "critical"
    assert b["evidence"]["zones"] == {"dmz": ["dmz-stray"], "internal": ["app01", "db01"]}
    assert b["evidence"]["declared_zone"] == "internal"


def test_zone_hosts_declared_zone_mismatch_and_undeclared():
    f = run_fleet("hv-a vmaudit_zone=internal\nhv-d\n")
    a = only(f, "F-ZONE-HOSTS", "host:hv-a")
    assert (a["status"], a["expected"], a["actual"]) == ("fail", "internal", "dmz")
    d = only(f, "F-ZONE-HOSTS", "host:hv-d")
    assert d["status"] == "warn" and d["evidence"]["declared_zone"] is None
    # the central policy's zone applies to hosts the inventory gives none
    f = run_fleet("hv-d\n", policy_text='[host]\nzone = "internal"\n')
    assert only(f, "F-ZONE-HOSTS", "host:hv-d")["status"] == "pass"


def test_zone_hosts_error_for_a_host_not_audited():
    f = run_fleet("hv-a vmaudit_zone=dmz\nhv-b vmaudit_zone=internal\n", down={"hv-b": "connection refused"})
    b = only(f, "F-ZONE-HOSTS", "host:hv-b")
    assert b["status"] == "error" and "connection refused" in b["evidence"]["reason"]


# --- F-REDUNDANCY -------------------------------------------------------------------------------

def test_redundancy_group_on_one_host_fails_spread_group_passes(full):
    shop = only(full, "F-REDUNDANCY", "group:shop-fe")
    assert shop["status"] == "fail" and shop["evidence"]["hosts"] == ["hv-a"]
    assert shop["evidence"]["members"] == [{"host": "hv-a", "guest": "web01"}, {"host": "hv-a", "guest": "web02"}]
    api = only(full, "F-REDUNDANCY", "group:api")
    assert api["status"] == "pass" and api["evidence"]["hosts"] == ["hv-c", "hv-d"]


def test_redundancy_error_when_members_may_be_elsewhere_and_single_member_warns():
    f = run_fleet("hv-a\nhv-c\nhv-d\n", down={"hv-d": "timed out"})
    shop = only(f, "F-REDUNDANCY", "group:shop-fe")
    assert shop["status"] == "error" and shop["evidence"]["hosts_not_audited"] == ["hv-d"]
    api = only(f, "F-REDUNDANCY", "group:api")   # api02 sits on the host not audited
    assert api["status"] == "warn" and api["evidence"]["members"] == [{"host": "hv-c", "guest": "api01"}]


# --- F-MIGRATION-PARITY -------------------------------------------------------------------------

def test_migration_parity_zone_difference_fails_equal_peers_pass(full):
    ab = only(full, "F-MIGRATION-PARITY", "peers:hv-a,hv-b")
    assert ab["status"] == "fail" and "zone: hv-a dmz, hv-b internal" in ab["message"]
    assert ab["evidence"]["zones"] == {"hv-a": "dmz", "hv-b": "internal"}
    cd = only(full, "F-MIGRATION-PARITY", "peers:hv-c,hv-d")
    assert cd["status"] == "pass", cd["message"]
    assert cd["evidence"]["checks_differing"] == {} and cd["evidence"]["checks_compared"] > 0


def test_migration_parity_names_differing_host_checks():
    if not (HOSTS / "debian-hardened").is_dir() or not (HOSTS / "debian-broken").is_dir():
        pytest.skip("fixture trees debian-hardened/debian-broken not present")
    f = run_fleet(f"hv-c vmaudit_zone=internal vmaudit_root={HOSTS}/debian-hardened vmaudit_migration_peers=hv-d\n"
                  f"hv-d vmaudit_zone=internal vmaudit_root={HOSTS}/debian-broken\n")
    cd = only(f, "F-MIGRATION-PARITY", "peers:hv-c,hv-d")
    assert cd["status"] == "fail"
    differing = cd["evidence"]["checks_differing"]
    assert differing and all(k.split("-")[0] in ("M2", "M3", "M6", "M7") for k in differing)
    cid = sorted(differing)[0]
    assert f"{cid}: hv-c {differing[cid]['hv-c']}, hv-d {differing[cid]['hv-d']}" in cd["message"]


def test_migration_parity_error_for_unaudited_peer_and_skip_without_peers():
    f = run_fleet("hv-c vmaudit_migration_group=g\nhv-d vmaudit_migration_group=g\n", down={"hv-d": "host key CHANGED"})
    cd = only(f, "F-MIGRATION-PARITY", "peers:hv-c,hv-d")
    assert cd["status"] == "error" and cd["evidence"]["not_audited"] == {"hv-d": "host key CHANGED"}
    f = run_fleet("hv-c\nhv-d\n")
    assert only(f, "F-MIGRATION-PARITY", "fleet")["status"] == "skip"
    # peers from the central policy
    f = run_fleet("hv-c\nhv-d\n", policy_text='[host]\nmigration_peers = ["hv-c", "hv-d"]\n')
    assert only(f, "F-MIGRATION-PARITY", "peers:hv-c,hv-d")["status"] in ("pass", "fail")


# --- F-DUPLICATE-GUEST --------------------------------------------------------------------------

def test_duplicate_guest_uuid_on_two_hosts(full):
    uuid = "f1ee7000-0000-4000-8000-000000000004"
    dup = only(full, "F-DUPLICATE-GUEST", f"uuid:{uuid}")
    assert dup["status"] == "fail"
    assert dup["evidence"]["defined_on"] == [{"host": "hv-b", "guest": "db01", "state": "running"},
                                             {"host": "hv-c", "guest": "db01", "state": "shutoff"}]
    assert len(pick(full, "F-DUPLICATE-GUEST")) == 1


def test_duplicate_guest_pass_and_error():
    f = run_fleet("hv-a\nhv-d\n")
    ok = only(f, "F-DUPLICATE-GUEST", "fleet")
    assert ok["status"] == "pass" and ok["evidence"] == {"guests": 3, "hosts_audited": 2}
    f = run_fleet("hv-a\nhv-d\n", down={"hv-d": "down"})
    err = only(f, "F-DUPLICATE-GUEST", "fleet")
    assert err["status"] == "error" and err["evidence"]["hosts_not_audited"] == ["hv-d"]


# --- F-INVENTORY-MISSING ------------------------------------------------------------------------

def test_registered_guest_found_nowhere_warns(full):
    ghost = only(full, "F-INVENTORY-MISSING", "guest:ghost01")
    assert ghost["status"] == "warn" and ghost["evidence"]["registered_host"] == "hv-b"
    assert ghost["evidence"]["uuid"] == "f1ee7000-0000-4000-8000-000000000099"
    assert len(pick(full, "F-INVENTORY-MISSING")) == 1


def test_inventory_missing_pass_skip_and_error():
    reg = parse_inventory("uuid,name,host\nf1ee7000-0000-4000-8000-000000000001,web01,hv-a\n", "reg.csv")
    assert only(run_fleet("hv-a\n", registry=reg), "F-INVENTORY-MISSING", "fleet")["status"] == "pass"
    assert only(run_fleet("hv-a\n", registry=None), "F-INVENTORY-MISSING", "fleet")["status"] == "skip"
    f = run_fleet("hv-a\nhv-b\n", down={"hv-b": "refused"})
    ghost = only(f, "F-INVENTORY-MISSING", "guest:ghost01")
    assert ghost["status"] == "error" and ghost["evidence"]["hosts_not_audited"] == ["hv-b"]


# --- F-HOST-UNREACHED ---------------------------------------------------------------------------

def test_host_unreached_error_with_reason_and_pass():
    f = run_fleet("hv-a\nhv-b ansible_host=10.9.9.9 ansible_port=2206\n", down={"hv-b": "cannot connect: refused"})
    b = only(f, "F-HOST-UNREACHED", "host:hv-b")
    assert b["status"] == "error" and b["severity"] == "high"
    assert b["evidence"]["reason"] == "cannot connect: refused" and b["evidence"]["stage"] == "connect"
    assert (b["evidence"]["address"], b["evidence"]["port"]) == ("10.9.9.9", 2206)
    a = only(f, "F-HOST-UNREACHED", "host:hv-a")
    assert a["status"] == "pass" and a["evidence"]["mode"] == "installed"


# --- F-HOST-IDENTITY --------------------------------------------------------------------------

def test_host_identity_passes_when_the_host_answers_with_its_name(full):
    a = only(full, "F-HOST-IDENTITY", "host:hv-a")
    assert a["status"] == "pass" and a["evidence"]["reported_hostname"] == "hv-a"
    assert {f["status"] for f in pick(full, "F-HOST-IDENTITY")} == {"pass"}


def test_host_identity_fails_naming_the_host_that_answered():
    # the entry hv-b reaches the machine whose name is hv-a (a copy-pasted address, a stale DNS record)
    f = run_fleet(f"hv-a\nhv-b ansible_host=10.0.0.2 vmaudit_root={FLEET / 'roots' / 'hv-a'}\n")
    b = only(f, "F-HOST-IDENTITY", "host:hv-b")
    assert b["status"] == "fail" and b["severity"] == "high"
    assert "answered by a host named hv-a" in b["message"] and "10.0.0.2" in b["message"]
    assert b["evidence"] == {"inventory_name": "hv-b", "address": "10.0.0.2", "reported_hostname": "hv-a"}
    assert only(f, "F-HOST-IDENTITY", "host:hv-a")["status"] == "pass"


def test_host_identity_error_skip_and_qualified_names():
    f = run_fleet("hv-a\nhv-b\n", down={"hv-b": "cannot connect: refused"})
    assert only(f, "F-HOST-IDENTITY", "host:hv-b")["status"] == "error"
    # named by address only: nothing to compare with
    f = run_fleet(f"10.0.0.7 vmaudit_root={FLEET / 'roots' / 'hv-a'}\n")
    assert only(f, "F-HOST-IDENTITY", "host:10.0.0.7")["status"] == "skip"
    # the inventory's FQDN and the host's short name (or the address as ansible_host) are the same host
    f = run_fleet(f"HV-A.lab.example. vmaudit_root={FLEET / 'roots' / 'hv-a'}\n"
                  f"x1 ansible_host=hv-b vmaudit_root={FLEET / 'roots' / 'hv-b'}\n")
    assert only(f, "F-HOST-IDENTITY", "host:HV-A.lab.example.")["status"] == "pass"
    assert only(f, "F-HOST-IDENTITY", "host:x1")["status"] == "pass"


@pytest.mark.parametrize("hostname", ["", "  "])
def test_host_identity_error_when_the_snapshot_has_no_hostname(hostname):
    # (a hostname that is not a string at all is refused with the snapshot: the host is not audited)
    import copy

    host = parse_hosts_text("hv-a\n", "fleet.ini").hosts["hv-a"]
    facts = copy.deepcopy(facts_of("hv-a"))
    facts["host"]["hostname"] = hostname
    policy = Policy()
    view = host_view(Outcome(host, facts=facts, reached=True, mode="installed"), policy, [])
    f = evaluate_fleet(FleetView([view], {"hv-a": []}, None), policy)
    assert only(f, "F-HOST-IDENTITY", "host:hv-a")["status"] == "error"


def test_fleet_waivers_apply(full):
    f = run_fleet(FULL, policy_text='[[waivers]]\ncheck = "F-REDUNDANCY"\nresource = "group:shop-fe"\n'
                                    'reason = "second host on order"\nexpires = 2099-01-01\n')
    shop = only(f, "F-REDUNDANCY", "group:shop-fe")
    assert shop["status"] == "fail" and shop["waiver"]["reason"] == "second host on order"
