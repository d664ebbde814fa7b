"""RHEL/Fedora half of the package_indexes source: the installed rpms against the security advisories of
the dnf cache, read offline (standard library only, plus the auditing host's `rpm` and `zstd` binaries).

Installed packages: live, `rpm -qa` (a read-only query of the host's own database, as rpm/dnf run it);
under --root, the audited root's rpmdb.sqlite (RHEL 9, Fedora; /var/lib/rpm or /usr/lib/sysimage/rpm)
is copied to a private temporary directory and queried there with `rpm --dbpath`, because sqlite in WAL
mode creates -shm/-wal files next to a database it opens, which would change the audited image. A
Berkeley DB / ndb database (RHEL 8 and older) is not read: the source says so.

Cache: every `<repoid>-<hash>/repodata/repomd.xml` under /var/cache/dnf (dnf4) and /var/cache/libdnf5
(dnf5) names its primary (the packages the repository offers) and updateinfo (its advisories);
compressed .gz/.bz2/.xz by the standard library, .zst by the `zstd` binary. A pending security update
is an advisory of type="security" listing a package that the repository's primary carries, of the same
name and arch as an installed package: the check compares the versions (rpmvercmp)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import shutil
import sqlite3
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from typing import Any

from vmaudit.facts import unavailable

from . import Context

RPM_DBS = ("/var/lib/rpm", "/usr/lib/sysimage/rpm")
DNF_CACHES = ("/var/cache/dnf", "/var/cache/libdnf5")
RPM_QF = "%{NAME}\\t%{EPOCHNUM}\\t%{VERSION}\\t%{RELEASE}\\t%{ARCH}\\n"
_ENV = {"LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
_STDLIB = {".gz": gzip.decompress, ".xz": lzma.decompress, ".bz2": bz2.decompress}
REPO_NS = "{http://linux.duke.edu/metadata/repo}"
COMMON_NS = "{http://linux.duke.edu/metadata/common}"


def _query(args: list[str]) -> dict[str, list[str]]:
    """{"name.arch": ["E:V-R", ...]} from an rpm query; raises ValueError with the reason."""
    try:
        proc = subprocess.run(args + ["-qa", "--qf", RPM_QF], capture_output=True, text=True, timeout=120,
                              check=False, env=_ENV)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ValueError(f"{' '.join(args)} -qa: {exc}") from exc
    if proc.returncode != 0:
        raise ValueError(f"{' '.join(args)} -qa exited {proc.returncode}: {proc.stderr.strip()[:200]}")
    out: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) != 5 or parts[4] == "(none)":  # gpg-pubkey entries have no arch
            continue
        name, epoch, version, release, arch = parts
        out.setdefault(f"{name}.{arch}", []).append(f"{epoch}:{version}-{release}")
    return out


def _rows(db: str) -> int:
    """Packages rows of an rpmdb.sqlite, opened read-only and immutable (nothing written next to it)."""
    con = sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True, timeout=0)
    try:
        return int(con.execute("SELECT count(*) FROM Packages").fetchone()[0])
    finally:
        con.close()


def installed_rpms(ctx: Context) -> tuple[dict[str, list[str]], str]:
    """The installed packages and how they were read; raises ValueError with the reason."""
    rpm = shutil.which("rpm", path=_ENV["PATH"])
    if not rpm:
        raise ValueError("no rpm binary on the auditing host to read the rpm database")
    if ctx.live:
        return _query([rpm]), "rpm -qa"
    for d in RPM_DBS:
        db = ctx.resolve(f"{d}/rpmdb.sqlite")
        if not db.is_file():
            continue
        try:
            rows = _rows(str(db))
        except (sqlite3.Error, OSError) as exc:
            raise ValueError(f"{d}/rpmdb.sqlite: not a readable rpm database ({exc})") from exc
        if rows == 0:
            raise ValueError(f"{d}/rpmdb.sqlite holds no package")
        with tempfile.TemporaryDirectory(prefix="vmaudit-rpmdb-") as tmp:
            for suffix in ("", "-wal"):  # committed transactions may still sit in the write-ahead log
                if os.path.isfile(f"{db}{suffix}"):
                    shutil.copyfile(f"{db}{suffix}", os.path.join(tmp, f"rpmdb.sqlite{suffix}"))
            found = _query([rpm, "--dbpath", tmp, "--define", "_db_backend sqlite"])
        return found, f"rpm --dbpath <copy of {d}/rpmdb.sqlite>"
    for d in RPM_DBS:
        for legacy in ("Packages", "Packages.db"):
            if ctx.exists(f"{d}/{legacy}"):
                raise ValueError(f"{d}/{legacy}: a Berkeley DB / ndb rpm database (RHEL 8 and older) is not "
                                 "read offline; audit the live host")
    raise ValueError(f"no rpmdb.sqlite under the root ({', '.join(RPM_DBS)})")


def _decompressed(path: str) -> bytes:
    """A repodata file's bytes; raises OSError / ValueError with the reason."""
    ext = os.path.splitext(path)[1]
    with open(path, "rb") as fh:
        data = fh.read()
    if ext in _STDLIB:
        return _STDLIB[ext](data)
    if ext == ".zst":
        zstd = shutil.which("zstd", path=_ENV["PATH"])
        if not zstd:
            raise ValueError("zstd-compressed and no zstd binary on the auditing host to read it")
        proc = subprocess.run([zstd, "-dcq", "--", path], capture_output=True, timeout=120, check=False, env=_ENV)
        if proc.returncode != 0:
            raise ValueError(f"zstd exited {proc.returncode}: {proc.stderr.decode('utf-8', 'replace').strip()[:200]}")
        return proc.stdout
    return data


def _repomd(text: bytes) -> tuple[dict[str, str], int | None]:
    """{type: href} of a repomd.xml and its newest <timestamp>."""
    root = ET.fromstring(text)
    hrefs, stamps = {}, []
    for data in root.iter(f"{REPO_NS}data"):
        loc = data.find(f"{REPO_NS}location")
        if loc is not None and loc.get("href"):
            hrefs[str(data.get("type"))] = loc.get("href")
        ts = data.findtext(f"{REPO_NS}timestamp")
        if ts and ts.strip().isdigit():
            stamps.append(int(ts.strip()))
    return hrefs, max(stamps) if stamps else None


def security_packages(text: bytes, installed: dict) -> tuple[int, list[dict]]:
    """The number of security advisories, and [{key, version, advisory, severity}] of their packages that
    are installed (same name and arch)."""
    out, count = [], 0
    for update in ET.fromstring(text).iter("update"):
        if update.get("type") != "security":
            continue
        count += 1
        advisory, severity = update.findtext("id") or "?", update.findtext("severity") or ""
        for pkg in update.iter("package"):
            key = f"{pkg.get('name')}.{pkg.get('arch')}"
            if key in installed and pkg.get("version") and pkg.get("release"):
                out.append({"key": key, "version": f"{pkg.get('epoch') or 0}:{pkg.get('version')}-"
                                                   f"{pkg.get('release')}", "advisory": advisory.strip(),
                            "severity": severity.strip()})
    return count, out


def offered(text: bytes, keys: set[str]) -> set[tuple[str, str]]:
    """{(name.arch, E:V-R)} of the primary's packages whose name.arch is in `keys`."""
    out = set()
    for _event, elem in ET.iterparse(io.BytesIO(text)):
        if elem.tag == f"{COMMON_NS}package":
            key = f"{elem.findtext(f'{COMMON_NS}name')}.{elem.findtext(f'{COMMON_NS}arch')}"
            ver = elem.find(f"{COMMON_NS}version")
            if key in keys and ver is not None:
                out.add((key, f"{ver.get('epoch') or 0}:{ver.get('ver')}-{ver.get('rel')}"))
            elem.clear()  # a RHEL primary holds tens of thousands of packages
    return out


def collect_rpm(ctx: Context) -> Any:
    try:
        installed, how = installed_rpms(ctx)
    except ValueError as exc:
        return unavailable(f"installed rpms: {exc}")
    out: dict = {"manager": "rpm", "installed": sum(len(v) for v in installed.values()), "installed_from": how,
                 "repos": [], "unreadable": [], "rpm_candidates": {}}
    caches = [c for c in DNF_CACHES if isinstance(ctx.listdir(c), list)]
    if not caches:
        out["lists"] = "absent"
    for cache in caches:
        for entry in ctx.listdir(cache) or []:
            md = f"{cache}/{entry}/repodata/repomd.xml"
            if not ctx.exists(md):
                continue
            repo_id = entry.rsplit("-", 1)[0] if "-" in entry else entry
            repo: dict = {"cache": f"{cache}/{entry}", "repo": repo_id, "mtime": ctx.mtime(md)}
            out["repos"].append(repo)
            try:
                hrefs, repo["timestamp"] = _repomd(ctx.resolve(md).read_bytes())
            except (OSError, ET.ParseError) as exc:
                out["unreadable"].append({"file": md, "reason": str(exc)})
                continue
            repo["updateinfo"] = hrefs.get("updateinfo")
            repo["primary"] = hrefs.get("primary")
            if not repo["updateinfo"]:
                continue
            files = {}
            for kind in ("updateinfo", "primary"):
                if not hrefs.get(kind):
                    out["unreadable"].append({"file": md, "reason": f"names no {kind}"})
                    continue
                name = f"{cache}/{entry}/{hrefs[kind]}"  # dnf keeps the files where repomd.xml's href says
                if not hrefs[kind].startswith("repodata/") or "/" in hrefs[kind][9:] or ".." in hrefs[kind]:
                    out["unreadable"].append({"file": md, "reason": f"{kind} outside repodata/: {hrefs[kind]!r}"})
                    continue
                try:
                    files[kind] = _decompressed(str(ctx.resolve(name)))
                except (OSError, ValueError, EOFError, lzma.LZMAError) as exc:
                    out["unreadable"].append({"file": name, "reason": str(exc)})
            if len(files) < 2:
                repo["unreadable"] = True
                continue
            try:
                repo["security_advisories"], fixes = security_packages(files["updateinfo"], installed)
                available = offered(files["primary"], {f["key"] for f in fixes})
            except ET.ParseError as exc:
                out["unreadable"].append({"file": f"{cache}/{entry}/repodata", "reason": f"XML: {exc}"})
                repo["unreadable"] = True
                continue
            for fix in fixes:
                if (fix["key"], fix["version"]) not in available:
                    continue  # dnf installs only what the repository carries
                cand = out["rpm_candidates"].setdefault(fix["key"], {"installed": installed[fix["key"]],
                                                                     "offered": []})
                offer = {"version": fix["version"], "repo": repo_id, "advisory": fix["advisory"],
                         "severity": fix["severity"]}
                if offer not in cand["offered"]:
                    cand["offered"].append(offer)
    return out
