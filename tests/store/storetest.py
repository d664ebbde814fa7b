"""Helpers of the fleet store tests: fleets of facts from the fixture hosts, running vmaudit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from vmaudit.audit import collect_facts

REPO = Path(__file__).resolve().parents[2]
FLEET = REPO / "tests" / "fixtures" / "fleet"
FIXTURE_HOSTS = ("hv-a", "hv-b", "hv-c", "hv-d")

# the fixture fleet of tests/fleet/test_fleet_checks.py: zones and migration groups
INVENTORY = """\
[dmz]
hv-a vmaudit_zone=dmz vmaudit_migration_group=mg-ab
[internal]
hv-b vmaudit_migration_group=mg-ab
hv-c vmaudit_migration_group=mg-cd
hv-d vmaudit_migration_group=mg-cd
[internal:vars]
vmaudit_zone=internal
"""

_FACTS: dict = {}


def fixture_facts(name: str) -> dict:
    """The facts of one fixture host, collected as `vmaudit facts` would (libvirt test driver)."""
    if name not in _FACTS:
        _FACTS[name] = collect_facts(root=str(FLEET / "roots" / name), uri=f"test://{FLEET}/{name}.xml")
    return json.loads(json.dumps(_FACTS[name]))


def write_fleet(directory: Path, count: int | None = None, collected_at: str | None = None) -> Path:
    """DIR/facts/<host>.json: the four fixture hosts, or `count` hosts h0000.. cycling through them."""
    facts_dir = directory / "facts"
    facts_dir.mkdir(parents=True, exist_ok=True)
    names = FIXTURE_HOSTS if count is None else [f"h{i:04d}" for i in range(count)]
    for i, name in enumerate(names):
        data = fixture_facts(FIXTURE_HOSTS[i % 4])
        if collected_at:
            data["collected_at"] = collected_at
        (facts_dir / f"{name}.json").write_text(json.dumps(data))
    return directory


def vmaudit(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vmaudit", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=str(REPO))
