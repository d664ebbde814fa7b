"""On the REAL libvirtd (tests/realenv.py): a running guest is judged on both its definitions — what runs
now and what runs after its next start (CHECKS.md, "Which definition a guest check judges").

Each test's guests are named vmaudit-i9-*, created on the session's PRIVATE libvirtd through a read-write
virsh connection of the test's own (the set-up, not vmaudit) and removed afterwards with their images,
pass or fail; the host's own libvirtd is not touched."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import realenv
from vmtest import one

pytestmark = pytest.mark.usefixtures("real_libvirtd")

LABELS = "vmaudit-i9-labels"
BALLOON = "vmaudit-i9-balloon"
REDEFINED = "vmaudit-i9-redefined"
NS_QEMU = "http://libvirt.org/schemas/domain/qemu/1.0"


def plain_xml(name: str) -> str:
    """realenv's tiny guest without any vmaudit metadata."""
    disk = realenv.daemon().images / f"{name}.qcow2"  # where the private daemon's QEMU reads it
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1M"], check=True)
    xml = realenv.domain_xml(name, {"type": "kvm", "zone": "-", "uuid": realenv.new_uuid()}, disk)
    return re.sub(r"\s*<metadata>.*?</metadata>", "", xml, flags=re.S)


def define_and_start(name: str, xml: str, tmp_path) -> None:
    path = tmp_path / f"{name}.xml"
    path.write_text(xml)
    realenv.virsh("define", str(path))
    realenv.virsh("start", name)


def remove(name: str) -> None:
    realenv.remove_guest(name)  # destroyed, undefined, its image deleted


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """Three running guests changed the way an operator would, then one `vmaudit run` of the host."""
    tmp = tmp_path_factory.mktemp("i9")
    names = (LABELS, BALLOON, REDEFINED)
    try:
        # labelled with `virsh metadata --config` after it started (the README's command)
        define_and_start(LABELS, plain_xml(LABELS), tmp)
        realenv.virsh("metadata", LABELS, "--uri", "urn:vmaudit:guest:1", "--key", "vmaudit", "--config",
                      "--set", "<guest><zone>dmz</zone><owner>i9-team</owner></guest>")
        # started with a balloon target below its memory: no OS inside inflates the balloon
        xml = plain_xml(BALLOON).replace("<memory unit='MiB'>32</memory>", "<memory unit='MiB'>96</memory>")
        xml = xml.replace("<currentMemory unit='MiB'>32</currentMemory>", "<currentMemory unit='MiB'>64</currentMemory>")
        define_and_start(BALLOON, xml.replace("<memballoon model='none'/>", "<memballoon model='virtio'/>"), tmp)
        # raw QEMU settings and a VNC listener on every address written into a running guest's definition
        define_and_start(REDEFINED, plain_xml(REDEFINED), tmp)
        saved = realenv.virsh("dumpxml", "--inactive", REDEFINED).stdout
        changed = saved.replace("<domain type='kvm'>", f"<domain type='kvm' xmlns:qemu='{NS_QEMU}'>", 1)
        changed = changed.replace("listen='127.0.0.1'", "listen='0.0.0.0'").replace(
            "address='127.0.0.1'", "address='0.0.0.0'")
        changed = changed.replace("</domain>", "  <qemu:commandline>\n    <qemu:env name='X' value='1'/>\n"
                                  "  </qemu:commandline>\n</domain>")
        assert changed != saved and "0.0.0.0" in changed
        (tmp / "changed.xml").write_text(changed)
        realenv.virsh("define", str(tmp / "changed.xml"))
        assert realenv.virsh("domstate", REDEFINED).stdout.strip() == "running"
        live = {n: realenv.virsh("dumpxml", n).stdout for n in names}
        proc = subprocess.run([sys.executable, "-m", "vmaudit", "run", "--connect", realenv.URI, "--format",
                               "json"], capture_output=True, text=True, timeout=600)
        assert proc.returncode in (0, 1, 3), proc.stderr
        yield {"report": json.loads(proc.stdout), "live": live}
    finally:
        for name in names:
            remove(name)


def test_a_guest_labelled_with_virsh_metadata_config_after_it_started_is_labelled(audited):
    assert "urn:vmaudit:guest:1" not in audited["live"][LABELS]  # the live definition has no label
    f = one(audited["report"], "M1-ZONE-UNLABELLED", f"guest:{LABELS}")
    assert f["status"] == "pass" and f["evidence"] == {"zone": "dmz", "source": "metadata"}, f
    owner = one(audited["report"], "M5-GUEST-OWNER", f"guest:{LABELS}")
    assert owner["status"] == "pass", owner


def test_a_balloon_target_below_memory_fails_after_the_next_start(audited):
    f = one(audited["report"], "M2-BALLOON", f"guest:{BALLOON}")
    assert f["status"] == "fail" and "after the next start" in f["message"], f
    assert f["evidence"]["after_next_start"]["evidence"]["current_memory_kib"] == 64 * 1024


def test_raw_qemu_settings_and_vnc_on_every_address_in_the_saved_definition_fail(audited):
    assert "qemu:commandline" not in audited["live"][REDEFINED]  # the running QEMU has neither yet
    raw = one(audited["report"], "M2-RAW-QEMU-ARGS", f"guest:{REDEFINED}")
    assert raw["status"] == "fail" and raw["message"].startswith("after the next start: "), raw
    assert raw["evidence"]["after_next_start"]["evidence"]["env_names"] == ["X"]
    assert raw["evidence"]["now"]["status"] == "pass"
    vnc = one(audited["report"], "M3-GRAPHICS-EXPOSED", f"guest:{REDEFINED}")
    assert vnc["status"] == "fail" and vnc["message"].startswith("after the next start: "), vnc
    assert vnc["evidence"]["now"]["status"] == "pass"
