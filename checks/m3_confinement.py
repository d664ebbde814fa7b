"""M3: QEMU confined on the host — sVirt (libvirt's security driver and each guest's label), an
enforcing LSM with libvirt's profiles, seccomp, an unprivileged QEMU user (qemu.conf and guests' DAC
labels), and libvirt's per-guest namespaces and device cgroup.

Sources: libvirt_config (qemu.conf), lsm, os_release (collectors/config.py, collectors/hardening.py);
libvirt (capabilities, domain XML); processes (collectors/live.py, live).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from vmaudit.checks._qemu import (
    conf_value,
    distro_ids,
    distro_qemu_default,
    is_qemu,
    proc_label,
    processes,
    qemu_conf,
)
from vmaudit.checks._xml import find_all
from vmaudit.engine import Result, check
from vmaudit.facts import EvidenceMissing, NotApplicable, guest_view, lookup, need

LSM_MODELS = ("selinux", "apparmor")


# Every device libvirt has shipped in its default cgroup_device_acl over the years (qemu_cgroup.c and
# the qemu.conf sample): an explicit list made only of these has not been widened.
DEFAULT_DEVICE_ACL = {"/dev/null", "/dev/full", "/dev/zero", "/dev/random", "/dev/urandom", "/dev/ptmx",
                      "/dev/kvm", "/dev/userfaultfd", "/dev/kqemu", "/dev/rtc", "/dev/hpet", "/dev/sev",
                      "/dev/vfio/vfio"}


def capability_models(facts) -> list[str]:
    """Security models libvirt's capabilities report (/capabilities/host/secmodel/model)."""
    caps = need(facts.libvirt.get("capabilities"), "libvirt capabilities")
    try:
        root = ET.fromstring(caps)
    except ET.ParseError as exc:
        raise EvidenceMissing(f"libvirt capabilities do not parse: {exc}") from None
    return [(m.text or "").strip() for m in root.findall("host/secmodel/model")]


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
    != 1 (default 0: a guest may still be defined with <seclabel type='none'/>) -> warn, medium (a
    review item: each guest's own label is judged by M3-GUEST-SECLABEL). Auditing an image (--root
    without --connect) the capabilities are not examined: qemu.conf alone decides.
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
    note = ""
    if "none" in drivers:
        problems.append(f"security_driver = {driver!r}")
    if default_confined == 0:
        problems.append("security_default_confined = 0 (guests run unconfined unless they ask)")
    try:
        models = capability_models(facts)
        evidence["secmodels"] = models
        if not any(m in LSM_MODELS for m in models):
            problems.append(f"libvirt reports no SELinux/AppArmor security model (models: {models or 'none'})")
    except NotApplicable as exc:  # an image under --root: only a running libvirt reports its models
        evidence["secmodels"] = f"not examined: {exc}"
        note = " (libvirt's security models not examined: only a running libvirt reports them)"
    except EvidenceMissing as exc:
        evidence["secmodels"] = f"unavailable: {exc}"
        if not problems:
            yield Result("error", f"evidence missing: {exc}", "host", {**evidence, "reason": str(exc)})
            return
    if problems:
        yield Result("fail", "guests are not confined by sVirt: " + "; ".join(problems), "host", evidence,
                     "an SELinux/AppArmor security driver confining every guest", "; ".join(problems))
    elif require_confined != 1:
        yield Result("warn", "security_require_confined is not 1: a guest may still opt out with "
                     f"<seclabel type='none'/>{note}", "host", evidence, "security_require_confined = 1",
                     f"security_require_confined = {require_confined}", severity="medium")
    elif note:
        yield Result("pass", f"qemu.conf confines and requires confinement for every guest{note}", "host",
                     evidence)
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
    # plain-tag walks: a path with '/' in findall goes through ElementPath, dearer than the walk
    disks = [(_disk_target(d),
              any(s.get("relabel") == "no" and (s.get("model") is None or s.get("model") in LSM_MODELS)
                  for s in find_all(d, "source", "seclabel")))
             for d in find_all(tree, "devices", "disk") if _disk_has_source(d)]
    return {"seclabels": seclabels, "disks": disks}


def _configured_seclabel_problems(view: dict) -> dict:
    """What a definition configures (not live labels): type/model none, relabel='no' on every disk, and
    its static LSM labels as {(model, label)} for the shared-label rule."""
    problems, static = [], set()
    domain_norelabel = False
    for sl in view["seclabels"]:
        model, stype = sl["model"], sl["type"]
        if stype == "none":
            problems.append(f"seclabel type='none'{f' (model {model})' if model else ''}")
        if model == "none":
            problems.append("seclabel model='none'")
        applies_lsm = model is None or model in LSM_MODELS
        if applies_lsm and sl["relabel"] == "no" and stype != "none":
            domain_norelabel = True
        if sl["label"] and applies_lsm and stype == "static":
            static.add((model or "?", sl["label"]))
    disks = view["disks"]
    if disks and (domain_norelabel or all(relabel_no for _, relabel_no in disks)):
        problems.append("relabel='no' on every disk: images keep a label other guests may share")
    return {"problems": problems, "static": static}


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
    Definitions: a running guest's live labels from its live definition; what its persistent definition
    configures (type/model none, relabel='no', static labels) is judged too, "after the next start".
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
        active = g.active  # read once (a state libvirt could not tell raises here, as at its first use)
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
            if label and applies_lsm and (stype == "static" or active):
                labels.setdefault((model or "?", label), []).append(g.name)
        disks = view["disks"]
        norelabel = [target for target, relabel_no in disks if relabel_no]
        if disks and (domain_norelabel or len(norelabel) == len(disks)):
            problems.append("relabel='no' on every disk: images keep a label other guests may share")
        if caps_error is None and not lsm_models:
            problems.append(f"libvirt offers no SELinux/AppArmor model: {'runs' if active else 'will start'} "
                            "without an LSM label")
        elif active and lsm_models and not lsm_labelled and not any("none" in p for p in problems):
            problems.append(f"running without an {'/'.join(lsm_models)} label in its live XML")
        entry = {"guest": g, "problems": problems, "seclabels": seen, "disks_relabel_no": norelabel,
                 "active": active}
        persistent = g.definition_of("persistent") if active else None
        if persistent is not None:  # what the running guest is confined by after its next start
            try:
                later = _configured_seclabel_problems(persistent.view(_security_view))
            except EvidenceMissing as exc:  # a live problem still fails; else the guest is unproven
                entry["persistent_error"] = str(exc)
            else:
                problems += [f"after the next start: {p}" for p in later["problems"] if p not in problems]
                for key in later["static"]:
                    if g.name not in labels.get(key, []):
                        labels.setdefault(key, []).append(g.name)
                entry["seclabels_after_next_start"] = persistent.view(_security_view)["seclabels"]
        per_guest[g.name] = entry
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
        elif "persistent_error" in info:
            reason = f"after the next start: {info['persistent_error']}"
            yield Result("error", f"evidence missing: {reason}", g.resource, {**evidence, "reason": reason})
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
    On a host without libvirt (host.libvirt "absent") the libvirt profiles are not judged: AppArmor
    enabled -> pass.
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
    if aa.get("enabled") == "Y" and facts.libvirt_absent:
        # no libvirt, no libvirt profiles to judge: a Proxmox node confines QEMU its own way
        evidence["libvirt_profiles"] = "not judged: libvirt is not installed on this host"
        yield Result("pass", "AppArmor is enabled (libvirt is not installed: its profiles are not judged)",
                     "host", evidence, "AppArmor enabled", "enabled")
        return
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
        evidence["qemu_processes"] = {proc_label(p): p.get("seccomp") for p in qemus}
        unknown = [proc_label(p) for p in qemus if lookup(p, "seccomp")[0] is None]
        unfiltered = [proc_label(p) for p in qemus if lookup(p, "seccomp")[0] not in (None, 2)]
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


@guest_view
def root_dac_label(tree) -> str | None:
    """A guest's static DAC label when it makes QEMU run as root ('+0:+0', 'root:root', '+0:+107')."""
    for sl in tree.findall("seclabel"):
        if sl.get("model") != "dac" or sl.get("type", "dynamic") != "static":
            continue
        label = (sl.findtext("label") or "").strip()
        user, _, group = label.partition(":")
        if label and (_is_root(user) or _is_root(group)):
            return label
    return None


@check("M3-QEMU-USER", severity="critical",
       title="Account QEMU runs as",
       remediation="Set user and group in qemu.conf to an unprivileged account (libvirt-qemu on Debian, qemu "
                   "on RHEL) and restart the guests.",
       sources="qemu.conf user/group (default: the distro's build default); each guest's "
               "<seclabel type='static' model='dac'><label>; (live) uid/gid of QEMU processes")
def qemu_user(facts, policy):
    """A QEMU process running as root turns any guest escape into the host's root, defeating DAC
    separation between guests.

    Rule: qemu.conf user or group root (or +0), or a running QEMU process with uid or gid 0 -> fail for
    the host. When qemu.conf sets no user, the distro's build default applies (libvirt-qemu on
    Debian/Ubuntu, qemu on RHEL/Fedora/SUSE); when that is unknown, the live processes decide; otherwise
    error. A guest whose static DAC label is root (`<seclabel type='static' model='dac'><label>+0:+0`,
    `root:root`) runs its QEMU as root whatever qemu.conf says -> fail for that guest (`guest:<name>`),
    naming its label and when (now, after the next start: both definitions are read); a root QEMU
    process of such a guest is explained by it, not blamed on qemu.conf.
    """
    guest_labels: dict[str, str] = {}
    guest_errors: dict[str, str] = {}
    try:
        for g in facts.guests():
            when = []  # the definitions (now, after the next start) that run QEMU as root
            try:
                for which, definition in g.definitions().items():
                    found = definition.view(root_dac_label)
                    if found:
                        label = found
                        when.append({"live": "now", "persistent": "after the next start"}[which])
            except EvidenceMissing as exc:
                guest_errors[g.name] = str(exc)
                continue
            if when:
                guest_labels[g.name] = label
                yield Result("fail", f"QEMU of this guest runs as root: static DAC seclabel {label!r} "
                             f"({' and '.join(when)})", g.resource,
                             {"seclabel": {"type": "static", "model": "dac", "label": label}, "when": when},
                             "a dynamic DAC label or an unprivileged static one", label,
                             remediation=f"Remove <seclabel type='static' model='dac'><label>{label}</label>"
                                         f"</seclabel> from guest {g.name} (virsh edit), or give it an "
                                         "unprivileged user:group, and restart the guest.")
    except (EvidenceMissing, NotApplicable) as exc:
        guest_errors["(guest list)"] = str(exc)
    for name, why in guest_errors.items():
        if name != "(guest list)":
            yield Result("error", f"evidence missing: {why}", f"guest:{name}", {"reason": why})
    values, present = qemu_conf(facts)
    evidence: dict = {"qemu_conf_present": present}
    user, group = values.get("user"), values.get("group")
    source = "qemu.conf"
    if user is None or group is None:
        ids = distro_ids(facts)
        default = distro_qemu_default(ids)
        evidence["distro"] = ids[0] if ids else None
        if default:
            user = user if user is not None else default[0]
            group = group if group is not None else default[1]
            source = "qemu.conf and the distro default" if present and (values.get("user") or values.get("group")) \
                else "distro default"
    evidence.update({"user": user, "group": group, "from": source,
                     "guests_with_root_dac_label": guest_labels})
    if guest_errors:
        evidence["guests_unjudged"] = guest_errors
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
        evidence["qemu_processes"] = {proc_label(p): {"uid": p.get("uid"), "user": p.get("user"),
                                                       "gid": p.get("gid")} for p in qemus}
        as_root = [proc_label(p) for p in qemus if (p.get("uid") == 0 or p.get("gid") == 0)
                   and p.get("guest") not in guest_labels]  # a guest's root label is reported for it
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
