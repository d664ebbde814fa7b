"""M3-IMAGE-PERMS, M3-CHARDEV-EXPOSED, M3-HOST-SHARE (checks/m3_guest_devices.py) and the guest_paths
collector, on host roots whose files get their modes here (devices_helpers) and libvirt test-driver
guests. The same three checks run on the real libvirtd in tests/e2e/test_real_libvirtd.py."""

from __future__ import annotations

import os

from devices_helpers import disk, domain, make_root, node, put_dir, put_file, snapshot
from vmtest import audit, one, with_sources

from vmaudit.audit import collect_facts
from vmaudit.facts import unavailable

IMAGES = "/var/lib/libvirt/images"


def run(facts: dict, policy: str = "") -> dict:
    return audit(facts=facts, policy=policy)


# --- guest_paths and M3-IMAGE-PERMS ------------------------------------------------------------------

def image_host(tmp_path):
    root = make_root(tmp_path)
    put_file(root, f"{IMAGES}/good.qcow2", 0o600)
    put_file(root, f"{IMAGES}/base.qcow2", 0o640, gid=64055)
    put_file(root, f"{IMAGES}/overlay.qcow2", 0o600)
    put_file(root, f"{IMAGES}/installer.iso", 0o644)
    put_file(root, "/usr/share/OVMF/OVMF_CODE_4M.fd", 0o644)
    put_file(root, "/var/lib/libvirt/qemu/nvram/good_VARS.fd", 0o600, uid=64055, gid=64055)
    put_dir(root, "/srv/vm", 0o777)  # the operator's "quick" image directory
    put_file(root, "/srv/vm/open.qcow2", 0o600)
    put_file(root, f"{IMAGES}/world.qcow2", 0o666)
    put_file(root, f"{IMAGES}/readable.qcow2", 0o644)
    put_file(root, f"{IMAGES}/alice.qcow2", 0o600, uid=1000, gid=1000)
    put_file(root, f"{IMAGES}/writable-base.qcow2", 0o666)
    put_file(root, f"{IMAGES}/top.qcow2", 0o600)
    put_dir(root, "/srv/sticky", 0o1777)
    put_file(root, "/srv/sticky/tmp.qcow2", 0o600)
    # an absolute link: inside the audited root it means the root's /srv/vm, never this machine's
    os.symlink("/srv/vm/open.qcow2", root / "var/lib/libvirt/images/link.qcow2")
    # a link to a well-kept image, in a directory anyone may write: the link itself can be replaced
    put_dir(root, "/srv/drop", 0o777)
    os.symlink(f"{IMAGES}/good.qcow2", root / "srv/drop/redirect.qcow2")
    backing = ("<backingStore type='file'><format type='qcow2'/>"
               f"<source file='{IMAGES}/writable-base.qcow2'/><backingStore/></backingStore>")
    good_os = ("<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>"
               "<nvram>/var/lib/libvirt/qemu/nvram/good_VARS.fd</nvram>")
    uri = node(
        tmp_path,
        domain("good", disk(f"{IMAGES}/good.qcow2") + disk(f"{IMAGES}/installer.iso", "sda", "cdrom", True)
               + disk(f"{IMAGES}/base.qcow2", "vdb", readonly=True), good_os, index=1),
        domain("open-dir", disk("/srv/vm/open.qcow2"), index=2),
        domain("world", disk(f"{IMAGES}/world.qcow2"), index=3),
        domain("readable", disk(f"{IMAGES}/readable.qcow2"), index=4),
        domain("alice", disk(f"{IMAGES}/alice.qcow2"), index=5),
        domain("linked", disk(f"{IMAGES}/link.qcow2"), index=6),
        domain("chain", disk(f"{IMAGES}/top.qcow2", backing=backing), index=7),
        domain("missing", disk(f"{IMAGES}/gone.qcow2"), index=8),
        domain("sticky", disk("/srv/sticky/tmp.qcow2"), index=9),
        domain("redirect", disk("/srv/drop/redirect.qcow2"), index=11),
        domain("netdisk", "<disk type='network' device='disk'><source protocol='nbd' name='x'>"
               "<host name='10.0.0.9' port='10809'/></source><target dev='vda' bus='virtio'/></disk>", index=10),
    )
    return root, uri


def test_guest_paths_collector_stats_files_and_directories(tmp_path):
    root, uri = image_host(tmp_path)
    paths = snapshot(root, uri)["sources"]["guest_paths"]["paths"]
    assert paths[f"{IMAGES}/good.qcow2"] == {"type": "file", "mode": "0600", "uid": 0, "gid": 0}
    assert paths[IMAGES]["mode"] == "0711" and paths["/"]["type"] == "dir"
    assert paths["/srv/vm"]["mode"] == "0777"
    assert paths[f"{IMAGES}/link.qcow2"]["type"] == "link"
    assert paths[f"{IMAGES}/link.qcow2"]["target"] == "/srv/vm/open.qcow2"
    assert paths[f"{IMAGES}/gone.qcow2"] == {"type": "absent"}
    assert paths[f"{IMAGES}/writable-base.qcow2"]["mode"] == "0666"  # the backing chain is followed
    assert paths["/var/lib/libvirt/qemu/nvram/good_VARS.fd"]["uid"] == 64055


def test_image_perms_pass_fail_warn_error(tmp_path):
    root, uri = image_host(tmp_path)
    report = run(snapshot(root, uri))
    good = one(report, "M3-IMAGE-PERMS", "guest:good")
    assert good["status"] == "pass", good["message"]
    files = {f["path"]: f for f in good["evidence"]["files"]}
    assert files[f"{IMAGES}/good.qcow2"] == {"what": "disk vda", "path": f"{IMAGES}/good.qcow2", "type": "file",
                                             "mode": "0600", "owner": "root", "group": "root", "problems": []}
    assert files["/var/lib/libvirt/qemu/nvram/good_VARS.fd"]["owner"] == "libvirt-qemu"
    assert files[f"{IMAGES}/installer.iso"]["mode"] == "0644"  # read-only media may be world-readable
    assert good["evidence"]["qemu_user"] == "libvirt-qemu"

    f = one(report, "M3-IMAGE-PERMS", "guest:open-dir")
    assert f["status"] == "fail" and "/srv/vm" in f["message"] and "o+w" in f["message"]
    assert f["evidence"]["directories_with_problems"] == [
        {"path": "/srv/vm", "mode": "0777", "owner": "root", "group": "root",
         "problem": "writable by everyone (o+w)"}]
    w = one(report, "M3-IMAGE-PERMS", "guest:world")
    assert w["status"] == "fail" and f"{IMAGES}/world.qcow2 writable by everyone" in w["message"]
    r = one(report, "M3-IMAGE-PERMS", "guest:readable")
    assert r["status"] == "warn" and r["severity"] == "medium" and "readable by everyone" in r["message"]
    a = one(report, "M3-IMAGE-PERMS", "guest:alice")
    assert a["status"] == "warn" and "owned by the login account alice" in a["message"]
    linked = one(report, "M3-IMAGE-PERMS", "guest:linked")
    assert linked["status"] == "fail" and "/srv/vm" in linked["message"]
    assert linked["evidence"]["files"][0]["resolved"] == "/srv/vm/open.qcow2"
    chain = one(report, "M3-IMAGE-PERMS", "guest:chain")
    assert chain["status"] == "fail" and "writable-base.qcow2" in chain["message"]
    assert chain["evidence"]["files"][1]["what"] == "disk vda backing file 1"
    assert one(report, "M3-IMAGE-PERMS", "guest:sticky")["status"] == "pass"  # /srv/sticky is 1777
    missing = one(report, "M3-IMAGE-PERMS", "guest:missing")
    assert missing["status"] == "error" and "gone.qcow2: does not exist" in missing["evidence"]["reason"]
    redirect = one(report, "M3-IMAGE-PERMS", "guest:redirect")
    assert redirect["status"] == "fail" and "directory /srv/drop writable by everyone" in redirect["message"]
    assert redirect["evidence"]["files"][0]["resolved"] == f"{IMAGES}/good.qcow2"
    net = one(report, "M3-IMAGE-PERMS", "guest:netdisk")
    assert net["status"] == "pass" and net["evidence"]["files"] == []


def test_image_perms_group_writable_and_volumes(tmp_path):
    root = make_root(tmp_path)
    put_file(root, f"{IMAGES}/kvm.qcow2", 0o660, gid=104)       # kvm: QEMU's group on Debian
    put_file(root, f"{IMAGES}/staff.qcow2", 0o660, gid=1001)    # bob's group: not QEMU's
    pools = (f"<pool type='dir'><name>default</name><uuid>35bb2ad9-388a-cdfe-461a-b8907f6e5399</uuid>"
             f"<target><path>{IMAGES}</path></target>"
             f"<volume type='file'><name>kvm.qcow2</name><capacity unit='GiB'>1</capacity>"
             f"<target><path>{IMAGES}/kvm.qcow2</path><format type='qcow2'/></target></volume></pool>")
    uri = node(tmp_path,
               domain("vol", "<disk type='volume' device='disk'><source pool='default' volume='kvm.qcow2'/>"
                             "<target dev='vda' bus='virtio'/></disk>", index=1),
               domain("staff", disk(f"{IMAGES}/staff.qcow2"), index=2), pools=pools)
    facts = snapshot(root, uri)
    assert facts["sources"]["guest_paths"]["volumes"] == {"default/kvm.qcow2": f"{IMAGES}/kvm.qcow2"}
    report = run(facts)
    vol = one(report, "M3-IMAGE-PERMS", "guest:vol")
    assert vol["status"] == "pass" and vol["evidence"]["files"][0]["group"] == "kvm"
    staff = one(report, "M3-IMAGE-PERMS", "guest:staff")
    assert staff["status"] == "fail" and "writable by group bob (g+w)" in staff["message"]


def test_image_perms_evidence_missing(tmp_path):
    root, uri = image_host(tmp_path)
    facts = snapshot(root, uri)
    e = one(run(with_sources(facts, guest_paths=unavailable("libvirt: connection lost"))),
            "M3-IMAGE-PERMS", "guest:world")
    assert e["status"] == "error" and "connection lost" in e["evidence"]["reason"]
    facts["sources"]["guest_paths"]["paths"][f"{IMAGES}/good.qcow2"] = unavailable("Permission denied")
    g = one(run(facts), "M3-IMAGE-PERMS", "guest:good")
    assert g["status"] == "error" and "good.qcow2: Permission denied" in g["evidence"]["reason"]


# --- M3-CHARDEV-EXPOSED ----------------------------------------------------------------------------

def serial(kind: str, mode: str, host: str | None, service: str = "4555", tls: str | None = None,
           protocol: str = "raw", tag: str = "serial") -> str:
    attrs = f"mode='{mode}' service='{service}'" + (f" host='{host}'" if host is not None else "") \
        + (f" tls='{tls}'" if tls else "")
    return (f"<{tag} type='{kind}'><source {attrs}/><protocol type='{protocol}'/>"
            f"<target port='0'/></{tag}>")


def chardev_host(tmp_path):
    root = make_root(tmp_path)
    uri = node(
        tmp_path,
        domain("pty", "<serial type='pty'><target port='0'/></serial><console type='pty'><target type='serial'/>"
                      "</console>", index=1),
        domain("open", serial("tcp", "bind", "0.0.0.0") + serial("tcp", "bind", "0.0.0.0", tag="console"),
               index=2),
        domain("loop", serial("tcp", "bind", "127.0.0.1", protocol="telnet"), index=3),
        domain("nohost", serial("tcp", "bind", "", protocol="telnet"), index=4),
        domain("tls", serial("tcp", "bind", "::", tls="yes"), index=5),
        domain("tlsoff", serial("tcp", "bind", "192.0.2.10", tls="no"), index=6),
        domain("outbound", serial("tcp", "connect", "192.0.2.10"), index=7),
        domain("udp", "<serial type='udp'><source mode='bind' host='0.0.0.0' service='4556'/>"
                      "<source mode='connect' host='192.0.2.20' service='4557'/><target port='0'/></serial>",
               index=8),
        domain("channel", "<channel type='tcp'><source mode='bind' host='198.51.100.7' service='9000'/>"
                          "<target type='virtio' name='org.example.agent'/></channel>", index=9),
    )
    return root, uri


def test_chardev_exposed_pass_fail_warn(tmp_path):
    root, uri = chardev_host(tmp_path)
    facts = snapshot(root, uri)
    report = run(facts)
    assert one(report, "M3-CHARDEV-EXPOSED", "guest:pty")["status"] == "pass"
    f = one(report, "M3-CHARDEV-EXPOSED", "guest:open")
    assert f["status"] == "fail" and "serial tcp on 0.0.0.0:4555" in f["message"]
    assert len(f["evidence"]["listening"]) == 1  # the <console> repeating the serial port is one device
    assert one(report, "M3-CHARDEV-EXPOSED", "guest:loop")["status"] == "pass"
    n = one(report, "M3-CHARDEV-EXPOSED", "guest:nohost")
    assert n["status"] == "fail" and "(all addresses)" in n["message"] and "(telnet)" in n["message"]
    assert one(report, "M3-CHARDEV-EXPOSED", "guest:tls")["status"] == "pass"
    assert one(report, "M3-CHARDEV-EXPOSED", "guest:tlsoff")["status"] == "fail"
    assert one(report, "M3-CHARDEV-EXPOSED", "guest:outbound")["status"] == "pass"
    u = one(report, "M3-CHARDEV-EXPOSED", "guest:udp")
    assert u["status"] == "fail" and "udp on 0.0.0.0:4556" in u["message"]
    c = one(report, "M3-CHARDEV-EXPOSED", "guest:channel")
    assert c["status"] == "fail" and c["evidence"]["listening"][0]["device"] == "channel"
    # chardev_tls = 1 covers every TCP device that does not say tls='no'; unverified clients -> warn
    conf = {"path": "/etc/libvirt/qemu.conf", "present": True,
            "values": {"chardev_tls": 1, "chardev_tls_x509_verify": 0}}
    facts["sources"]["libvirt_config"]["qemu.conf"] = conf
    report = run(facts)
    w = one(report, "M3-CHARDEV-EXPOSED", "guest:open")
    assert w["status"] == "warn" and w["severity"] == "medium" and w["evidence"]["chardev_tls"] == 1
    assert one(report, "M3-CHARDEV-EXPOSED", "guest:tlsoff")["status"] == "fail"
    assert one(report, "M3-CHARDEV-EXPOSED", "guest:udp")["status"] == "fail"  # UDP has no TLS


def test_chardev_exposed_evidence_missing(tmp_path):
    root, uri = chardev_host(tmp_path)
    facts = snapshot(root, uri)
    facts["sources"]["libvirt_config"]["qemu.conf"] = unavailable("cannot read /etc/libvirt/qemu.conf: EACCES")
    e = one(run(facts), "M3-CHARDEV-EXPOSED", "guest:open")
    assert e["status"] == "error" and "EACCES" in e["evidence"]["reason"]


# --- M3-HOST-SHARE ---------------------------------------------------------------------------------

def fs(source: str, target: str = "share", driver: str = "path", accessmode: str | None = None,
       readonly: bool = False, attr: str = "dir") -> str:
    mode = f" accessmode='{accessmode}'" if accessmode else ""
    ro = "<readonly/>" if readonly else ""
    return (f"<filesystem type='mount'{mode}><driver type='{driver}'/><source {attr}='{source}'/>"
            f"<target dir='{target}'/>{ro}</filesystem>")


def share_host(tmp_path):
    root = make_root(tmp_path)
    put_dir(root, "/srv/data", 0o755)
    put_dir(root, "/srv/secret", 0o700)
    os.symlink("/etc", root / "srv/etc-link")
    uri = node(
        tmp_path,
        domain("none", index=1),
        domain("etc-rw", fs("/etc", accessmode="passthrough"), index=2),
        domain("etc-ro", fs("/etc", accessmode="mapped", readonly=True), index=3),
        domain("var", fs("/var", driver="virtiofs", readonly=True), index=4),
        domain("p9-rw", fs("/srv/data"), index=5),
        domain("vfs-rw", fs("/srv/data", driver="virtiofs"), index=6),
        domain("data-ro", fs("/srv/data", driver="virtiofs", readonly=True)
               + fs("/srv/data", target="b", accessmode="squash", readonly=True), index=7),
        domain("linked", fs("/srv/etc-link", accessmode="mapped", readonly=True), index=8),
        domain("socket", fs("/run/virtiofsd/share.sock", driver="virtiofs", attr="socket"), index=9),
        domain("secret", fs("/srv/secret", driver="virtiofs", readonly=True), index=10),
    )
    return root, uri


def test_host_share_pass_fail_warn(tmp_path):
    root, uri = share_host(tmp_path)
    facts = snapshot(root, uri)
    report = run(facts, '[guests]\nsensitive_paths = ["/srv/secret"]\n')
    assert one(report, "M3-HOST-SHARE", "guest:none")["status"] == "pass"
    rw = one(report, "M3-HOST-SHARE", "guest:etc-rw")
    assert rw["status"] == "fail" and rw["severity"] == "critical"
    assert rw["evidence"]["shares"][0]["sensitive"] == ["/etc"]
    ro = one(report, "M3-HOST-SHARE", "guest:etc-ro")
    assert ro["status"] == "fail" and ro["severity"] == "high" and "read-only share" in ro["message"]
    v = one(report, "M3-HOST-SHARE", "guest:var")  # /var holds /var/lib/libvirt
    assert v["status"] == "fail" and v["evidence"]["shares"][0]["sensitive"] == ["/var/lib/libvirt"]
    p9 = one(report, "M3-HOST-SHARE", "guest:p9-rw")
    assert p9["status"] == "fail" and p9["severity"] == "high" and "passthrough" in p9["message"]
    vfs = one(report, "M3-HOST-SHARE", "guest:vfs-rw")
    assert vfs["status"] == "warn" and vfs["severity"] == "medium"
    assert one(report, "M3-HOST-SHARE", "guest:data-ro")["status"] == "pass"
    ln = one(report, "M3-HOST-SHARE", "guest:linked")
    assert ln["status"] == "fail" and ln["evidence"]["shares"][0]["resolved"] == "/etc"
    sock = one(report, "M3-HOST-SHARE", "guest:socket")
    assert sock["status"] == "warn" and "external virtiofsd" in sock["message"]
    sec = one(report, "M3-HOST-SHARE", "guest:secret")
    assert sec["status"] == "fail" and sec["evidence"]["shares"][0]["sensitive"] == ["/srv/secret"]
    assert one(run(facts), "M3-HOST-SHARE", "guest:secret")["status"] == "pass"  # not sensitive by default
    # the same cause is reported once: M3-SHARED-MEMORY no longer lists file-system shares
    assert one(report, "M3-SHARED-MEMORY", "guest:etc-rw")["status"] == "pass"


def test_host_share_evidence_missing(tmp_path):
    root, uri = share_host(tmp_path)
    facts = snapshot(root, uri)
    name = "etc-rw"
    rec = next(d for d in facts["sources"]["libvirt"]["domains"] if d["name"] == name)
    rec["xml"] = unavailable("libvirt: domain not found")
    e = one(run(facts), "M3-HOST-SHARE", f"guest:{name}")
    assert e["status"] == "error" and "domain not found" in e["evidence"]["reason"]
    # without the stat of the shared directories a share is still judged by its written path, but a
    # share that looks harmless may be a link to /etc: not a pass
    broken = with_sources(facts, guest_paths=unavailable("libvirt: gone"))
    g = one(run(broken), "M3-HOST-SHARE", "guest:etc-ro")
    assert g["status"] == "fail" and g["evidence"]["shares"][0]["resolved"].startswith("unknown")
    d = one(run(broken), "M3-HOST-SHARE", "guest:data-ro")
    assert d["status"] == "error" and "libvirt: gone" in d["evidence"]["reason"]


# --- M3-QEMU-USER per guest ------------------------------------------------------------------------

def test_qemu_user_guest_root_dac_label(tmp_path):
    root = make_root(tmp_path)
    uri = node(
        tmp_path,
        domain("dyn", extra="<seclabel type='dynamic' model='dac' relabel='yes'/>", index=1),
        domain("rootlabel", extra="<seclabel type='static' model='dac' relabel='no'><label>+0:+0</label>"
                                  "</seclabel>", index=2),
        domain("rootname", extra="<seclabel type='static' model='dac' relabel='yes'><label>root:root</label>"
                                 "</seclabel>", index=3),
        domain("unpriv", extra="<seclabel type='static' model='dac' relabel='yes'><label>+107:+107</label>"
                               "</seclabel>", index=4),
    )
    facts = snapshot(root, uri)
    # QEMU of the root-labelled guest runs as root; qemu.conf (Debian default) is fine
    facts["sources"]["processes"] = [
        {"pid": 4242, "name": "qemu-system-x86", "exe": "/usr/bin/qemu-system-x86_64", "kind": "qemu",
         "cmdline": [], "guest": "rootlabel", "uid": 0, "user": "root", "gid": 0, "seccomp": 2,
         "deleted_maps": []}]
    report = run(facts)
    g = one(report, "M3-QEMU-USER", "guest:rootlabel")
    assert g["status"] == "fail" and g["severity"] == "critical" and "'+0:+0'" in g["message"]
    assert "<label>+0:+0</label>" in g["remediation"] and "rootlabel" in g["remediation"]
    assert one(report, "M3-QEMU-USER", "guest:rootname")["evidence"]["seclabel"]["label"] == "root:root"
    host = one(report, "M3-QEMU-USER")
    assert host["status"] == "pass" and "qemu.conf" not in host["message"]  # the guest explains the process
    assert host["evidence"]["guests_with_root_dac_label"] == {"rootlabel": "+0:+0", "rootname": "root:root"}
    assert not [f for f in report["findings"] if f["check_id"] == "M3-QEMU-USER"
                and f["resource"] in ("guest:dyn", "guest:unpriv")]
    # a guest whose XML is missing cannot be cleared
    rec = next(d for d in facts["sources"]["libvirt"]["domains"] if d["name"] == "unpriv")
    rec["xml"] = unavailable("libvirt: domain not found")
    e = one(run(facts), "M3-QEMU-USER", "guest:unpriv")
    assert e["status"] == "error" and "domain not found" in e["evidence"]["reason"]


# --- an image audited offline (--root without --connect) --------------------------------------------

def test_image_perms_of_an_image_read_from_its_definition_files(tmp_path):
    """Without a libvirt to ask, guest_paths stats the files named by the definitions libvirt would load
    at boot (/etc/libvirt/qemu/*.xml under the root); a volume's path is then unknown."""
    root = make_root(tmp_path)
    put_dir(root, "/srv/vm", 0o777)
    put_file(root, "/srv/vm/offline.qcow2", 0o600)
    qemu_dir = root / "etc/libvirt/qemu"
    qemu_dir.mkdir(parents=True, exist_ok=True)
    (qemu_dir / "offline.xml").write_text(
        "<domain type='kvm'><name>offline</name><uuid>7e57d00d-0000-4000-8000-0000000000ff</uuid>"
        "<memory unit='GiB'>1</memory><os><type arch='x86_64'>hvm</type></os><devices>"
        + disk("/srv/vm/offline.qcow2")
        + "<disk type='volume' device='disk'><source pool='default' volume='x.qcow2'/>"
          "<target dev='vdb' bus='virtio'/></disk></devices></domain>")
    facts = collect_facts(root=str(root))  # no --connect: no libvirt contacted
    facts["collected_at"] = "2026-11-25T12:00:00Z"
    gp = facts["sources"]["guest_paths"]
    assert gp["paths"]["/srv/vm"]["mode"] == "0777"
    assert "only a running libvirt" in gp["volumes"]["default/x.qcow2"]["unavailable"]
    f = one(run(facts), "M3-IMAGE-PERMS", "guest:offline")
    assert f["status"] == "fail" and "/srv/vm" in f["message"]
    assert any("x.qcow2" in n for n in f["evidence"]["not_judged"])
