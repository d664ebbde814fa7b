"""Property of the facts contract, by an exhaustive walk: in the snapshots of the fixture hosts, replace
each value in turn by a marker and by a value of the wrong type. No finding that was fail, warn or error
may become pass, and no check may crash (engine's "internal error in check").

Every path in CI (CI=true; about 10,000 evaluations plus the not_collected walk of the two broken hosts,
a minute or two on 2 cores); a random sample of
SAMPLE paths per snapshot otherwise (VMAUDIT_PROPERTY_SEED=<n> replays one; the seed is in the failure).
"""

from __future__ import annotations

import functools
import json
import os
import random

import pytest
from vmtest import REQUIRE_REAL, host_root, test_uri

from vmaudit.audit import collect_facts
from vmaudit.engine import INTERNAL_ERROR, evaluate, load_checks
from vmaudit.facts import Facts
from vmaudit.policy import Policy

SNAPSHOTS = [("debian-hardened", "m3-hardened"), ("debian-broken", "m3-broken"), ("rhel-hardened", "hardened"),
             ("rhel-broken", "m2-broken"), ("empty", "guests-mixed")]
SAMPLE = 60
EVERY_PATH = os.environ.get("CI") == "true" or REQUIRE_REAL
MARKER = {"unavailable": "property test"}


def wrong_type(value):
    """A value no schema position that held `value` accepts: a list never takes a table, a table or a
    scalar never takes a list of lists."""
    return {"wrong": [[True]]} if isinstance(value, list) else [[{"wrong": True}]]


def paths(value, path=()):
    yield path
    if isinstance(value, dict) and not (len(value) == 1 and ("unavailable" in value or "not_collected" in value)):
        for k, v in value.items():
            yield from paths(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths(v, path + (i,))


@functools.cache
def _snapshot(host: str, node: str) -> str:
    return json.dumps(collect_facts(root=str(host_root(host)), uri=test_uri(node)))


def verdicts(facts: dict, checks: dict) -> dict:
    out: dict = {}
    findings = evaluate(Facts(facts), Policy(), checks)
    json.dumps(findings)  # what every report format does: evidence must serialise
    for f in findings:
        assert not f["message"].startswith(INTERNAL_ERROR), f"{f['check_id']} crashed: {f['message']}"
        out.setdefault((f["check_id"], f["resource"]), set()).add(f["status"])
    return out


@pytest.mark.parametrize("host,node", SNAPSHOTS)
def test_no_marker_or_wrong_type_turns_a_verdict_into_pass(host, node):
    checks = load_checks()
    facts = json.loads(_snapshot(host, node))
    original = verdicts(facts, checks)
    every = [p for p in paths(facts["sources"]) if p]
    seed = int(os.environ.get("VMAUDIT_PROPERTY_SEED") or random.randrange(1 << 30))
    chosen = every if EVERY_PATH else random.Random(seed).sample(every, min(SAMPLE, len(every)))
    problems = []
    for path in chosen:
        parent = facts["sources"]
        for key in path[:-1]:
            parent = parent[key]
        kept = parent[path[-1]]
        for replacement in (MARKER, wrong_type(kept)):
            parent[path[-1]] = replacement
            try:
                now = verdicts(facts, checks)
            except AssertionError as exc:
                problems.append(f"{'.'.join(map(str, path))} = {json.dumps(replacement)}: {exc}")
                continue
            finally:
                parent[path[-1]] = kept
            for key, before in original.items():
                after = now.get(key, set())
                if "pass" in after and "pass" not in before:
                    problems.append(f"{'.'.join(map(str, path))} = {json.dumps(replacement)}: {key[0]} on "
                                    f"{key[1]} went from {sorted(before)} to {sorted(after)}")
    assert not problems, f"seed {seed}, {len(problems)} problem(s):\n" + "\n".join(problems[:40])


SKIP_MARKER = {"not_collected": "property test"}


@pytest.mark.parametrize("host,node", [s for s in SNAPSHOTS if "broken" in s[0]])
def test_no_not_collected_marker_turns_a_live_verdict_into_pass_or_skip(host, node):
    """The same walk with a `not_collected` marker in a live snapshot: a skip does not count against
    the exit status, so no fail, warn or error may become a skip (or a pass) because a value says
    "does not apply" where no collector ever records that."""
    checks = load_checks()
    facts = json.loads(_snapshot(host, node))
    facts["host"].update(live=True, root="/")  # as `vmaudit facts` writes it on the host itself
    original = verdicts(facts, checks)
    every = [p for p in paths(facts["sources"]) if p]
    seed = int(os.environ.get("VMAUDIT_PROPERTY_SEED") or random.randrange(1 << 30))
    chosen = every if EVERY_PATH else random.Random(seed).sample(every, min(SAMPLE, len(every)))
    problems = []
    for path in chosen:
        parent = facts["sources"]
        for key in path[:-1]:
            parent = parent[key]
        kept = parent[path[-1]]
        parent[path[-1]] = SKIP_MARKER
        try:
            now = verdicts(facts, checks)
        except AssertionError as exc:
            problems.append(f"{'.'.join(map(str, path))}: {exc}")
            continue
        finally:
            parent[path[-1]] = kept
        for key, before in original.items():
            after = now.get(key, set())
            if before - {"pass", "skip"} and not before & {"pass", "skip"} and after & {"pass", "skip"}:
                problems.append(f"{'.'.join(map(str, path))}: {key[0]} on {key[1]} went from "
                                f"{sorted(before)} to {sorted(after)}")
    assert not problems, f"seed {seed}, {len(problems)} problem(s):\n" + "\n".join(problems[:40])
