"""The JSON report is the same text with and without the optional orjson speed-up."""

from __future__ import annotations

import json

import pytest
from vmtest import audit, driver_uri

from vmaudit.report import json_report


@pytest.fixture(scope="module")
def report():
    r = audit("debian-broken", driver_uri("m3-broken"))
    # a host file name that is not UTF-8 (surrogate-escaped by Python), as os.listdir returns it
    r["findings"][0]["evidence"]["file"] = "/etc/sudoers.d/adm-caf\udce9"
    return r


def test_orjson_and_json_write_the_same_report(report, monkeypatch):
    pytest.importorskip("orjson")
    fast = json_report.render(report)
    monkeypatch.setattr(json_report, "orjson", None)
    assert json_report.render(report) == fast
    parsed = json.loads(fast)
    assert parsed["findings"][0]["evidence"]["file"] == "/etc/sudoers.d/adm-caf\udce9"
    finding_lines = [line for line in fast.splitlines() if line.lstrip().startswith('{"check_id"')]
    assert len(finding_lines) == len(report["findings"])  # one finding a line: reports diff cleanly
