"""End to end: `vmaudit plan --format sh` from a fleet directory, checked by parsing the script (shlex)
and by running it with a stand-in `virsh` that records its arguments (a live migration between two
hypervisors cannot run on one test machine). Guest names are tenant data and must stay one word."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from fleetgen import G, H, write_fleet

NASTY = ["it's; rm -rf / #", "$(touch pwned)", "`id`", "a b\tc", "-rf", "x\u009b31m"]


def _fleet(tmp_path: Path) -> Path:
    guests = [G(n, zone="int", mem=512) for n in NASTY] + [G("cold", zone="int", running=False)]
    return write_fleet(tmp_path / "f", [H("hv-a.example", zone="dmz", group="g", guests=guests),
                                        H("hv-b.example", zone="int", group="g", ram=16384)], collect=False)


def _script(tmp_path: Path) -> tuple[str, Path]:
    f = _fleet(tmp_path)
    out = tmp_path / "plan.sh"
    rc = subprocess.run([sys.executable, "-m", "vmaudit", "plan", str(f), "--policy", str(f / "policy.toml"),
                         "--format", "sh", "--output", str(out)], capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr
    return out.read_text(), f


def test_sh_lines_parse_to_virsh_migrate(tmp_path):
    text, _ = _script(tmp_path)
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "set -eu"
    seen = {}
    for ln in lines[1:]:
        words = shlex.split(ln)
        assert words[:4] == ["virsh", "-c", "qemu+ssh://hv-a.example/system", "migrate"]
        assert words[-1] == "qemu+ssh://hv-b.example/system" and len(words) == 9
        seen[words[7]] = words[4:7]
    assert set(seen) == set(NASTY) | {"cold"}
    assert seen["cold"] == ["--offline", "--persistent", "--undefinesource"]
    assert all(seen[n] == ["--live", "--persistent", "--undefinesource"] for n in NASTY)


def test_sh_runs_each_name_as_one_argument(tmp_path):
    text, _ = _script(tmp_path)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "calls"
    fake = bindir / "virsh"
    fake.write_text(f"#!/bin/sh\nfor a in \"$@\"; do printf '%s\\0' \"$a\" >> {shlex.quote(str(log))}; done\n"
                    f"printf '\\n\\0' >> {shlex.quote(str(log))}\n")
    fake.chmod(0o755)
    script = tmp_path / "plan.sh"
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")
    subprocess.run(["sh", str(script)], check=True, cwd=tmp_path, env=env, timeout=30)
    calls = [c.strip("\0").split("\0") for c in log.read_text().split("\n\0") if c.strip("\0")]
    assert sorted(c[6] for c in calls) == sorted(NASTY + ["cold"])  # $@ has no argv[0]: c[6] is the guest
    assert not (tmp_path / "pwned").exists()
