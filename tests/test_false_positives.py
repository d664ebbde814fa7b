"""No false alarms: a fully hardened host with correctly labelled, registered guests yields no `fail`
and no `warn` from any check that has its evidence (issue: the whole catalogue).

Two fixture hosts, Debian (AppArmor, dpkg, monolithic libvirtd) and RHEL (SELinux, dnf, modular
daemons), each with the guests of tests/fixtures/libvirt/hardened.xml. Two facts the libvirt test
driver cannot give are set as a real host would report them, and the test says so: the security model
in the capabilities (the test driver always says 'testSecurity') and the collection time (fixed, so the
fixtures' package logs do not age past the patch thresholds). The guests' image files are made with the
modes libvirt gives them (git keeps no modes), and the RHEL host gets a real rpm database and dnf cache
(tests/rpmcache.py): installed packages at the versions its cached security advisories fix, the cache
fetched a day before the collection, so M3-PENDING-UPDATES judges it offline as on a real host.
"""

from __future__ import annotations

import re

import pytest
import rpmcache
from vmtest import LIBVIRT, REQUIRE_REAL, audit, make_policy, make_root, put_guest_images

from vmaudit.audit import collect_facts
from vmaudit.inventory import parse_inventory

HOSTS = {"debian-hardened": "apparmor", "rhel-hardened": "selinux"}
COLLECTED_AT = "2026-11-25T08:00:00Z"
COLLECTED_TS = 1795593600
POLICY = """
[host]
zone = "dmz"
migration_peers = ["hv02.example.net"]

[zones.networks]
"dmz" = "dmz"
"br-dmz" = "dmz"
"""
INVENTORY = """uuid,name,zone,service,owner,redundancy,patch_group,host
6c3e2c0a-5b0e-4f52-9a3e-1d2f3a4b5c61,web01,dmz,shop,web-team,shop-fe,wave-1,hv01
0b7d3f0e-8a4c-4b3d-9a51-2c7e9d1f4a20,db01,dmz,shop,db-team,shop-db,wave-2,hv01
"""
SECMODEL = {
    "apparmor": "<secmodel><model>apparmor</model><doi>0</doi></secmodel>",
    "selinux": "<secmodel><model>selinux</model><doi>0</doi>"
               "<baselabel type='kvm'>system_u:system_r:svirt_t:s0</baselabel></secmodel>",
}


def hardened_facts(host: str, tmp_path) -> dict:
    model = HOSTS[host]
    node = tmp_path / "node.xml"
    node.write_text((LIBVIRT / "hardened.xml").read_text().replace("SELINUX_OR_APPARMOR", model))
    # the guests' volumes, with the modes libvirt's pool gives them (git keeps no modes)
    root = make_root(tmp_path, host)
    if model == "selinux":
        if not rpmcache.have_tools() and not REQUIRE_REAL:
            pytest.skip("rpm/rpmbuild/createrepo_c (scripts/install-deps.sh --test) make the RHEL package state")
        rpmcache.hardened_rhel(root, COLLECTED_TS - 86400)
    put_guest_images(root, {"/var/lib/libvirt/images/web01.qcow2": (0o600, 0, 0),
                            "/var/lib/libvirt/images/db01.img": (0o600, 0, 0)})
    facts = collect_facts(root=str(root), uri=f"test://{node}")
    facts["collected_at"] = COLLECTED_AT
    caps = facts["sources"]["libvirt"]["capabilities"]
    caps = re.sub(r"<secmodel>.*?</secmodel>", "", caps, flags=re.S)
    facts["sources"]["libvirt"]["capabilities"] = caps.replace(
        "</host>", SECMODEL[model] + "<secmodel><model>dac</model><doi>0</doi></secmodel></host>", 1)
    return facts


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_hardened_host_raises_no_alarm(host, tmp_path):
    policy = make_policy(POLICY, inventory=parse_inventory(INVENTORY, "inventory.csv"))
    report = audit(facts=hardened_facts(host, tmp_path), policy=policy)
    alarms = [(f["check_id"], f["resource"], f["status"], f["message"]) for f in report["findings"]
              if f["status"] in ("fail", "warn")]
    assert alarms == []
    # and the audit really judged the host: most checks passed on evidence, none errored
    statuses = {f["check_id"]: f["status"] for f in report["findings"]}
    assert [f for f in report["findings"] if f["status"] == "error"] == []
    assert sum(1 for s in statuses.values() if s == "pass") >= 40, statuses
    pending = next(f for f in report["findings"] if f["check_id"] == "M3-PENDING-UPDATES")
    assert pending["evidence"]["source"] == ("dnf cache (offline)" if host == "rhel-hardened"
                                             else "cached indexes (offline)")
