"""Every guest check that judges both definitions of a running persistent guest (CHECKS.md, "Which
definition a guest check judges"): a problem only in the live definition fails "now", one only in the
persistent definition fails "after the next start", one in both says both — one finding per guest."""

from __future__ import annotations

import pytest
from vmtest import audit, host_root, make_policy, one, test_uri

from vmaudit.audit import collect_facts
from vmaudit.engine import load_checks

UUID = "8a1c2f3e-4b5d-4e6f-8a9b-0c1d2e3f4a5b"
GOOD = """<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>vmaudit-i9-g</name>
  <uuid>{uuid}</uuid>
  <metadata>
    <libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
      <libosinfo:os id="http://debian.org/debian/12"/>
    </libosinfo:libosinfo>
  </metadata>
  <memory unit='KiB'>1048576</memory>
  <currentMemory unit='KiB'>1048576</currentMemory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'><source file='/var/lib/libvirt/images/g.qcow2'/>
      <target dev='vda' bus='virtio'/></disk>
    <interface type='network'><mac address='52:54:00:00:00:01'/><source network='default'/>
      <model type='virtio'/></interface>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'/>
    <memballoon model='none'/>
    {extra}
  </devices>
  {tail}
</domain>"""

# check -> (what breaks it, as (devices extra, tail, type) edits of GOOD), the status it then gets
BREAKS = {
    "M2-TCG-GUEST": ({"type": "qemu"}, "fail"),
    "M2-PASSTHROUGH-GROUP": ({"extra": "<hostdev mode='subsystem' type='pci' managed='yes'><source>"
                              "<address domain='0x0000' bus='0x7f' slot='0x1f' function='0x7'/></source>"
                              "</hostdev>"}, "warn"),
    "M2-BALLOON": ({"current": 524288}, "fail"),
    "M2-LEGACY-DEVICES": ({"extra": "<sound model='ich6'/>"}, "warn"),
    "M2-RAW-QEMU-ARGS": ({"tail": "<qemu:commandline><qemu:env name='X' value='1'/></qemu:commandline>"},
                         "fail"),
    "M3-SHARED-MEMORY": ({"extra": "<shmem name='vmaudit-i9-shm'><model type='ivshmem-plain'/>"
                          "<size unit='M'>4</size></shmem>"}, "warn"),
    "M3-GRAPHICS-EXPOSED": ({"extra": "<graphics type='vnc' port='-1' autoport='yes' listen='0.0.0.0'/>"},
                            "fail"),
    "M3-IMAGE-PERMS": ({"extra": "<disk type='file' device='disk'><source file='/srv/open.qcow2'/>"
                                 "<target dev='vdb' bus='virtio'/></disk>"}, "fail"),
    "M3-CHARDEV-EXPOSED": ({"extra": "<serial type='tcp'><source mode='bind' host='0.0.0.0' service='4555'/>"
                                     "<target port='0'/></serial>"}, "fail"),
    "M3-HOST-SHARE": ({"extra": "<filesystem type='mount' accessmode='mapped'><source dir='/etc'/>"
                                "<target dir='hostetc'/><readonly/></filesystem>"}, "fail"),
    "M5-GUEST-AGENT": ({"no_agent": True}, "warn"),
    "M5-GUEST-OS": ({"os": "http://example.org/eol-os/1"}, "fail"),
}
POLICY = '[guests]\neol_os = ["http://example.org/eol-os/*"]\n'


def xml(**edit) -> str:
    text = GOOD.format(uuid=UUID, extra=edit.get("extra", ""), tail=edit.get("tail", ""))
    if "type" in edit:
        text = text.replace("<domain type='kvm'", f"<domain type='{edit['type']}'")
    if "current" in edit:
        text = text.replace("<currentMemory unit='KiB'>1048576", f"<currentMemory unit='KiB'>{edit['current']}")
    if edit.get("no_agent"):
        text = text.replace("<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>", "")
    if "os" in edit:
        text = text.replace("http://debian.org/debian/12", edit["os"])
    return text


# what guest_paths would record for the files these definitions name (their modes cannot live in git):
# the good guest's 0600 image in libvirt's 0711 directory, a world-writable image, the host's /etc
DIR = {"type": "dir", "mode": "0755", "uid": 0, "gid": 0}
GUEST_PATHS = {"/var/lib/libvirt/images/g.qcow2": {"type": "file", "mode": "0600", "uid": 0, "gid": 0},
               "/var/lib/libvirt/images": dict(DIR, mode="0711"), "/var/lib/libvirt": DIR, "/var/lib": DIR,
               "/var": DIR, "/": DIR, "/srv": DIR, "/etc": DIR,
               "/srv/open.qcow2": {"type": "file", "mode": "0666", "uid": 0, "gid": 0}}


@pytest.fixture(scope="module")
def base_facts():
    facts = collect_facts(root=str(host_root("debian-hardened")), uri=test_uri("hardened"))
    facts["sources"]["guest_paths"]["paths"].update(GUEST_PATHS)
    return facts


def guest_report(base_facts, live: str | None, persistent: str | None, state: str = "running") -> dict:
    import copy

    facts = copy.deepcopy(base_facts)
    record = {"name": "vmaudit-i9-g", "uuid": UUID, "id": 7 if live else -1, "state": state,
              "persistent": persistent is not None, "autostart": False, "managed_save": False,
              "snapshots": [], "xml": live if live is not None else persistent}
    if live is not None and persistent is not None:
        record["xml_inactive"] = persistent
    facts["sources"]["libvirt"]["domains"] = [record]
    return audit(facts=facts, policy=make_policy(POLICY))


def test_every_guest_check_judging_both_definitions_is_covered():
    both = {c.id for c in load_checks().values() if c.scope == "guest" and c.definitions == "both"}
    assert both <= set(BREAKS), f"add a per-definition test for {sorted(both - set(BREAKS))}"


@pytest.mark.parametrize("check_id", sorted(BREAKS))
def test_the_good_guest_passes_in_both(base_facts, check_id):
    f = one(guest_report(base_facts, xml(), xml()), check_id, "guest:vmaudit-i9-g")
    assert f["status"] in ("pass", "skip"), f
    assert f["message"].endswith("(now and after the next start)"), f["message"]


@pytest.mark.parametrize("check_id", sorted(BREAKS))
def test_a_problem_in_the_live_definition_only_is_reported_for_now(base_facts, check_id):
    edit, status = BREAKS[check_id]
    f = one(guest_report(base_facts, xml(**edit), xml()), check_id, "guest:vmaudit-i9-g")
    assert f["status"] == status, f
    assert f["message"].startswith("now: "), f["message"]
    assert f["evidence"]["now"]["status"] == status
    assert f["evidence"]["after_next_start"]["status"] in ("pass", "skip")


@pytest.mark.parametrize("check_id", sorted(BREAKS))
def test_a_problem_in_the_persistent_definition_only_is_reported_for_after_the_next_start(base_facts, check_id):
    edit, status = BREAKS[check_id]
    f = one(guest_report(base_facts, xml(), xml(**edit)), check_id, "guest:vmaudit-i9-g")
    assert f["status"] == status, f
    assert f["message"].startswith("after the next start: "), f["message"]
    assert f["evidence"]["after_next_start"]["status"] == status


@pytest.mark.parametrize("check_id", sorted(BREAKS))
def test_a_problem_in_both_is_one_finding_saying_both(base_facts, check_id):
    edit, status = BREAKS[check_id]
    f = one(guest_report(base_facts, xml(**edit), xml(**edit)), check_id, "guest:vmaudit-i9-g")
    assert f["status"] == status, f
    assert (f["message"].endswith("(now and after the next start)")
            or f["message"].startswith("now: ") and "; after the next start: " in f["message"]), f["message"]


@pytest.mark.parametrize("check_id", sorted(BREAKS))
def test_a_shut_off_guest_is_judged_on_its_persistent_definition_without_a_when(base_facts, check_id):
    edit, status = BREAKS[check_id]
    f = one(guest_report(base_facts, None, xml(**edit), state="shutoff"), check_id, "guest:vmaudit-i9-g")
    assert f["status"] == status and "next start" not in f["message"], f


@pytest.mark.parametrize("check_id", sorted(BREAKS))
def test_an_unreadable_persistent_definition_is_an_error_not_a_pass(base_facts, check_id):
    f = one(guest_report(base_facts, xml(), {"unavailable": "libvirt: Domain not found"}), check_id,
            "guest:vmaudit-i9-g")
    assert f["status"] == "error" and "Domain not found" in f["message"], f


def test_a_transient_guest_has_only_its_live_definition(base_facts):
    f = one(guest_report(base_facts, xml(type="qemu"), None), "M2-TCG-GUEST", "guest:vmaudit-i9-g")
    assert f["status"] == "fail" and "next start" not in f["message"]


def test_a_live_only_check_skips_a_shut_off_guest_and_reads_the_live_definition(base_facts):
    from vmaudit.audit import build_report
    from vmaudit.engine import Result, check

    seen = []

    @check("M8-I9-LIVE-PROBE", severity="low", scope="guest", definitions="live", title="probe",
           remediation="none")
    def probe(guest, facts, policy):
        """Test probe: records which definition it was given."""
        seen.append(guest.definition)
        yield Result("pass", "seen", guest.resource)

    try:
        import copy
        facts = copy.deepcopy(base_facts)
        running = {"name": "on", "uuid": "1", "state": "running", "persistent": True, "xml": xml(),
                   "xml_inactive": xml(type="qemu")}
        off = {"name": "off", "uuid": "2", "state": "shutoff", "persistent": True, "xml": xml()}
        facts["sources"]["libvirt"]["domains"] = [running, off]
        spec = load_checks()["M8-I9-LIVE-PROBE"]
        found = {f["resource"]: f for f in build_report(facts, make_policy(), checks={spec.id: spec})["findings"]}
        assert seen == ["live"]
        assert found["guest:on"]["status"] == "pass" and "next start" not in found["guest:on"]["message"]
        assert found["guest:off"]["status"] == "skip" and "shutoff" in found["guest:off"]["message"]
    finally:
        from vmaudit.engine import REGISTRY
        REGISTRY.pop("M8-I9-LIVE-PROBE", None)


def test_labels_come_from_the_persistent_definition_then_the_live_one_then_the_inventory(base_facts):
    from vmaudit.facts import Facts

    def labelled(**labels):
        meta = "".join(f"<vm:{k}>{v}</vm:{k}>" for k, v in labels.items())
        return xml(tail="").replace("<metadata>", f"<metadata><vm:guest xmlns:vm='urn:vmaudit:guest:1'>{meta}"
                                                  "</vm:guest>")

    record = {"name": "g", "uuid": UUID, "state": "running", "persistent": True,
              "xml": labelled(zone="internal", owner="live-team"), "xml_inactive": labelled(zone="dmz")}
    data = {"schema": "vmaudit-facts/2", "host": {}, "sources": {"libvirt": {"domains": [record]}}}
    (guest,) = Facts(data).guests()
    guest.inventory_labels = {"zone": "mgmt", "owner": "inv-team", "service": "shop"}
    assert guest.labels == {"zone": "dmz", "owner": "live-team", "service": "shop"}
    assert [guest.label_source(k) for k in ("zone", "owner", "service")] == ["metadata", "live metadata",
                                                                               "inventory"]
    assert guest.definition_of("persistent").labels == guest.labels


# --- host checks that iterate the guests: the right definition ------------------------------------

NIC = "<interface type='network'><mac address='52:54:00:00:00:01'/><source network='default'/>\n      <model type='virtio'/></interface>"


def zoned(bridge: str) -> str:
    text = xml(extra=f"<interface type='bridge'><source bridge='{bridge}'/><model type='virtio'/></interface>")
    text = text.replace(NIC, "")
    return text.replace("<metadata>", "<metadata><vm:guest xmlns:vm='urn:vmaudit:guest:1'><vm:zone>dmz</vm:zone>"
                                      "</vm:guest>")


def test_net_zone_judges_the_interfaces_of_both_definitions(base_facts):
    import copy

    assert NIC in GOOD.replace("{uuid}", "")  # the default NIC the zoned guest replaces
    facts = copy.deepcopy(base_facts)
    facts["sources"]["libvirt"]["domains"] = [{
        "name": "vmaudit-i9-g", "uuid": UUID, "state": "running", "persistent": True, "autostart": False,
        "xml": zoned("br-dmz"), "xml_inactive": zoned("br-int")}]
    policy = make_policy('[zones.networks]\n"br-dmz" = "dmz"\n"br-int" = "internal"\n')
    report = audit(facts=facts, policy=policy)
    f = one(report, "M1-NET-ZONE", "guest:vmaudit-i9-g")
    assert f["status"] == "fail" and "internal" in f["message"], f
    whens = {e.get("when") for e in f["evidence"]["interfaces"]}
    assert whens == {"now", "after the next start"}, f["evidence"]
    assert one(report, "M1-NET-ZONE")["status"] == "fail"  # the host's networks span two zones


def test_mem_overcommit_counts_what_runs_after_the_next_start(base_facts):
    import copy

    big = xml().replace("<memory unit='KiB'>1048576", "<memory unit='KiB'>1073741824").replace(
        "<currentMemory unit='KiB'>1048576", "<currentMemory unit='KiB'>1073741824")
    facts = copy.deepcopy(base_facts)
    facts["sources"]["libvirt"]["domains"] = [{
        "name": "vmaudit-i9-g", "uuid": UUID, "state": "running", "persistent": True, "autostart": False,
        "xml": xml(), "xml_inactive": big}]
    f = one(audit(facts=facts, policy=make_policy()), "M2-MEM-OVERCOMMIT")
    assert f["status"] == "fail" and "after the next start" in f["message"], f
    assert f["evidence"]["guests_mib_now"] == 1024 and f["evidence"]["guests_mib"] == 1024 * 1024
    facts["sources"]["libvirt"]["domains"][0]["xml_inactive"] = xml()
    assert one(audit(facts=facts, policy=make_policy()), "M2-MEM-OVERCOMMIT")["status"] == "pass"


def test_cpu_overcommit_counts_the_vcpus_after_the_next_start(base_facts):
    import copy

    wide = xml().replace("<vcpu>1</vcpu>", "<vcpu>4096</vcpu>")
    facts = copy.deepcopy(base_facts)
    facts["sources"]["libvirt"]["domains"] = [{
        "name": "vmaudit-i9-g", "uuid": UUID, "state": "running", "persistent": True, "autostart": False,
        "xml": xml(), "xml_inactive": wide}]
    f = one(audit(facts=facts, policy=make_policy()), "M4-CPU-OVERCOMMIT")
    assert f["status"] == "warn" and f["evidence"]["running_vcpus_after_next_start"] == 4096, f


def test_every_guest_check_says_in_its_docstring_which_definition_it_judges():
    for spec in load_checks().values():
        if spec.scope == "guest":
            assert "Definitions:" in spec.doc, f"{spec.id}: add a 'Definitions:' line ({spec.definitions})"


def test_guest_seclabel_judges_what_the_persistent_definition_configures(base_facts):
    import copy

    unconfined = xml(tail="<seclabel type='none' model='apparmor'/>")
    facts = copy.deepcopy(base_facts)
    facts["sources"]["libvirt"]["domains"] = [{
        "name": "vmaudit-i9-g", "uuid": UUID, "state": "running", "persistent": True, "autostart": False,
        "xml": xml(tail="<seclabel type='dynamic' model='apparmor' relabel='yes'><label>libvirt-x</label>"
                        "</seclabel>"), "xml_inactive": unconfined}]
    f = one(audit(facts=facts, policy=make_policy()), "M3-GUEST-SECLABEL", "guest:vmaudit-i9-g")
    assert f["status"] == "fail" and "after the next start: seclabel type='none'" in f["message"], f


def test_a_persistent_definition_of_the_wrong_type_is_missing_evidence_not_a_pass(base_facts):
    f = one(guest_report(base_facts, xml(), 5), "M2-TCG-GUEST", "guest:vmaudit-i9-g")
    assert f["status"] == "error" and "xml_inactive: expected a string" in f["message"], f


def test_guest_seclabel_with_an_unreadable_persistent_definition(base_facts):
    """A live problem still fails; without one the guest is unproven (error), never a crash or a pass."""
    import copy

    static = xml(tail="<seclabel type='static' model='apparmor' relabel='yes'><label>shared</label></seclabel>")
    facts = copy.deepcopy(base_facts)
    gone = {"unavailable": "libvirt: Domain not found"}
    facts["sources"]["libvirt"]["domains"] = [
        {"name": "vmaudit-i9-a", "uuid": UUID, "state": "running", "persistent": True, "xml": static,
         "xml_inactive": gone},
        {"name": "vmaudit-i9-b", "uuid": UUID[:-1] + "c", "state": "running", "persistent": True,
         "xml": static.replace(UUID, UUID[:-1] + "c"), "xml_inactive": static.replace(UUID, UUID[:-1] + "c")},
        {"name": "vmaudit-i9-c", "uuid": UUID[:-1] + "d", "state": "running", "persistent": True,
         "xml": xml(tail="<seclabel type='dynamic' model='apparmor' relabel='yes'><label>libvirt-c</label>"
                         "</seclabel>").replace(UUID, UUID[:-1] + "d"), "xml_inactive": gone}]
    caps = facts["sources"]["libvirt"]["capabilities"]  # libvirt confines with AppArmor here
    facts["sources"]["libvirt"]["capabilities"] = caps.replace(
        "</host>", "<secmodel><model>apparmor</model><doi>0</doi></secmodel></host>", 1)
    report = audit(facts=facts, policy=make_policy())
    a = one(report, "M3-GUEST-SECLABEL", "guest:vmaudit-i9-a")
    assert a["status"] == "fail" and "shared with vmaudit-i9-b" in a["message"], a
    c = one(report, "M3-GUEST-SECLABEL", "guest:vmaudit-i9-c")
    assert c["status"] == "error" and "Domain not found" in c["message"], c
