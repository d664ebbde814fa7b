"""M3-PENDING-UPDATES offline on RHEL/Fedora: the installed rpms against the dnf cache's security advisories
(collectors/_rpm_cache.py, checks/_packages.py). The rpm database and the repodata are made by the real
tools at test time (tests/rpmcache.py): a rpmdb.sqlite written by rpm, repodata by createrepo_c, updateinfo
added by modifyrepo_c."""

from __future__ import annotations

import lzma
import os
import shutil
import subprocess

import pytest
import rpmcache
from rpmcache import Advisory, Pkg, Repo
from vmtest import REQUIRE_REAL, audit, make_root, one, with_sources

from vmaudit.audit import collect_facts
from vmaudit.collectors import Context
from vmaudit.collectors.package_indexes import collect_package_indexes
from vmaudit.facts import unavailable

pytestmark = pytest.mark.skipif(not rpmcache.have_tools() and not REQUIRE_REAL,
                                reason="rpm/rpmbuild/createrepo_c (scripts/install-deps.sh --test)")

NOW = "2026-11-25T12:00:00Z"
NOW_TS = 1795608000
DAY = 86400

SSL_OLD = Pkg("openssl-libs", "3.0.7", "24.el9", epoch=1)
SSL_FIX = Pkg("openssl-libs", "3.0.7", "27.el9", epoch=1)
SSL_NOT_CARRIED = Pkg("openssl-libs", "3.0.7", "28.el9", epoch=1)  # in an advisory, not in the repository
KERNEL_OLD = Pkg("kernel-core", "5.14.0", "362.8.1.el9_3")
KERNEL_NEW = Pkg("kernel-core", "5.14.0", "427.13.1.el9_4")
GLIBC_OLD = Pkg("glibc", "2.34", "100.el9")
GLIBC_FIX = Pkg("glibc", "2.34", "100.el9_4.2")  # newer by rpm's rules: '100.el9' is a prefix
BASH_OLD = Pkg("bash", "5.1.8", "9.el9")
BASH_BUGFIX = Pkg("bash", "5.1.8", "9.el9_5")
TZ_OLD = Pkg("tzdata", "2024a", "1.el9", arch="noarch")
TZ_NEW = Pkg("tzdata", "2024b", "1.el9", arch="noarch")
SUDO_I686 = Pkg("sudo", "1.9.5p2", "10.el9_3", arch="i686")  # not installed in that arch

INSTALLED = [SSL_OLD, KERNEL_OLD, KERNEL_NEW, GLIBC_OLD, BASH_OLD, TZ_OLD]
BASEOS = "rhel-9-for-x86_64-baseos-rpms"
ADVISORIES = [Advisory("RHSA-2024:2447", [SSL_FIX], severity="Moderate"),
              Advisory("RHSA-2024:9999", [SSL_NOT_CARRIED]),
              Advisory("RHSA-2024:2394", [KERNEL_NEW]),
              Advisory("RHSA-2024:3339", [GLIBC_FIX], severity="Important"),
              Advisory("RHSA-2024:1111", [SUDO_I686]),
              Advisory("RHBA-2024:5000", [BASH_BUGFIX], type="bugfix"),
              Advisory("RHEA-2024:6000", [TZ_NEW], type="enhancement")]
REPO_PKGS = [SSL_OLD, SSL_FIX, KERNEL_NEW, GLIBC_FIX, BASH_BUGFIX, TZ_NEW, SUDO_I686]


def host(tmp_path, installed=INSTALLED, advisories=ADVISORIES, packages=REPO_PKGS, age_days=1.0,
         cache_dir="var/cache/dnf", compress="gz"):
    root = make_root(tmp_path, "rhel-hardened")
    rpmcache.install(root, installed)
    rpmcache.cache(root, Repo(BASEOS, packages, advisories, compress), cache_dir, NOW_TS - age_days * DAY)
    return root


def verdict(root, policy=None, **overrides):
    facts = collect_facts(root=str(root), uri="test:///nonexistent-vmaudit-fixture",
                          only=["package_indexes", "pending_updates", "package_history"])
    facts["collected_at"] = NOW
    if overrides:
        facts = with_sources(facts, **overrides)
    return one(audit(facts=facts, policy=policy), "M3-PENDING-UPDATES")


def tree(root) -> dict:
    return {os.path.join(d, n): os.lstat(os.path.join(d, n)).st_mtime_ns
            for d, dirs, files in os.walk(root) for n in dirs + files}


def test_collector_reads_real_rpmdb_and_repodata(tmp_path):
    root = host(tmp_path)
    before = tree(root)
    idx = collect_package_indexes(Context(root=root, live=False))
    assert tree(root) == before  # the database was queried from a private copy: no -shm/-wal in the root
    assert idx["manager"] == "rpm" and idx["installed"] == 6
    assert idx["installed_from"] == "rpm --dbpath <copy of /var/lib/rpm/rpmdb.sqlite>"
    (repo,) = idx["repos"]
    assert repo["repo"] == BASEOS and repo["security_advisories"] == 5
    assert repo["updateinfo"].endswith("-updateinfo.xml.gz") and repo["primary"].endswith("-primary.xml.gz")
    assert idx["rpm_candidates"]["openssl-libs.x86_64"] == {
        "installed": ["1:3.0.7-24.el9"],
        "offered": [{"version": "1:3.0.7-27.el9", "repo": BASEOS, "advisory": "RHSA-2024:2447",
                     "severity": "Moderate"}]}  # RHSA-2024:9999's package is not in the repository
    assert sorted(idx["rpm_candidates"]["kernel-core.x86_64"]["installed"]) == [
        "0:5.14.0-362.8.1.el9_3", "0:5.14.0-427.13.1.el9_4"]
    assert "bash.x86_64" not in idx["rpm_candidates"] and "tzdata.noarch" not in idx["rpm_candidates"]
    assert "sudo.i686" not in idx["rpm_candidates"]


def test_pending_rpm_fail_names_packages_and_advisories(tmp_path):
    f = verdict(host(tmp_path))
    assert f["status"] == "fail" and f["severity"] == "high"
    assert f["message"] == "2 security update(s) pending: glibc, openssl-libs"
    assert [(p["package"], p["installed"], p["available"], p["advisory"]) for p in f["evidence"]["security_updates"]] \
        == [("glibc.x86_64", "0:2.34-100.el9", "0:2.34-100.el9_4.2", "RHSA-2024:3339"),
            ("openssl-libs.x86_64", "1:3.0.7-24.el9", "1:3.0.7-27.el9", "RHSA-2024:2447")]
    assert f["evidence"]["security_repos"] == [BASEOS] and f["evidence"]["source"] == "dnf cache (offline)"


def test_pending_rpm_pass_when_fixed_versions_installed(tmp_path):
    p = verdict(host(tmp_path, installed=[SSL_FIX, KERNEL_NEW, GLIBC_FIX, BASH_OLD, TZ_OLD]))
    assert p["status"] == "pass", p["message"]
    assert p["evidence"]["count"] == 0 and p["evidence"]["package_lists_age_days"] == 1.0


def test_pending_rpm_dnf5_cache_xz_updateinfo(tmp_path):
    root = host(tmp_path, cache_dir="var/cache/libdnf5", compress="xz")
    f = verdict(root)
    assert f["status"] == "fail" and f["evidence"]["count"] == 2


@pytest.mark.skipif(not shutil.which("zstd") and not REQUIRE_REAL, reason="no zstd binary")
def test_pending_rpm_zstd_updateinfo(tmp_path):
    """Fedora's repositories compress updateinfo with zstd, which Debian's createrepo_c 0.17 cannot write:
    the xz file modifyrepo_c wrote is recompressed by the zstd binary and repomd.xml's href renamed."""
    root = host(tmp_path, compress="xz")
    repodata = next((root / "var/cache/dnf").glob("*/repodata"))
    (info,) = [n for n in os.listdir(repodata) if "updateinfo" in n]
    xml = lzma.decompress((repodata / info).read_bytes())
    zst = info.replace(".xz", ".zst")
    (repodata / zst).write_bytes(subprocess.run(["zstd", "-q", "-c"], input=xml, capture_output=True,
                                                check=True).stdout)
    (repodata / info).unlink()
    md = repodata / "repomd.xml"
    md.write_text(md.read_text().replace(info, zst))
    assert verdict(root)["evidence"]["count"] == 2


def test_pending_rpm_stale_cache_warns(tmp_path):
    root = host(tmp_path, installed=[SSL_FIX, GLIBC_FIX, BASH_OLD], age_days=10)
    w = verdict(root)
    assert w["status"] == "warn" and w["severity"] == "medium" and "10.0 days old" in w["message"]
    assert verdict(root, policy="[patch]\nlists_max_age_days = 14\n")["status"] == "pass"
    # a stale cache that already shows pending updates: those are known, and fail
    assert verdict(host(tmp_path / "b", age_days=30))["status"] == "fail"


def test_pending_rpm_no_updateinfo_warns(tmp_path):
    w = verdict(host(tmp_path, advisories=[]))
    assert w["status"] == "warn" and "updateinfo" in w["message"]


def test_pending_rpm_evidence_missing(tmp_path):
    # the fixture host as committed: an empty rpmdb.sqlite placeholder and no dnf cache
    e = verdict(make_root(tmp_path / "a", "rhel-hardened"))
    assert e["status"] == "error" and "rpmdb.sqlite: not a readable rpm database (no such table: Packages)" \
        in e["evidence"]["reason"]
    root = make_root(tmp_path / "b", "rhel-hardened")
    rpmcache.install(root, INSTALLED)
    e = verdict(root)
    assert e["status"] == "error" and "no repository metadata in the dnf cache" in e["evidence"]["reason"]
    # an updateinfo that cannot be read: nothing can be said
    repodata = rpmcache.cache(root, Repo(BASEOS, REPO_PKGS, ADVISORIES), mtime=NOW_TS - DAY)
    (info,) = [n for n in os.listdir(repodata) if "updateinfo" in n]
    (repodata / info).write_bytes(b"not gzip")
    u = verdict(root)
    assert u["status"] == "error" and "updateinfo.xml.gz" in u["evidence"]["reason"]
    m = verdict(host(tmp_path / "c"), package_indexes=unavailable("installed rpms: rpm -qa exited 1"))
    assert m["status"] == "error" and "rpm -qa exited 1" in m["evidence"]["reason"]


def test_pending_rpm_legacy_berkeley_db_is_said(tmp_path):
    root = make_root(tmp_path, "rhel-hardened")
    (root / "var/lib/rpm/rpmdb.sqlite").unlink()
    (root / "var/lib/rpm/Packages").write_bytes(b"\0" * 64)
    e = verdict(root)
    assert e["status"] == "error" and "Berkeley DB" in e["evidence"]["reason"]


def test_pending_rpm_unexpected_href_is_not_followed(tmp_path):
    root = host(tmp_path)
    md = next((root / "var/cache/dnf").glob("*/repodata/repomd.xml"))
    md.write_text(md.read_text().replace('href="repodata/', 'href="repodata/../../../../../etc/', 1))
    e = verdict(root)
    assert e["status"] == "error" and "primary outside repodata/" in e["evidence"]["reason"]



def test_pending_rpm_marker_or_wrong_type_is_never_pass(tmp_path):
    """A marker or a value of the wrong type where a version or a repository belongs: error, never pass."""
    root = host(tmp_path, installed=[SSL_OLD])
    idx = collect_package_indexes(Context(root=root, live=False))
    entry = idx["rpm_candidates"]["openssl-libs.x86_64"]
    cases = [{**idx, "rpm_candidates": {"openssl-libs.x86_64": {**entry, where: value}}}
             for where, value in (("installed", unavailable("cut")), ("installed", ["3.0.7"]), ("installed", []),
                                  ("offered", [{"version": 3, "repo": BASEOS, "advisory": "A", "severity": ""}]),
                                  ("offered", [unavailable("cut")]))]
    cases += [{**idx, "repos": [unavailable("cut")]}, {**idx, "repos": unavailable("cut")}]
    for bad in cases:
        f = verdict(root, package_indexes=bad)
        assert f["status"] == "error", (bad, f["message"])
