"""`vmaudit collect` against real OpenSSH servers (the lab of conftest.py): one host with vmaudit
installed, one agentless (the zipapp runs with Debian's /usr/bin/python3 and python3-libvirt), one
whose command hangs, one down, one whose host key changed, one that never sends a banner, one with an
unknown key, and a bastion for ProxyJump. The remote facts are those of fixture hosts (test:/// URIs
and fixture roots given as inventory variables)."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sshlab import ADDR, FLEET, PORT

VMAUDIT = str(Path(sys.executable).parent / "vmaudit")


def host_line(name: str, addr: str, **extra: str) -> str:
    fixture = {"vmaudit_connect": f"test://{FLEET}/{name}.xml", "vmaudit_root": f"{FLEET}/roots/{name}"} \
        if (FLEET / f"{name}.xml").exists() else {}
    fixture.update(extra)
    return f"{name} ansible_host={addr} " + " ".join(f"{k}={v}" for k, v in fixture.items())


def collect(lab, out: Path, *args: str, inventory: str | None = None, timeout: float = 120,
            known_hosts: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [VMAUDIT, "collect", "--output", str(out), "--identity", str(lab.client_key), "--no-agent",
           "--known-hosts", str(known_hosts or lab.known_hosts), "--ssh-config", str(lab.ssh_config),
           "--connect-timeout", "3", "--command-timeout", "4", "--no-progress"]
    if inventory is not None:
        inv = out.parent / f"{out.name}.ini"
        inv.write_text(inventory)
        cmd += ["-i", str(inv)]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout)


def hosts_of(report: dict) -> dict:
    return {h["name"]: h for h in report["hosts"]}


def finding(report: dict, check_id: str, resource: str) -> dict:
    found = [f for f in report["findings"] if f["check_id"] == check_id and f["resource"] == resource]
    assert len(found) == 1, [(f["resource"], f["status"]) for f in report["findings"] if f["check_id"] == check_id]
    return found[0]


def test_fleet_report_shows_each_host(lab, silent_server, tmp_path):
    registry = tmp_path / "registry.csv"
    registry.write_text((FLEET / "registry.csv").read_text())
    policy = tmp_path / "central.toml"
    policy.write_text(f'[inventory]\npath = "{registry}"\n')
    inventory = "\n".join([
        "[all:vars]", f"ansible_port={PORT}", "ansible_user=root", "",
        "[dmz]", host_line("hv-a", ADDR["inst"], vmaudit_zone="dmz", vmaudit_migration_group="ab"),
        "[internal]",
        host_line("hv-b", ADDR["agentless"], vmaudit_python="/usr/bin/python3", vmaudit_migration_group="ab"),
        # vmaudit is installed there, but the inventory asks for the agentless way
        host_line("hv-c", ADDR["inst"], vmaudit_mode="agentless", vmaudit_python="/usr/bin/python3"),
        host_line("hv-hang", ADDR["hang"]), host_line("hv-down", ADDR["down"]),
        host_line("hv-changed", ADDR["changed"]), host_line("hv-silent", silent_server),
        "[internal:vars]", "vmaudit_zone=internal", ""])
    before = set(glob.glob("/tmp/vmaudit.*"))
    out = tmp_path / "fleet"
    r = collect(lab, out, "--policy", str(policy), inventory=inventory)
    assert r.returncode == 1, r.stderr       # hv-b mixes zones: a critical fail
    report = json.loads((out / "fleet.json").read_text())
    assert report["schema"] == "vmaudit-fleet/1" and report["interrupted"] is False
    hosts = hosts_of(report)

    a, b, c = hosts["hv-a"], hosts["hv-b"], hosts["hv-c"]
    assert (a["reached"], a["mode"], a["hostname"]) == (True, "installed", "hv-a")
    assert (b["reached"], b["mode"], b["hostname"]) == (True, "agentless", "hv-b")
    assert (c["reached"], c["mode"], c["hostname"]) == (True, "agentless", "hv-c")
    # the agentless run had the distribution's libvirt binding: the guests are there
    facts_b = json.loads((out / b["facts"]).read_text())
    assert sorted(d["name"] for d in facts_b["sources"]["libvirt"]["domains"]) == ["app01", "db01", "dmz-stray"]
    assert set(glob.glob("/tmp/vmaudit.*")) == before, "the agentless temporary directory was left behind"

    hang, down, changed, silent = hosts["hv-hang"], hosts["hv-down"], hosts["hv-changed"], hosts["hv-silent"]
    assert (hang["reached"], hang["stage"]) == (False, "timeout") and "command timeout" in hang["reason"]
    assert (down["reached"], down["stage"]) == (False, "connect") and "Connection refused" in down["reason"]
    assert (changed["reached"], changed["stage"]) == (False, "host-key") and "host key CHANGED" in changed["reason"]
    assert silent["reached"] is False and silent["stage"] in ("connect", "timeout")
    # worst first: the hosts not audited lead, then the audited ones by their failures
    order = [h["name"] for h in report["hosts"]]
    assert set(order[:4]) == {"hv-hang", "hv-down", "hv-changed", "hv-silent"}

    for name in ("hv-hang", "hv-down", "hv-changed", "hv-silent"):
        f = finding(report, "F-HOST-UNREACHED", f"host:{name}")
        assert f["status"] == "error" and f["evidence"]["reason"] == hosts[name]["reason"]
    assert finding(report, "F-HOST-UNREACHED", "host:hv-a")["status"] == "pass"
    assert finding(report, "F-ZONE-HOSTS", "host:hv-b")["status"] == "fail"
    assert finding(report, "F-DUPLICATE-GUEST", "uuid:f1ee7000-0000-4000-8000-000000000004")["status"] == "fail"
    assert finding(report, "F-MIGRATION-PARITY", "peers:hv-a,hv-b")["status"] == "fail"
    assert finding(report, "F-INVENTORY-MISSING", "guest:ghost01")["status"] == "warn"

    # per-host reports under the central policy, with the zone from the inventory
    rep_a = json.loads((out / a["report"]).read_text())
    assert rep_a["schema"] == "vmaudit-report/1" and rep_a["host"]["zone"] == "dmz"
    html = (out / "fleet.html").read_text()
    assert 'href="hosts/hv-a.json"' in html and "host key CHANGED" in html
    if a["html"]:
        assert (out / a["html"]).read_text().lstrip().lower().startswith("<!doctype html")
        assert f'href="{a["html"]}"' in html

    # the run is in the store; a second run shows the trend
    r2 = collect(lab, out, "--policy", str(policy), "--limit", "hv-a", inventory=inventory)
    assert r2.returncode in (0, 1, 3), r2.stderr
    trend = json.loads((out / "fleet.json").read_text())["trend"]
    assert [t["hosts"] for t in trend[-2:]] == [7, 1]


def test_unknown_host_key_refused_unless_accepted_changed_key_always_refused(lab, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(lab.known_hosts.read_text())
    args = ["--hosts", f"root@{ADDR['unknown']}:{PORT},root@{ADDR['changed']}:{PORT}", "--connect", "test:///default",
            "--root", str(FLEET / "roots" / "hv-d")]
    r = collect(lab, tmp_path / "o1", *args, known_hosts=known)
    hosts = hosts_of(json.loads((tmp_path / "o1" / "fleet.json").read_text()))
    assert r.returncode == 3, r.stderr
    assert hosts[ADDR["unknown"]]["stage"] == "host-key" and "not in known_hosts" in hosts[ADDR["unknown"]]["reason"]

    r = collect(lab, tmp_path / "o2", *args, "--accept-new-host-keys", known_hosts=known)
    hosts = hosts_of(json.loads((tmp_path / "o2" / "fleet.json").read_text()))
    assert hosts[ADDR["unknown"]]["reached"] is True, hosts[ADDR["unknown"]]["reason"]
    assert hosts[ADDR["changed"]]["stage"] == "host-key" and "CHANGED" in hosts[ADDR["changed"]]["reason"]
    pub = (lab.servers["unknown"].dir / "host_key.pub").read_text().split()[1]
    assert f"[{ADDR['unknown']}]:{PORT} ssh-ed25519 {pub}" in known.read_text()

    # recorded: the next run needs no flag
    r = collect(lab, tmp_path / "o3", "--hosts", f"root@{ADDR['unknown']}:{PORT}", "--connect", "test:///default",
                "--root", str(FLEET / "roots" / "hv-d"), known_hosts=known)
    assert hosts_of(json.loads((tmp_path / "o3" / "fleet.json").read_text()))[ADDR["unknown"]]["reached"] is True


def test_known_hosts_revoked_keys_refused_and_unparsable_lines_skipped(lab, tmp_path):
    # OpenSSH never accepts a key of a "@revoked" line; paramiko's HostKeys skips such lines
    line = next(x for x in lab.known_hosts.read_text().splitlines() if x.startswith(f"[{ADDR['inst']}]:"))
    _, ktype, blob = line.split()[:3]
    known = _write(tmp_path / "known_hosts", lab.known_hosts.read_text() + f"@revoked * {ktype} {blob}\n")
    r = collect(lab, tmp_path / "o", "--hosts", f"root@{ADDR['inst']}:{PORT}", "--connect", "test:///default",
                "--root", str(FLEET / "roots" / "hv-d"), known_hosts=known)
    host = hosts_of(json.loads((tmp_path / "o" / "fleet.json").read_text()))[ADDR["inst"]]
    assert (host["reached"], host["stage"]) == (False, "host-key"), (host, r.stderr)
    assert "@revoked" in host["reason"]

    # a line paramiko cannot parse (a CA line, a broken key) costs that line, not the rest of the file
    known.write_text(f"@cert-authority *.example.org {ktype} {blob}\n10.9.9.9 ssh-ed25519 AAAA-broken\n"
                     + lab.known_hosts.read_text())
    r = collect(lab, tmp_path / "o2", "--hosts", f"root@{ADDR['inst']}:{PORT}", "--connect", "test:///default",
                "--root", str(FLEET / "roots" / "hv-d"), known_hosts=known)
    host = hosts_of(json.loads((tmp_path / "o2" / "fleet.json").read_text()))[ADDR["inst"]]
    assert host["reached"] is True, (host["reason"], r.stderr)


def test_proxyjump_through_a_bastion(lab, tmp_path):
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host behind\n  HostName {ADDR['inst']}\n  Port {PORT}\n  User root\n"
                   f"  ProxyJump root@{ADDR['bastion']}:{PORT}\n"
                   f"Host blocked\n  HostName {ADDR['agentless']}\n  Port {PORT}\n  User root\n"
                   f"  ProxyJump root@{ADDR['bastion']}:{PORT}\n")
    inventory = (f"behind vmaudit_connect=test://{FLEET}/hv-d.xml vmaudit_root={FLEET}/roots/hv-d\n"
                 f"blocked vmaudit_connect=test://{FLEET}/hv-d.xml vmaudit_root={FLEET}/roots/hv-d\n")
    known = tmp_path / "known_hosts"
    known.write_text(lab.known_hosts.read_text())
    r = subprocess.run([VMAUDIT, "collect", "-i", str(_write(tmp_path / "inv.ini", inventory)), "--output",
                        str(tmp_path / "o"), "--identity", str(lab.client_key), "--no-agent", "--known-hosts",
                        str(known), "--ssh-config", str(cfg), "--connect-timeout", "3", "--no-progress"],
                       capture_output=True, text=True, timeout=120)
    hosts = hosts_of(json.loads((tmp_path / "o" / "fleet.json").read_text()))
    assert hosts["behind"]["reached"] is True, (hosts["behind"]["reason"], r.stderr)
    assert hosts["behind"]["hostname"] == "hv-d"
    # the bastion only forwards to the first host (PermitOpen): proof the jump is really used
    assert hosts["blocked"]["reached"] is False
    assert f"bastion root@{ADDR['bastion']}:{PORT} cannot reach {ADDR['agentless']}:{PORT}" in hosts["blocked"]["reason"]


def test_proxyjump_verifies_the_bastions_key_and_the_hosts_key(lab, tmp_path):
    cfg = _write(tmp_path / "ssh_config", f"Host behind\n  HostName {ADDR['inst']}\n  Port {PORT}\n  User root\n"
                                          f"  ProxyJump root@{ADDR['bastion']}:{PORT}\n")
    inventory = _write(tmp_path / "inv.ini", f"behind vmaudit_connect=test://{FLEET}/hv-d.xml "
                                             f"vmaudit_root={FLEET}/roots/hv-d\n")
    lines = lab.known_hosts.read_text().splitlines()
    for unknown, stage_in in ((ADDR["bastion"], "bastion"), (ADDR["inst"], "")):
        known = _write(tmp_path / f"known-{unknown}", "".join(f"{line}\n" for line in lines
                                                              if f"[{unknown}]:" not in line))
        r = subprocess.run([VMAUDIT, "collect", "-i", str(inventory), "--output", str(tmp_path / unknown),
                            "--identity", str(lab.client_key), "--no-agent", "--known-hosts", str(known),
                            "--ssh-config", str(cfg), "--connect-timeout", "3", "--no-progress"],
                           capture_output=True, text=True, timeout=120)
        host = hosts_of(json.loads((tmp_path / unknown / "fleet.json").read_text()))["behind"]
        assert (host["reached"], host["stage"]) == (False, "host-key"), (host, r.stderr)
        assert f"host key of [{unknown}]:{PORT} is not in known_hosts" in host["reason"]
        assert host["reason"].startswith("bastion") == bool(stage_in)


def test_hanging_host_holds_nobody_beyond_its_timeout_and_installed_mode_is_strict(lab, tmp_path):
    inventory = "\n".join([f"[all:vars]\nansible_port={PORT}\nansible_user=root",
                           "[x]", host_line("hv-hang", ADDR["hang"]), host_line("hv-a", ADDR["inst"]),
                           host_line("hv-b", ADDR["agentless"], vmaudit_mode="installed"), ""])
    r = collect(lab, tmp_path / "o", "-f", "1", inventory=inventory)   # one at a time, the hang first
    hosts = hosts_of(json.loads((tmp_path / "o" / "fleet.json").read_text()))
    assert hosts["hv-hang"]["stage"] == "timeout"
    assert hosts["hv-a"]["reached"] is True, (hosts["hv-a"]["reason"], r.stderr)
    assert hosts["hv-b"]["reached"] is False and "not installed" in hosts["hv-b"]["reason"]


@pytest.mark.parametrize("then", ["exec sleep 300", "sleep 4; kill -9 $$"])
def test_abandoned_agentless_run_ends_on_the_host_and_removes_its_directory(lab, tmp_path, then):
    # a "python" that hangs (as `vmaudit facts` does on a hung libvirtd): after the command timeout the
    # host is reported, and the remote side must not run on for ever with the zipapp's directory; nor
    # may the directory stay when the run is killed after we gave up (the shell's "Killed" then goes
    # to a closed channel)
    marker = tmp_path / "pyz-path"
    fake = _write(tmp_path / "hanging-python", f"#!/bin/sh\necho \"$1\" > {marker}\n{then}\n")
    fake.chmod(0o755)
    inventory = "\n".join([f"[all:vars]\nansible_port={PORT}\nansible_user=root", "[x]",
                           host_line("hv-b", ADDR["agentless"], vmaudit_mode="agentless",
                                     ansible_python_interpreter=str(fake)), ""])
    r = collect(lab, tmp_path / "o", "--command-timeout", "2", inventory=inventory)
    report = json.loads((tmp_path / "o" / "fleet.json").read_text())
    f = finding(report, "F-HOST-UNREACHED", "host:hv-b")
    assert f["status"] == "error" and f["evidence"]["stage"] == "timeout", (f, r.stderr)
    remote_dir = Path(marker.read_text().strip()).parent
    assert remote_dir.name.startswith("vmaudit.")
    deadline = time.monotonic() + 30
    while remote_dir.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not remote_dir.exists(), "the abandoned remote run kept going and left its directory"


def test_ansible_interpreter_discovery_keywords_mean_python3():
    from vmaudit.fleet.collect import remote_python
    from vmaudit.fleet.hosts import FleetHost

    for value in ("auto", "auto_silent", "auto_legacy", "auto_legacy_silent"):
        assert remote_python(FleetHost("h", {"ansible_python_interpreter": value})) == "python3"
    assert remote_python(FleetHost("h", {"ansible_python_interpreter": "/usr/libexec/platform-python"})) \
        == "/usr/libexec/platform-python"
    assert remote_python(FleetHost("h", {"ansible_python_interpreter": "auto",
                                         "vmaudit_python": "/opt/py/bin/python3"})) == "/opt/py/bin/python3"
    assert remote_python(FleetHost("h")) == "python3"


def test_ctrl_c_keeps_what_was_collected(lab, tmp_path):
    inventory = "\n".join([f"[all:vars]\nansible_port={PORT}\nansible_user=root",
                           "[x]", host_line("hv-a", ADDR["inst"]), host_line("hv-hang", ADDR["hang"]), ""])
    inv = _write(tmp_path / "inv.ini", inventory)
    out = tmp_path / "o"
    proc = subprocess.Popen([VMAUDIT, "collect", "-i", str(inv), "--output", str(out), "--identity",
                             str(lab.client_key), "--no-agent", "--known-hosts", str(lab.known_hosts),
                             "--ssh-config", str(lab.ssh_config), "--command-timeout", "100", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / "hosts" / "hv-a.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (out / "hosts" / "hv-a.json").exists(), "hv-a was never collected"
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    report = json.loads((out / "fleet.json").read_text())
    hosts = hosts_of(report)
    assert report["interrupted"] is True
    assert hosts["hv-a"]["reached"] is True
    assert hosts["hv-hang"]["stage"] == "interrupted"
    assert finding(report, "F-HOST-UNREACHED", "host:hv-hang")["status"] == "error"


def test_bad_inventory_exit_2_names_file_and_line(tmp_path):
    inv = _write(tmp_path / "bad.ini", "[dmz]\nhv01\nhv01\n")
    r = subprocess.run([VMAUDIT, "collect", "-i", str(inv), "--output", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert f"{inv}, line 3: host hv01 is listed twice" in r.stderr
    assert not (tmp_path / "o").exists()


def test_run_never_imports_paramiko():
    code = ("import sys, vmaudit.commands.run, vmaudit.engine as e, vmaudit.audit;"
            "from vmaudit.collectors import load_collectors; e.load_checks(); load_collectors();"
            "print('paramiko' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=os.environ)
    assert r.stdout.strip() == "False", r.stderr


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
