"""Run `vmaudit plan` as a user does (the CLI, in process) and verify what it returns with --check."""

from __future__ import annotations

import json
from pathlib import Path

from vmaudit.cli import main


def plan(fleet: Path, *extra: str, fmt: str = "json", policy: Path | None = None) -> tuple[int, object]:
    out = fleet.parent / f"{fleet.name}-plan.{fmt}"
    rc = main(["plan", str(fleet), "--policy", str(policy or fleet / "policy.toml"), "--format", fmt,
               "--output", str(out), *extra])
    if not out.exists():
        return rc, None
    text = out.read_text()
    return rc, json.loads(text) if fmt == "json" else text


def check(fleet: Path, plan_doc: dict, policy: Path | None = None) -> tuple[int, dict]:
    pfile = fleet.parent / f"{fleet.name}-checked.json"
    pfile.write_text(json.dumps(plan_doc))
    out = fleet.parent / f"{fleet.name}-check-result.json"
    rc = main(["plan", "--check", str(pfile), str(fleet), "--policy", str(policy or fleet / "policy.toml"),
               "--format", "json", "--output", str(out)])
    return rc, json.loads(out.read_text())


def plan_checked(fleet: Path, *extra: str, policy: Path | None = None) -> tuple[int, dict]:
    """The JSON plan, after --check has verified it (problems other than violations the plan itself
    reports as left fail the test)."""
    rc, doc = plan(fleet, *extra, policy=policy)
    assert doc is not None, rc
    crc, result = check(fleet, doc, policy)
    left = {(v["constraint"], v["message"]) for v in doc["violations_after"]}
    unexpected = [p for p in result["problems"] if (p["constraint"], p["message"]) not in left]
    assert not unexpected, unexpected
    assert crc == (1 if left else 0)
    return rc, doc


def moves(doc: dict) -> list[tuple[str, str, str]]:
    return [(m["guest"], m["from"], m["to"]) for m in doc["moves"]]
