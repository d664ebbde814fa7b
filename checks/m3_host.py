"""M3: harden the VMM host like any exposed OS — patched, strong isolation between guests and host
(sVirt/LSM, seccomp, a non-root QEMU, libvirt's namespaces and cgroups), little sharing of resources
between guests (KSM, shared memory, SMT siblings), no guest console exposed on the network.

Sources: package_history, pending_updates, reboot_required, lsm, ksm, cpu_security, kvm_nested,
os_release (collectors/hardening.py); kernel, cmdline (collectors/host.py); libvirt_config
(collectors/config.py); libvirt (capabilities, domain XML); processes (collectors/live.py, live).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from typing import Any

from vmaudit.checks._net import loopback
from vmaudit.engine import Result, check
from vmaudit.facts import EvidenceMissing, NotApplicable, guest_view, lookup, need, partial

LSM_MODELS = ("selinux", "apparmor")

# qemu.conf defaults (libvirt's qemu_conf.c) for keys the checks read when the file does not set them.
QEMU_DEFAULTS = {"security_default_confined": 1, "security_require_confined": 0, "seccomp_sandbox": 1,
                 "dynamic_ownership": 1, "namespaces": ["mount"], "clear_emulator_capabilities": 1,
                 "vnc_listen": "127.0.0.1", "spice_listen": "127.0.0.1", "vnc_tls": 0, "spice_tls": 0,
                 "vnc_auto_unix_socket": 0, "vnc_sasl": 0, "spice_sasl": 0}

# Every device libvirt has shipped in its default cgroup_device_acl over the years (qemu_cgroup.c and
# the qemu.conf sample): an explicit list made only of these has not been widened.
DEFAULT_DEVICE_ACL = {"/dev/null", "/dev/full", "/dev/zero", "/dev/random", "/dev/urandom", "/dev/ptmx",
                      "/dev/kvm", "/dev/userfaultfd", "/dev/kqemu", "/dev/rtc", "/dev/hpet", "/dev/sev",
                      "/dev/vfio/vfio"}

# The user/group libvirt's distro packages build in (meson qemu_user/qemu_group) when qemu.conf sets none.
DISTRO_QEMU_USER = (
    (("debian", "ubuntu"), ("libvirt-qemu", "libvirt-qemu")),
    (("rhel", "fedora", "centos", "rocky", "almalinux", "ol", "suse", "opensuse"), ("qemu", "qemu")),
)


# --- shared helpers -------------------------------------------------------------------------------

def qemu_conf(facts) -> tuple[dict, bool]:
    """qemu.conf's parsed values and whether the file exists (absent: every default applies)."""
    conf = need(facts.source("libvirt_config").get("qemu.conf"), "qemu.conf")
    return conf["values"], conf["present"]  # guarded: a value with a gap raises where it is read


def conf_value(values: dict, key: str) -> Any:
    return values[key] if key in values else QEMU_DEFAULTS.get(key)


def collected_at(facts) -> datetime:
    return facts.collected_at


def parse_cpuset(text: str) -> set[int]:
    """libvirt cpuset syntax: '0-3,^2,8' -> {0, 1, 3, 8}. Raises ValueError on anything else."""
    include: set[int] = set()
    exclude: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        target = exclude if part.startswith("^") else include
        part = part.lstrip("^")
        if "-" in part:
            lo, hi = part.split("-", 1)
            target.update(range(int(lo), int(hi) + 1))
        else:
            target.add(int(part))
    return include - exclude


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


def capability_models(facts) -> list[str]:
    """Security models libvirt's capabilities report (/capabilities/host/secmodel/model)."""
    caps = need(facts.libvirt.get("capabilities"), "libvirt capabilities")
    try:
        root = ET.fromstring(caps)
    except ET.ParseError as exc:
        raise EvidenceMissing(f"libvirt capabilities do not parse: {exc}") from None
    return [(m.text or "").strip() for m in root.findall("host/secmodel/model")]


def guest_zones(facts) -> tuple[dict, Any]:
    """{guest name: zone or None} and None, or ({}, reason) when the guest list is unavailable."""
    try:
        return {g.name: g.labels.get("zone") for g in facts.guests()}, None
    except (EvidenceMissing, NotApplicable) as exc:
        return {}, str(exc)


def processes(facts) -> tuple[list | None, str | None, str | None]:
    """(process list, None, None); (None, 'skip'|'error', reason) when it cannot be had."""
    try:
        value = facts.source("processes")
    except NotApplicable as exc:
        return None, "skip", str(exc)
    except EvidenceMissing as exc:
        return None, "error", str(exc)
    return value, None, None


def is_qemu(proc: dict) -> bool:
    if proc.get("kind") in ("qemu", "libvirt"):
        return proc["kind"] == "qemu"
    name = str(proc.get("name") or "")
    exe = str(proc.get("exe") or "")
    return name.startswith("qemu-system") or name == "qemu-kvm" or exe.endswith("/qemu-kvm") \
        or "/qemu-system-" in exe


def _proc_label(proc: dict) -> str:
    return f"{proc.get('name')}[{proc.get('pid')}]"


# --- patching -------------------------------------------------------------------------------------

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
    now = collected_at(facts)
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
       remediation="Install the pending security updates (apt-get dist-upgrade / dnf upgrade --security).",
       sources="apt-get -s dist-upgrade / dnf -q check-update --security (live, --online)")
def pending_updates(facts, policy):
    """Security updates that the package manager already offers but that are not installed.

    Rule: any pending update from a security origin (apt: an origin naming '-security'; dnf: advisories
    of type security) -> fail. Only with --online (the package manager is slow and may use the
    network); otherwise skip. apt's answer is as fresh as its package lists: their age is evidence
    (vmaudit never runs `apt-get update`, which would change the host).
    """
    pending = facts.source("pending_updates")
    security = pending.get("security") or []
    evidence: dict = {"tool": pending.get("tool"), "command": " ".join(pending.get("command") or []),
                      "security_updates": security[:100], "count": len(security),
                      "other_updates": pending.get("other")}
    if pending.get("lists_mtime"):
        age = (collected_at(facts).timestamp() - float(pending["lists_mtime"])) / 86400
        evidence["package_lists_age_days"] = round(age, 1)
    if security:
        names = ", ".join(s["package"] for s in security[:10]) + (" …" if len(security) > 10 else "")
        yield Result("fail", f"{len(security)} security update(s) pending: {names}", "host", evidence,
                     "no pending security updates", f"{len(security)} pending")
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
    collected and only the reboot evidence is judged.
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
                missing.append(f"maps of {_proc_label(p)}: {gap.reason}")
                continue
            code = list(maps or [])  # the collector keeps only executable / shared-object mappings
            if code:
                stale.append({"pid": p.get("pid"), "name": p.get("name"), "deleted": code[:20]})
        evidence["processes_checked"] = len(procs)
        evidence["stale_processes"] = stale
    try:
        reboot = facts.source("reboot_required")
        evidence["reboot_required"] = reboot
        if reboot.get("present"):
            reasons.append(f"{reboot.get('path')} present"
                           + (f" ({', '.join(reboot.get('packages')[:5])})" if reboot.get("packages") else ""))
    except (EvidenceMissing, NotApplicable) as exc:
        missing.append(str(exc))
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
        missing.append(str(exc))
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


# --- confinement ----------------------------------------------------------------------------------

@check("M3-SECURITY-DRIVER", severity="critical",
       title="libvirt's security driver (sVirt)",
       remediation="Enable SELinux or AppArmor and libvirt's security driver: remove security_driver = "
                   "\"none\", keep security_default_confined = 1, set security_require_confined = 1.",
       sources="qemu.conf security_driver / security_default_confined / security_require_confined; "
               "capabilities /capabilities/host/secmodel/model")
def security_driver(facts, policy):
    """sVirt confines each QEMU process with its own SELinux/AppArmor label, so a guest that escapes
    into its QEMU process still cannot touch other guests' disks or the host. Without it, a QEMU
    exploit reaches everything the qemu user can.

    Rule: security_driver 'none' (string or list), security_default_confined = 0, or no selinux/apparmor
    model in libvirt's capabilities (the effective probe result) -> fail; security_require_confined
    != 1 (default 0: a guest may still be defined with <seclabel type='none'/>) -> warn.
    """
    values, present = qemu_conf(facts)
    driver = values.get("security_driver")
    drivers = [driver] if isinstance(driver, str) else list(driver or [])
    default_confined = conf_value(values, "security_default_confined")
    require_confined = conf_value(values, "security_require_confined")
    evidence: dict = {"qemu_conf_present": present, "security_driver": driver if driver is not None else "(probe)",
                      "security_default_confined": default_confined,
                      "security_require_confined": require_confined}
    problems = []
    if "none" in drivers:
        problems.append(f"security_driver = {driver!r}")
    if default_confined == 0:
        problems.append("security_default_confined = 0 (guests run unconfined unless they ask)")
    try:
        models = capability_models(facts)
        evidence["secmodels"] = models
        if not any(m in LSM_MODELS for m in models):
            problems.append(f"libvirt reports no SELinux/AppArmor security model (models: {models or 'none'})")
    except (EvidenceMissing, NotApplicable) as exc:
        evidence["secmodels"] = f"unavailable: {exc}"
        if not problems:
            yield Result("error", f"evidence missing: {exc}", "host", {**evidence, "reason": str(exc)})
            return
    if problems:
        yield Result("fail", "guests are not confined by sVirt: " + "; ".join(problems), "host", evidence,
                     "an SELinux/AppArmor security driver confining every guest", "; ".join(problems))
    elif require_confined != 1:
        yield Result("warn", "security_require_confined is not 1: a guest may still opt out with "
                     "<seclabel type='none'/>", "host", evidence, "security_require_confined = 1",
                     f"security_require_confined = {require_confined}")
    else:
        yield Result("pass", f"sVirt active ({', '.join(m for m in evidence['secmodels'] if m in LSM_MODELS)})"
                     " and required for every guest", "host", evidence)


def _disk_target(disk: ET.Element) -> str:
    target = disk.find("target")
    return (target.get("dev") if target is not None else None) or "?"


def _disk_has_source(disk: ET.Element) -> bool:
    src = disk.find("source")
    return src is not None and any(src.get(a) for a in ("file", "dev", "dir", "name", "volume", "pool"))


@guest_view
def _security_view(tree: ET.Element) -> dict:
    """The guest's <seclabel>s and, per disk with a source, whether an LSM relabel='no' covers it."""
    seclabels = [{"model": sl.get("model"), "type": sl.get("type", "dynamic"), "relabel": sl.get("relabel"),
                  "label": (sl.findtext("label") or "").strip() or None} for sl in tree.findall("seclabel")]
    disks = [(_disk_target(d),
              any(s.get("relabel") == "no" and (s.get("model") is None or s.get("model") in LSM_MODELS)
                  for s in d.findall("source/seclabel")))
             for d in tree.findall("devices/disk") if _disk_has_source(d)]
    return {"seclabels": seclabels, "disks": disks}


@check("M3-GUEST-SECLABEL", severity="high",
       title="Guest's own sVirt label",
       remediation="Use dynamic labels: remove <seclabel type='none'/>, model='none', relabel='no' and "
                   "shared static labels from the guest.",
       sources="/domain/seclabel, /domain/devices/disk/source/seclabel, the live XML of running guests")
def guest_seclabel(facts, policy):
    """Each guest needs a label of its own so that its QEMU cannot open another guest's images. A guest
    with seclabel type 'none' or model 'none' runs unconfined; relabel='no' on every disk leaves the
    images unlabelled (readable by other confined QEMUs that share their label); two guests with the
    same static label can read each other's disks.

    Rule: per guest, fail on seclabel type='none', model='none', relabel='no' (domain-wide or on every
    disk with a source, for the SELinux/AppArmor model), the same SELinux/AppArmor label (static, or the
    live label of a running guest) as another guest, or a running guest whose live XML carries no
    SELinux/AppArmor label while libvirt offers such a model; every guest when libvirt's capabilities
    offer no SELinux/AppArmor model at all (it runs, or will start, confined by DAC alone).
    """
    guests = facts.guests()
    try:
        lsm_models = [m for m in capability_models(facts) if m in LSM_MODELS]
        caps_error = None
    except (EvidenceMissing, NotApplicable) as exc:
        lsm_models, caps_error = [], str(exc)
    per_guest: dict[str, dict] = {}
    labels: dict[tuple, list[str]] = {}
    for g in guests:
        try:
            view = g.view(_security_view)
        except EvidenceMissing as exc:
            per_guest[g.name] = {"error": str(exc), "guest": g}
            continue
        problems, seen = [], view["seclabels"]
        lsm_labelled = False
        domain_norelabel = False
        for sl in seen:
            model, stype, label = sl["model"], sl["type"], sl["label"]
            if stype == "none":
                problems.append(f"seclabel type='none'{f' (model {model})' if model else ''}")
            if model == "none":
                problems.append("seclabel model='none'")
            applies_lsm = model is None or model in LSM_MODELS
            if applies_lsm and stype != "none" and model != "none":
                lsm_labelled = lsm_labelled or model in LSM_MODELS or bool(lsm_models)
            if applies_lsm and sl["relabel"] == "no" and stype != "none":
                domain_norelabel = True
            if label and applies_lsm and (stype == "static" or g.active):
                labels.setdefault((model or "?", label), []).append(g.name)
        disks = view["disks"]
        norelabel = [target for target, relabel_no in disks if relabel_no]
        if disks and (domain_norelabel or len(norelabel) == len(disks)):
            problems.append("relabel='no' on every disk: images keep a label other guests may share")
        if caps_error is None and not lsm_models:
            problems.append(f"libvirt offers no SELinux/AppArmor model: {'runs' if g.active else 'will start'} "
                            "without an LSM label")
        elif g.active and lsm_models and not lsm_labelled and not any("none" in p for p in problems):
            problems.append(f"running without an {'/'.join(lsm_models)} label in its live XML")
        per_guest[g.name] = {"guest": g, "problems": problems, "seclabels": seen,
                             "disks_relabel_no": norelabel, "active": g.active}
    for (model, label), names in labels.items():
        if len(set(names)) > 1:
            for name in set(names):
                others = sorted(set(names) - {name})
                per_guest[name]["problems"].append(f"{model} label {label!r} shared with {', '.join(others)}")
    for info in per_guest.values():
        g = info.pop("guest")
        if "error" in info:
            yield Result("error", f"evidence missing: {info['error']}", g.resource, {"reason": info["error"]})
            continue
        evidence = {**info, "host_lsm_models": lsm_models if caps_error is None else f"unavailable: {caps_error}"}
        if info["problems"]:
            yield Result("fail", "guest not confined by its own label: " + "; ".join(info["problems"]),
                         g.resource, evidence, "a dynamic label of its own", "; ".join(info["problems"]))
        elif caps_error is not None:  # without libvirt's security models no label can be confirmed
            yield Result("error", f"evidence missing: {caps_error}", g.resource,
                         {**evidence, "reason": caps_error})
        else:
            how = "live label checked" if g.active else "labelled dynamically when started"
            yield Result("pass", f"guest has its own sVirt label ({how})", g.resource, evidence)


LIBVIRT_PROFILE = re.compile(r"^libvirt-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
LIBVIRT_DAEMON_PROFILES = ("libvirtd", "/usr/sbin/libvirtd", "virtqemud", "/usr/sbin/virtqemud",
                           "virt-aa-helper", "/usr/lib/libvirt/virt-aa-helper")


@check("M3-LSM-ENFORCING", severity="high",
       title="SELinux/AppArmor enforcement for libvirt",
       remediation="Run SELinux in enforcing mode (SELINUX=enforcing, reboot or setenforce 1), or AppArmor "
                   "with libvirt's profiles in enforce mode (aa-enforce).",
       sources="/sys/fs/selinux/enforce; /sys/module/apparmor/parameters/enabled; "
               "/sys/kernel/security/apparmor/profiles; /etc/selinux/config (to explain)")
def lsm_enforcing(facts, policy):
    """sVirt only protects when its LSM enforces: in SELinux permissive mode or with AppArmor profiles
    in complain mode every denial is merely logged.

    Rule: SELinux enabled but permissive -> fail; AppArmor enabled with a libvirt profile (libvirtd,
    virtqemud, virt-aa-helper, libvirt-<uuid>) in complain mode, no libvirt daemon profile loaded at
    all, or a running guest without its libvirt-<uuid> profile loaded -> fail; neither SELinux nor
    AppArmor enabled -> fail. The effective state is read from /sys; /etc/selinux/config only explains.
    """
    lsm = facts.source("lsm")
    se, aa = lsm.get("selinux") or {}, lsm.get("apparmor") or {}
    evidence: dict = {"active_lsms": lsm.get("active"), "selinux": se, "apparmor_enabled": aa.get("enabled")}
    if se.get("enabled"):
        enforce = need(se.get("enforce"), "/sys/fs/selinux/enforce")
        if enforce == "1":
            yield Result("pass", "SELinux is enforcing", "host", evidence, "enforcing", "enforcing")
            return
        cfg = (se.get("config") or {}).get("SELINUX")
        why = f" (/etc/selinux/config says SELINUX={cfg})" if cfg else ""
        yield Result("fail", f"SELinux is permissive: denials are only logged{why}", "host", evidence,
                     "enforcing", "permissive")
        return
    # an unreadable AppArmor switch is missing evidence, not "no LSM"
    need(aa.get("enabled"), "/sys/module/apparmor/parameters/enabled")
    if aa.get("enabled") == "Y":
        profiles = need(aa.get("profiles"), "AppArmor profiles")
        libvirt = [p for p in profiles
                   if LIBVIRT_PROFILE.match(p["name"]) or p["name"] in LIBVIRT_DAEMON_PROFILES]
        evidence["libvirt_profiles"] = libvirt
        weak = [p for p in libvirt if p["mode"] not in ("enforce", "kill")]
        problems = [f"{p['name']} in {p['mode']} mode" for p in weak]
        if not any(p["name"] in LIBVIRT_DAEMON_PROFILES for p in libvirt):
            # libvirt's AppArmor driver only works under a confined daemon: without its profile the
            # daemon and every guest it starts run unconfined
            problems.append("no libvirt daemon profile (libvirtd / virtqemud / virt-aa-helper) is loaded")
        loaded = {p["name"] for p in profiles}
        try:
            running = [g for g in facts.guests() if g.active]
            unconfined = [g.name for g in running if f"libvirt-{g.uuid}" not in loaded]
            evidence["running_guests_without_profile"] = unconfined
            if unconfined:
                problems.append(f"running guest(s) without a libvirt-<uuid> profile: {', '.join(unconfined)}")
        except (EvidenceMissing, NotApplicable) as exc:
            evidence["running_guests"] = f"unavailable: {exc}"
        if problems:
            yield Result("fail", "AppArmor does not enforce for libvirt: " + "; ".join(problems[:10]), "host",
                         evidence, "libvirt profiles in enforce mode", "; ".join(problems))
        else:
            yield Result("pass", f"AppArmor enforces {len(libvirt)} libvirt profile(s)", "host", evidence,
                         "libvirt profiles in enforce mode", "enforce")
        return
    cfg = (se.get("config") or {}).get("SELINUX")
    why = f" (/etc/selinux/config says SELINUX={cfg}, but SELinux is not enabled in the kernel)" if cfg else ""
    yield Result("fail", f"neither SELinux nor AppArmor is enabled{why}", "host", evidence,
                 "SELinux enforcing or AppArmor enabled", "no LSM")


@check("M3-SECCOMP", severity="high",
       title="QEMU's seccomp sandbox",
       remediation="Remove seccomp_sandbox = 0 from qemu.conf (default 1) and restart the guests.",
       sources="qemu.conf seccomp_sandbox; (live) Seccomp: in /proc/<qemu pid>/status")
def seccomp(facts, policy):
    """QEMU's seccomp sandbox denies the system calls an exploited device model would need to spawn
    processes, elevate privileges or change resource limits.

    Rule: qemu.conf seccomp_sandbox other than 1 (default 1; 0 disables it, -1 leaves QEMU's own
    default, which is off) -> fail; a running QEMU whose /proc/<pid>/status says Seccomp other than 2
    (filter) -> fail. Under --root only the configuration is judged.
    """
    values, present = qemu_conf(facts)
    sandbox = conf_value(values, "seccomp_sandbox")
    evidence: dict = {"qemu_conf_present": present, "seccomp_sandbox": sandbox}
    problems = []
    if sandbox != 1:
        problems.append(f"seccomp_sandbox = {sandbox}")
    procs, status, why = processes(facts)
    if procs is None:
        evidence["processes"] = f"{status}: {why}"
        if status == "error" and not problems:
            yield Result("error", f"evidence missing: {why}", "host", {**evidence, "reason": why})
            return
    else:
        qemus = [p for p in procs if is_qemu(p)]
        evidence["qemu_processes"] = {_proc_label(p): p.get("seccomp") for p in qemus}
        unknown = [_proc_label(p) for p in qemus if lookup(p, "seccomp")[0] is None]
        unfiltered = [_proc_label(p) for p in qemus if lookup(p, "seccomp")[0] not in (None, 2)]
        if unfiltered:
            problems.append(f"QEMU without a seccomp filter: {', '.join(unfiltered)}")
        if unknown and not problems:
            reason = f"Seccomp: status not readable for {', '.join(unknown)}"
            yield Result("error", f"evidence missing: {reason}", "host", {**evidence, "reason": reason})
            return
    if problems:
        yield Result("fail", "; ".join(problems), "host", evidence, "seccomp_sandbox = 1, Seccomp: 2",
                     "; ".join(problems))
    else:
        yield Result("pass", "QEMU's seccomp sandbox is on" + (" and every running QEMU is filtered"
                     if procs is not None else ""), "host", evidence, "seccomp_sandbox = 1", "1")


def _is_root(name: Any) -> bool:
    return str(name).strip() in ("root", "+0", "0")


@check("M3-QEMU-USER", severity="critical",
       title="Account QEMU runs as",
       remediation="Set user and group in qemu.conf to an unprivileged account (libvirt-qemu on Debian, qemu "
                   "on RHEL) and restart the guests.",
       sources="qemu.conf user/group (default: the distro's build default); (live) uid/gid of QEMU processes")
def qemu_user(facts, policy):
    """A QEMU process running as root turns any guest escape into the host's root, defeating DAC
    separation between guests.

    Rule: qemu.conf user or group root (or +0), or a running QEMU process with uid or gid 0 -> fail.
    When qemu.conf sets no user, the distro's build default applies (libvirt-qemu on Debian/Ubuntu, qemu
    on RHEL/Fedora/SUSE); when that is unknown, the live processes decide; otherwise error.
    """
    values, present = qemu_conf(facts)
    evidence: dict = {"qemu_conf_present": present}
    user, group = values.get("user"), values.get("group")
    source = "qemu.conf"
    if user is None or group is None:
        try:
            osr = facts.source("os_release")
            ids = [str(osr.get("ID", ""))] + str(osr.get("ID_LIKE", "")).split()
        except (EvidenceMissing, NotApplicable):
            ids = []
        default = next((d for names, d in DISTRO_QEMU_USER if any(i in names for i in ids)), None)
        evidence["distro"] = ids[0] if ids else None
        if default:
            user = user if user is not None else default[0]
            group = group if group is not None else default[1]
            source = "qemu.conf and the distro default" if present and (values.get("user") or values.get("group")) \
                else "distro default"
    evidence.update({"user": user, "group": group, "from": source})
    problems = []
    if user is not None and _is_root(user):
        problems.append(f"user = {user!r} ({source})")
    if group is not None and _is_root(group):
        problems.append(f"group = {group!r} ({source})")
    procs, status, why = processes(facts)
    qemus: list = []
    if procs is None:
        evidence["processes"] = f"{status}: {why}"
    else:
        qemus = [p for p in procs if is_qemu(p)]
        evidence["qemu_processes"] = {_proc_label(p): {"uid": p.get("uid"), "user": p.get("user"),
                                                       "gid": p.get("gid")} for p in qemus}
        as_root = [_proc_label(p) for p in qemus if p.get("uid") == 0 or p.get("gid") == 0]
        if as_root:
            problems.append(f"running as root: {', '.join(as_root)}")
    if problems:
        yield Result("fail", "QEMU runs with root privileges: " + "; ".join(problems), "host", evidence,
                     "an unprivileged user and group", "; ".join(problems))
    elif user is None and not qemus:
        # nothing tells the user: upstream libvirt's build default is root on unknown distros, and no
        # running QEMU shows the effective one
        reason = ("qemu.conf sets no user and this distro's build default is unknown"
                  + ("" if procs is None else "; no QEMU process runs to show the effective user"))
        yield Result("error", f"evidence missing: {reason}", "host", {**evidence, "reason": reason})
    else:
        yield Result("pass", f"QEMU runs unprivileged ({user or 'per running processes'}:{group or '?'})",
                     "host", evidence, "an unprivileged user and group", f"{user}:{group}")


@check("M3-QEMU-ISOLATION", severity="medium",
       title="Per-guest isolation settings of QEMU in qemu.conf",
       remediation="Restore the defaults: dynamic_ownership = 1, namespaces = [\"mount\"], the default "
                   "cgroup_device_acl, cgroup_controllers with \"devices\", clear_emulator_capabilities = 1.",
       sources="qemu.conf dynamic_ownership, namespaces, cgroup_device_acl, cgroup_controllers, "
               "clear_emulator_capabilities")
def qemu_isolation(facts, policy):
    """Beyond sVirt, libvirt separates guests by giving each QEMU only its own image files
    (dynamic_ownership), a private /dev (mount namespace) and a device cgroup allowing a short list of
    devices. Turning these off or widening the list gives an exploited QEMU more of the host.

    Rule: dynamic_ownership = 0, namespaces without "mount", cgroup_device_acl listing devices beyond
    libvirt's defaults, cgroup_controllers without "devices", or clear_emulator_capabilities = 0 ->
    warn, listing each.
    """
    values, present = qemu_conf(facts)
    evidence: dict = {"qemu_conf_present": present}
    problems = []
    for key in ("dynamic_ownership", "clear_emulator_capabilities"):
        evidence[key] = conf_value(values, key)
        if evidence[key] == 0:
            problems.append(f"{key} = 0")
    ns = conf_value(values, "namespaces")
    evidence["namespaces"] = ns
    if "mount" not in (ns if isinstance(ns, list) else [ns]):
        problems.append(f"namespaces = {ns!r} (no private /dev per guest)")
    acl = values.get("cgroup_device_acl")
    evidence["cgroup_device_acl"] = acl if acl is not None else "(default)"
    if acl is not None:
        extra = sorted(set(acl if isinstance(acl, list) else [acl]) - DEFAULT_DEVICE_ACL)
        evidence["cgroup_device_acl_extra"] = extra
        if extra:
            problems.append(f"cgroup_device_acl widened: {', '.join(map(str, extra))}")
    controllers = values.get("cgroup_controllers")
    if controllers is not None:
        evidence["cgroup_controllers"] = controllers
        if "devices" not in (controllers if isinstance(controllers, list) else [controllers]):
            problems.append("cgroup_controllers without \"devices\" (no device ACL at all)")
    if problems:
        yield Result("warn", "QEMU isolation weakened: " + "; ".join(problems), "host", evidence,
                     "libvirt's defaults", "; ".join(problems))
    else:
        yield Result("pass", "libvirt's QEMU isolation defaults are in place", "host", evidence)


# --- sharing between guests -----------------------------------------------------------------------

@check("M3-KSM", severity="high",
       title="Kernel same-page merging (KSM) between guests",
       remediation="echo 2 > /sys/kernel/mm/ksm/run; disable ksmtuned/ksm services; or give each guest "
                   "<memoryBacking><nosharepages/></memoryBacking>.",
       sources="/sys/kernel/mm/ksm/run; /domain/memoryBacking/nosharepages")
def ksm(facts, policy):
    """KSM merges identical pages of different guests; the copy-on-write timing of a merged page lets
    one guest learn what another holds in memory (cross-VM side channels, Rowhammer on shared pages).

    Rule: /sys/kernel/mm/ksm/run = 1 -> fail, high when the host holds guests of more than one zone,
    else medium; the guests without memoryBacking/nosharepages are listed. run 0 or 2, or a kernel
    without KSM -> pass.
    """
    k = facts.source("ksm")
    if not k["present"]:
        yield Result("pass", "the kernel has no KSM (/sys/kernel/mm/ksm absent)", "host", {"present": False})
        return
    run = k["run"]  # 0, 1 or 2 (the schema); a gap raises
    if run is None:
        raise EvidenceMissing("/sys/kernel/mm/ksm/run: no value although /sys/kernel/mm/ksm exists")
    evidence: dict = {"run": run, "pages_shared": k.get("pages_shared"), "pages_sharing": k.get("pages_sharing")}
    if run != 1:
        yield Result("pass", f"KSM is not running (run = {run})", "host", evidence, "0 or 2", str(run))
        return
    zones, guests_error = guest_zones(facts)
    distinct = sorted({z for z in zones.values() if z})
    evidence["zones"] = distinct
    sharing: list[str] = []
    if guests_error:
        evidence["guests"] = f"unavailable: {guests_error}"
    else:
        for g in facts.guests():
            try:
                if g.find("memoryBacking/nosharepages") is None:
                    sharing.append(g.name)
            except EvidenceMissing:
                sharing.append(f"{g.name} (XML unavailable)")
        evidence["guests_without_nosharepages"] = sharing
    severity = "high" if len(distinct) > 1 or guests_error else "medium"
    listed = f"; guests merged: {', '.join(sharing[:20])}" if sharing else ""
    yield Result("fail", f"KSM is running{' across zones ' + ', '.join(distinct) if len(distinct) > 1 else ''}"
                 f"{listed}", "host", evidence, "KSM off (run 0 or 2)", "run = 1", severity=severity)


@check("M3-SHARED-MEMORY", severity="medium", scope="guest",
       title="Guest's shared memory and host file shares",
       remediation="Remove <shmem>, shared memoryBacking access and <filesystem> passthrough unless required.",
       sources="/domain/devices/shmem, /domain/memoryBacking/access[@mode='shared'], /domain/devices/filesystem")
def shared_memory(guest, facts, policy):
    """Shared memory regions (ivshmem), shared memory backing (for vhost-user/virtiofs) and host
    directories exported with virtiofs or 9p open channels between a guest and the host or other
    guests that bypass the usual virtual-hardware boundary.

    Rule: per guest, any <shmem>, memoryBacking/access mode='shared' or <filesystem> -> warn, listing them.
    """
    found = []
    for shm in guest.findall("devices/shmem"):
        found.append(f"shmem {shm.get('name')!r}")
    access = guest.find("memoryBacking/access")
    if access is not None and access.get("mode") == "shared":
        found.append("memoryBacking access mode='shared'")
    for fs in guest.findall("devices/filesystem"):
        driver = fs.find("driver")
        kind = driver.get("type") if driver is not None and driver.get("type") else "9p"
        src = fs.find("source")
        path = (src.get("dir") or src.get("name") or src.get("file") or src.get("socket")) if src is not None else None
        found.append(f"filesystem {kind} {path or '?'} ({fs.get('accessmode', 'passthrough')})")
    if found:
        yield Result("warn", "guest shares memory or host files: " + "; ".join(found), guest.resource,
                     {"shared": found}, "no shared memory or host file systems", "; ".join(found))
    else:
        yield Result("pass", "no shared memory or host file-system passthrough", guest.resource, {"shared": []})


SIDE_CHANNEL_PARAMS = ("mitigations=off", "nopti", "pti=off", "nospectre_v1", "nospectre_v2", "spectre_v2=off",
                       "mds=off", "l1tf=off", "tsx_async_abort=off", "mmio_stale_data=off", "retbleed=off",
                       "spec_store_bypass_disable=off", "nospec_store_bypass_disable", "srbds=off",
                       "gather_data_sampling=off", "spec_rstack_overflow=off", "reg_file_data_sampling=off",
                       "spectre_bhi=off", "kvm.nx_huge_pages=off")


# One clause of a vulnerabilities file saying "vulnerable": the whole text ("Vulnerable: No microcode"),
# or a component ("KVM: Vulnerable" in itlb_multihit, "VMX: vulnerable" in l1tf when KVM does not flush
# the L1D on VM entry, "BHI: Vulnerable" / "PBRSB-eIBRS: Vulnerable" in spectre_v2). "SMT vulnerable"
# is not one (it is judged separately).
_VULN_CLAUSE = re.compile(r"^(?:[\w./+-]+(?: [\w./+-]+)?: )?vulnerable\b", re.I)


def _vulnerable(text: str) -> bool:
    """Whether a /sys/devices/system/cpu/vulnerabilities/* text reports something left vulnerable to a
    guest. "BHI: Vulnerable, KVM: SW loop" (spectre_bhi=vmexit) protects the host from guests: not one."""
    clauses = [c.strip() for c in re.split(r"[;,]", text)]
    for i, clause in enumerate(clauses):
        if _VULN_CLAUSE.match(clause):
            following = clauses[i + 1] if i + 1 < len(clauses) else ""
            if following.startswith("KVM:") and not _VULN_CLAUSE.match(following):
                continue
            return True
    return False


@check("M3-CPU-VULNS", severity="high",
       title="CPU side-channel mitigations",
       remediation="Update microcode and kernel, drop mitigations=off, and use nosmt (or core scheduling) "
                   "where the kernel reports 'SMT vulnerable'.",
       sources="/sys/devices/system/cpu/vulnerabilities/*, /proc/cmdline, /sys/devices/system/cpu/smt/control")
def cpu_vulns(facts, policy):
    """Speculative-execution flaws (L1TF, MDS, Spectre, Retbleed, …) let a guest read host or other
    guests' memory. The kernel reports the effective state of each mitigation in sysfs.

    Rule: a vulnerabilities file reporting 'Vulnerable' (the whole text, or a part: 'KVM: Vulnerable',
    L1TF's 'VMX: vulnerable' (no L1D flush on VM entry), spectre_v2's 'BHI: Vulnerable' unless KVM is
    still protected), or mitigations=off on the kernel command line -> fail; SMT on while a file says
    'SMT vulnerable' -> warn. Other parameters that turn single mitigations off are listed as evidence.
    """
    cs = facts.source("cpu_security")
    vulns = need(cs.get("vulnerabilities"), "CPU vulnerabilities")
    evidence: dict = {"vulnerabilities": vulns, "smt_control": cs.get("smt_control"),
                      "smt_active": cs.get("smt_active")}
    try:
        cmdline = facts.source("cmdline")
        params = [p for p in cmdline.split() if p in SIDE_CHANNEL_PARAMS]
        evidence["cmdline_params"] = params
    except (EvidenceMissing, NotApplicable) as exc:
        params, evidence["cmdline"] = [], f"unavailable: {exc}"
    texts = {n: t for n, t, gap in partial(vulns) if gap is None and t is not None}
    unreadable = sorted(n for n, _t, _gap in partial(vulns) if n not in texts)
    vulnerable = sorted(n for n, t in texts.items() if _vulnerable(t))
    smt_exposed = sorted(n for n, t in texts.items() if "SMT vulnerable" in t)
    smt_on = cs.get("smt_control") == "on" or (cs.get("smt_control") is None and cs.get("smt_active") == "1")
    problems = [f"{n}: {texts[n]}" for n in vulnerable]
    if "mitigations=off" in params:
        problems.insert(0, "mitigations=off on the kernel command line")
    if problems:
        yield Result("fail", "unmitigated CPU vulnerabilities: " + "; ".join(problems[:6]), "host", evidence,
                     "every vulnerability mitigated or not affected", "; ".join(problems))
    elif smt_exposed and smt_on:
        yield Result("warn", f"SMT is on while {', '.join(smt_exposed)} report 'SMT vulnerable'", "host",
                     evidence, "SMT off (nosmt) or core scheduling", "SMT on", severity="medium")
    elif unreadable:
        reason = f"unreadable: {', '.join(unreadable)}"
        yield Result("error", f"evidence missing: {reason}", "host", {**evidence, "reason": reason})
    else:
        yield Result("pass", f"all {len(vulns)} reported CPU vulnerabilities are mitigated or not affected",
                     "host", evidence)


def _guest_cpus(g, all_cpus: set[int]) -> set[int]:
    """Host CPUs a guest's vCPUs and emulator threads may run on, from its pinning (libvirt semantics:
    vcpupin per vCPU, else vcpu/@cpuset, else every CPU; emulatorpin, else vcpu/@cpuset)."""
    vcpu = g.find("vcpu")
    default = all_cpus
    if vcpu is not None and vcpu.get("cpuset") and vcpu.get("placement", "static") == "static":
        default = parse_cpuset(vcpu.get("cpuset")) & all_cpus
    count = int((vcpu.text or "1").strip()) if vcpu is not None else 1  # pins address every vCPU, not only current
    pins = {int(p.get("vcpu", -1)): parse_cpuset(p.get("cpuset", "")) for p in g.findall("cputune/vcpupin")}
    cpus: set[int] = set()
    for i in range(max(count, 1)):
        cpus |= pins.get(i, default)
    emu = g.find("cputune/emulatorpin")
    cpus |= parse_cpuset(emu.get("cpuset", "")) if emu is not None else default
    for io in g.findall("cputune/iothreadpin"):
        cpus |= parse_cpuset(io.get("cpuset", ""))
    return cpus & all_cpus if all_cpus else cpus


@check("M3-CORE-SHARING", severity="medium",
       title="Physical cores (SMT siblings) shared across zones",
       remediation="Pin guests of each zone to separate physical cores (vcpupin/emulatorpin), or disable SMT.",
       sources="/domain/cputune/vcpupin, emulatorpin, vcpu/@cpuset; "
               "/sys/devices/system/cpu/cpu*/topology/thread_siblings_list")
def core_sharing(facts, policy):
    """Hyper-threads of one core share L1/L2 caches and execution units: a guest on one thread can
    observe its sibling's secrets (L1TF, MDS, port contention). Guests of different zones must not be
    able to run on sibling threads at the same time.

    Rule: two guests of different zones whose allowed host CPUs (vcpupin, else vcpu/@cpuset, else all;
    emulatorpin; iothreadpin) include threads of one multi-threaded core -> warn, naming the pairs.
    Unpinned guests on an SMT host therefore warn as soon as two zones are present. Guests without a
    zone are listed but not paired (M1-ZONE-UNLABELLED covers them).
    """
    cs = facts.source("cpu_security")
    siblings_raw = need(cs.get("thread_siblings"), "thread siblings")
    core_of: dict[int, frozenset] = {}
    for cpu, text, gap in partial(siblings_raw):
        if gap is None:  # an unreadable CPU's siblings are unknown; the others still tell SMT
            core_of[int(cpu)] = frozenset(parse_cpuset(text))
    smt = any(len(c) > 1 for c in core_of.values())
    evidence: dict = {"smt": smt, "smt_control": cs.get("smt_control"), "cpus": len(core_of)}
    guests = facts.guests()
    zoned = {g.name: g.labels.get("zone") for g in guests}
    evidence["zones"] = {k: v for k, v in zoned.items() if v}
    evidence["unzoned"] = sorted(k for k, v in zoned.items() if not v)
    if len({z for z in zoned.values() if z}) < 2:
        yield Result("pass", "the host holds guests of one zone at most", "host", evidence)
        return
    if not smt:
        yield Result("pass", "SMT is off: no core runs two threads", "host", evidence)
        return
    cores: dict[str, set] = {}
    errors = []
    all_cpus = set(core_of)
    for g in guests:
        if not zoned.get(g.name):
            continue
        try:
            cores[g.name] = {core_of[c] for c in _guest_cpus(g, all_cpus) if len(core_of.get(c, ())) > 1}
        except EvidenceMissing as exc:
            errors.append(str(exc))
        except ValueError as exc:
            errors.append(f"{g.name}: bad cpuset ({exc})")
    pairs = []
    names = sorted(cores)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if zoned[a] != zoned[b] and cores[a] & cores[b]:
                shared = sorted(",".join(map(str, sorted(c))) for c in cores[a] & cores[b])
                pairs.append({"guests": [a, b], "zones": [zoned[a], zoned[b]], "cores": shared[:8]})
    evidence["pairs"] = pairs
    if pairs:
        text = "; ".join(f"{p['guests'][0]} ({p['zones'][0]}) / {p['guests'][1]} ({p['zones'][1]})"
                         for p in pairs[:5])
        yield Result("warn", f"guests of different zones can run on sibling threads: {text}", "host", evidence,
                     "each core serves one zone", f"{len(pairs)} pair(s)")
    elif errors:
        evidence["reason"] = "; ".join(errors)
        yield Result("error", "evidence missing: " + "; ".join(errors), "host", evidence)
    else:
        yield Result("pass", "guests of different zones are pinned to separate cores", "host", evidence)


@check("M3-NESTED", severity="medium",
       title="Nested virtualization",
       remediation="Load kvm_intel/kvm_amd with nested=0 (options kvm_intel nested=0 in /etc/modprobe.d), "
                   "or set [host] allow_nested = true where it is needed.",
       sources="/sys/module/kvm_intel/parameters/nested, /sys/module/kvm_amd/parameters/nested")
def nested(facts, policy):
    """Nested virtualization exposes the far more complex VMX/SVM emulation in the host kernel to guests,
    the source of several guest-to-host escapes.

    Rule: kvm_intel or kvm_amd nested = Y/1 while [host] allow_nested is false (default) -> warn;
    neither module loaded -> skip.
    """
    n = facts.source("kvm_nested")
    allowed = policy.get("host", "allow_nested")
    evidence: dict = {"kvm_intel": n.get("kvm_intel"), "kvm_amd": n.get("kvm_amd"), "allow_nested": allowed}
    loaded = {m: need(v, f"/sys/module/{m}/parameters/nested") for m, v in n.items() if v is not None}
    if not loaded:
        yield Result("skip", "neither kvm_intel nor kvm_amd is loaded", "host", evidence)
        return
    on = [m for m, v in loaded.items() if str(v).strip().upper() in ("Y", "1")]
    if on and not allowed:
        yield Result("warn", f"nested virtualization is on ({', '.join(on)})", "host", evidence, "nested = N",
                     "nested = Y")
    elif on:
        yield Result("pass", f"nested virtualization is on ({', '.join(on)}), allowed by policy", "host",
                     evidence, "allowed", "nested = Y")
    else:
        yield Result("pass", "nested virtualization is off", "host", evidence, "nested = N", "nested = N")


# --- consoles -------------------------------------------------------------------------------------

# libvirt's <graphics type='spice'><channel name=...> names (virDomainGraphicsSpiceChannelName)
SPICE_CHANNELS = {"main", "display", "inputs", "cursor", "playback", "record", "smartcard", "usbredir"}




@check("M3-GRAPHICS-EXPOSED", severity="high", scope="guest",
       title="Network exposure of the guest console (VNC/SPICE)",
       remediation="Listen on 127.0.0.1 or a UNIX socket (tunnel over SSH), or enable vnc_tls / spice_tls "
                   "with defaultMode='secure'.",
       sources="/domain/devices/graphics (listen, <listen>, autoport, passwd); qemu.conf vnc_listen, vnc_tls, "
               "spice_listen, spice_tls, vnc_auto_unix_socket, vnc_password, spice_password, vnc_sasl")
def graphics_exposed(guest, facts, policy):
    """A VNC or SPICE console gives keyboard, screen and often boot-menu control of the guest. On a
    non-loopback address without TLS its traffic and its (at most 8-character, DES-challenge) VNC
    password cross the network in the clear.

    Rule: per guest, a VNC/SPICE display listening on a non-loopback address (the <listen> element or
    listen attribute, else qemu.conf vnc_listen/spice_listen, default 127.0.0.1; type 'network' counts as
    non-loopback) without TLS (vnc_tls = 1; spice_tls = 1 with defaultMode='secure') -> fail; with
    vnc_sasl or a qemu.conf default password but no TLS -> warn. A read-only libvirt connection never
    returns the passwd attribute, so a per-guest password cannot be seen and never makes this pass.
    """
    graphics = [g for g in guest.findall("devices/graphics") if g.get("type") in ("vnc", "spice")]
    if not graphics:
        yield Result("pass", "no VNC/SPICE console", guest.resource, {"graphics": []})
        return
    values, _present = qemu_conf(facts)
    displays, worst = [], "pass"
    rank = {"pass": 0, "warn": 1, "fail": 2}
    for gr in graphics:
        kind = gr.get("type")
        listen = gr.find("listen")
        ltype = listen.get("type") if listen is not None else ("address" if gr.get("listen") else None)
        if ltype == "address":
            address = (listen.get("address") if listen is not None else None) or gr.get("listen") \
                or conf_value(values, f"{kind}_listen")
        elif ltype == "network":
            address = f"network:{listen.get('network')}"
        elif ltype in ("socket", "none"):
            address = ltype
        elif kind == "vnc" and conf_value(values, "vnc_auto_unix_socket") == 1:
            address = "socket"
        else:
            address = conf_value(values, f"{kind}_listen")
        tls = conf_value(values, f"{kind}_tls") == 1
        if kind == "spice":
            # a channel not listed takes defaultMode ('any': the client may pick the plain port)
            secure = {c.get("name") for c in gr.findall("channel") if c.get("mode") == "secure"}
            insecure = {c.get("name") for c in gr.findall("channel") if c.get("mode") != "secure"}
            tls = tls and not insecure and (gr.get("defaultMode") == "secure" or SPICE_CHANNELS <= secure)
        auth = []
        if conf_value(values, f"{kind}_sasl") == 1:
            auth.append(f"{kind}_sasl")
        if values.get(f"{kind}_password"):
            auth.append(f"{kind}_password (qemu.conf)")
        if gr.get("passwd") is not None:
            auth.append("passwd (domain XML)")
        exposed = address not in ("socket", "none") and (address.startswith("network:") or not loopback(address))
        status = "pass" if not exposed or tls else ("warn" if auth else "fail")
        worst = max(worst, status, key=rank.get)
        displays.append({"type": kind, "listen": address, "autoport": gr.get("autoport"), "port": gr.get("port"),
                         "tls": tls, "auth": auth, "exposed": exposed, "verdict": status})
    evidence = {"graphics": displays,
                "password_visibility": "the passwd attribute is never returned over a read-only libvirt "
                                       "connection; a per-guest password cannot be verified"}
    exposed = [d for d in displays if d["verdict"] != "pass"]
    desc = "; ".join(f"{d['type']} on {d['listen']}" for d in exposed)
    if worst == "fail":
        yield Result("fail", f"console reachable from the network without TLS: {desc}", guest.resource, evidence,
                     "loopback, a UNIX socket or TLS", desc)
    elif worst == "warn":
        yield Result("warn", f"console on the network with authentication but no TLS: {desc}", guest.resource,
                     evidence, "loopback, a UNIX socket or TLS", desc)
    else:
        yield Result("pass", "consoles listen locally or use TLS", guest.resource, evidence)
