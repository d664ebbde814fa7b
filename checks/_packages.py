"""M3-PENDING-UPDATES without network: the installed packages against the security suites' cached
indexes (source package_indexes, collectors/package_indexes.py), versions compared by Debian's rules with
python-debian (the comparator dpkg and apt implement: epochs, '~' before everything, digits numerically);
on RHEL/Fedora against the dnf cache's security advisories, versions compared by rpm's rules
(checks/_rpm_version.py)."""

from __future__ import annotations

from debian.debian_support import Version

from vmaudit.engine import Result
from vmaudit.facts import EvidenceMissing

from ._rpm_version import evr_cmp

DAY = 86400.0


def _newer(offered: str, installed: str) -> bool:
    try:
        return Version(offered) > Version(installed)
    except ValueError:  # not a Debian version: never a pending update by guess
        return False


def pending_security(candidates: dict) -> list[dict]:
    """[{package, installed, available, suite}] of installed packages a security suite offers newer."""
    out = []
    for key, entry in sorted(candidates.items()):
        installed = str(entry.get("installed"))
        newer = [o for o in entry.get("offered") or [] if _newer(str(o.get("version")), installed)]
        if newer:
            best = newer[0]
            for o in newer[1:]:
                if _newer(str(o["version"]), str(best["version"])):
                    best = o
            out.append({"package": key, "installed": installed, "available": best["version"],
                        "suite": best.get("suite")})
    return out


def offline_pending(facts, policy, now: float):
    """The findings of M3-PENDING-UPDATES from the cached indexes (see the check's docstring)."""
    idx = facts.source("package_indexes")
    if not isinstance(idx, dict):
        raise EvidenceMissing("package_indexes: not an object in this snapshot")
    if idx.get("manager") == "rpm":
        yield from rpm_offline_pending(idx, policy, now)
        return
    suites = idx.get("suites") or []
    indexes = [i for s in suites for i in s.get("indexes") or []]
    if not indexes:
        raise EvidenceMissing("no package index in /var/lib/apt/lists (apt-get update never ran, or the "
                              "lists were cleaned): pending updates cannot be known")
    max_age = policy.get("patch", "lists_max_age_days")
    security = [s for s in suites if s.get("security")]
    mtimes = [float(s["mtime"]) for s in security if isinstance(s.get("mtime"), (int, float))]
    age = round((now - max(mtimes)) / DAY, 1) if mtimes else None
    pending = pending_security(idx.get("candidates") or {})
    sec_files = {i for s in security for i in s.get("indexes") or []}
    # an unreadable security index, or an unreadable Release of what looks like a security suite, hides
    # pending updates; a flat third-party repository without a Release file does not
    unreadable = [u for u in idx.get("unreadable") or [] if u.get("file") in sec_files
                  or ("security" in str(u.get("file")) and u.get("reason") != "no Release file of its suite")]
    evidence = {"source": "cached indexes (offline)", "installed_packages": idx.get("installed"),
                "security_suites": [s.get("codename") or s.get("suite") for s in security],
                "package_lists_age_days": age, "lists_max_age_days": max_age,
                "security_updates": pending[:100], "count": len(pending)}
    if unreadable:
        evidence["unreadable"] = unreadable
    if pending:
        yield _pending_fail(pending, ":", evidence)  # "name:arch"
    elif not security:
        yield Result("warn", "no security suite among the package sources (e.g. bookworm-security, "
                     "jammy-security): security updates never reach this host", "host", evidence,
                     "a -security suite in the APT sources", "none")
    elif unreadable:
        reason = "; ".join(f"{u['file']}: {u['reason']}" for u in unreadable[:3])
        yield Result("error", f"evidence missing: {reason}", "host", {**evidence, "reason": reason})
    elif age is None or age > max_age:
        yield Result("warn", f"the security package lists are {age} days old (more than {max_age}): pending "
                     "updates unknown; run apt-get update", "host", evidence,
                     f"lists at most {max_age} days old", f"{age} days", severity="medium")
    else:
        yield Result("pass", f"no pending security updates (package lists {age} days old)", "host", evidence,
                     "no pending security updates", "0 pending")


def _evr(s: str) -> tuple[str, str, str]:
    """'E:V-R' (as the collector writes it) -> (E, V, R); raises ValueError on anything else."""
    epoch, sep, rest = s.partition(":")
    version, dash, release = rest.rpartition("-")
    if not (sep and dash and epoch.isdigit() and version and release):
        raise ValueError(f"not an E:V-R: {s!r}")
    return epoch, version, release


def _rpm_newer(a: str, b: str) -> bool:
    return evr_cmp(*_evr(a), *_evr(b)) > 0


def rpm_pending_security(candidates: dict) -> list[dict]:
    """[{package, installed, available, advisory, severity, repo}] of installed rpms (their newest installed
    version, as dnf upgrades from it) that a security advisory of a cached repository fixes in a newer
    version. A version that is not E:V-R raises EvidenceMissing: a guess could hide an update."""
    out = []
    try:
        for key, entry in sorted(candidates.items()):
            installed = list(entry.get("installed") or [])
            if not installed:
                raise ValueError(f"{key}: no installed version")
            newest = installed[0]
            for v in installed[1:]:
                if _rpm_newer(v, newest):
                    newest = v
            newer = [o for o in entry.get("offered") or [] if _rpm_newer(str(o.get("version")), newest)]
            if newer:
                best = newer[0]
                for o in newer[1:]:
                    if _rpm_newer(str(o["version"]), str(best["version"])):
                        best = o
                out.append({"package": key, "installed": newest, "available": best["version"],
                            "advisory": best.get("advisory"), "severity": best.get("severity"),
                            "repo": best.get("repo")})
    except (ValueError, TypeError, AttributeError) as exc:
        raise EvidenceMissing(f"package_indexes: {exc}") from exc
    return out


def rpm_offline_pending(idx: dict, policy, now: float):
    """M3-PENDING-UPDATES on RHEL/Fedora from the dnf cache (see the check's docstring)."""
    repos = [r for r in idx.get("repos") or [] if isinstance(r, dict)]
    if not repos:
        raise EvidenceMissing("no repository metadata in the dnf cache (/var/cache/dnf, /var/cache/libdnf5): "
                              "dnf never refreshed it, or it was cleaned (dnf clean all): pending updates cannot "
                              "be known")
    max_age = policy.get("patch", "lists_max_age_days")
    security = [r for r in repos if r.get("updateinfo")]
    mtimes = [float(r["mtime"]) for r in security if isinstance(r.get("mtime"), (int, float))]
    age = round((now - max(mtimes)) / DAY, 1) if mtimes else None
    pending = rpm_pending_security(idx.get("rpm_candidates") or {})
    broken = {r.get("cache") for r in repos if r.get("unreadable") or "updateinfo" not in r}
    # an unreadable repomd.xml, or an unreadable updateinfo/primary of a repository that has advisories,
    # hides pending updates
    unreadable = [u for u in idx.get("unreadable") or []
                  if any(str(u.get("file", "")).startswith(f"{c}/") for c in broken)]
    evidence = {"source": "dnf cache (offline)", "installed_packages": idx.get("installed"),
                "installed_from": idx.get("installed_from"),
                "security_repos": [r.get("repo") for r in security if not r.get("unreadable")],
                "package_lists_age_days": age, "lists_max_age_days": max_age,
                "security_updates": pending[:100], "count": len(pending)}
    if unreadable:
        evidence["unreadable"] = unreadable
    if pending:
        yield _pending_fail(pending, ".", evidence)  # "name.arch"
    elif unreadable:
        reason = "; ".join(f"{u['file']}: {u['reason']}" for u in unreadable[:3])
        yield Result("error", f"evidence missing: {reason}", "host", {**evidence, "reason": reason})
    elif not security:
        yield Result("warn", "no repository in the dnf cache publishes advisories (updateinfo): security "
                     "updates cannot be told from others", "host", evidence,
                     "a repository with updateinfo in the dnf cache", "none")
    elif age is None or age > max_age:
        yield Result("warn", f"the dnf cache is {age} days old (more than {max_age}): pending updates unknown; "
                     "run dnf makecache", "host", evidence, f"metadata at most {max_age} days old",
                     f"{age} days", severity="medium")
    else:
        yield Result("pass", f"no pending security updates (dnf cache {age} days old)", "host", evidence,
                     "no pending security updates", "0 pending")


def _pending_fail(pending: list, arch_sep: str, evidence: dict) -> Result:
    """The fail naming the first ten pending packages (without their architecture)."""
    names = ", ".join(p["package"].rsplit(arch_sep, 1)[0] for p in pending[:10]) + (" …" if len(pending) > 10 else "")
    return Result("fail", f"{len(pending)} security update(s) pending: {names}", "host", evidence,
                  "no pending security updates", f"{len(pending)} pending")
