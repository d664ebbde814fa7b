"""The pipeline every command shares: collect one snapshot -> evaluate checks -> one report.

    facts = collect_facts(root="/", uri="qemu:///system")
    report = build_report(facts, policy)
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import __version__, gcpolicy
from .engine import apply_waivers, evaluate, summarize
from .errors import RootError
from .facts import Facts, iter_markers, load_snapshot_file
from .policy import Policy

REPORT_SCHEMA = "vmaudit-report/1"


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


DEFAULT_URI = "qemu:///system"


def collect_facts(root: str = "/", uri: str | None = None, only: list[str] | None = None,
                  online: bool = False) -> dict:
    """Collect a snapshot of the host under `root`. Live facts only when root is '/'.

    `uri` None (no --connect): qemu:///system for the running host; for another root no libvirt at all
    (CONTRACT 1.1: the auditing host's guests are not the image's), its definitions are read from files.
    """
    from vmaudit.collectors import Context, collect

    root_path = Path(root)
    if not root_path.is_dir():
        raise RootError(f"{root}: --root is not a directory")
    live = root_path.resolve() == Path("/")
    if uri is None and live:
        uri = DEFAULT_URI
    ctx = Context(root=root_path.resolve(), uri=uri, live=live, online=online)
    with gcpolicy.paused():
        return collect(ctx, only=only)


def load_snapshot(path: str) -> dict:
    """Read a saved facts snapshot; SnapshotError (exit 2) with a one-line reason if it is not one.
    (Its sources are held to their schemas when it is evaluated: `Facts(data)`.)"""
    return load_snapshot_file(path)


def collector_errors(facts_data: dict) -> list[dict]:
    out = []
    for name, value in sorted(facts_data.get("sources", {}).items()):
        for path, kind, reason in iter_markers(value, name):
            if kind == "unavailable":
                out.append({"collector": path, "reason": reason})
    return out


def build_report(facts_data: dict, policy: Policy, started_at: str | None = None,
                 checks: Any = None) -> dict:
    """Evaluate a snapshot under a policy into the JSON report of CONTRACT.md."""
    started_at = started_at or facts_data.get("collected_at") or now_rfc3339()
    facts = Facts(facts_data)  # held to the facts contract: wrong types become markers
    with gcpolicy.paused():
        findings = evaluate(facts, policy, checks)
    expired = apply_waivers(findings, policy.waivers)
    host = facts.host
    report = {
        "schema": REPORT_SCHEMA,
        "tool": {"name": "vmaudit", "version": __version__},
        "host": {"hostname": host.get("hostname"), "zone": policy.zone,
                 "libvirt_uri": host.get("libvirt_uri"), "root": host.get("root", "/"),
                 "libvirt": facts.libvirt_state},
        "started_at": started_at,
        "finished_at": now_rfc3339(),
        "policy": {"source": policy.source, "sha256": policy.sha256},
        "summary": summarize(findings),
        "findings": findings,
        "collector_errors": collector_errors(facts.data),
    }
    if expired:
        report["expired_waivers"] = expired
    return report
