"""M3: a patched host — how long ago packages were upgraded, which security updates are pending, and
whether running QEMU/libvirt processes or the kernel still run code that an update replaced.

Sources: package_history, pending_updates, package_indexes, reboot_required (collectors/hardening.py,
collectors/package_indexes.py); kernel (collectors/host.py); processes (collectors/live.py, live).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from vmaudit.checks._packages import offline_pending
from vmaudit.checks._qemu import (
    proc_label,
    processes,
)
from vmaudit.engine import Result, check
from vmaudit.facts import EvidenceMissing, NotApplicable, lookup, need


def version_key(release: str) -> list:
    """Compare kernel releases segment by segment as rpm/dpkg do: numbers numerically, and a number
    sorts after letters (6.1.0-27-amd64 < 6.1.0-28-amd64; 5.14.0-427.el9 < 5.14.0-503.11.1.el9_5)."""
    return [(1, int(s), "") if s.isdigit() else (0, 0, s) for s in re.findall(r"\d+|[A-Za-z]+", release)]


def kernel_flavour(release: str) -> str:
    """The build flavour a newer kernel must share to replace the running one: Debian/Ubuntu 'amd64',
    'cloud-amd64', 'generic' (Debian 13 and later: '6.12.38+deb13-cloud-amd64', backports
    '6.12.12+bpo-amd64'); RHEL/Fedora the arch and variant ('x86_64', 'x86_64+debug')."""
    m = re.match(r"^\d+\.\d+(?:\.\d+)?(?:-\d+|\+[a-z]+\d*)-(.+)$", release)
    if m:
        return m.group(1)
    m = re.search(r"\.(x86_64|aarch64|ppc64le|s390x|i686)(\+\w+)?$", release)
    if m:
        return m.group(0)[1:]
    return ""


@check("M3-PATCH-AGE", severity="high",
       title="Age of the host's last package upgrade",
       remediation="Patch the host; enable unattended-upgrades (Debian/Ubuntu) or dnf-automatic (RHEL/Fedora).",
       sources="/var/log/apt/history.log*, /var/log/dpkg.log*, /var/log/dnf.rpm.log*, /var/log/yum.log*, "
               "/var/lib/dnf/history.sqlite, /usr/lib/sysimage/libdnf5/transaction_history.sqlite, "
               "rpm -qa (live)")
def patch_age(facts, policy):
    """An unpatched hypervisor exposes every guest to known kernel, QEMU and libvirt escapes. The newest
    package upgrade recorded on the host tells how stale it is.

    Rule: the newest upgrade across every source (apt history End-Date, dpkg 'status installed' after
    an 'upgrade', dnf.rpm.log 'Upgrade:', yum.log 'Updated:', the end of the newest successful dnf or
    dnf5 transaction that upgraded an rpm in their history databases, the rpm database's newest install
    time when live) older than [patch] fail_days (default 30) -> fail; older than warn_days (default
    14) -> warn. A host whose sources record no upgrade at all is dated by its newest install. No
    package history at all -> error; a source that exists but cannot be read is listed with its reason.
    The age is counted from the snapshot's collected_at; apt, dpkg and yum log local time, taken as UTC
    (a few hours at most). Sources: rotated logs (.1, .gz, -YYYYMMDD) included; the dnf history
    databases outlive log rotation and are the only history dnf5 keeps.
    """
    hist = facts.source("package_history")
    now = facts.collected_at
    logs = hist.get("logs") or []
    unreadable = {e["path"]: e["unavailable"] for e in logs if "unavailable" in e}
    read = [e for e in logs if "unavailable" not in e]
    upgrades = [(e["newest_upgrade"], e["path"], e.get("kind")) for e in read if e.get("newest_upgrade")]
    installs = [(e["newest_install"], e["path"], e.get("kind")) for e in read if e.get("newest_install")]
    rpm_db, rpm_gap = lookup(hist, "rpm_db")
    if rpm_db and rpm_db.get("newest_install"):
        upgrades.append((rpm_db["newest_install"], "rpm database (install time)", "rpm-db"))
    evidence: dict = {"manager": hist.get("manager"),
                      "logs": {e["path"]: {k: e.get(k) for k in ("kind", "upgrades", "installs", "newest_upgrade",
                                                                  "newest_install")} for e in read}}
    if unreadable:
        evidence["unreadable"] = unreadable
    if rpm_gap is not None:
        evidence["rpm_db"] = {"not_collected" if isinstance(rpm_gap, NotApplicable) else "unavailable":
                              rpm_gap.reason}
    basis = "upgrade"
    if not upgrades:
        upgrades, basis = installs, "install (no upgrade recorded)"
    if not upgrades:
        reason = ("no package history found (apt history, dpkg.log, dnf.rpm.log, yum.log, dnf/dnf5 history "
                  "database" + (", rpm database" if facts.live else "") + ")")
        if unreadable:
            reason += "; unreadable: " + ", ".join(sorted(unreadable))
        yield Result("error", f"evidence missing: {reason}", "host", {**evidence, "reason": reason})
        return
    newest, where, source = max(upgrades, key=lambda u: (u[0], u[1]))
    when = datetime.strptime(newest, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    age = max(0.0, (now - when).total_seconds() / 86400)
    warn_days, fail_days = policy.get("patch", "warn_days"), policy.get("patch", "fail_days")
    evidence.update({"newest": newest, "newest_from": where, "newest_source": source, "basis": basis,
                     "age_days": round(age, 1),
                     "collected_at": facts.data.get("collected_at"),
                     "warn_days": warn_days, "fail_days": fail_days})
    actual = f"{age:.0f} days since the last {basis.split()[0]} ({newest})"
    if age > fail_days:
        yield Result("fail", f"host last patched {age:.0f} days ago (limit {fail_days})", "host", evidence,
                     f"<= {warn_days} days", actual)
    elif age > warn_days:
        yield Result("warn", f"host last patched {age:.0f} days ago (review after {warn_days})", "host",
                     evidence, f"<= {warn_days} days", actual)
    else:
        yield Result("pass", f"host patched {age:.0f} days ago", "host", evidence, f"<= {warn_days} days",
                     actual)


@check("M3-PENDING-UPDATES", severity="high",
       title="Pending security updates on the host",
       remediation="Install the pending security updates (apt-get dist-upgrade / dnf upgrade --security); "
                   "keep the package lists fresh (apt-get update, unattended-upgrades).",
       sources="/var/lib/apt/lists/*_Packages with their InRelease/Release (the -security suites) against "
               "/var/lib/dpkg/status (offline, default); /var/cache/dnf and /var/cache/libdnf5 "
               "<repo>/repodata (repomd.xml, updateinfo, primary) against the rpm database (offline, default: "
               "rpm -qa live, a copy of rpmdb.sqlite under --root); apt-get -s dist-upgrade / dnf -q "
               "check-update --security (live, --online)")
def pending_updates(facts, policy):
    """Security updates that the package manager already offers but that are not installed.

    Rule (default, offline): the installed packages (/var/lib/dpkg/status) against the cached indexes of
    the security suites (/var/lib/apt/lists: a suite whose Release names it '-security' or labels it
    Debian-Security), compared by Debian version rules: any installed package a security suite offers
    in a newer version -> fail, naming the packages; no security suite among the sources -> warn; the
    security lists older than policy [patch] lists_max_age_days (default 7, by their files' mtime
    against the snapshot's collected_at) -> warn (medium), pending updates unknown; no index at all or an
    unreadable security index -> error.
    RHEL/Fedora (offline): the installed rpms (rpm -qa live; under --root a private copy of the root's
    rpmdb.sqlite, RHEL 9/Fedora) against the dnf/dnf5 cache: an advisory of type security in a cached
    repository's updateinfo whose package the repository's primary carries, same name and arch as an
    installed package and newer than its newest installed version by rpm's rules (rpmvercmp) -> fail,
    naming the packages and advisories; no cached repository with updateinfo -> warn; the newest such
    repomd.xml older than lists_max_age_days -> warn (medium); no cached metadata, an unreadable
    repomd/updateinfo/primary, or an unreadable rpm database (Berkeley DB of RHEL 8 and older under
    --root, no rpm binary) -> error.
    With --online: the package manager itself (apt: an origin naming '-security'; dnf: advisories of
    type security); its lists' age is evidence, and stale lists with nothing pending -> warn. vmaudit
    never runs `apt-get update`, which would change the host.
    """
    _online, gap = facts.lookup("pending_updates")
    if isinstance(gap, NotApplicable):  # not asked with --online: the cached indexes decide
        yield from offline_pending(facts, policy, facts.collected_at.timestamp())
        return
    pending = facts.source("pending_updates")
    security = pending.get("security") or []
    evidence: dict = {"tool": pending.get("tool"), "command": " ".join(pending.get("command") or []),
                      "security_updates": security[:100], "count": len(security),
                      "other_updates": pending.get("other")}
    age = None
    if pending.get("lists_mtime"):
        age = (facts.collected_at.timestamp() - float(pending["lists_mtime"])) / 86400
        evidence["package_lists_age_days"] = round(age, 1)
    max_age = policy.get("patch", "lists_max_age_days")
    if security:
        names = ", ".join(s["package"] for s in security[:10]) + (" …" if len(security) > 10 else "")
        yield Result("fail", f"{len(security)} security update(s) pending: {names}", "host", evidence,
                     "no pending security updates", f"{len(security)} pending")
    elif age is not None and age > max_age:
        yield Result("warn", f"the package lists are {age:.0f} days old (more than {max_age}): pending updates "
                     "unknown; run apt-get update", "host", evidence, f"lists at most {max_age} days old",
                     f"{age:.0f} days", severity="medium")
    else:
        yield Result("pass", "no pending security updates", "host", evidence, "no pending security updates",
                     "0 pending")


@check("M3-STALE-BINARIES", severity="high",
       title="QEMU/libvirt binaries in use and pending reboot",
       remediation="Restart or migrate the guests whose QEMU maps deleted files, restart the libvirt "
                   "daemons; reboot into the newest kernel.",
       sources="processes (live: /proc/<pid>/maps '(deleted)'); /run/reboot-required; /proc/sys/kernel/"
               "osrelease vs /lib/modules")
def stale_binaries(facts, policy):
    """Patching a package does not patch the processes already running it: a QEMU started before a
    QEMU or library update keeps running the vulnerable code until the guest is restarted or migrated,
    and the kernel stays old until a reboot.

    Rule: a QEMU or libvirt daemon process mapping a deleted executable or shared library -> fail
    (high); otherwise /run/reboot-required present, or a newer kernel of the running kernel's
    flavour installed under /lib/modules -> warn (medium). Under --root the processes are not
    collected and only the reboot evidence is judged. When the processes were all examined but the
    kernel part cannot be (no /lib/modules in a VM or container), the process verdict is reported for
    the host and the kernel part as an error of its own (resource 'kernel').
    """
    evidence: dict = {}
    reasons: list[str] = []
    missing: list[str] = []
    procs, status, why = processes(facts)
    stale = []
    if procs is None:
        evidence["processes"] = f"{status}: {why}"
        if status == "error":
            missing.append(why)
    else:
        for p in procs:
            maps, gap = lookup(p, "deleted_maps")
            if gap is not None:
                missing.append(f"maps of {proc_label(p)}: {gap.reason}")
                continue
            code = list(maps or [])  # the collector keeps only executable / shared-object mappings
            if code:
                stale.append({"pid": p.get("pid"), "name": p.get("name"), "deleted": code[:20]})
        evidence["processes_checked"] = len(procs)
        evidence["stale_processes"] = stale
    kernel_missing: list[str] = []
    try:
        reboot = facts.source("reboot_required")
        evidence["reboot_required"] = reboot
        if reboot.get("present"):
            reasons.append(f"{reboot.get('path')} present"
                           + (f" ({', '.join(reboot.get('packages')[:5])})" if reboot.get("packages") else ""))
    except (EvidenceMissing, NotApplicable) as exc:
        kernel_missing.append(str(exc))
    try:
        kernel = facts.source("kernel")
        running = need(kernel.get("running"), "running kernel")
        installed = need(kernel.get("installed"), "installed kernels")
        flavour = kernel_flavour(running)
        newer = sorted((k for k in installed if kernel_flavour(k) == flavour
                        and version_key(k) > version_key(running)), key=version_key)
        evidence["kernel"] = {"running": running, "installed": installed, "newer": newer}
        if newer:
            reasons.append(f"running kernel {running} is older than installed {newer[-1]}")
    except (EvidenceMissing, NotApplicable) as exc:
        kernel_missing.append(str(exc))
    missing += kernel_missing
    if missing and not stale and not reasons and procs is not None and len(missing) == len(kernel_missing):
        # report what was decided, error only what was not: every process was examined, the kernel part
        # (a /lib/modules a VM or container may not have) is the error, on its own resource
        evidence["not_decided"] = missing
        yield Result("pass", f"no QEMU/libvirt process runs deleted code ({len(procs)} examined); the "
                     "kernel/reboot part could not be judged (finding on 'kernel')", "host", evidence,
                     "no process maps deleted code", "0 stale")
        reason = "; ".join(missing)
        yield Result("error", f"evidence missing: {reason}", "kernel", {"reason": reason})
        return
    if stale:
        names = ", ".join(f"{s['name']}[{s['pid']}]" for s in stale[:10])
        yield Result("fail", f"{len(stale)} QEMU/libvirt process(es) run deleted code: {names}", "host",
                     evidence, "no process maps deleted code", f"{len(stale)} stale", severity="high")
    elif reasons:
        yield Result("warn", "reboot pending: " + "; ".join(reasons), "host", evidence,
                     "running the newest kernel, no reboot pending", "; ".join(reasons), severity="medium")
    elif missing:
        evidence["reason"] = "; ".join(missing)
        yield Result("error", "evidence missing: " + "; ".join(missing), "host", evidence)
    else:
        examined = "no stale QEMU/libvirt process" if procs is not None else f"processes not examined ({why})"
        yield Result("pass", f"no reboot pending; {examined}", "host", evidence)
