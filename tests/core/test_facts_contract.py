"""The facts contract (vmaudit.schema, declared by each collector): one value of a real snapshot
replaced by a marker or by a value of the wrong type never makes a check pass, a snapshot that is not
one is exit 2 with one line naming the file, and checks read facts one way (guarded containers)."""

from __future__ import annotations

import copy
import functools
import json

import pytest
from vmtest import audit, findings, host_root, one, test_uri

from vmaudit.audit import collect_facts
from vmaudit.cli import main as cli_main
from vmaudit.facts import (
    EvidenceMissing,
    Facts,
    GuardedMap,
    NotApplicable,
    iter_markers,
    lookup,
    partial,
    unavailable,
    unguarded,
)

MARK = unavailable("replaced by the test")


@functools.cache
def _base(host: str, node: str) -> str:
    return json.dumps(collect_facts(root=str(host_root(host)), uri=test_uri(node)))


def snapshot(host: str = "debian-hardened", node: str = "m3-hardened") -> dict:
    return json.loads(_base(host, node))


def put(facts: dict, path: tuple, value) -> dict:
    """`facts["sources"][path[0]][path[1]]... = value`."""
    node = facts["sources"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return facts


def statuses(report: dict, check_id: str) -> list[str]:
    return [f["status"] for f in findings(report, check_id)]


# Each bullet of issue #10: (check, path in the snapshot's sources, replacement). On the fixture the
# check passes (for the host or some guest); with the replacement it must say error, never pass.
BULLETS = [
    ("M3-GUEST-SECLABEL", ("libvirt", "capabilities"), MARK),
    ("M2-IOMMU", ("iommu", "class_entries"), MARK),
    ("M3-QEMU-USER", ("libvirt_config", "qemu.conf", "values"), MARK),
    ("M3-SECCOMP", ("libvirt_config", "qemu.conf", "values"), MARK),
    ("M3-QEMU-USER", ("libvirt_config", "qemu.conf", "values"), ["user", "root"]),
    ("M6-SOCKET-PERMS", ("libvirt_config", "libvirtd.conf", "values"), MARK),
    ("M7-REMOTE-TCP", ("libvirt_config", "libvirtd.conf", "values"), MARK),
    ("M7-REMOTE-TCP", ("daemon_env", "/etc/default/libvirtd"), None),
    ("M7-REMOTE-TCP", ("daemon_env", "/etc/default/libvirtd", "values"), MARK),
    ("M3-KSM", ("ksm", "run"), None),
    ("M3-KSM", ("ksm", "run"), {}),
    ("M3-KSM", ("ksm", "run"), -1),
    ("M3-NESTED", ("kvm_nested", "kvm_intel"), 0),
    ("M3-NESTED", ("kvm_nested", "kvm_intel"), ["N"]),
    ("M6-SOCKET-PERMS", ("libvirt_config", "libvirtd.conf", "values", "auth_unix_rw"), 1e308),
    ("M6-SOCKET-PERMS", ("libvirt_config", "libvirtd.conf", "values", "auth_unix_rw"), MARK),
    ("M7-MIGRATION-NETWORK", ("libvirt_config", "qemu.conf", "values", "migration_address"), MARK),
    ("M7-REMOTE-TCP", ("libvirt_config", "virtproxyd.conf", "present"), MARK, "rhel-hardened"),
]
BULLETS = [b if len(b) == 4 else (*b, "debian-hardened") for b in BULLETS]


def _prepare(check_id: str, facts: dict) -> dict:
    """Make the fixture exercise the value the bullet is about."""
    values = lambda name: facts["sources"]["libvirt_config"][name]["values"]  # noqa: E731
    if check_id == "M3-GUEST-SECLABEL":  # libvirt offers AppArmor: the hardened guests pass
        caps = "<capabilities><host><secmodel><model>apparmor</model></secmodel></host></capabilities>"
        facts["sources"]["libvirt"]["capabilities"] = caps
    if check_id == "M3-KSM":
        facts["sources"]["ksm"].update(present=True, run=0)
    if check_id == "M3-NESTED":
        facts["sources"]["kvm_nested"]["kvm_intel"] = "N"
    if check_id == "M6-SOCKET-PERMS":
        values("libvirtd.conf").update(auth_unix_rw="polkit", unix_sock_rw_perms="0770")
    if check_id == "M7-MIGRATION-NETWORK":
        values("qemu.conf")["migration_address"] = "10.9.9.9"
    return facts


@pytest.mark.parametrize("check_id,path,value,host", BULLETS,
                         ids=[f"{c}:{'.'.join(p)}={json.dumps(v)}@{h}" for c, p, v, h in BULLETS])
def test_a_missing_or_mistyped_value_is_an_error_never_a_pass(check_id, path, value, host):
    before = statuses(audit(facts=_prepare(check_id, snapshot(host))), check_id)
    assert "pass" in before, f"the fixture must pass {check_id} for the test to mean anything: {before}"
    after = statuses(audit(facts=put(_prepare(check_id, snapshot(host)), path, copy.deepcopy(value))), check_id)
    assert "pass" not in after and "error" in after, after


def test_a_pkla_identity_marker_is_an_error():
    facts = snapshot("debian-broken", "m3-broken")
    files = facts["sources"]["polkit_rules"]["pkla"]["files"]
    section = next(s for f in files for s in f.get("sections", []) if s.get("identity"))
    before = {f["resource"]: f["status"] for f in audit(facts=facts)["findings"] if f["check_id"] == "M6-POLKIT"}
    section["identity"] = MARK
    after = {f["resource"]: f["status"] for f in audit(facts=facts)["findings"] if f["check_id"] == "M6-POLKIT"}
    assert before and "error" in after.values(), (before, after)
    assert all(after.get(r) != "pass" for r, s in before.items() if s != "pass"), (before, after)


def test_the_reason_names_the_path():
    facts = put(snapshot(), ("libvirt_config", "qemu.conf", "values"), ["user", "root"])
    f = one(audit(facts=facts), "M3-QEMU-USER")
    assert f["status"] == "error"
    assert "libvirt_config.qemu.conf.values: expected a table, got a list" in f["message"]
    report = audit(facts=facts)
    assert {"collector": "libvirt_config.qemu.conf.values",
            "reason": "libvirt_config.qemu.conf.values: expected a table, got a list"} in report["collector_errors"]


def test_validation_does_not_modify_the_input_and_shares_what_conforms():
    facts = put(snapshot(), ("ksm", "run"), -1)
    text = json.dumps(facts, sort_keys=True)
    held = Facts(facts)
    assert json.dumps(facts, sort_keys=True) == text
    assert held.data["sources"]["cpu"] is facts["sources"]["cpu"]  # untouched sources are shared
    assert isinstance(held.data["sources"]["ksm"], GuardedMap)


def test_guarded_containers_raise_and_partial_tells_what_is_missing():
    facts = snapshot()
    facts["sources"]["vfio"]["vfio"] = MARK
    facts["sources"]["kvm_nested"] = unavailable("no sysfs")
    held = Facts(facts)
    vfio = held.source("vfio")
    with pytest.raises(EvidenceMissing, match="vfio.vfio: replaced by the test"):
        vfio["vfio"]
    with pytest.raises(EvidenceMissing):
        vfio.get("vfio")
    with pytest.raises(EvidenceMissing):
        list(vfio.items())
    assert vfio.get("nope", 1) == 1
    gaps = {k: str(gap) for k, _v, gap in vfio.partial() if gap}
    assert gaps == {"vfio": "vfio.vfio: replaced by the test"}
    value, gap = lookup(vfio, "vfio")
    assert value is None and gap.reason == "replaced by the test"
    assert [gap for *_x, gap in partial([1, 2])] == [None, None]
    with pytest.raises(EvidenceMissing, match="no sysfs"):
        held.source("kvm_nested")
    assert isinstance(held.lookup("kvm_nested")[1], EvidenceMissing)
    # JSON and deep copies of guarded containers show the markers as they are
    assert json.loads(json.dumps(unguarded(held.data["sources"]["vfio"])))["vfio"] == MARK
    assert copy.deepcopy(vfio).plain()["vfio"] == MARK


def test_not_collected_marker_raises_not_applicable():
    facts = snapshot()  # not live: a sysfs source may be not_collected as a whole (a root without /sys)
    facts["sources"]["ksm"] = {"not_collected": "not here"}
    with pytest.raises(NotApplicable):
        Facts(facts).source("ksm")


@pytest.mark.parametrize("text,why", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"schema": "vmaudit-facts/1", "host": {}, "sources": {"ksm": ' + "9" * 5000 + "}}", "not a JSON"),
    ("{nope", "not a JSON facts snapshot"),
    ('{"schema": "other/1", "host": {}, "sources": {}}', "not a vmaudit facts snapshot"),
    ('{"schema": "vmaudit-facts/1", "host": {"live": "yes"}, "sources": {}}', "host.live: expected a boolean"),
    ('[1, 2]', "not a vmaudit facts snapshot"),
])
def test_a_snapshot_that_is_not_one_is_exit_2_naming_the_file(tmp_path, capsys, text, why):
    path = tmp_path / "facts.json"
    path.write_text(text)
    assert cli_main(["run", "--facts", str(path), "--format", "json"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and why in err, err
    assert "internal error" not in err


def test_values_over_the_limits_become_markers():
    facts = snapshot()
    facts["sources"]["ksm"]["pages_shared"] = 10 ** 4000
    deep: list = []
    for _ in range(200):
        deep = [deep]
    facts["sources"]["a_future_source"] = deep  # no schema: any JSON within the limits
    facts["sources"]["cmdline"] = 1e308 * 10  # inf
    held = Facts(facts)
    assert "integer out of range" in lookup(held.source("ksm"), "pages_shared")[1].reason
    assert "nested deeper than 64 levels" in str(held.lookup("a_future_source")[1])
    assert "non-finite" in str(held.lookup("cmdline")[1])


def test_every_collector_output_on_the_fixture_hosts_conforms():
    """What the collectors produce already satisfies their declared schemas: validation of a real
    snapshot changes nothing (so a marker it adds always means a broken or hostile input)."""
    from vmaudit.collectors import skippable_sources, source_schemas
    from vmaudit.schema import conform_sources

    schemas = source_schemas()
    for host in ("debian-hardened", "debian-broken", "rhel-hardened", "rhel-broken", "empty"):
        for node in ("core", "guests-mixed", "m2-broken", "m3-broken", "m3-hardened", "hardened"):
            facts = snapshot(host, node)
            sources = facts["sources"]
            assert set(sources) == set(schemas)
            before = sorted(iter_markers(sources))
            skippable = skippable_sources(facts["host"]["live"])  # the skips each collector declares
            assert sorted(iter_markers(conform_sources(sources, schemas, skippable))) == before, (host, node)


def test_a_crashing_check_is_not_an_expected_error():
    """tests/vmtest.one() and findings() reject findings of a check that raised (engine's "internal
    error in check"), so a test expecting `error` cannot pass on a KeyError."""
    report = {"findings": [{"check_id": "M3-KSM", "resource": "host", "status": "error",
                            "message": "internal error in check: KeyError: 'run'",
                            "evidence": {"exception": "KeyError: 'run'"}}]}
    with pytest.raises(AssertionError, match="crashed"):
        one(report, "M3-KSM")
    with pytest.raises(AssertionError, match="crashed"):
        findings(report, "M3-KSM")


def test_fleet_facts_from_a_host_are_held_to_the_same_contract():
    """A remote host's output enters through the same parser: not a snapshot -> that host is unreached
    at stage `facts` with one line; a mistyped value -> a marker when the fleet evaluates it."""
    from vmaudit.fleet.collect import _parse
    from vmaudit.fleet.ssh import Completed, Unreached

    def done(stdout: bytes):
        return Completed(0, stdout, b"")

    for text, why in (("[" * 100_000, "nested too deeply"), ("{", "not a JSON facts snapshot"),
                      ('{"schema": "vmaudit-facts/9"}', "not a vmaudit facts snapshot")):
        with pytest.raises(Unreached) as err:
            _parse(done(text.encode()), "vmaudit facts", "/")
        assert err.value.stage == "facts" and why in str(err.value) and "\n" not in str(err.value)
    facts = put(snapshot(), ("ksm", "run"), {})
    data = _parse(done(json.dumps(facts).encode()), "vmaudit facts", facts["host"]["root"])
    assert one(audit(facts=data), "M3-KSM")["status"] == "error"


def test_one_loopback_answer_for_one_address():
    from vmaudit.checks._net import loopback

    for address in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "::ffff:127.0.0.1", "::1%lo",
                    "localhost", "localhost6"):
        assert loopback(address), address
    for address in ("0.0.0.0", "::", "10.0.0.1", "::ffff:10.0.0.1", "example.org", "[2001:db8::1]", ""):
        assert not loopback(address), address


def test_migration_parity_reads_the_admins_through_the_declared_interface():
    """F-MIGRATION-PARITY compares peers' administrators from M6-ADMINS' findings: both sides use
    ADMINS_EVIDENCE / admins_of, and a real M6-ADMINS finding carries that key."""
    import vmaudit.checks.fleet as fleet_checks
    from vmaudit.checks.m6_admins import ADMINS_EVIDENCE, admins_of

    report = audit("debian-broken", test_uri("m3-broken"))
    finding = one(report, "M6-ADMINS")
    assert finding["evidence"][ADMINS_EVIDENCE]  # {account: [why]}
    assert admins_of(report) == sorted(finding["evidence"][ADMINS_EVIDENCE])
    assert fleet_checks.admins_of is admins_of


def test_exit_2_errors_share_one_hierarchy_without_import_cycles():
    import subprocess
    import sys

    from vmaudit import errors
    from vmaudit.fleet.hosts import InventoryError as FleetInventoryError
    from vmaudit.policy import PolicyError

    assert PolicyError is errors.PolicyError and FleetInventoryError is errors.InventoryError
    for name in ("UsageError", "PolicyError", "InventoryError", "SnapshotError", "SSHConfigError", "RootError"):
        assert issubclass(getattr(errors, name), errors.InputError)
    code = ("import sys, vmaudit.inventory, vmaudit.commands.explain; "
            "assert 'vmaudit.policy' not in sys.modules and 'vmaudit.cli' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_copies_of_a_guarded_table_do_not_let_a_marker_out():
    facts = snapshot()
    facts["sources"]["ksm"]["run"] = MARK
    ksm = Facts(facts).source("ksm")
    for copy_of in (dict, lambda m: {**m}, lambda m: {}.update(m)):
        with pytest.raises(EvidenceMissing):
            copy_of(ksm)
    assert isinstance(ksm.copy(), GuardedMap)
    again = Facts(Facts(facts).data)  # validating validated facts is a no-op, not a crash
    assert lookup(again.source("ksm"), "run")[1].reason == "replaced by the test"
