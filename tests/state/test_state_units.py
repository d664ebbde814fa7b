"""systemd/vmaudit.service and vmaudit.timer: linted by systemd-analyze, rated by its security
review, and the service's own ExecStart run against a fixture host."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from statehelp import FIXTURE, OK, REPO, VMAUDIT, rows
from vmtest import REQUIRE_REAL

UNITS = REPO / "systemd"
SERVICE, TIMER = UNITS / "vmaudit.service", UNITS / "vmaudit.timer"
DOC = REPO / "docs" / "hypervisor.md"


def analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        if REQUIRE_REAL:
            pytest.fail("systemd-analyze is required in CI")
        pytest.skip("systemd-analyze is not installed")
    return tool


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """{section: [(key, value), ...]} with systemd's comment and line-continuation rules."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections.setdefault(current, [])
            continue
        key, _, value = line.partition("=")
        sections[current].append((key.strip(), value.strip()))
    return sections


def values(unit: dict, section: str, key: str) -> list[str]:
    return [v for k, v in unit[section] if k == key]


def parse_environment_file(text: str) -> dict[str, str]:
    """KEY=value lines as systemd reads an EnvironmentFile (quotes removed, # comments)."""
    env = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        key, _, value = line.partition("=")
        env[key.strip()] = " ".join(shlex.split(value)) if value.strip() else ""
    return env


def expand_exec(command: str, env: dict[str, str]) -> list[str]:
    """systemd's ExecStart expansion: a word that is exactly $VAR splits into words (none if empty);
    ${VAR} inside a word is replaced as is."""
    argv: list[str] = []
    for word in shlex.split(command):
        m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if m:
            argv.extend(env.get(m.group(1), "").split())
            continue
        argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda x: env.get(x.group(1), ""), word))
    return argv


def test_units_pass_systemd_analyze_verify(tmp_path):
    tool = analyze()
    # An image root: systemd's own units, vmaudit installed where the unit expects it, our units.
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    exec_path = expand_exec(values(parse_unit(SERVICE), "Service", "ExecStart")[0], {})[0]
    target = root / exec_path.lstrip("/")
    target.parent.mkdir(parents=True)
    shutil.copy(VMAUDIT, target)
    (root / "etc/systemd/system").mkdir(parents=True)
    for unit in (SERVICE, TIMER):
        shutil.copy(unit, root / "etc/systemd/system" / unit.name)
    proc = subprocess.run([tool, "verify", f"--root={root}", "--man=no",
                           "/etc/systemd/system/vmaudit.service", "/etc/systemd/system/vmaudit.timer"],
                          capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")


def test_security_exposure_is_the_documented_level():
    tool = analyze()
    proc = subprocess.run([tool, "security", "--offline=yes", str(SERVICE)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"Overall exposure level for vmaudit\.service: (\d+\.\d) (\w+)", proc.stdout)
    assert m, proc.stdout[-500:]
    score, level = float(m.group(1)), m.group(2)
    assert level in ("OK", "SAFE", "PERFECT"), proc.stdout
    doc = re.search(r"exposure level\W*(\d+\.\d) (\w+)", DOC.read_text())
    assert doc and doc.group(2) == level and abs(float(doc.group(1)) - score) <= 0.3, (doc, score, level)
    # the README's hypervisor section, where it states the level, must agree too
    for m in re.finditer(r"exposure level\W*(\d+\.\d) (\w+)", (REPO / "README.md").read_text()):
        assert m.group(2) == level and abs(float(m.group(1)) - score) <= 0.3, (m.group(0), score, level)


def test_service_sandbox_keeps_what_the_audit_needs():
    unit = parse_unit(SERVICE)
    svc = dict(unit["Service"])
    assert svc["Type"] == "oneshot" and svc["StateDirectory"] == "vmaudit"
    assert svc["ProtectSystem"] == "strict" and svc["NoNewPrivileges"] == "yes"
    # libvirt's read-only socket is AF_UNIX; /proc/net must be the host's (listening sockets)
    assert svc["RestrictAddressFamilies"].split() == ["AF_UNIX"] and "PrivateNetwork" not in svc
    assert svc["ProtectProc"] == "default" and svc["ProcSubset"] == "all"
    assert set(svc["CapabilityBoundingSet"].split()) == {"CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE"}
    assert "ProtectKernelModules" not in svc  # it would hide /usr/lib/modules (installed kernels)
    assert svc["Nice"] == "19" and svc["IOSchedulingClass"] == "idle"
    assert set(svc["SuccessExitStatus"].split()) == {"1", "3"}  # findings are results; 2, 4, 5 fail the unit
    timer = dict(parse_unit(TIMER)["Timer"])
    assert timer["Persistent"] == "yes" and timer["RandomizedDelaySec"] and timer["OnCalendar"]
    assert values(parse_unit(TIMER), "Install", "WantedBy") == ["timers.target"]


def test_execstart_runs_against_a_fixture_host(tmp_path):
    unit = parse_unit(SERVICE)
    env_files = values(unit, "Service", "EnvironmentFile")
    assert "-/etc/default/vmaudit" in env_files and "-/etc/sysconfig/vmaudit" in env_files
    [command] = values(unit, "Service", "ExecStart")
    # The shipped example environment file, then the test's own through the same mechanism.
    env = parse_environment_file((UNITS / "vmaudit.default").read_text())
    assert env == {"VMAUDIT_ARGS": ""}
    assert expand_exec(command, {**env, "STATE_DIRECTORY": "/var/lib/vmaudit"})[1:] == [
        "run", "--state-dir", "/var/lib/vmaudit"]
    state = tmp_path / "state"
    env_file = tmp_path / "vmaudit.env"
    env_file.write_text(f'VMAUDIT_ARGS="{" ".join(FIXTURE)} --fail-on high"\n')
    env = {**parse_environment_file(env_file.read_text()), "STATE_DIRECTORY": str(state)}
    argv = expand_exec(command, env)
    assert os.path.isabs(argv[0]) and Path(argv[0]).name == "vmaudit"
    argv[0] = VMAUDIT  # the unit's installed path, here the test environment's
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode in OK, proc.stderr
    assert proc.stdout == "" and " run 1 of " in proc.stderr
    report = json.loads((state / "latest.json").read_text())
    assert report["host"]["root"] == FIXTURE[1] and report["host"]["libvirt_uri"] == FIXTURE[3]
    assert (state / "latest.html").stat().st_size > 0
    [row] = rows(state)
    assert row[3] == proc.returncode and row[-1] == len(report["findings"])
