"""Helpers for the M6/M7 tests: the shared fixture hosts' access and libvirt-config sources, collected
once per test session (tests get deep copies they may change) and audited under a policy."""

from __future__ import annotations

from functools import cache

from vmtest import audit, host_root, make_policy, with_sources

from vmaudit.audit import collect_facts

SOURCES = ["accounts", "sudoers", "polkit_rules", "sshd_config", "libvirt_sockets", "libvirt_config",
           "daemon_env", "systemd_units", "listeners", "libvirt_hooks"]


@cache
def _facts(name: str) -> dict:
    return collect_facts(root=str(host_root(name)), uri="test:///nonexistent-vmaudit-fixture", only=SOURCES)


def facts(name: str) -> dict:
    """A deep copy of the fixture host's snapshot (only the sources M6/M7 read)."""
    return with_sources(_facts(name))


def run(name_or_facts, policy: str = "") -> dict:
    snap = facts(name_or_facts) if isinstance(name_or_facts, str) else name_or_facts
    return audit(facts=snap, policy=make_policy(policy))


def tree(tmp_path, files: dict) -> str:
    """Write {absolute path: text} under tmp_path; return it as an audit root."""
    for path, text in files.items():
        p = tmp_path / path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return str(tmp_path)
