"""Privilege escalation for `vmaudit collect` against real OpenSSH and real sudo: a non-root login user
with NOPASSWD sudo collects as root (installed and agentless), one whose sudo wants a password is
reported unreached at stage `become` while the others are audited, and an unsupported method is refused.

"Only root could read it" is a qemu.conf of mode 0600 in a temporary --root that every user can
traverse: the same user without become gets it as unavailable."""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from sshlab import ADDR, PORT, VENV_BIN
from test_collect_ssh import collect, finding, hosts_of

QEMU_CONF = 'user = "qemu"\nsecurity_driver = "selinux"\n'


@pytest.fixture(scope="module")
def shared_root():
    """A root readable by any user except for etc/libvirt/qemu.conf (root's, 0600)."""
    base = Path(tempfile.mkdtemp(prefix="vmaudit-become-"))
    try:
        os.chmod(base, 0o755)
        root = base / "root"
        (root / "etc" / "libvirt").mkdir(parents=True)
        for d in (root, root / "etc", root / "etc" / "libvirt"):
            os.chmod(d, 0o755)
        conf = root / "etc" / "libvirt" / "qemu.conf"
        conf.write_text(QEMU_CONF)
        os.chmod(conf, 0o600)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def line(name: str, addr: str, user: str, root: Path, **extra: str) -> str:
    values = {"ansible_host": addr, "ansible_port": str(PORT), "ansible_user": user,
              "vmaudit_connect": "test:///default", "vmaudit_root": str(root), **extra}
    return name + " " + " ".join(f"{k}={v}" for k, v in values.items())


def qemu_conf(out: Path, host: dict) -> dict:
    return json.loads((out / host["facts"]).read_text())["sources"]["libvirt_config"]["qemu.conf"]


def test_become_collects_as_root_and_refuses_what_it_cannot_do(lab, become_users, shared_root, tmp_path):
    root = shared_root / "root"
    u = become_users
    inventory = "\n".join([
        "[hv]",
        # INI string, any case; installed vmaudit found on the SSH user's PATH, run by sudo by its path
        line("hv-inst", ADDR["inst"], u.nopw, root, ansible_become="Yes"),
        # no become variable: --become of the run applies; the zipapp runs as root
        line("hv-agentless", ADDR["agentless"], u.nopw, root, vmaudit_mode="agentless",
             vmaudit_python="/usr/bin/python3"),
        # vmaudit_become wins over ansible_become and over --become
        # (agentless with Debian's python3: the venv's interpreter lives under /root, closed to this user)
        line("hv-plain", ADDR["agentless"], u.nopw, root, vmaudit_become="no", ansible_become="yes",
             vmaudit_mode="agentless", vmaudit_python="/usr/bin/python3"),
        # a command line, not one word (with a word the shell must not split)
        line("hv-cmdline", ADDR["inst"], u.nopw, root, ansible_become="true",
             vmaudit_command=f"'/usr/bin/env \"VMAUDIT_NOTE=a b;c\" {VENV_BIN}/vmaudit'"),
        line("hv-pw", ADDR["inst"], u.pw, root),
        line("hv-pw-agentless", ADDR["agentless"], u.pw, root, vmaudit_mode="agentless",
             vmaudit_python="/usr/bin/python3"),
        line("hv-su", ADDR["inst"], u.nopw, root, ansible_become_method="su"),
        ""])
    before = set(glob.glob("/tmp/vmaudit.*"))
    out = tmp_path / "fleet"
    r = collect(lab, out, "--become", "--command-timeout", "60", inventory=inventory)
    report = json.loads((out / "fleet.json").read_text())
    hosts = hosts_of(report)

    for name, mode in (("hv-inst", "installed"), ("hv-agentless", "agentless"), ("hv-cmdline", "installed")):
        h = hosts[name]
        assert (h["reached"], h["mode"]) == (True, mode), (name, h["reason"], r.stderr)
        conf = qemu_conf(out, h)
        assert conf.get("present") is True and conf["values"]["user"] == "qemu", (name, conf)
    # unprivileged, the same user cannot read it: the evidence is missing, not invented
    plain = qemu_conf(out, hosts["hv-plain"])
    assert "unavailable" in plain and "ermission denied" in plain["unavailable"], plain

    for name in ("hv-pw", "hv-pw-agentless"):
        h = hosts[name]
        assert (h["reached"], h["stage"]) == (False, "become"), (name, h)
        assert "sudo -n -u root: sudo: a password is required" in h["reason"]
        assert "\n" not in h["reason"]
        f = finding(report, "F-HOST-UNREACHED", f"host:{name}")
        assert f["status"] == "error" and f["evidence"]["stage"] == "become"
    su = hosts["hv-su"]
    assert (su["reached"], su["stage"]) == (False, "become")
    assert "become method 'su' is not supported" in su["reason"] and "not audited" in su["reason"]

    # the agentless directories (the root-owned psutil unpacked by the escalated zipapp too) are gone
    assert set(glob.glob("/tmp/vmaudit.*")) == before, "an agentless temporary directory was left behind"


def test_without_become_nothing_is_escalated(lab, become_users, shared_root, tmp_path):
    out = tmp_path / "fleet"
    inventory = line("hv", ADDR["agentless"], become_users.pw, shared_root / "root", vmaudit_mode="agentless",
                     vmaudit_python="/usr/bin/python3") + "\n"
    r = collect(lab, out, "--command-timeout", "60", inventory=inventory)
    h = hosts_of(json.loads((out / "fleet.json").read_text()))["hv"]
    # the user whose sudo wants a password is audited as itself, and only the 0600 file is missing
    assert h["reached"] is True, (h["reason"], r.stderr)
    assert "unavailable" in qemu_conf(out, h)


def test_become_user_other_than_root_installed_and_agentless(lab, become_users, shared_root, tmp_path):
    root = shared_root / "root"
    inventory = "\n".join([
        # nopw may become root only: sudo asks for a password for anyone else, and -n makes that an error
        line("hv-nobody", ADDR["inst"], become_users.nopw, root, ansible_become="1",
             ansible_become_user="nobody"),
        line("hv-agentless", ADDR["agentless"], become_users.nopw, root, ansible_become="on",
             ansible_become_user="nobody", vmaudit_mode="agentless"),
        ""])
    out = tmp_path / "fleet"
    collect(lab, out, inventory=inventory)
    hosts = hosts_of(json.loads((out / "fleet.json").read_text()))
    assert hosts["hv-nobody"]["stage"] == "become"
    assert "sudo -n -u nobody: sudo: a password is required" in hosts["hv-nobody"]["reason"]
    assert hosts["hv-agentless"]["stage"] == "become"
    assert "agentless collection can become root only" in hosts["hv-agentless"]["reason"]


def test_abandoned_escalated_run_ends_on_the_host_and_removes_its_directory(lab, become_users, shared_root,
                                                                           tmp_path):
    # a "python" that hangs, run by sudo as root: the remote timeout ends sudo, which passes the signal
    # on to the command; the EXIT trap then removes the directory
    marker = shared_root / "pyz-path"
    fake = shared_root / "hanging-python"
    fake.write_text(f"#!/bin/sh\nid -u > {marker}.uid\necho \"$1\" > {marker}\nexec sleep 300\n")
    fake.chmod(0o755)
    inventory = line("hv-b", ADDR["agentless"], become_users.nopw, shared_root / "root", ansible_become="yes",
                     vmaudit_mode="agentless", ansible_python_interpreter=str(fake)) + "\n"
    r = collect(lab, tmp_path / "o", "--command-timeout", "2", inventory=inventory)
    f = finding(json.loads((tmp_path / "o" / "fleet.json").read_text()), "F-HOST-UNREACHED", "host:hv-b")
    assert f["status"] == "error" and f["evidence"]["stage"] == "timeout", (f, r.stderr)
    assert Path(f"{marker}.uid").read_text().strip() == "0"
    remote_dir = Path(marker.read_text().strip()).parent
    assert remote_dir.name.startswith("vmaudit.")
    deadline = time.monotonic() + 30
    while remote_dir.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not remote_dir.exists(), "the abandoned escalated run kept going and left its directory"


def test_escalated_command_reaches_sudo_word_for_word(tmp_path):
    # the remote script, run by a real sh with a `sudo` that records its arguments: host variables are
    # data, never shell, and sudo gets the command by the path the SSH user's PATH gives
    import subprocess

    from vmaudit.fleet.collect import Settings, become_for, installed_script
    from vmaudit.fleet.hosts import FleetHost

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "argv.json"
    sudo = bin_dir / "sudo"
    sudo.write_text(f"#!/usr/bin/python3\nimport json, sys\nopen({str(log)!r}, 'w').write(json.dumps(sys.argv[1:]))\n")
    (bin_dir / "vmaudit").write_text("#!/bin/sh\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    evil = {"vmaudit_command": "vmaudit \"$(touch PWNED1)\" ';touch PWNED2'", "vmaudit_root": "/x'; touch PWNED3",
            "vmaudit_connect": "test:///default", "ansible_become": "yes", "ansible_become_user": "audit$"}
    host = FleetHost("h", evil)
    script = installed_script(host, Settings(), probe=True, become=become_for(host, Settings()))
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    r = subprocess.run(["/bin/sh", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert json.loads(log.read_text()) == [
        "-n", "-u", "audit$", "--", str(bin_dir / "vmaudit"), "$(touch PWNED1)", ";touch PWNED2",
        "facts", "-q", "--output", "-", "--connect", "test:///default", "--root", "/x'; touch PWNED3"]
    assert not list(tmp_path.glob("PWNED*"))

    # no sudo on the host: a reason, not "command not found" from somewhere in the middle
    sudo.unlink()
    r = subprocess.run(["/bin/sh", "-c", script], cwd=tmp_path, env={"PATH": str(bin_dir)}, capture_output=True,
                       timeout=30)
    from vmaudit.fleet.collect import NO_BECOME, _check_become
    from vmaudit.fleet.ssh import Completed, Unreached

    assert r.returncode == NO_BECOME
    with pytest.raises(Unreached, match="privilege escalation failed: sudo is not installed on the host") as err:
        _check_become(Completed(r.returncode, r.stdout, r.stderr), become_for(host, Settings()))
    assert err.value.stage == "become"


def test_sudo_and_doas_refusals_are_told_from_the_commands_own_failures():
    from vmaudit.fleet.collect import Become, _check_become
    from vmaudit.fleet.ssh import Completed, Unreached

    sudo, doas = Become("sudo", "root"), Become("doas", "root")
    for become, err in ((sudo, b"sudo: a password is required\n"),
                        (sudo, b"sudo: unable to resolve host hv01\nsudo: a password is required\n"),
                        (doas, b"doas: Authorization required\n"),
                        # `Defaults:audit !authenticate`: sudo 1.9 refuses without its "sudo:" prefix
                        (sudo, b"Sorry, user audit is not allowed to execute '/usr/bin/id' as root on hv01.\n"),
                        (sudo, b"audit is not allowed to run sudo on hv01.\n"),
                        (sudo, b"Sorry, user audit may not run sudo on hv01.\n"),
                        (sudo, b"audit is not in the sudoers file.\n"),
                        (doas, b"doas: Operation not permitted\n")):
        with pytest.raises(Unreached) as exc:
            _check_become(Completed(1, b"", err), become)
        assert exc.value.stage == "become"
        assert str(exc.value).startswith(f"privilege escalation failed: {become.method} -n -u root: ")
        assert err.decode().splitlines()[-1] in str(exc.value)
    assert "without a password" in str(pytest.raises(Unreached, _check_become,
                                                      Completed(1, b"", b"sudo: a password is required"), sudo).value)
    # vmaudit itself failing (after a harmless sudo warning), success, no become: not a become failure
    _check_become(Completed(1, b"", b"sudo: unable to resolve host hv01\nvmaudit: bad root\n"), sudo)
    _check_become(Completed(0, b"{}", b"sudo: unable to resolve host hv01\n"), sudo)
    _check_become(Completed(1, b"", b"sudo: a password is required\n"), None)
    _check_become(Completed(2, b"", b"sudo: a password is required\n"), sudo)


def test_bad_become_options_stop_the_run_before_any_connection(tmp_path):
    import subprocess

    from test_collect_ssh import VMAUDIT

    r = subprocess.run([VMAUDIT, "collect", "--hosts", "hv01", "--become", "--become-user", "root;id",
                        "--output", str(tmp_path / "o")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--become-user 'root;id' is not a user name" in r.stderr
    r = subprocess.run([VMAUDIT, "collect", "--hosts", "hv01", "--become-method", "su",
                        "--output", str(tmp_path / "o")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "invalid choice: 'su'" in r.stderr
    assert not (tmp_path / "o").exists()


@pytest.fixture
def silent_libvirt(shared_root):
    """A libvirt URI whose socket accepts connections and never answers: `vmaudit facts` hangs in
    virConnectOpen, as on a hung libvirtd, after the zipapp has unpacked its psutil."""
    import socket

    path = shared_root / "silent-libvirt.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(16)  # never accepted: the connection completes in the backlog and stays silent
    try:
        yield f"qemu+unix:///system?socket={path}"
    finally:
        sock.close()
        path.unlink(missing_ok=True)


def _dirs_of(uid: int) -> set[str]:
    return {d for d in glob.glob("/tmp/vmaudit.*") if os.path.isdir(d) and os.stat(d).st_uid == uid}


def test_strict_sudo_rule_collects_and_leaves_nothing_behind_when_killed(lab, become_users, shared_root,
                                                                          silent_libvirt, tmp_path):
    # the rule docs/fleet.md gives (python3 on the zipapp, nothing else, not even rm): the escalated
    # zipapp killed by the remote timeout after unpacking psutil must still leave no directory (and
    # nothing of root's) in /tmp, though only the SSH user can clean up
    import pwd

    strict = become_users.strict
    uid = pwd.getpwnam(strict).pw_uid
    root = shared_root / "root"
    before = _dirs_of(uid)
    inventory = "\n".join([
        line("hv-ok", ADDR["agentless"], strict, root, vmaudit_mode="agentless", vmaudit_python="/usr/bin/python3"),
        # sudo allows this user nothing but the zipapp: "Sorry, user ... is not allowed" is a refusal
        line("hv-inst", ADDR["inst"], strict, root),
        ""])
    out = tmp_path / "fleet"
    r = collect(lab, out, "--become", "--command-timeout", "60", inventory=inventory)
    hosts = hosts_of(json.loads((out / "fleet.json").read_text()))
    ok = hosts["hv-ok"]
    assert (ok["reached"], ok["mode"]) == (True, "agentless"), (ok["reason"], r.stderr)
    assert qemu_conf(out, ok)["values"]["user"] == "qemu"
    inst = hosts["hv-inst"]
    assert (inst["reached"], inst["stage"]) == (False, "become"), inst
    assert f"sudo -n -u root: Sorry, user {strict} is not allowed to execute" in inst["reason"], inst["reason"]

    hang = line("hv-hang", ADDR["agentless"], strict, root, vmaudit_mode="agentless",
                vmaudit_python="/usr/bin/python3", vmaudit_connect=silent_libvirt) + "\n"
    r = collect(lab, tmp_path / "o", "--become", "--command-timeout", "2", inventory=hang)
    h = hosts_of(json.loads((tmp_path / "o" / "fleet.json").read_text()))["hv-hang"]
    assert h["stage"] == "timeout", (h, r.stderr)
    deadline = time.monotonic() + 40  # the remote timeout ends sudo 2 + 5 s in, then the EXIT trap runs
    while _dirs_of(uid) - before and time.monotonic() < deadline:
        time.sleep(0.2)
    left = _dirs_of(uid) - before
    owners = {p: os.stat(p).st_uid for d in left for p in glob.glob(d + "/**", recursive=True)}
    assert not left, f"left behind on the host: {owners}"


def test_escalated_zipapp_unpacks_psutil_as_the_directory_owner(shared_root, silent_libvirt):
    # the zipapp run as root in another user's private directory: whatever it unpacks stays that
    # user's, so the user's `rm -rf` removes it even when root's run is killed (SIGKILL, no cleanup)
    import pwd
    import signal
    import subprocess

    from vmaudit.fleet.zipapp import build_zipapp

    if os.geteuid() != 0:
        pytest.skip("needs root")
    nobody = pwd.getpwnam("nobody")
    d = shared_root / "vmaudit.private"  # where its owner can reach it, as /tmp/vmaudit.XXXXXXXXXX
    d.mkdir(mode=0o700)
    pyz = d / "vmaudit.pyz"
    data = build_zipapp()
    pyz.write_bytes(data)
    os.chown(d, nobody.pw_uid, nobody.pw_gid)
    os.chown(pyz, nobody.pw_uid, nobody.pw_gid)
    if b"_native/manifest.json" not in data:
        pytest.skip("the local psutil is not an abi3 build: the zipapp ships none")
    proc = subprocess.Popen(["/usr/bin/python3", str(pyz), "facts", "-q", "--connect", silent_libvirt,
                             "--root", str(shared_root / "root")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        # unpacked and running: psutil is imported by the collectors only after the unpacking ended
        while not list(d.glob("native/psutil/*.so")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(1)
        assert proc.poll() is None, proc.stderr.read()
        assert list(d.glob("native/psutil/*.so"))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    found = [d / "native", *(d / "native").rglob("*")]
    assert {p.stat().st_uid for p in found} == {nobody.pw_uid}, [(str(p), p.stat().st_uid) for p in found]
    r = subprocess.run(["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups",
                        "rm", "-rf", str(d / "native")], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and not (d / "native").exists(), r.stderr

    # a run that ends by itself removes its copy, and still collected as root
    r = subprocess.run(["/usr/bin/python3", str(pyz), "facts", "-q", "--connect", "test:///default",
                        "--root", str(shared_root / "root")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert not (d / "native").exists()
    conf = json.loads(r.stdout)["sources"]["libvirt_config"]["qemu.conf"]
    assert conf["values"]["user"] == "qemu", conf
    shutil.rmtree(d)
