"""M3-PENDING-UPDATES without network (collectors/package_indexes.py, checks/_packages.py).

The fixture hosts carry real APT files, taken from a Debian 12 machine on 2026-12-05: the
bookworm-security and bookworm-updates InRelease files as apt stored them, real stanzas of the
bookworm-security Packages index (uncompressed) and of bookworm-updates (gzip, as apt keeps it with
GzipIndexes), and real /var/lib/dpkg/status stanzas. debian-hardened's installed versions equal (or,
bsdutils, are newer than) what bookworm-security offers; debian-broken has apt 2.6.1, jq, libexpat1 and
libbrotli1 1.0.9-2+b6 (a binNMU, older than 1.0.9-2+deb12u1 by Debian rules) behind it.

The last test reads this machine's own lists (lz4-compressed by apt here) and holds the offline verdict to
apt's own simulation, so it does not depend on the machine being up to date.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from vmtest import REQUIRE_REAL, audit, host_root, make_root, one, with_sources

from vmaudit.audit import collect_facts
from vmaudit.checks._packages import pending_security
from vmaudit.collectors import Context
from vmaudit.collectors.package_indexes import collect_package_indexes, parse_release
from vmaudit.facts import unavailable

NOW = "2026-11-25T12:00:00Z"
NOW_TS = 1795608000
LISTS = "var/lib/apt/lists"


def facts_of(root, **overrides) -> dict:
    facts = collect_facts(root=str(root), uri="test:///nonexistent-vmaudit-fixture")
    facts["collected_at"] = NOW
    return with_sources(facts, **overrides) if overrides else facts


def aged(tmp_path, host: str, days: float):
    """A copy of a fixture host whose APT lists were fetched `days` before NOW."""
    root = make_root(tmp_path, host)
    for name in os.listdir(root / LISTS):
        os.utime(root / LISTS / name, (NOW_TS - days * 86400, NOW_TS - days * 86400))
    return root


def test_collector_reads_real_release_and_indexes():
    idx = collect_package_indexes(Context(root=host_root("debian-broken"), live=False))
    assert idx["manager"] == "dpkg" and idx["installed"] == 7
    sec = next(s for s in idx["suites"] if s["security"])
    assert (sec["suite"], sec["codename"], sec["label"]) == ("oldstable-security", "bookworm-security",
                                                            "Debian-Security")
    assert sec["indexes"] == ["deb.debian.org_debian-security_dists_bookworm-security_main_binary-amd64_Packages"]
    upd = next(s for s in idx["suites"] if not s["security"])
    assert upd["codename"] == "bookworm-updates" and upd["indexes"][0].endswith("_Packages.gz")
    assert idx["candidates"]["apt:amd64"] == {"installed": "2.6.1",
                                              "offered": [{"version": "2.6.2", "suite": "bookworm-security"}]}
    assert "7zip:amd64" not in idx["candidates"]  # not installed: not kept
    assert parse_release("Origin: Ubuntu\nLabel: Ubuntu\nSuite: jammy-security\n")["suite"] == "jammy-security"


def test_versions_compare_by_debian_rules():
    cands = {"a:amd64": {"installed": "1:2.38.1-5+deb12u3", "offered": [{"version": "1:2.38.1-5+deb12u1"}]},
             "b:amd64": {"installed": "1.0.9-2+b6", "offered": [{"version": "1.0.9-2+deb12u1"}]},
             "c:amd64": {"installed": "2.0~rc1-1", "offered": [{"version": "2.0-1"}, {"version": "2.0-1+deb12u1"}]},
             "d:all": {"installed": "1:1.0-1", "offered": [{"version": "9.9-1"}]}}  # an epoch wins
    assert [(p["package"], p["available"]) for p in pending_security(cands)] == [
        ("b:amd64", "1.0.9-2+deb12u1"), ("c:amd64", "2.0-1+deb12u1")]


def test_pending_offline_fail_pass(tmp_path):
    f = one(audit(facts=facts_of(aged(tmp_path / "b", "debian-broken", 1))), "M3-PENDING-UPDATES")
    assert f["status"] == "fail" and f["severity"] == "high"
    assert [p["package"] for p in f["evidence"]["security_updates"]] == [
        "apt:amd64", "jq:amd64", "libbrotli1:amd64", "libexpat1:amd64"]
    assert f["message"].startswith("4 security update(s) pending: apt, jq, libbrotli1, libexpat1")
    assert f["evidence"]["security_suites"] == ["bookworm-security"]
    p = one(audit(facts=facts_of(aged(tmp_path / "h", "debian-hardened", 1))), "M3-PENDING-UPDATES")
    assert p["status"] == "pass" and p["evidence"]["package_lists_age_days"] == 1.0
    assert p["evidence"]["count"] == 0 and p["evidence"]["source"] == "cached indexes (offline)"


def test_pending_offline_stale_lists_warn(tmp_path):
    root = aged(tmp_path, "debian-hardened", 10)
    w = one(audit(facts=facts_of(root)), "M3-PENDING-UPDATES")
    assert w["status"] == "warn" and w["severity"] == "medium" and "10.0 days old" in w["message"]
    assert one(audit(facts=facts_of(root), policy="[patch]\nlists_max_age_days = 14\n"),
               "M3-PENDING-UPDATES")["status"] == "pass"
    # stale lists that already show pending updates: those are known, and fail
    assert one(audit(facts=facts_of(aged(tmp_path / "b", "debian-broken", 30))),
               "M3-PENDING-UPDATES")["status"] == "fail"


def test_pending_offline_no_security_suite_warns(tmp_path):
    root = aged(tmp_path, "debian-hardened", 1)
    for name in os.listdir(root / LISTS):
        if "security" in name:
            os.unlink(root / LISTS / name)
    w = one(audit(facts=facts_of(root)), "M3-PENDING-UPDATES")
    assert w["status"] == "warn" and "no security suite" in w["message"]


def test_pending_offline_evidence_missing(tmp_path):
    root = make_root(tmp_path, "debian-hardened")
    shutil.rmtree(root / LISTS)
    e = one(audit(facts=facts_of(root)), "M3-PENDING-UPDATES")
    assert e["status"] == "error" and "no package index" in e["evidence"]["reason"]
    r = one(audit(facts=facts_of(host_root("rhel-hardened"))), "M3-PENDING-UPDATES")
    # the RHEL fixture host as committed has an empty rpmdb.sqlite (tests/checks/test_m3_pending_rpm.py)
    assert r["status"] == "error" and "not a readable rpm database" in r["evidence"]["reason"]
    m = one(audit(facts=facts_of(host_root("debian-hardened"),
                                 package_indexes=unavailable("cannot read /var/lib/dpkg/status: EACCES"))),
            "M3-PENDING-UPDATES")
    assert m["status"] == "error" and "EACCES" in m["evidence"]["reason"]
    # a security index that cannot be read: nothing can be said
    root2 = aged(tmp_path / "x", "debian-hardened", 1)
    sec = root2 / LISTS / "deb.debian.org_debian-security_dists_bookworm-security_main_binary-amd64_Packages"
    sec.rename(sec.with_name(sec.name + ".xz"))
    sec.with_name(sec.name + ".xz").write_bytes(b"not xz")
    u = one(audit(facts=facts_of(root2)), "M3-PENDING-UPDATES")
    assert u["status"] == "error" and "Packages.xz" in u["evidence"]["reason"]


def test_pending_offline_ignores_a_flat_repository(tmp_path):
    """A flat third-party repository ('deb http://repo.example/ ./') has no dists/ in its list names:
    it is listed as unmatched, and does not hide the verdict of the security suites."""
    root = aged(tmp_path, "debian-hardened", 1)
    (root / LISTS / "repo.example_._Packages").write_text("Package: example-agent\nVersion: 1.0\n\n")
    p = one(audit(facts=facts_of(root)), "M3-PENDING-UPDATES")
    assert p["status"] == "pass", p["message"]


APT_LISTS = "/var/lib/apt/lists"


@pytest.mark.skipif(not (os.path.isdir(APT_LISTS) and shutil.which("apt-get")) and not REQUIRE_REAL,
                    reason="this machine has no APT lists")
def test_pending_offline_on_this_machines_lists():
    """The collector parses this machine's real lists, and every update it calls pending is one apt's
    own simulation would install (apt-get -s takes no lock and changes nothing)."""
    idx = collect_package_indexes(Context())
    assert idx["manager"] == "dpkg" and idx["installed"] > 50
    security = [s for s in idx["suites"] if s["security"]]
    assert security and all(s["indexes"] for s in security), idx["suites"]
    assert not [u for u in idx["unreadable"] if any(u["file"] in s["indexes"] for s in security)]
    assert idx["candidates"], "installed packages always include some the security suite carries"
    pending = {p["package"].rsplit(":", 1)[0] for p in pending_security(idx["candidates"])}
    sim = subprocess.run(["apt-get", "-s", "-o", "Debug::NoLocking=1", "dist-upgrade"], capture_output=True,
                         text=True, timeout=300, check=True, env={"LC_ALL": "C", "PATH": os.environ["PATH"]})
    upgradable = set(re.findall(r"^Inst (\S+)", sim.stdout, re.M))
    held = set(re.findall(r"^\s+(\S+)", sim.stdout.split("kept back:")[1], re.M)) if "kept back:" in sim.stdout \
        else set()
    assert pending <= upgradable | held, sorted(pending - upgradable - held)
    facts = collect_facts(root="/", uri="test:///nonexistent-vmaudit-fixture",
                          only=["package_indexes", "pending_updates"])  # not --online: offline
    verdict = one(audit(facts=facts), "M3-PENDING-UPDATES")
    if pending:  # stale or not, known pending updates fail
        assert verdict["status"] == "fail"
        assert {p["package"].rsplit(":", 1)[0] for p in verdict["evidence"]["security_updates"]} <= pending
        assert verdict["evidence"]["count"] == len(pending_security(idx["candidates"]))
    else:
        assert verdict["status"] in ("pass", "warn"), verdict["message"]  # warn: lists older than 7 days
