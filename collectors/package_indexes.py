"""The package manager's cached indexes against the installed packages, read offline under the audited
root: what security updates the host could install now, without asking the network or the package
manager. Versions are compared by the check (Debian rules, python-debian), so this collector needs only
the standard library (it also runs inside the agentless zipapp).

Debian/Ubuntu: `/var/lib/dpkg/status` (installed packages) and `/var/lib/apt/lists/`: every
`*_Packages` index (plain, .gz, .xz, .bz2; .lz4 and .zst, which apt writes with `Acquire::GzipIndexes`
or `KeepCompressed`, through apt's own `apt-helper cat-file`), each tied to the `*_InRelease` /
`*_Release` file of its suite by its name (`<host>_<path>_dists_<suite>_...`). A suite is a security
suite when its Release says so (Suite or Codename ending in `-security`, or Label `Debian-Security`, as
Debian's `bookworm-security` / `oldstable-security` and Ubuntu's `jammy-security`). Only security
indexes are read in full, and of them only the stanzas of installed packages are kept.

Source:
  package_indexes  {"manager": "dpkg" | "rpm" | null, "installed": n,
                    "suites": [{"release": file, "suite", "codename", "label", "origin", "security": bool,
                                "date", "valid_until", "mtime": epoch, "indexes": [file, ...]}],
                    "unreadable": [{"file", "reason"}],
                    "candidates": {"<package>:<arch>": {"installed": version,
                                   "offered": [{"version", "suite"}]}}}
                   RHEL/Fedora: {"manager": "rpm", "installed": n, "installed_from", "repos": [...],
                   "unreadable": [...], "rpm_candidates": {...}} (collectors/_rpm_cache.py, and
                   collect_package_indexes); a marker when no package database is found or the rpm database
                   cannot be read.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import shutil
import subprocess
from typing import Any, Iterator

from vmaudit.facts import unavailable
from vmaudit.schema import Bool, Enum, Float, Int, ListOf, Null, Record, Str, TableOf

from . import Context, collector
from ._rpm_cache import RPM_DBS, collect_rpm

LISTS = "/var/lib/apt/lists"
DPKG_STATUS = "/var/lib/dpkg/status"
APT_HELPER = "/usr/lib/apt/apt-helper"
_STDLIB = {".gz": gzip.decompress, ".xz": lzma.decompress, ".bz2": bz2.decompress}
RELEASE_FIELDS = {"Suite": "suite", "Codename": "codename", "Label": "label", "Origin": "origin",
                  "Date": "date", "Valid-Until": "valid_until"}


def stanzas(text: str, wanted: tuple[str, ...]) -> Iterator[dict]:
    """deb822 paragraphs (dpkg status, Packages, Release) with only the `wanted` fields."""
    record: dict = {}
    for line in text.splitlines():
        if not line.strip():
            if record:
                yield record
            record = {}
            continue
        if line[0] in " \t":
            continue  # a continuation line (Description, Conffiles)
        key, sep, value = line.partition(":")
        if sep and key in wanted:
            record[key] = value.strip()
    if record:
        yield record


def parse_release(text: str) -> dict:
    """The header fields of a Release / InRelease file (the signature armour is skipped)."""
    out: dict = {}
    for line in text.splitlines():
        if line.startswith("-----BEGIN PGP SIGNED") or line.startswith("Hash:") or not line.strip():
            if out:
                break
            continue
        key, sep, value = line.partition(":")
        if sep and key in RELEASE_FIELDS and line[0] not in " \t":
            out[RELEASE_FIELDS[key]] = value.strip()
    return out


def is_security(release: dict) -> bool:
    names = (release.get("suite") or "", release.get("codename") or "")
    return any(n.endswith("-security") for n in names) or release.get("label") == "Debian-Security"


def installed_packages(text: str) -> dict[str, str]:
    """{"<package>:<arch>": version} of the packages dpkg has installed (status '... ok installed')."""
    out = {}
    for st in stanzas(text, ("Package", "Status", "Version", "Architecture")):
        status = st.get("Status", "").split()
        if len(status) == 3 and status[1] == "ok" and status[2] == "installed" and st.get("Version"):
            out[f"{st.get('Package')}:{st.get('Architecture', 'all')}"] = st["Version"]
    return out


def _index_text(ctx: Context, name: str) -> str:
    """An index's text, decompressed; raises OSError / ValueError with the reason."""
    path = ctx.resolve(f"{LISTS}/{name}")
    ext = os.path.splitext(name)[1]
    if ext in _STDLIB:
        return _STDLIB[ext](path.read_bytes()).decode("utf-8", "replace")
    if ext in (".lz4", ".zst"):
        # apt's own reader decompresses what apt wrote; it opens the file read-only and takes no lock
        helper = APT_HELPER if os.access(APT_HELPER, os.X_OK) else shutil.which("apt-helper")
        if not helper:
            raise ValueError(f"{ext} index and no apt-helper on the auditing host to read it")
        proc = subprocess.run([helper, "cat-file", str(path)], capture_output=True, timeout=120, check=False,
                              env={"LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        if proc.returncode != 0:
            raise ValueError(f"apt-helper cat-file exited {proc.returncode}: "
                             f"{proc.stderr.decode('utf-8', 'replace').strip()[:200]}")
        return proc.stdout.decode("utf-8", "replace")
    return path.read_text(encoding="utf-8", errors="replace")


def _suite_prefix(name: str) -> str | None:
    """'deb.debian.org_debian_dists_bookworm-security_' of every list file of that suite."""
    marker = "_dists_"
    i = name.find(marker)
    if i < 0:
        return None
    rest = name[i + len(marker):]
    return name[: i + len(marker)] + rest.split("_", 1)[0] + "_"


def collect_apt(ctx: Context, status_text: str) -> dict:
    installed = installed_packages(status_text)
    names = ctx.listdir(LISTS)
    out: dict = {"manager": "dpkg", "installed": len(installed), "suites": [], "unreadable": [], "candidates": {}}
    if not names:
        out["lists"] = "absent" if not isinstance(names, list) else "empty"
        return out
    releases: dict[str, dict] = {}
    for name in names:
        if name.endswith(("_InRelease", "_Release")):
            prefix = _suite_prefix(name)
            if prefix is None or (prefix in releases and name.endswith("_Release")):
                continue  # InRelease wins over a Release of the same suite
            text = ctx.read_fact(f"{LISTS}/{name}")
            if not isinstance(text, str):
                out["unreadable"].append({"file": name, "reason": (text or {}).get("unavailable", "absent")})
                continue
            releases[prefix] = {"release": name, **parse_release(text), "mtime": ctx.mtime(f"{LISTS}/{name}"),
                                "indexes": []}
    for name in names:
        base = name.rsplit(".", 1)[0] if name.endswith((".gz", ".xz", ".bz2", ".lz4", ".zst")) else name
        if not base.endswith("_Packages"):
            continue
        prefix = _suite_prefix(name)
        suite = releases.get(prefix or "")
        if suite is None:
            out["unreadable"].append({"file": name, "reason": "no Release file of its suite"})
            continue
        suite["indexes"].append(name)
        if not is_security(suite):
            continue
        try:
            text = _index_text(ctx, name)
        except (OSError, ValueError, EOFError, lzma.LZMAError) as exc:
            out["unreadable"].append({"file": name, "reason": str(exc)})
            continue
        label = suite.get("codename") or suite.get("suite") or prefix
        for st in stanzas(text, ("Package", "Version", "Architecture")):
            pkg, arch, version = st.get("Package"), st.get("Architecture", "all"), st.get("Version")
            key = f"{pkg}:{arch}"
            if key in installed and version:
                entry = out["candidates"].setdefault(key, {"installed": installed[key], "offered": []})
                offer = {"version": version, "suite": label}
                if offer not in entry["offered"]:
                    entry["offered"].append(offer)
    for suite in releases.values():
        suite["security"] = is_security(suite)
    out["suites"] = sorted(releases.values(), key=lambda s: s["release"])
    return out


_SUITE = Record({"release": Str(), "security": Bool(), "indexes": ListOf(Str())},
                optional={"suite": Str(), "codename": Str(), "label": Str(), "origin": Str(), "date": Str(),
                          "valid_until": Str(), "mtime": Float() | Null()})
PACKAGE_INDEXES_SCHEMA = Record(
    {"manager": Enum("dpkg", "rpm")},
    optional={"installed": Int(min=0), "suites": ListOf(_SUITE), "lists": Str(),
              "unreadable": ListOf(Record({"file": Str(), "reason": Str()})),
              "candidates": TableOf(Record({"installed": Str(),
                                            "offered": ListOf(Record({"version": Str(), "suite": Str()}))})),
              "installed_from": Str(),
              "repos": ListOf(Record({"cache": Str(), "repo": Str(), "mtime": Float() | Null()},
                                     optional={"timestamp": Int() | Null(), "updateinfo": Str() | Null(),
                                               "primary": Str() | Null(), "security_advisories": Int(min=0),
                                               "unreadable": Bool()})),
              "rpm_candidates": TableOf(Record({"installed": ListOf(Str()),
                                                "offered": ListOf(Record({"version": Str(), "repo": Str(),
                                                                          "advisory": Str(),
                                                                          "severity": Str()}))}))})


@collector("package_indexes", schema=PACKAGE_INDEXES_SCHEMA)
def collect_package_indexes(ctx: Context) -> Any:
    """Debian/Ubuntu: `{manager: "dpkg", installed: n, suites: [{release, suite, codename, label, origin, date,
    valid_until, mtime, security, indexes: [...]}], unreadable: [{file, reason}], candidates: {"<pkg>:<arch>":
    {installed, offered: [{version, suite}]}}}` from /var/lib/dpkg/status and /var/lib/apt/lists (only the
    security suites' indexes are read, only installed packages kept); RHEL/Fedora: `{manager: "rpm",
    installed: n, installed_from, repos: [{cache, repo, mtime, timestamp, updateinfo, primary,
    security_advisories, unreadable}], unreadable: [{file, reason}], rpm_candidates: {"<name>.<arch>":
    {installed: ["E:V-R", ...], offered: [{version: "E:V-R", repo, advisory, severity}]}}}` from the rpm
    database and the dnf/dnf5 cache (collectors/_rpm_cache.py; only security advisories' packages the
    repository carries and that are installed are kept)
    """
    status = ctx.read_fact(DPKG_STATUS)
    if isinstance(status, str):
        return collect_apt(ctx, status)
    if status is not None:
        return status  # an unreadable dpkg database
    if any(ctx.exists(d) for d in RPM_DBS):
        return collect_rpm(ctx)
    return unavailable(f"no package database under the root ({DPKG_STATUS}, {', '.join(RPM_DBS)})")
