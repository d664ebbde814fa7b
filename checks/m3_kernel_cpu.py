"""M3: what the host kernel and CPU share between guests — kernel same-page merging, CPU side channels
(vulnerabilities, mitigations and the 6.17 attack-vector controls), SMT siblings across zones, nested
virtualization.

Sources: ksm, cpu_security, kvm_nested (collectors/hardening.py); cmdline, kernel (collectors/host.py);
libvirt (domain XML: pinning, memoryBacking).
"""

from __future__ import annotations

import itertools
import re
import xml.etree.ElementTree as ET
from typing import Any

from vmaudit.checks._xml import find_first
from vmaudit.engine import Result, check
from vmaudit.facts import EvidenceMissing, NotApplicable, guest_view, need, partial

# CPU numbers a cpuset may name: libvirt's VIR_DOMAIN_CPUMASK_LEN (16384 in current releases, 1024 in
# older ones, which refuse more). A range beyond it is refused here too, before it is expanded.
CPUSET_LEN = 16384
_CPUSET_PART = re.compile(r"(\^?)([0-9]{1,5})(?:-([0-9]{1,5}))?")


def parse_cpuset(text: str) -> set[int]:
    """libvirt's cpuset syntax, read as libvirt does (virBitmapParse): items applied in order, each
    adding a CPU or a range or removing one CPU ('^2'): '0-3,^2,8' -> {0, 1, 3, 8}, '^2,0-3' -> {0..3}.
    ValueError for anything libvirt refuses: another syntax, a negated range, a CPU number of CPUSET_LEN
    or more, and a set that names no CPU at all."""
    cpus: set[int] = set()
    parts = [p.strip() for p in text.split(",")]
    if len(parts) > 1 and not parts[-1]:
        parts.pop()  # libvirt accepts one trailing comma
    for part in parts:
        m = _CPUSET_PART.fullmatch(part)
        if m is None:
            raise ValueError(f"{part[:40]!r} is not a CPU or a range of CPUs")
        lo = int(m[2])
        hi = int(m[3]) if m[3] is not None else lo
        if hi >= CPUSET_LEN or hi < lo or (m[1] and m[3] is not None):
            raise ValueError(f"{part[:40]!r}: not a CPU or a range of CPUs below {CPUSET_LEN}")
        if m[1]:
            cpus.discard(lo)
        else:
            cpus.update(range(lo, hi + 1))
    if not cpus:
        raise ValueError(f"{text[:40]!r} names no CPU")
    return cpus


def guest_zones(facts) -> tuple[dict, Any]:
    """{guest name: zone or None} and None, or ({}, reason) when the guest list is unavailable."""
    try:
        return {g.name: g.labels.get("zone") for g in facts.guests()}, None
    except (EvidenceMissing, NotApplicable) as exc:
        return {}, str(exc)


@guest_view
def _nosharepages(tree: ET.Element) -> bool:
    """Whether a definition keeps its pages from KSM (memoryBacking/nosharepages). A view: this host
    check reads every guest after its tree is dropped, which would parse each one again."""
    return find_first(tree, "memoryBacking", "nosharepages") is not None


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
            try:  # merged now (live definition) or after its next start (persistent one)
                if not all(d.view(_nosharepages) for d in g.definitions().values()):
                    sharing.append(g.name)
            except EvidenceMissing:
                sharing.append(f"{g.name} (XML unavailable)")
        evidence["guests_without_nosharepages"] = sharing
    severity = "high" if len(distinct) > 1 or guests_error else "medium"
    listed = f"; guests merged: {', '.join(sharing[:20])}" if sharing else ""
    yield Result("fail", f"KSM is running{' across zones ' + ', '.join(distinct) if len(distinct) > 1 else ''}"
                 f"{listed}", "host", evidence, "KSM off (run 0 or 2)", "run = 1", severity=severity)


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


# Linux 6.17 attack-vector controls (admin-guide/hw-vuln/attack_vector_controls) that expose a KVM host
GUEST_VECTORS = {"no_guest_host": "guest-to-host mitigations off: guests may read host memory",
                 "no_guest_guest": "guest-to-guest mitigations off: guests may read each other's memory"}


def mitigations_param(cmdline: str) -> str | None:
    """The value of the last mitigations= on the command line (the one the kernel keeps)."""
    value = None
    for p in cmdline.split():
        if p == "--":
            break  # the rest goes to init
        if p.startswith("mitigations="):
            value = p[len("mitigations="):]
    return value


def attack_vectors_supported(facts) -> bool:
    """Whether the running kernel knows attack-vector controls (6.17 and later); unknown counts as yes."""
    try:
        release = str(facts.source("kernel").get("running") or "")
    except (EvidenceMissing, NotApplicable):
        return True
    m = re.match(r"(\d+)\.(\d+)", release)
    return not m or (int(m.group(1)), int(m.group(2))) >= (6, 17)


@check("M3-CPU-VULNS", severity="high",
       title="CPU side-channel mitigations",
       remediation="Update microcode and kernel; remove from the kernel command line what the finding names "
                   "as turning mitigations off; use nosmt (or core scheduling) where the kernel reports "
                   "'SMT vulnerable'.",
       sources="/sys/devices/system/cpu/vulnerabilities/*, /proc/cmdline (mitigations=, its attack-vector "
               "options, per-vulnerability switches), the running kernel's release, "
               "/sys/devices/system/cpu/smt/control")
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
    vectors: list[str] = []
    cross_thread = False
    try:
        cmdline = facts.source("cmdline")
        params = [p for p in cmdline.split() if p in SIDE_CHANNEL_PARAMS]
        evidence["cmdline_params"] = params
        mitigations = mitigations_param(cmdline)
        if mitigations is not None:
            evidence["mitigations"] = mitigations
            options = mitigations.split(",")
            if options[0] == "off" and "mitigations=off" not in params:
                params.append("mitigations=off")
            if attack_vectors_supported(facts):
                vectors = [o for o in options if o in GUEST_VECTORS]
                cross_thread = "no_cross_thread" in options
            elif any(o.startswith("no_") for o in options):
                evidence["attack_vectors"] = "ignored: the running kernel predates attack-vector controls (6.17)"
    except (EvidenceMissing, NotApplicable) as exc:
        params, evidence["cmdline"] = [], f"unavailable: {exc}"
    texts = {n: t for n, t, gap in partial(vulns) if gap is None and t is not None}
    unreadable = sorted(n for n, _t, _gap in partial(vulns) if n not in texts)
    vulnerable = sorted(n for n, t in texts.items() if _vulnerable(t))
    smt_exposed = sorted(n for n, t in texts.items() if "SMT vulnerable" in t)
    smt_on = cs.get("smt_control") == "on" or (cs.get("smt_control") is None and cs.get("smt_active") == "1")
    problems = [f"{n}: {texts[n]}" for n in vulnerable]
    fixes = ["update the CPU microcode and the kernel"] if vulnerable else []
    for v in reversed(vectors):
        problems.insert(0, f"mitigations={evidence['mitigations']} on the kernel command line: {v} "
                           f"({GUEST_VECTORS[v]})")
    if vectors:
        fixes.insert(0, f"remove {', '.join(vectors)} from mitigations= on the kernel command line")
    if "mitigations=off" in params:
        problems.insert(0, "mitigations=off on the kernel command line")
        fixes.insert(0, "remove mitigations=off from the kernel command line")
    if problems:
        yield Result("fail", "unmitigated CPU vulnerabilities: " + "; ".join(problems[:6]), "host", evidence,
                     "every vulnerability mitigated or not affected", "; ".join(problems),
                     remediation="; ".join(fixes)[:1].upper() + "; ".join(fixes)[1:] + ", and reboot.")
    elif (smt_exposed and smt_on) or cross_thread:
        why = ([f"SMT is on while {', '.join(smt_exposed)} report 'SMT vulnerable'"] if smt_exposed and smt_on
               else []) + (["mitigations=...,no_cross_thread: cross-thread mitigations off"] if cross_thread else [])
        yield Result("warn", "; ".join(why), "host", evidence, "SMT off (nosmt) or core scheduling",
                     "SMT on" if smt_on else "no_cross_thread", severity="medium")
    elif unreadable:
        reason = f"unreadable: {', '.join(unreadable)}"
        yield Result("error", f"evidence missing: {reason}", "host", {**evidence, "reason": reason})
    else:
        yield Result("pass", f"all {len(vulns)} reported CPU vulnerabilities are mitigated or not affected",
                     "host", evidence)


@guest_view
def _pinning(tree: ET.Element) -> tuple:
    """The guest's CPU pinning as written: (vcpu/@cpuset if static placement else None, vcpu's text,
    ((vcpupin/@vcpu, @cpuset), ...), emulatorpin/@cpuset or None, (iothreadpin/@cpuset, ...)). Kept
    with the guest while its XML is parsed, so the host-wide check does not parse it again; read (and
    refused) by _guest_cpus."""
    vcpu = tree.find("vcpu")
    cpuset = vcpu.get("cpuset") if vcpu is not None and vcpu.get("placement", "static") == "static" else None
    text = (vcpu.text or "1").strip() if vcpu is not None else "1"
    pins = tuple((p.get("vcpu", "-1"), p.get("cpuset", "")) for p in tree.iterfind("cputune/vcpupin"))
    emu = tree.find("cputune/emulatorpin")
    io = tuple(p.get("cpuset", "") for p in tree.iterfind("cputune/iothreadpin"))
    return cpuset or None, text, pins, emu.get("cpuset", "") if emu is not None else None, io


def _guest_cpus(g, all_cpus: set[int]) -> set[int]:
    """Host CPUs a guest's vCPUs and emulator threads may run on, from its pinning (libvirt semantics:
    vcpupin per vCPU, else vcpu/@cpuset, else every CPU; emulatorpin, else vcpu/@cpuset)."""
    cpuset, text, vcpupins, emulator, iothreads = g.view(_pinning)
    default = parse_cpuset(cpuset) & all_cpus if cpuset else all_cpus
    # pins address every vCPU the guest may have, not only the current ones
    if not text.isascii() or not text.isdigit():
        raise EvidenceMissing(f"vcpu of guest {g.name}: {text[:40]!r} is not a number of vCPUs")
    count = max(int(text), 1)
    pins = {}
    for vcpu, pin in vcpupins:
        if not vcpu.isascii() or not vcpu.isdigit():
            raise ValueError(f"vcpupin vcpu {vcpu[:20]!r} is not a vCPU number")
        pins[int(vcpu)] = parse_cpuset(pin)
    cpus: set[int] = set()
    pinned = [i for i in pins if i < count]
    for i in pinned:
        cpus |= pins[i]
    if len(pinned) < count:  # a vCPU without its own pin runs where the guest's default allows
        cpus |= default
    cpus |= parse_cpuset(emulator) if emulator is not None else default
    for pin in iothreads:
        cpus |= parse_cpuset(pin)
    return cpus & all_cpus if all_cpus else cpus


PAIRS_SHOWN = 100  # pairs of guests in the evidence: a host of 1,000s of unpinned guests has millions


def _zone_pairs(cores: dict[str, set], zoned: dict[str, str]) -> tuple[list[dict], bool]:
    """([{guests, zones, cores}], whether there are more): pairs of guests of different zones that may
    run on one core, at most PAIRS_SHOWN, found through the cores more than one zone may use (never by
    comparing every guest with every other)."""
    on_core: dict[frozenset, dict[str, list[str]]] = {}
    for name in sorted(cores):
        for core in cores[name]:
            on_core.setdefault(core, {}).setdefault(zoned[name], []).append(name)

    def candidates():
        for core in sorted((c for c, zones in on_core.items() if len(zones) > 1), key=sorted):
            zones = on_core[core]
            for za, zb in itertools.combinations(sorted(zones), 2):
                for a, b in itertools.product(zones[za], zones[zb]):
                    yield (a, b) if a < b else (b, a)

    found: set[tuple[str, str]] = set()
    more = False
    for pair in candidates():
        if pair not in found:
            if len(found) == PAIRS_SHOWN:
                more = True
                break
            found.add(pair)
    pairs = []
    for a, b in sorted(found):
        shared = sorted(",".join(map(str, sorted(c))) for c in cores[a] & cores[b])
        pairs.append({"guests": [a, b], "zones": [zoned[a], zoned[b]], "cores": shared[:8]})
    return pairs, more


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
    emulatorpin; iothreadpin) include threads of one multi-threaded core -> warn, naming the pairs (the
    first 100; `pairs_truncated` says there are more).
    Unpinned guests on an SMT host therefore warn as soon as two zones are present. Guests without a
    zone are listed but not paired (M1-ZONE-UNLABELLED covers them). One zone at most, or SMT off
    (smt/control off/forceoff/notsupported, or smt/active 0), passes without reading the topology.
    """
    guests = facts.guests()
    zoned = {g.name: g.labels.get("zone") for g in guests}
    evidence: dict = {"zones": {k: v for k, v in zoned.items() if v},
                      "unzoned": sorted(k for k, v in zoned.items() if not v)}
    # decided without the CPU topology: one zone at most, or SMT off by the kernel's own switch
    if len({z for z in zoned.values() if z}) < 2:
        yield Result("pass", "the host holds guests of one zone at most", "host", evidence)
        return
    cs = facts.source("cpu_security")
    evidence["smt_control"] = cs.get("smt_control")
    if cs.get("smt_control") in ("off", "forceoff", "notsupported", "notimplemented") or cs.get("smt_active") == "0":
        yield Result("pass", f"SMT is off (smt/control {cs.get('smt_control')}): no core runs two threads",
                     "host", {**evidence, "smt": False})
        return
    siblings_raw = need(cs.get("thread_siblings"), "thread siblings")
    core_of: dict[int, frozenset] = {}
    for cpu, text, gap in partial(siblings_raw):
        if gap is None:  # an unreadable CPU's siblings are unknown; the others still tell SMT
            core_of[int(cpu)] = frozenset(parse_cpuset(text))
    smt = any(len(c) > 1 for c in core_of.values())
    evidence.update({"smt": smt, "cpus": len(core_of)})
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
    pairs, more = _zone_pairs(cores, zoned)
    evidence["pairs"] = pairs
    if more:
        evidence["pairs_truncated"] = f"the first {PAIRS_SHOWN} pairs; there are more"
    if errors:
        evidence["not_judged"] = errors  # guests whose CPUs are unknown: a warn about others stands
    if pairs:
        text = "; ".join(f"{p['guests'][0]} ({p['zones'][0]}) / {p['guests'][1]} ({p['zones'][1]})"
                         for p in pairs[:5])
        count = f"more than {PAIRS_SHOWN} pairs" if more else f"{len(pairs)} pair(s)"
        yield Result("warn", f"guests of different zones can run on sibling threads: {text}"
                     + (f" (and more: {count})" if more else ""), "host", evidence,
                     "each core serves one zone", count)
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
