"""checks/_cache.py: what every guest's check derives from the snapshot the same way is computed once
per Facts; missing evidence is never remembered, so each guest's check still says `error`."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import weakref
from pathlib import Path

import pytest

from vmaudit.checks._cache import per_snapshot
from vmaudit.checks._qemu import qemu_conf
from vmaudit.engine import evaluate
from vmaudit.facts import EvidenceMissing, Facts, unavailable
from vmaudit.policy import Policy

ROOT = Path(__file__).resolve().parents[2]


def snapshot(**sources) -> dict:
    out = subprocess.run([sys.executable, "-m", "vmaudit", "facts", "-q", "--connect",
                          f"test://{ROOT}/tests/fixtures/libvirt/core.xml", "--root",
                          str(ROOT / "tests/fixtures/hosts/debian-broken"), "--output", "-"],
                         capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    data["sources"].update(sources)
    return data


def test_a_value_is_computed_once_per_facts():
    calls = []

    def derive(facts):
        calls.append(facts)
        return len(calls)

    one, two = Facts(snapshot()), Facts(snapshot())
    assert [per_snapshot(one, derive), per_snapshot(one, derive), per_snapshot(two, derive)] == [1, 1, 2]


def test_missing_evidence_raises_on_every_call():
    calls = []

    def derive(facts):
        calls.append(facts)
        raise EvidenceMissing("not there")

    facts = Facts(snapshot())
    for _ in range(3):
        with pytest.raises(EvidenceMissing):
            per_snapshot(facts, derive)
    assert len(calls) == 3


def test_qemu_conf_marker_raises_for_every_guest():
    facts = Facts(snapshot(libvirt_config={"qemu.conf": unavailable("permission denied")}))
    for _ in range(2):
        with pytest.raises(EvidenceMissing, match="permission denied"):
            qemu_conf(facts)


def test_the_cache_does_not_keep_a_snapshot_alive():
    facts = Facts(snapshot())
    assert evaluate(facts, Policy())  # every check ran, the per-snapshot values are filled
    ref = weakref.ref(facts)
    del facts
    gc.collect()
    assert ref() is None
