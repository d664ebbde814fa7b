"""`--root DIR` without `--connect` (CONTRACT 1.1): the image's own guest and network definitions are
audited from its files, no libvirt daemon is contacted; and a host without libvirt at all says so once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from vmtest import host_root, make_policy, one, test_uri

from vmaudit.audit import build_report, collect_facts

EXPOSED = """<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>vmaudit-i9-exposed</name>
  <uuid>9b2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f</uuid>
  <memory unit='KiB'>1048576</memory>
  <currentMemory unit='KiB'>524288</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <devices>
    <interface type='network'><mac address='52:54:00:12:34:56'/><source network='lan'/><model type='virtio'/></interface>
    <graphics type='vnc' port='-1' autoport='yes' listen='0.0.0.0'><listen type='address' address='0.0.0.0'/></graphics>
  </devices>
  <qemu:commandline><qemu:env name='X' value='1'/></qemu:commandline>
</domain>
"""
NETWORK = """<network>
  <name>lan</name>
  <uuid>0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f</uuid>
  <forward mode='bridge'/>
  <bridge name='br-int'/>
</network>
"""


@pytest.fixture
def image(tmp_path):
    """A copy of the debian-hardened host as an image: its two guests, plus one exposed guest (autostart),
    one malformed definition, one file that is not a definition, and a network."""
    root = tmp_path / "image"
    shutil.copytree(host_root("debian-hardened"), root, symlinks=True)
    qemu = root / "etc/libvirt/qemu"
    (qemu / "vmaudit-i9-exposed.xml").write_text(EXPOSED)
    (qemu / "vmaudit-i9-broken.xml").write_text("<domain type='kvm'>\n  <name>vmaudit-i9-broken</name>\n  <devices>\n")
    (qemu / "README").write_text("not a definition: libvirt reads *.xml only\n")
    (qemu / "autostart").mkdir()
    os.symlink("/etc/libvirt/qemu/vmaudit-i9-exposed.xml", qemu / "autostart/vmaudit-i9-exposed.xml")
    (qemu / "networks").mkdir()
    (qemu / "networks/lan.xml").write_text(NETWORK)
    return root


@pytest.fixture
def no_libvirt(monkeypatch):
    """Any libvirt connection attempt fails the test loudly; the default URI points nowhere."""
    import libvirt

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError(f"libvirt contacted: {args}")

    for name in ("open", "openReadOnly", "openAuth"):
        monkeypatch.setattr(libvirt, name, refuse)
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", "test:///nonexistent/vmaudit-i9-must-not-be-opened.xml")
    return attempts


POLICY = '[zones.networks]\n"br-int" = "internal"\n'


def test_an_image_is_audited_from_its_definition_files_without_contacting_libvirt(image, no_libvirt):
    facts = collect_facts(root=str(image))
    assert no_libvirt == []
    assert facts["host"]["libvirt"] == "offline" and facts["host"]["libvirt_uri"] is None
    domains = {d["name"]: d for d in facts["sources"]["libvirt"]["domains"]}
    assert set(domains) == {"shop-a", "mail-a", "vmaudit-i9-exposed", "vmaudit-i9-broken"}
    assert domains["vmaudit-i9-exposed"]["autostart"] is True and domains["shop-a"]["autostart"] is False
    report = build_report(facts, make_policy(POLICY))
    assert report["host"]["libvirt"] == "offline"
    exposed = "guest:vmaudit-i9-exposed"
    assert one(report, "M3-GRAPHICS-EXPOSED", exposed)["status"] == "fail"
    assert one(report, "M2-RAW-QEMU-ARGS", exposed)["status"] == "fail"
    assert one(report, "M2-BALLOON", exposed)["status"] == "fail"
    assert one(report, "M2-TCG-GUEST", "guest:shop-a")["status"] == "pass"
    assert one(report, "M1-ZONE-UNLABELLED", "guest:shop-a")["status"] == "pass"
    # labels from the definition files: both dmz; the malformed one's zone is unknown, so no pass
    mix = one(report, "M1-ZONE-MIX")
    assert mix["status"] == "error" and mix["evidence"]["zones"] == {"dmz": ["mail-a", "shop-a"]}
    assert "vmaudit-i9-broken" in mix["message"]
    # the network definitions are the image's: the exposed guest's 'lan' resolves to br-int
    net = one(report, "M1-NET-ZONE", exposed)
    assert "br-int" in json.dumps(net["evidence"]), net


def test_a_malformed_definition_is_an_error_for_that_file_and_the_rest_is_audited(image, no_libvirt):
    report = build_report(collect_facts(root=str(image)), make_policy(POLICY))
    broken = [f for f in report["findings"] if f["resource"] == "guest:vmaudit-i9-broken"]
    assert broken and {f["status"] for f in broken} <= {"error", "skip"}
    tcg = one(report, "M2-TCG-GUEST", "guest:vmaudit-i9-broken")
    assert tcg["status"] == "error"
    assert "/etc/libvirt/qemu/vmaudit-i9-broken.xml is not well-formed XML" in tcg["message"]
    assert one(report, "M2-TCG-GUEST", "guest:mail-a")["status"] == "pass"


def test_what_only_a_running_libvirt_knows_is_skip(image, no_libvirt):
    report = build_report(collect_facts(root=str(image)), make_policy(POLICY))
    for check_id in ("M8-SNAPSHOTS", "M8-IDLE-GUEST"):
        f = one(report, check_id, "guest:shop-a")
        assert f["status"] == "skip" and "only a running libvirt knows" in f["message"], f
    assert one(report, "M4-CPU-OVERCOMMIT")["status"] == "skip"
    assert one(report, "M4-GUEST-COUNT")["status"] == "skip"


def test_the_command_line_never_opens_libvirt_for_an_image(image, tmp_path):
    """The installed entry point, in its own process, with every libvirt open function made to exit 99."""
    code = ("import sys, libvirt\n"
            "def refuse(*a, **k):\n"
            "    sys.stderr.write(f'libvirt contacted: {a}\\n'); sys.exit(99)\n"
            "libvirt.open = libvirt.openReadOnly = libvirt.openAuth = refuse\n"
            "from vmaudit.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    env = dict(os.environ, LIBVIRT_DEFAULT_URI="test:///nonexistent/vmaudit-i9-must-not-be-opened.xml")
    proc = subprocess.run([sys.executable, "-c", code, "run", "--root", str(image), "--format", "json"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode in (1, 3), proc.stderr
    report = json.loads(proc.stdout)
    assert report["host"]["libvirt"] == "offline"
    text = subprocess.run([sys.executable, "-c", code, "run", "--root", str(image)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert text.returncode in (1, 3), text.stderr
    assert "no libvirt contacted" in text.stdout.splitlines()[0]


def test_an_explicit_connect_uses_that_daemon_as_before(image):
    facts = collect_facts(root=str(image), uri=test_uri("hardened"))
    assert facts["host"]["libvirt"] == "reachable"
    assert "vmaudit-i9-exposed" not in {d["name"] for d in facts["sources"]["libvirt"]["domains"]}


# --- a host without libvirt ---------------------------------------------------------------------

LIBVIRT_CHECKS_ALWAYS = ("M1-", "M2-BALLOON", "M2-TCG", "M2-RAW", "M2-LEGACY", "M2-PASSTHROUGH", "M2-MEM",
                         "M3-SECURITY-DRIVER", "M3-GUEST-SECLABEL", "M3-QEMU-", "M3-SECCOMP", "M3-GRAPHICS",
                         "M3-SHARED", "M3-CORE", "M4-", "M5-", "M6-POLKIT", "M6-SOCKET", "M7-", "M8-")


def test_a_host_without_libvirt_says_so_once_and_skips_libvirts_checks(no_libvirt):
    facts = collect_facts(root=str(host_root("proxmox-nolibvirt")))
    assert no_libvirt == []
    report = build_report(facts, make_policy())
    assert report["host"]["libvirt"] == "absent"
    for f in report["findings"]:
        if f["check_id"].startswith(LIBVIRT_CHECKS_ALWAYS):
            assert f["status"] == "skip" and "libvirt is not installed" in f["message"], f
        assert f["status"] not in ("fail", "warn", "error") or "libvirt" not in json.dumps(f).lower(), f
    lsm = one(report, "M3-LSM-ENFORCING")
    assert lsm["status"] == "pass" and "libvirt is not installed" in lsm["message"]
    from vmaudit.report import render

    assert "libvirt is not installed" in render("text", report).splitlines()[0]
    assert "libvirt is not installed on this host" in render("html", report)


def test_an_installed_libvirt_that_is_down_stays_an_error(monkeypatch, tmp_path):
    """debian-hardened has libvirt's units and configuration: a daemon that does not answer is `error`."""
    from vmaudit.collectors import Context, collect

    ctx = Context(root=host_root("debian-hardened"), uri="qemu:///system", live=False)
    monkeypatch.setattr(Context, "libvirt", lambda self: (_ for _ in ()).throw(ConnectionError("cannot connect to qemu:///system: down")))
    facts = collect(ctx)
    assert facts["host"]["libvirt"] == "unreachable"
    report = build_report(facts, make_policy())
    assert report["host"]["libvirt"] == "unreachable"
    assert one(report, "M4-GUEST-COUNT")["status"] == "error"


def test_a_version_1_snapshot_is_mapped_and_its_running_guests_persistent_definitions_are_missing():
    facts = collect_facts(root=str(host_root("debian-hardened")), uri=test_uri("hardened"))
    facts["schema"] = "vmaudit-facts/1"
    del facts["host"]["libvirt"]
    for d in facts["sources"]["libvirt"]["domains"]:
        d.pop("xml_inactive", None)
    report = build_report(facts, make_policy())
    assert report["host"]["libvirt"] == "reachable"
    running = [d["name"] for d in facts["sources"]["libvirt"]["domains"] if d["state"] == "running"]
    assert running
    f = one(report, "M2-TCG-GUEST", f"guest:{running[0]}")
    assert f["status"] == "error" and "vmaudit-facts/1" in f["message"], f


def test_run_facts_reads_a_version_1_snapshot_file(tmp_path, capsys):
    from vmaudit.cli import main

    facts = collect_facts(root=str(host_root("debian-hardened")), uri=test_uri("hardened"))
    facts["schema"] = "vmaudit-facts/1"
    del facts["host"]["libvirt"]
    for d in facts["sources"]["libvirt"]["domains"]:
        d.pop("xml_inactive", None)
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(facts))
    status = main(["run", "--facts", str(path), "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    assert status in (1, 3) and report["host"]["libvirt"] == "reachable"
    assert json.loads(path.read_text()) == facts  # the file's data is read, never rewritten


def test_an_images_qemu_conf_is_judged_without_libvirts_security_models(no_libvirt):
    hardened = build_report(collect_facts(root=str(host_root("debian-hardened"))), make_policy())
    f = one(hardened, "M3-SECURITY-DRIVER")
    assert f["status"] == "pass" and "not examined" in f["message"], f
    broken = build_report(collect_facts(root=str(host_root("debian-broken"))), make_policy())
    assert one(broken, "M3-SECURITY-DRIVER")["status"] == "fail"
