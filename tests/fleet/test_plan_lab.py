"""End to end: a fleet collected over SSH from the sshd lab (fixture hypervisors hv-a..hv-d behind
real OpenSSH servers, one host down) is planned with `vmaudit plan`, the plan verified with
`vmaudit plan --check`, and its `sh` form parsed.

hv-a (dmz) holds both members of redundancy group shop-fe; hv-b (internal) holds dmz-stray; hv-c and
hv-d hold api01 and api02 (redundancy group api); hv-d declares no zone. The only way out: one shop-fe
member to hv-d, which then has to give api02 to hv-b (hv-c already has api01: a host declaring no zone
serves one), and dmz-stray to a dmz host: 3 moves. hv-down, a peer, cannot be audited: the plan is partial (exit 3)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from sshlab import ADDR, PORT
from test_collect_ssh import collect, host_line

VMAUDIT = str(Path(sys.executable).parent / "vmaudit")


def test_plan_of_a_collected_fleet(lab, tmp_path):
    pytest.importorskip("ortools", reason="vmaudit[plan] not installed")
    inventory = "\n".join([
        "[all:vars]", f"ansible_port={PORT}", "ansible_user=root", "vmaudit_migration_group=ab", "",
        "[hv]",
        host_line("hv-a", ADDR["inst"], vmaudit_zone="dmz"),
        host_line("hv-b", ADDR["inst"], vmaudit_zone="internal"),
        host_line("hv-c", ADDR["inst"], vmaudit_zone="internal"),
        host_line("hv-d", ADDR["inst"]),
        host_line("hv-down", ADDR["down"]), ""])
    out = tmp_path / "fleet"
    r = collect(lab, out, "--no-html", inventory=inventory)
    assert (out / "fleet.json").exists(), r.stderr
    policy = tmp_path / "central.toml"
    policy.write_text("")
    plan_file = tmp_path / "plan.json"
    p = subprocess.run([VMAUDIT, "plan", str(out), "--policy", str(policy), "--format", "json", "--output",
                        str(plan_file)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 3, p.stderr
    plan = json.loads(plan_file.read_text())
    assert plan["status"] == "partial" and [u["host"] for u in plan["unaudited"]] == ["hv-down"]
    moves = [(m["guest"], m["from"], m["to"]) for m in plan["moves"]]
    assert len(moves) == 3 and not plan["violations_after"] and plan["proved_optimal"]
    assert ("api02", "hv-d", "hv-b") in moves
    assert {m[0] for m in moves} - {"api02"} in ({"dmz-stray", "web01"}, {"dmz-stray", "web02"})
    c = subprocess.run([VMAUDIT, "plan", "--check", str(plan_file), str(out), "--policy", str(policy)],
                       capture_output=True, text=True, timeout=120)
    assert c.returncode == 0, c.stdout + c.stderr
    sh = subprocess.run([VMAUDIT, "plan", str(out), "--policy", str(policy), "--format", "sh"],
                        capture_output=True, text=True, timeout=120)
    assert sh.returncode == 3
    lines = [shlex.split(ln) for ln in sh.stdout.splitlines() if ln.startswith("virsh ")]
    assert [(w[7], w[2], w[8]) for w in lines] == [
        (g, f"qemu+ssh://{ADDR['inst']}:{PORT}/system", f"qemu+ssh://{ADDR['inst']}:{PORT}/system") for g, _, _ in moves]
