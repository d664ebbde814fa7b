"""--root is read like a chroot: absolute symlinks inside it lead to the root's files, never the
auditing host's, and `..` cannot climb out of it."""

from __future__ import annotations

import os
from pathlib import Path

from vmaudit.collectors import ABSENT, Context
from vmaudit.collectors.config import collect_libvirt_config


def tree(tmp_path: Path) -> Context:
    root = tmp_path / "root"
    (root / "etc/alternatives").mkdir(parents=True)
    (root / "etc/libvirt").mkdir(parents=True)
    (root / "etc/alternatives/qemu.conf").write_text('user = "from-the-root"\n')
    os.symlink("/etc/alternatives/qemu.conf", root / "etc/libvirt/qemu.conf")      # absolute file link
    (root / "run").mkdir()
    (root / "run/reboot-required").write_text("*** System restart required ***\n")
    (root / "var").mkdir()
    os.symlink("/run", root / "var/run")                                              # absolute dir link
    os.symlink("../../../../../../etc/hostname", root / "etc/escape")                 # climbs above root
    (root / "etc/hostname").write_text("image-host\n")
    return Context(root=root, live=False)


def test_absolute_links_stay_in_the_root(tmp_path):
    ctx = tree(tmp_path)
    assert ctx.read("/var/run/reboot-required").startswith("*** System restart")
    assert ctx.listdir("/var/run") == ["reboot-required"]
    conf = collect_libvirt_config(ctx)["qemu.conf"]
    assert conf["present"] is True and conf["values"] == {"user": "from-the-root"}


def test_dotdot_is_clamped_at_the_root(tmp_path):
    ctx = tree(tmp_path)
    assert ctx.read("/etc/escape") == "image-host\n"
    assert ctx.read("/../../etc/hostname") == "image-host\n"


def test_last_component_is_not_followed_by_path(tmp_path):
    ctx = tree(tmp_path)
    link = ctx.path("/etc/libvirt/qemu.conf")
    assert link.is_symlink() and os.readlink(link) == "/etc/alternatives/qemu.conf"
    assert ctx.resolve("/etc/libvirt/qemu.conf") == ctx.root / "etc/alternatives/qemu.conf"


def test_symlink_loops_are_an_error_not_a_hang(tmp_path):
    ctx = tree(tmp_path)
    os.symlink("/etc/loop-b", ctx.root / "etc/loop-a")
    os.symlink("/etc/loop-a", ctx.root / "etc/loop-b")
    try:
        ctx.read("/etc/loop-a")
    except OSError as exc:
        assert exc.errno == 40
    else:
        raise AssertionError("a symlink loop must raise ELOOP")
    assert ctx.read("/etc/nonexistent") is ABSENT


def test_file_names_that_are_not_utf8_reach_the_report(tmp_path):
    """A sudoers.d file named with Latin-1 bytes: the report is still written, as valid JSON."""
    import json
    import subprocess
    import sys

    root = tmp_path / "root"
    (root / "etc/sudoers.d").mkdir(parents=True)
    (root / "etc/sudoers").write_text("root ALL=(ALL:ALL) ALL\n@includedir /etc/sudoers.d\n")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n")
    (root / "etc/group").write_text("root:x:0:\nalice:x:1000:\n")
    with open(os.path.join(os.fsencode(root / "etc/sudoers.d"), b"adm-caf\xe9"), "w") as fh:
        fh.write("alice ALL=(ALL) ALL\n")
    out = tmp_path / "report.json"
    for target in (["--output", str(out)], []):
        proc = subprocess.run([sys.executable, "-m", "vmaudit", "run", "--root", str(root), "--connect",
                               "test:///default", "--format", "json", *target], capture_output=True, timeout=300)
        assert proc.returncode in (1, 3), proc.stderr.decode(errors="replace")
        text = out.read_text() if target else proc.stdout.decode()
        report = json.loads(text)
        assert any("adm-caf" in json.dumps(f["evidence"]) for f in report["findings"]), "file name lost"
