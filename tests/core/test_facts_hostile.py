"""The facts contract against a broken or hostile agent (review of issue #10): snapshots that pass the
schemas but would still turn an error or a fail into a skip or a pass, and ways a check could get a
marker out of a guarded container."""

from __future__ import annotations

import copy
import functools
import json

import pytest
from vmtest import audit, findings, host_root, test_uri

from vmaudit.audit import collect_facts
from vmaudit.facts import EvidenceMissing, Facts, NotApplicable, unavailable

MARK = unavailable("replaced by the test")
SKIP = {"not_collected": "the agent says this does not apply"}


@functools.cache
def _base(host: str, node: str) -> str:
    return json.dumps(collect_facts(root=str(host_root(host)), uri=test_uri(node)))


def snapshot(host: str = "debian-broken", node: str = "m3-broken", live: bool = False) -> dict:
    facts = json.loads(_base(host, node))
    if live:  # as `vmaudit facts` writes it on the host itself
        facts["host"].update(live=True, root="/")
    return facts


def statuses(report: dict, check_id: str) -> set[str]:
    return {f["status"] for f in findings(report, check_id)}


# --- not_collected where only unavailable makes sense ---------------------------------------------
# A `skip` does not count against the exit status: a source that can never be "not applicable" on a
# live host must not become a skip because the snapshot says so.

@pytest.mark.parametrize("source,check_id", [
    ("ksm", "M3-KSM"), ("iommu", "M2-IOMMU"), ("libvirt_config", "M3-QEMU-USER"),
    ("accounts", "M6-ADMINS"), ("sudoers", "M6-ADMINS"), ("libvirt", "M1-ZONE-MIX"),
])
def test_a_live_snapshot_cannot_skip_a_source_that_always_applies(source, check_id):
    assert "fail" in statuses(audit(facts=snapshot(live=True)), check_id)
    facts = snapshot(live=True)
    facts["sources"][source] = dict(SKIP)
    after = statuses(audit(facts=facts), check_id)
    assert after == {"error"}, after


def test_an_offline_snapshot_cannot_skip_a_source_that_is_not_live_only():
    facts = snapshot()
    facts["sources"]["accounts"] = dict(SKIP)
    assert statuses(audit(facts=facts), "M6-ADMINS") == {"error"}


def test_not_collected_inside_a_source_is_missing_evidence():
    """No collector writes not_collected below the top of its source: one found there is an error."""
    facts = snapshot(live=True)
    facts["sources"]["libvirt_config"]["qemu.conf"]["values"] = dict(SKIP)
    assert statuses(audit(facts=facts), "M3-QEMU-USER") == {"error"}
    with pytest.raises(EvidenceMissing, match="not_collected"):
        Facts(facts).source("libvirt_config")["qemu.conf"]["values"]


def test_the_skips_a_collector_declares_stay_skips():
    # live sources under --root, sysfs sources of an image without /sys, services without systemd,
    # pending updates without --online
    offline = snapshot()
    offline["sources"]["ksm"] = {"not_collected": "no /sys under root /mnt"}
    held = Facts(offline)
    for name in ("ksm", "processes", "listeners", "services", "pending_updates", "libvirt_sockets"):
        assert isinstance(held.lookup(name)[1], NotApplicable), name
    live = snapshot(live=True)
    live["sources"]["services"] = {"not_collected": "PID 1 is not systemd"}
    live["sources"]["pending_updates"] = {"not_collected": "asking the package manager needs --online"}
    held = Facts(live)
    for name in ("services", "pending_updates"):
        assert isinstance(held.lookup(name)[1], NotApplicable), name
    for name in ("processes", "listeners", "libvirt_sockets"):  # live sources of a live snapshot
        assert isinstance(held.lookup(name)[1], EvidenceMissing), name


def test_libvirt_sources_skip_only_where_the_host_says_libvirt_is_absent():
    """A host without libvirt records every libvirt source not_collected (issue #9); a host whose
    snapshot says libvirt is there cannot skip them."""
    facts = snapshot(live=True)
    facts["sources"]["libvirt_config"] = dict(SKIP)
    assert facts["host"]["libvirt"] == "reachable"
    assert isinstance(Facts(facts).lookup("libvirt_config")[1], EvidenceMissing)
    facts["host"]["libvirt"] = "absent"
    assert isinstance(Facts(facts).lookup("libvirt_config")[1], NotApplicable)
    assert isinstance(Facts(facts).lookup("accounts")[1], type(None))  # the rest is held as before


def test_what_only_a_running_libvirt_knows_skips_only_in_an_image_snapshot():
    """An image audited from its files cannot know a guest's state or snapshots (not_collected at
    those positions); any other snapshot saying so there is missing evidence."""
    facts = snapshot(live=True)
    facts["sources"]["libvirt"]["domains"][0]["snapshots"] = dict(SKIP)
    facts["sources"]["libvirt"]["capabilities"] = dict(SKIP)
    held = Facts(facts)
    with pytest.raises(EvidenceMissing, match="not_collected"):
        held.source("libvirt")["domains"][0]["snapshots"]
    with pytest.raises(EvidenceMissing, match="not_collected"):
        held.source("libvirt")["capabilities"]
    facts["host"].update(live=False, root="/mnt/image", libvirt="offline")
    held = Facts(facts)
    with pytest.raises(NotApplicable):
        held.source("libvirt")["domains"][0]["snapshots"]
    with pytest.raises(NotApplicable):
        held.source("libvirt")["capabilities"]
    facts["host"]["root"] = "/"  # an "image" at / is the live host: its libvirt answers
    with pytest.raises(EvidenceMissing, match="not_collected"):
        Facts(facts).source("libvirt")["capabilities"]


# --- guarded containers: no way to read a marker as a value --------------------------------------

def _guarded():
    facts = snapshot()
    facts["sources"]["modules"] = ["kvm", dict(MARK), "vfio"]
    facts["sources"]["meminfo"]["MemTotal"] = dict(MARK)
    held = Facts(facts)
    return held.source("modules"), held.source("meminfo")


@pytest.mark.parametrize("read", [
    lambda gl: "kvm_intel" in gl,        # the marker may be kvm_intel: no answer is an answer
    lambda gl: "kvm_intel" not in gl,
    lambda gl: gl.index("kvm_intel"),
    lambda gl: gl.count("kvm_intel"),
    lambda gl: gl.copy(),
    lambda gl: list(reversed(gl)),
    lambda gl: gl + [],
    lambda gl: [] + gl,
    lambda gl: gl * 1,
    lambda gl: 1 * gl,
    lambda gl: copy.copy(gl),
    lambda gl: gl.pop(1),
], ids=["in", "not in", "index", "count", "copy", "reversed", "add", "radd", "mul", "rmul", "copy.copy", "pop"])
def test_a_guarded_list_never_hands_out_its_marker(read):
    modules, _ = _guarded()
    try:
        got = read(modules)
    except EvidenceMissing:
        return
    # a copy is acceptable only as one that still guards its marker
    assert isinstance(got, type(modules)) and pytest.raises(EvidenceMissing, list, got), got


def test_a_guarded_list_answers_what_it_knows():
    modules, _ = _guarded()
    assert "kvm" in modules and "vfio" in modules


@pytest.mark.parametrize("read", [
    lambda m: m.pop("MemTotal"),
    lambda m: m.setdefault("MemTotal", 0),
    lambda m: [m.popitem() for _ in range(len(m))],
    lambda m: copy.copy(m),
    lambda m: m | {},
], ids=["pop", "setdefault", "popitem", "copy.copy", "or"])
def test_a_guarded_table_never_hands_out_its_marker(read):
    _, meminfo = _guarded()
    try:
        got = read(meminfo)
    except EvidenceMissing:
        return
    assert isinstance(got, type(meminfo)) and pytest.raises(EvidenceMissing, dict, got), got


def test_a_guarded_list_index_is_known_only_before_its_first_marker():
    modules, _ = _guarded()  # ["kvm", marker, "vfio"]
    assert modules.index("kvm") == 0 and modules.index("vfio", 2) == 2
    with pytest.raises(EvidenceMissing):
        modules.index("vfio")  # the marker at 1 may be vfio too


# --- fleet: a host asked for its live state cannot answer with an image's -------------------------

def test_a_fleet_host_asked_for_live_facts_cannot_answer_offline_ones():
    """`vmaudit collect` runs `vmaudit facts --root /` on the host: a snapshot that says it is not live
    (so every live source and sysfs source is a legitimate skip) is not the answer to that question."""
    from vmaudit.fleet.collect import _parse
    from vmaudit.fleet.ssh import Completed, Unreached

    offline = snapshot()  # root: the fixture directory, live: false
    offline["sources"]["ksm"] = {"not_collected": "no /sys under root /"}
    text = json.dumps(offline).encode()
    with pytest.raises(Unreached) as err:
        _parse(Completed(0, text, b""), "vmaudit facts", root="/")
    assert err.value.stage == "facts" and "live" in str(err.value) and "\n" not in str(err.value)
    lying = snapshot()
    lying["host"].update(root="/", live=False)
    with pytest.raises(Unreached):
        _parse(Completed(0, json.dumps(lying).encode(), b""), "vmaudit facts", root="/")
    # an image audited on purpose (vmaudit_root) is offline by design
    assert _parse(Completed(0, text, b""), "vmaudit facts", root="/srv/image")["host"]["live"] is False
    assert _parse(Completed(0, json.dumps(snapshot(live=True)).encode(), b""), "vmaudit facts",
                  root="/")["host"]["live"] is True


# --- values that pass a loose schema but describe no real host -----------------------------------

@pytest.mark.parametrize("host,node,check_id,path,value", [
    # every /etc/passwd has root and every /etc/group the root group: an empty one was not read
    ("debian-broken", "m3-broken", "M6-POLKIT", ("accounts", "group"), []),
    ("debian-broken", "m3-broken", "M6-ADMINS", ("accounts", "passwd"), []),
    # the running kernel has a release
    ("rhel-broken", "m2-broken", "M3-STALE-BINARIES", ("kernel", "running"), ""),
    # a passed-through device's IOMMU group that the groups table does not hold has unknown members
    ("rhel-broken", "m2-broken", "M2-PASSTHROUGH-GROUP", ("iommu", "groups"), {}),
])
def test_an_impossible_value_is_no_evidence(host, node, check_id, path, value):
    before = {f["resource"]: f["status"] for f in findings(audit(facts=snapshot(host, node)), check_id)}
    facts = snapshot(host, node)
    parent = facts["sources"]
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    after = {f["resource"]: f["status"] for f in findings(audit(facts=facts), check_id)}
    turned = {r: (before.get(r), s) for r, s in after.items() if s == "pass" and before.get(r) != "pass"}
    assert not turned and "error" in after.values(), (before, after)


@pytest.mark.parametrize("host,node,check_id,source", [
    ("debian-broken", "m3-broken", "M3-KSM", "ksm"),              # run = 1 read from a KSM "not present"
    ("debian-broken", "m3-broken", "M6-SSH-ROOT", "sshd_config"),  # entries read from a file "not present"
])
def test_present_false_with_values_contradicts_itself(host, node, check_id, source):
    """Checks stop at present = false (pass: no KSM; skip: no sshd): a record that says so but carries
    what only an existing thing has is no evidence either way."""
    assert statuses(audit(facts=snapshot(host, node)), check_id) == {"fail"}
    facts = snapshot(host, node)
    facts["sources"][source]["present"] = False
    assert statuses(audit(facts=facts), check_id) == {"error"}
    reason = str(Facts(facts).lookup(source)[1])
    assert f"{source}: says present: false" in reason, reason


def test_evidence_with_a_guarded_table_inside_a_tuple_still_serialises():
    """Findings' evidence is unguarded before any report writes it: tuples (JSON arrays) included."""
    from vmaudit.facts import unguarded

    _, meminfo = _guarded()
    for evidence in ({"pair": ("MemTotal", meminfo)}, {"rows": [(1, meminfo)]}, (meminfo,)):
        text = json.dumps(unguarded(evidence))
        assert "replaced by the test" in text, text


def test_a_marker_reason_cannot_amplify_the_report():
    """A reason is one line for a person: one of a megabyte, repeated in the finding of every guest
    and check that needs the value, would make a report of terabytes from a snapshot of megabytes."""
    from vmaudit.schema import MAX_REASON

    facts = snapshot()
    facts["sources"]["libvirt"]["capabilities"] = {"unavailable": "x" * 1_000_000}
    facts["sources"]["accounts"] = {"unavailable": "y" * 1_000_000}
    facts["sources"]["meminfo"] = {"k" * 100_000: "not an int"}  # a path as long as a key
    report = audit(facts=facts)
    longest = max(len(f["message"]) for f in report["findings"])
    assert longest < 2 * MAX_REASON + 500, longest
    assert len(json.dumps(report)) < 2_000_000
    admins = next(f["message"] for f in findings(report, "M6-ADMINS"))
    assert "y" * 100 in admins  # the reason's start is kept


# --- numbers inside a guest's XML ------------------------------------------------------------------
# The XML is a string to the schemas: a hand-edited definition file or a hostile agent can put anything
# where libvirt writes a number. That is missing evidence for what reads it, never a crash of the audit.

@pytest.mark.parametrize("old,new,check_id", [
    (r"<memory[^>]*>[^<]*</memory>", "<memory unit='KiB'>lots</memory>", "M2-BALLOON"),
    (r"<memory[^>]*>[^<]*</memory>", "<memory unit='furlongs'>1024</memory>", "M2-BALLOON"),
    (r"<memory[^>]*>[^<]*</memory>", "", "M2-BALLOON"),
    (r"<vcpu[^>]*>[^<]*</vcpu>", "<vcpu placement='static'>two</vcpu>", "M4-CPU-OVERCOMMIT"),
    (r"<vcpu[^>]*>[^<]*</vcpu>", "<vcpu placement='static' current='-1'>2</vcpu>", "M4-CPU-OVERCOMMIT"),
    (r"<vcpu[^>]*>[^<]*</vcpu>", "<vcpu placement='static'>4294967296</vcpu>", "M4-CPU-OVERCOMMIT"),  # > UINT_MAX
])
def test_a_number_libvirt_would_refuse_is_missing_evidence_not_a_crash(old, new, check_id):
    import re

    facts = snapshot()
    domains = facts["sources"]["libvirt"]["domains"]
    victim = next(d for d in domains if d.get("state") == "running")  # M4 counts running guests
    assert re.search(old, victim["xml"]), "fixture guest lacks the element"
    for key in ("xml", "xml_inactive"):  # every definition the guest has
        if key in victim:
            victim[key] = re.sub(old, new, victim[key], count=1)
    report = audit(facts=facts)  # the audit finishes
    for check_id_any in {f["check_id"] for f in report["findings"]}:
        findings(report, check_id_any)  # no check crashed on it
    resource = "host" if check_id.startswith("M4") else f"guest:{victim['name']}"
    got = [f for f in findings(report, check_id, resource)]
    assert got and all(f["status"] == "error" for f in got), [(f["status"], f["message"]) for f in got]
    assert victim["name"] in json.dumps(got[0])  # the message or the evidence names the guest
    # and the other guests are still judged
    others = [f for f in findings(report, "M2-BALLOON") if f["resource"] != f"guest:{victim['name']}"]
    assert len(domains) > 1 and any(f["status"] != "error" for f in others)


def test_a_pci_address_that_is_not_a_number_is_missing_evidence():
    from xml.etree import ElementTree as ET

    from vmaudit.facts import pci_bdf

    assert pci_bdf(ET.fromstring("<address domain='0x0000' bus='0x01' slot='0x00' function='0x1'/>")) == "0000:01:00.1"
    assert pci_bdf(ET.fromstring("<address domain='0' bus='010' slot='2' function='0'/>")) == "0000:08:02.0"  # octal, as strtoul
    assert pci_bdf(ET.fromstring("<address domain='0xffff' bus='0xff' slot='0x1f' function='7'/>")) == "ffff:ff:1f.7"
    # what C's strtoul (base 0) or libvirt's ranges refuse, though Python's int(x, 0) may take it
    for bad in ("bus='one'", "bus='-1'", "slot='0x'", "function='9z'", "slot='0x20'", "bus='0x100'",
                "function='8'", "bus='0x1_0'", "bus='0b11'", "bus='0o17'", "bus='\u0661\u0662'", "bus=' 1'",
                "domain='0x10000'"):
        with pytest.raises(EvidenceMissing, match="PCI address"):
            pci_bdf(ET.fromstring(f"<address {bad}/>"))


def test_memory_units_are_libvirts_rounded_up_to_kib():
    from xml.etree import ElementTree as ET

    from vmaudit.facts import _kib

    def kib(text: str) -> int:
        return _kib(ET.fromstring(text), "memory")

    assert kib("<memory>2048</memory>") == 2048
    assert kib("<memory unit='MiB'>2</memory>") == 2048
    assert kib("<memory unit='G'>1</memory>") == 1024 ** 2
    assert kib("<memory unit='GB'>1</memory>") == 976563  # 10^9 bytes, rounded up
    assert kib("<memory unit='bytes'>1</memory>") == 1
    assert kib("<memory unit='PiB'>1</memory>") == 1024 ** 4
    assert kib("<memory unit='byte'>2048</memory>") == 2
    assert kib("<memory unit='EiB'>7</memory>") == 7 * 1024 ** 5
    for bad in ("<memory>-1</memory>", "<memory>1e6</memory>", "<memory unit='KiB'/>", "<memory>１２</memory>",
                "<memory unit='EiB'>8</memory>", "<memory unit='b'>9999999999999999999</memory>"):  # > LLONG_MAX bytes
        with pytest.raises(EvidenceMissing):
            kib(bad)


def test_a_device_in_a_second_devices_element_is_judged():
    """libvirt writes one <devices>; its parser (and ElementPath) read every one. A device in a second
    one must count, not pass unseen: a VNC display listening on every address there still fails."""
    facts = snapshot()
    records = sorted((d for d in facts["sources"]["libvirt"]["domains"] if d.get("state") == "running"),
                     key=lambda d: d["name"])  # libvirt lists guests in no fixed order
    record = records[0]
    vnc = "<devices><graphics type='vnc' port='5999' autoport='no' listen='192.0.2.7'/></devices>"
    before = findings(audit(facts=copy.deepcopy(facts)), "M3-GRAPHICS-EXPOSED", f"guest:{record['name']}")
    assert before and "192.0.2.7" not in before[0]["message"]
    for key in ("xml", "xml_inactive"):
        if key in record:
            record[key] = record[key].replace("</domain>", vnc + "</domain>")
    f = findings(audit(facts=facts), "M3-GRAPHICS-EXPOSED", f"guest:{record['name']}")
    assert f and f[0]["status"] in ("warn", "fail") and "192.0.2.7" in f[0]["message"], f
