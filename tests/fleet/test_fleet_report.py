"""The fleet report: worst-first ranking, the SQLite history and its trend, and an HTML page where
every string (host names, reasons, guest-derived messages) is data, never markup."""

from __future__ import annotations

import sqlite3

import pytest

from vmaudit.fleet.evaluate import fleet_report, rank_key
from vmaudit.fleet.html import render
from vmaudit.fleet.store import Store, StoreError
from vmaudit.policy import Policy

HOSTILE = '<img src=x onerror="alert(1)">'


def entry(name, reached=True, worst=None, fails=0, warns=0, reason=None):
    counts = {("fail", worst): fails} if worst else {}
    counts["warn"] = warns
    summary = {"pass": 1, "fail": fails, "warn": warns, "error": 0, "skip": 0, "waived": 0,
               "by_measure": {"M1": {"pass": 0, "fail": fails, "warn": warns, "error": 0, "skip": 0, "waived": 0}}}
    return {"name": name, "address": name, "port": None, "zone": "dmz", "migration_group": None,
            "migration_peers": [], "groups": [], "reached": reached, "reason": reason,
            "stage": None if reached else "connect", "mode": "installed" if reached else None, "seconds": 0.1,
            "hostname": name, "summary": summary if reached else None, "worst": worst, "_counts": counts,
            "report": f"hosts/{name}.json" if reached else None, "html": None, "facts": None}


def report(entries, findings=()):
    return fleet_report(list(entries), list(findings), Policy(), started_at="2026-01-01T00:00:00Z",
                        interrupted=False, inventory_source="inv.ini")


def test_hosts_worst_first():
    r = report([entry("ok"), entry("crit", worst="critical", fails=1), entry("down", reached=False, reason="refused"),
                entry("low", worst="low", fails=5), entry("warny", warns=3)])
    assert [h["name"] for h in r["hosts"]] == ["down", "crit", "low", "warny", "ok"]
    assert r["summary"]["hosts_failing"] == 2 and r["summary"]["unreached"] == 1
    assert all("_counts" not in h for h in r["hosts"])
    assert sorted([entry("b"), entry("a")], key=rank_key)[0]["name"] == "a"


def test_store_appends_runs_and_reports_the_trend(tmp_path):
    path = tmp_path / "h.sqlite"
    store = Store(path)
    store.append(report([entry("a", worst="high", fails=2), entry("b", reached=False, reason="down")]))
    store.append(report([entry("a")]))
    trend = store.trend()
    assert [(t["run"], t["hosts"], t["reached"], t["fail"]) for t in trend] == [(1, 2, 1, 2), (2, 1, 1, 0)]
    assert [h["reached"] for h in store.host_history("b")] == [0]
    store.close()
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE x (y)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="not a vmaudit fleet store"):
        Store(other)


def test_html_escapes_every_string_and_allows_no_script():
    finding = {"check_id": "F-DUPLICATE-GUEST", "measure": "F", "title": "t", "status": "fail", "severity": "high",
               "resource": f"uuid:{HOSTILE}", "message": f"guest {HOSTILE} is defined twice",
               "evidence": {"guest": HOSTILE}, "remediation": "r"}
    r = report([entry("hv-a"), entry("hv-b", reached=False, reason=f"banner {HOSTILE}")], [finding])
    r["trend"] = [{"run": 1, "started_at": "2026", "hosts": 2, "reached": 1, "hosts_failing": 0, "fail": 3,
                   "warn": 0, "error": 1, "fleet_fail": 1, "fleet_error": 0, "interrupted": 0}]
    page = render(r)
    assert HOSTILE not in page and "&lt;img src=x" in page
    assert "<script" not in page.lower()
    assert "default-src &#39;none&#39;" in page and "script-src" not in page
    assert 'href="hosts/hv-a.json"' in page and 'id="trend"' in page
