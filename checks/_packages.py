"""M3-PENDING-UPDATES without network: the installed packages against the security suites' cached
indexes (source package_indexes, collectors/package_indexes.py), versions compared by Debian's rules with
python-debian (the comparator dpkg and apt implement: epochs, '~' before everything, digits numerically)."""

from __future__ import annotations

from debian.debian_support import Version

from vmaudit.engine import Result
from vmaudit.facts import EvidenceMissing

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
        caches = ", ".join(sorted(idx.get("dnf_cache") or {})) or "none found"
        raise EvidenceMissing("RHEL/Fedora: vmaudit does not compare the dnf cache (" + caches + ") with the "
                              "rpm database offline; run with --online to ask dnf")
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
        names = ", ".join(p["package"].rsplit(":", 1)[0] for p in pending[:10]) + (" …" if len(pending) > 10 else "")
        yield Result("fail", f"{len(pending)} security update(s) pending: {names}", "host", evidence,
                     "no pending security updates", f"{len(pending)} pending")
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
