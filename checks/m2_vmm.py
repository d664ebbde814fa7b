"""M2: run a low-complexity VMM — hardware virtualization, an IOMMU, nothing else on the host,
statically allocated memory."""

from __future__ import annotations

import fnmatch
import os
import re
import xml.etree.ElementTree as ET
from typing import Any

from vmaudit.capacity import counts_for_memory, host_memory
from vmaudit.checks._cache import per_snapshot
from vmaudit.checks._net import loopback
from vmaudit.checks._xml import find_all
from vmaudit.engine import Result, check
from vmaudit.facts import (
    NS_QEMU,
    EvidenceMissing,
    Facts,
    Guest,
    NotApplicable,
    guest_view,
    lookup,
    partial,
    pci_bdf,
)


@check("M2-TCG-GUEST", severity="high", scope="guest", definitions="both",
       title="Guest's virtualization type (KVM or TCG)",
       remediation="Define the guest with <domain type='kvm'> on a host with hardware virtualization.",
       sources="/domain/@type")
def tcg_guest(guest, facts, policy):
    """A guest of domain type 'qemu' is emulated by QEMU's TCG binary translator: a large, complex
    code path that runs guest instructions in the host's QEMU process, far weaker isolation than
    hardware-assisted virtualization (KVM) and a much larger attack surface.

    Rule: per guest, /domain/@type = 'qemu' -> fail; 'kvm' -> pass.
    Source: the guest's libvirt domain XML.
    Definitions: both (a type changed in the persistent definition counts from the next start).
    """
    dtype = guest.domain_type
    evidence = {"domain_type": dtype}
    if dtype == "kvm":
        yield Result("pass", "guest uses hardware-assisted KVM", guest.resource, evidence, "kvm", dtype)
    elif dtype == "qemu":
        yield Result("fail", "guest runs under TCG binary translation (domain type 'qemu')", guest.resource,
                     evidence, "kvm", dtype)
    else:
        yield Result("skip", f"domain type {dtype!r} is not a QEMU/KVM guest", guest.resource, evidence)


# --- helpers ------------------------------------------------------------------------------------

def _evidence(value: Any, gap: Exception | None) -> Any:
    """A fact for `evidence`: the value itself, or "unavailable: reason" for missing evidence."""
    if gap is None:
        return value
    return f"{'not collected' if isinstance(gap, NotApplicable) else 'unavailable'}: {gap}"


def _cpu_flags(facts: Facts) -> tuple[Any, str | None]:
    """(set of CPU flags or None, vendor) from the `cpu` source."""
    cpu, gap = facts.lookup("cpu")
    flags, gap2 = lookup(cpu, "flags", []) if gap is None else (None, gap)
    if gap2 is not None:
        return None, None
    vendor, _gap = lookup(cpu, "vendor")
    return set(flags), vendor


def _caps_kvm(facts: Facts) -> bool | None:
    """Whether libvirt's capabilities offer <domain type='kvm'> for some guest arch; None if unknown."""
    lv, gap = facts.lookup("libvirt")
    caps, gap = lookup(lv, "capabilities") if gap is None else (None, gap)
    if caps is None:
        return None
    try:
        root = ET.fromstring(caps)
    except ET.ParseError:
        return None
    if root.find("guest") is None:
        return None
    return root.find("guest/arch/domain[@type='kvm']") is not None


# x86 CPU vendors: on these, CPUID's hypervisor bit (the "hypervisor" flag) is authoritative.
X86_VENDORS = ("GenuineIntel", "AuthenticAMD", "HygonGenuine", "CentaurHauls", "  Shanghai  ")
# DMI identities that only virtual machines carry. Vendors that also sell hardware (Microsoft,
# Google, Nutanix, Amazon's *.metal instances) are recognised by their virtual product names only.
VIRT_VENDORS = re.compile(r"^(QEMU|innotek GmbH|VMware, Inc\.|Xen|Parallels.*|Bochs|oVirt|BHYVE|"
                          r"DigitalOcean|OpenStack Foundation|Red Hat|Cloud Hypervisor)$", re.I)
VIRT_PRODUCTS = re.compile(r"^(KVM|Virtual Machine|VMware.*|VirtualBox|HVM domU|Standard PC \(.*\)|"
                           r"Bochs|Google Compute Engine|OpenStack (Compute|Nova)|Droplet|vServer|BHYVE|"
                           r"Parallels.*|AHV|RHEV Hypervisor|oVirt Node|Alibaba Cloud ECS|"
                           r"Cloud Hypervisor|Firecracker.*)$", re.I)


def _cmdline_iommu(cmdline: Any) -> dict:
    """IOMMU-related kernel parameters, parsed the way the kernel reads them (last one wins).

    x86's `iommu=` takes a comma-separated option list and every occurrence is applied in turn
    (`iommu=pt,force`; a later `iommu=nopt` undoes `pt`): its value here is the options that hold."""
    out: dict = {}
    if cmdline is None:  # unavailable: no parameters known
        return out
    for token in cmdline.split():
        if token == "--":
            break  # the rest is for init
        key, _, value = token.partition("=")
        if key == "iommu":
            opts = [o for o in out.get("iommu", "").split(",") if o]
            for opt in value.split(","):
                if opt in ("pt", "nopt"):
                    opts = [o for o in opts if o not in ("pt", "nopt")]
                if opt and opt not in opts:
                    opts.append(opt)
            out[key] = ",".join(opts)
        elif key in ("intel_iommu", "amd_iommu", "iommu.passthrough", "iommu.strict"):
            out[key] = value
    return out


def _iommu_switched_off(params: dict) -> list[str]:
    off = []
    for key in ("intel_iommu", "amd_iommu"):
        if "off" in params.get(key, "").split(","):
            off.append(f"{key}=off")
    if "off" in params.get("iommu", "").split(","):
        off.append("iommu=off")
    return off


def _iommu_passthrough(params: dict) -> list[str]:
    pt = []
    if "pt" in params.get("iommu", "").split(","):
        pt.append("iommu=pt")
    if params.get("iommu.passthrough", "").lower() in ("1", "y", "yes", "on"):
        pt.append(f"iommu.passthrough={params['iommu.passthrough']}")
    return pt


# PCI classes whose header type is not "normal": PCI-to-PCI and CardBus bridges. The kernel's VFIO
# viability check (vfio_dev_driver_allowed) accepts them bound to any driver (pcieport), since a bridge
# does no DMA of its own; pci-stub is accepted too, and unbound devices are idle.
BRIDGE_CLASSES = ("0x0604", "0x0607")
PARKING_DRIVERS = ("pci-stub",)


def _is_bridge(pci_class: Any) -> bool:
    return pci_class is not None and pci_class.lower().startswith(BRIDGE_CLASSES)


def _host_driver(driver: Any) -> bool:
    """A driver through which the HOST uses the device (not vfio, not a stub, bound at all)."""
    return bool(driver) and "vfio" not in driver and driver not in PARKING_DRIVERS


@guest_view
def _hostdev_nic_pci(tree: ET.Element) -> tuple[str, ...]:
    """PCI addresses of devices/interface[@type='hostdev']/source/address, every one of them (the
    shared hostdev_pci view reads an interface's first address in the first <devices> element only).
    A view, so that the other guests' devices are known without parsing their XML again."""
    out = []
    # plain-tag walks: ElementPath would parse the path and its predicate on every call
    for nic in find_all(tree, "devices", "interface"):
        if nic.get("type") == "hostdev":
            for addr in find_all(nic, "source", "address"):
                if addr.get("type", "pci") == "pci":
                    out.append(pci_bdf(addr))
    return tuple(out)


def _guest_pci(guest: Guest) -> list[str]:
    """PCI devices a guest takes over: <hostdev type='pci'> and SR-IOV <interface type='hostdev'>."""
    hostdevs = guest.hostdev_pci
    return sorted(set(hostdevs).union(guest.view(_hostdev_nic_pci)))


def _pci_holders(facts: Facts) -> tuple[dict[str, list[str]], dict[str, str]]:
    """({PCI address: the guests passing it through in any definition, in guest order (a guest once per
    definition)}, {guest: why a definition of it cannot be read}). Every definition is read on its own:
    one that cannot be read hides nothing the others pass through, and is itself a gap."""
    holders: dict[str, list[str]] = {}
    gaps: dict[str, str] = {}
    for guest in facts.guests():
        try:
            definitions = list(guest.definitions().values())
        except (EvidenceMissing, NotApplicable) as exc:
            gaps[guest.name] = str(exc)
            continue
        for definition in definitions:
            try:
                devices = _guest_pci(definition)
            except EvidenceMissing as exc:
                gaps.setdefault(guest.name, str(exc))
                continue
            for bdf in devices:
                holders.setdefault(bdf, []).append(guest.name)
    return holders, gaps


def _mib(kib: float) -> int:
    return int(round(kib / 1024))


# --- host platform --------------------------------------------------------------------------------

@check("M2-HW-VIRT", severity="high",
       title="Hardware-assisted virtualization (KVM)",
       remediation="Enable VT-x/AMD-V in the firmware and load kvm_intel / kvm_amd so that /dev/kvm exists.",
       sources="/proc/cpuinfo flags; /dev/kvm; /sys/module/kvm*; /proc/modules; libvirt capabilities")
def hw_virt(facts, policy):
    """Without hardware virtualization extensions QEMU falls back to binary translation (TCG): a large
    emulator executing guest code, a far bigger attack surface than KVM's hardware-enforced isolation.

    Rule: KVM is usable when /dev/kvm exists and a kvm module is loaded or built in (/sys/module/kvm*,
    /proc/modules), or when libvirt's capabilities offer <domain type='kvm'> -> pass. /dev/kvm absent, or
    present without any kvm module -> fail. The vmx/svm CPU flags only explain a failure: a nested or
    paravirtual KVM (e.g. kvm_pvm) works without them. Nothing readable -> error.
    Sources: /dev/kvm, /sys/module, /proc/modules, /proc/cpuinfo, libvirt getCapabilities().
    """
    kvm, kvm_gap = facts.lookup("kvm")
    dev, dev_gap = lookup(kvm, "dev_kvm") if kvm_gap is None else (None, kvm_gap)
    sysmods, sys_gap = lookup(kvm, "modules") if kvm_gap is None else (None, kvm_gap)
    procmods, _proc_gap = facts.lookup("modules")
    flags, vendor = _cpu_flags(facts)
    caps = _caps_kvm(facts)

    dev_present = None if dev is None else bool(lookup(dev, "present")[0])
    found: list[str] | None = None
    for mods in (sysmods, procmods):
        if mods is not None:
            found = sorted(set(found or []) | {m for m in mods if m == "kvm" or m.startswith("kvm_")})
    evidence = {
        "dev_kvm": _evidence(dev, dev_gap),
        "kvm_modules": found if found is not None else _evidence(sysmods, sys_gap),
        "cpu_virt_flags": (sorted(flags & {"vmx", "svm"}) if flags is not None
                           else _evidence(*facts.lookup("cpu"))),
        "libvirt_kvm_domain": caps if caps is not None else "unknown (libvirt capabilities not available)",
    }
    if (dev_present and found) or caps:
        why = []
        if dev_present and found:
            why.append(f"/dev/kvm is present and {', '.join(found)} {'is' if len(found) == 1 else 'are'} loaded")
        if caps:
            why.append("libvirt offers KVM guests")
        how = "; ".join(why)
        if flags is not None and not flags & {"vmx", "svm"} and vendor in X86_VENDORS:
            how += " (no vmx/svm flag: KVM is nested or paravirtual here)"
        yield Result("pass", f"hardware-assisted KVM is usable: {how}", "host", evidence,
                     "usable KVM", "usable KVM")
        return
    if dev_present is False or (dev_present and found == []):
        if flags is not None and vendor in X86_VENDORS and not flags & {"vmx", "svm"}:
            why = "the CPU offers no VT-x/AMD-V (vmx/svm): disabled in the firmware or not exposed"
        elif not found:
            why = "no kvm module is loaded (kvm_intel / kvm_amd)"
        else:
            why = "/dev/kvm does not exist although a kvm module is loaded"
        actual = "no /dev/kvm" if dev_present is False else "/dev/kvm without a kvm module"
        yield Result("fail", f"KVM is not usable: {why}", "host", evidence, "usable KVM", actual)
        return
    yield Result("error", "cannot tell whether KVM is usable: neither /dev/kvm with the kvm modules nor "
                 "libvirt's capabilities could be read", "host", evidence)


@check("M2-BARE-METAL", severity="medium",
       title="VMM on bare metal",
       remediation="Run the hypervisor on bare metal.",
       sources="/proc/cpuinfo hypervisor flag; /sys/class/dmi/id/sys_vendor, product_name; /sys/hypervisor/type")
def bare_metal(facts, policy):
    """A hypervisor nested in another VM inherits every weakness of the outer VMM and of its
    administrators, and nested virtualization is itself complex code: the guests are only as isolated as
    the outer layer allows.

    Rule: CPUID's hypervisor flag, a virtual machine's DMI identity (QEMU, VMware, VirtualBox, Xen,
    cloud instance types ...), or /sys/hypervisor/type -> warn, naming the evidence; none -> pass.
    On non-x86 CPUs (no hypervisor flag) a pass needs a DMI identity. Nothing readable -> error.
    """
    flags, vendor = _cpu_flags(facts)
    plat, plat_gap = facts.lookup("virt_platform")
    plat_ok = plat_gap is None
    indicators = []
    if flags is not None and "hypervisor" in flags:
        indicators.append("CPU flag 'hypervisor' (CPUID reports a hypervisor underneath)")
    dmi = {}
    if plat_ok:
        for key in ("sys_vendor", "product_name", "hypervisor_type"):
            dmi[key] = _evidence(*lookup(plat, key))
        sys_vendor, product = lookup(plat, "sys_vendor")[0], lookup(plat, "product_name")[0]
        if sys_vendor is not None and VIRT_VENDORS.match(sys_vendor.strip()):
            indicators.append(f"DMI sys_vendor {sys_vendor!r}")
        if product is not None and VIRT_PRODUCTS.match(product.strip()):
            indicators.append(f"DMI product_name {product!r}")
        if (sys_vendor == "Amazon EC2" and product
                and not product.endswith(".metal")):
            indicators.append(f"DMI: an Amazon EC2 virtual instance ({product!r})")
        htype = lookup(plat, "hypervisor_type")[0]
        if htype:
            indicators.append(f"/sys/hypervisor/type is {htype!r}")
    evidence = {"hypervisor_flag": (("hypervisor" in flags) if flags is not None
                                    else _evidence(*facts.lookup("cpu"))),
                "cpu_vendor": vendor, "dmi": dmi if plat_ok else _evidence(plat, plat_gap),
                "indicators": indicators}
    if indicators:
        yield Result("warn", "the VMM runs inside another virtual machine: " + "; ".join(indicators),
                     "host", evidence, "bare metal", "virtual machine")
    elif flags is not None and vendor in X86_VENDORS:
        yield Result("pass", "no sign of an underlying hypervisor (no CPUID hypervisor flag, physical DMI "
                     "identity)", "host", evidence, "bare metal", "bare metal")
    elif plat_ok and lookup(plat, "sys_vendor")[0] is not None:
        yield Result("pass", f"physical DMI identity ({plat['sys_vendor']} {lookup(plat, 'product_name')[0] or ''})"
                     .strip(), "host", evidence, "bare metal", "bare metal")
    else:
        yield Result("error", "cannot tell whether the host is bare metal: no x86 CPU flags and no DMI "
                     "identity could be read", "host", evidence)


@check("M2-IOMMU", severity="high",
       title="IOMMU protection against device DMA",
       remediation="Enable VT-d / AMD-Vi in the firmware, boot with intel_iommu=on where the kernel does "
                   "not enable it by default, and drop iommu=pt on hosts that pass devices through.",
       sources="/sys/class/iommu; /sys/kernel/iommu_groups; /sys/firmware/acpi/tables/DMAR|IVRS; /proc/cmdline")
def iommu(facts, policy):
    """An IOMMU confines device DMA to the memory assigned to each device. Without one a passed-through
    device (or a compromised device of the host) can read and write all of the host's memory.

    Rule: EFFECTIVE state. An IOMMU is active when /sys/class/iommu has entries (dmar*, ivhd*, smmu*) or
    real IOMMU groups exist under /sys/kernel/iommu_groups. None active -> fail (high when any guest has a
    <hostdev>, else medium). Active, but host devices bypass translation (iommu=pt /
    iommu.passthrough=1, or groups with an 'identity' default domain) -> warn. The kernel command line
    and the ACPI DMAR/IVRS tables only explain the verdict: recent kernels enable the Intel IOMMU
    without a parameter, and amd_iommu=on is not a valid switch. On a host that is itself a VM (CPU flag
    'hypervisor') the firmware is the outer hypervisor's: the finding says to give the VM a virtual
    IOMMU there, not to enable VT-d.
    """
    info = facts.source("iommu")
    cmdline, cmdline_gap = facts.lookup("cmdline")
    params = _cmdline_iommu(cmdline)
    tables, tables_gap = lookup(info, "acpi_tables")
    identity = sorted((n for n, g in info.get("groups", {}).items() if g.get("type") == "identity"),
                      key=lambda n: int(n) if n.isdigit() else 0)
    evidence = {
        "iommu_devices": info.get("class_entries", []), "iommu_groups": info.get("group_count", 0),
        "acpi_tables": _evidence(tables, tables_gap),
        "cmdline_iommu": _evidence(params, cmdline_gap),
        "identity_groups": identity,
    }
    active = bool(info.get("class_entries")) or info.get("group_count", 0) > 0
    if active:
        bypass = _iommu_passthrough(params)
        if bypass or identity:
            why = []
            if bypass:
                why.append(" ".join(bypass) + " on the kernel command line")
            if identity:
                why.append(f"{len(identity)} IOMMU group(s) use an identity (untranslated) domain")
            yield Result("warn", "the IOMMU is active but host devices bypass DMA translation: "
                         + "; ".join(why), "host", evidence, "translated DMA", "passthrough (identity)")
        else:
            yield Result("pass", f"the IOMMU is active ({', '.join(evidence['iommu_devices']) or 'groups present'}, "
                         f"{evidence['iommu_groups']} groups)", "host", evidence, "active IOMMU", "active")
        return
    try:
        with_hostdev = sorted(g.name for g in facts.guests()
                              if any(d.has_hostdev for d in g.definitions().values()))
        severity = "high" if with_hostdev else "medium"
        evidence["guests_with_hostdev"] = with_hostdev
    except (EvidenceMissing, NotApplicable) as exc:
        severity = "high"  # cannot rule out passthrough
        evidence["guests_with_hostdev"] = f"unknown: {exc}"
    off = _iommu_switched_off(params)
    flags, _vendor = _cpu_flags(facts)
    nested = flags is not None and "hypervisor" in flags
    remediation = None
    if nested:
        evidence["nested"] = "CPU flag 'hypervisor': this host is itself a virtual machine"
        # firmware switches are the outer hypervisor's: only it can give this VM an IOMMU
        remediation = ("This host is a virtual machine: give it a virtual IOMMU in the outer hypervisor (for "
                       "a libvirt/QEMU outer host <iommu model='intel'><driver intremap='on'/></iommu> with "
                       "the q35 machine type and <ioapic driver='qemu'/>), or run the VMM on bare metal.")
    if off:
        why = f"switched off on the kernel command line ({', '.join(off)})"
    elif nested and not (tables is not None and (tables.get("DMAR") or tables.get("IVRS") or tables.get("IORT"))):
        why = "this host is a virtual machine whose hypervisor offers it no virtual IOMMU"
    elif tables is not None and not (tables.get("DMAR") or tables.get("IVRS") or tables.get("IORT")):
        why = "the firmware describes no IOMMU (no ACPI DMAR/IVRS/IORT table): enable VT-d/AMD-Vi in the firmware"
    elif tables is not None:
        present = [t for t in ("DMAR", "IVRS", "IORT") if tables.get(t)]
        why = (f"the firmware describes one ({', '.join(present)}) but the kernel did not enable it "
               "(intel_iommu=on on kernels that do not enable it by default)")
    else:
        why = "no IOMMU device and no IOMMU groups"
    yield Result("fail", f"no active IOMMU: {why}", "host", evidence, "active IOMMU", "none",
                 severity=severity, remediation=remediation)


@check("M2-VFIO-UNSAFE", severity="critical",
       title="VFIO's IOMMU and interrupt safety options",
       remediation="Remove enable_unsafe_noiommu_mode / allow_unsafe_interrupts from the module options "
                   "(/etc/modprobe.d, kernel command line) and reboot.",
       sources="/sys/module/vfio/parameters/enable_unsafe_noiommu_mode; "
               "/sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts")
def vfio_unsafe(facts, policy):
    """vfio.enable_unsafe_noiommu_mode gives userspace raw DMA to any memory without an IOMMU;
    allow_unsafe_interrupts lets a passed-through device inject arbitrary interrupts (MSI) into the host
    on platforms without interrupt remapping. Either turns a guest's device into a way into the host.

    Rule: any of vfio.enable_unsafe_noiommu_mode, vfio_iommu_type1.allow_unsafe_interrupts,
    iommufd.allow_unsafe_interrupts reading Y or 1 -> fail. A module that is not loaded has its switch
    off -> pass. An unreadable parameter -> error.
    """
    vfio = facts.source("vfio")
    evidence: dict = {}
    unsafe, missing = [], []
    for module, entry, gap in sorted(partial(vfio), key=lambda t: t[0]):
        if gap is not None:
            missing.append(str(gap))
            evidence[module] = _evidence(entry, gap)
            continue
        for param, value, gap in sorted(partial(entry), key=lambda t: t[0]):
            if param == "loaded":
                continue
            name = f"{module}.{param}"
            evidence[name] = _evidence(value, gap) if gap or value is not None else "module not loaded"
            if gap is not None:
                missing.append(str(gap))
            elif value is not None and value.strip().upper() in ("Y", "1"):
                unsafe.append(name)
    if unsafe:
        yield Result("fail", f"unsafe VFIO mode enabled: {', '.join(unsafe)}", "host", evidence, "N", "Y")
    elif missing:
        yield Result("error", f"cannot read VFIO parameters: {'; '.join(missing)}", "host", evidence)
    else:
        yield Result("pass", "no unsafe VFIO switch is on", "host", evidence, "N", "N")


@check("M2-PASSTHROUGH-GROUP", severity="high", scope="guest", definitions="both",
       title="IOMMU groups of passed-through devices",
       remediation="Pass whole IOMMU groups to vfio-pci (or park the other members on pci-stub); use "
                   "ACS-capable slots so that each device gets its own group.",
       sources="<hostdev type='pci'>, <interface type='hostdev'>; "
               "/sys/bus/pci/devices/<BDF>/iommu_group/devices/*/driver")
def passthrough_group(guest, facts, policy):
    """The IOMMU isolates groups, not devices: devices of one group can reach each other by peer-to-peer
    DMA. A device passed to a guest whose group also holds a device driven by the host (or given to
    another guest) lets the guest's driver attack that device.

    Rule: per guest with PCI passthrough, every other member of each device's IOMMU group must be idle
    (no driver), bound to vfio-pci / pci-stub, or a PCI bridge (the kernel's VFIO accepts bridges with
    any driver, e.g. pcieport); a member bound to a host driver or passed to another guest -> fail; a
    passed device without an IOMMU group -> fail; a device not present on the host -> warn; a group
    the snapshot does not hold (or that does not list the device) -> error; otherwise
    pass with the groups as evidence. Guests without PCI passthrough -> skip.
    Definitions: both, and every definition of the other guests (a device a guest takes at its next
    start is taken).
    """
    devices = _guest_pci(guest)
    if not devices:
        yield Result("skip", "the guest passes no PCI device through", guest.resource, {"pci_devices": []})
        return
    info = facts.source("iommu")
    pci, groups = info.get("pci_devices", {}), info.get("groups", {})
    # device -> the last other guest (in guest order) passing it through; the holders are collected
    # once per snapshot (asking every other guest for every guest with passthrough was quadratic)
    others: dict[str, str] = {}
    holders, gaps = per_snapshot(facts, _pci_holders)
    for bdf, names in holders.items():
        for name in names:
            if name != guest.name:
                others[bdf] = name
    evidence: dict = {"pci_devices": devices, "groups": {}}
    problems, absent, unknown = [], [], []
    # another guest whose devices cannot be read may take a member of this guest's groups
    unknown += [f"devices of guest {name}: {why}" for name, why in gaps.items() if name != guest.name]
    for bdf in devices:
        dev, gap = lookup(pci, bdf)
        if gap is not None:
            unknown.append(str(gap))
            continue
        if dev is None:
            absent.append(bdf)
            continue
        group = dev.get("iommu_group")
        if group is None:
            problems.append(f"{bdf} has no IOMMU group (no DMA isolation)")
            continue
        if group not in groups:
            # sysfs links a device only to a group that exists: its members are unknown, not none
            unknown.append(f"iommu.groups: no group {group}, which {bdf} belongs to")
            continue
        members = groups[group]["devices"]
        evidence["groups"][group] = members
        if not any(m["bdf"] == bdf for m in members):
            unknown.append(f"iommu.groups.{group}: does not list {bdf}, which belongs to it")
            continue
        for m in members:
            if m["bdf"] in devices:
                continue  # passed to this guest too (libvirt rebinds managed devices at start)
            if m["bdf"] in others:
                problems.append(f"{bdf} shares IOMMU group {group} with {m['bdf']}, passed to guest "
                                f"{others[m['bdf']]}")
            elif _is_bridge(m.get("class")):
                continue
            elif _host_driver(m.get("driver")):
                problems.append(f"{bdf} shares IOMMU group {group} with {m['bdf']}, bound to host driver "
                                f"{m['driver']}")
    if absent:
        evidence["absent"] = absent
    if problems:
        yield Result("fail", "; ".join(problems), guest.resource, evidence,
                     "IOMMU groups owned by the guest alone", "shared with host or other guests")
    elif unknown:
        yield Result("error", f"cannot read the passed-through devices: {'; '.join(unknown)}",
                     guest.resource, evidence)
    elif absent:
        yield Result("warn", f"passed-through PCI device(s) not present on this host: {', '.join(absent)}",
                     guest.resource, evidence, "devices present", "absent")
    else:
        yield Result("pass", f"each passed-through device's IOMMU group is isolated ({', '.join(devices)})",
                     guest.resource, evidence, "IOMMU groups owned by the guest alone", "isolated")


# --- nothing on the host but virtualization ---------------------------------------------------------

# Running service units a virtualization host needs (fnmatch patterns on the unit name without
# ".service"): the OS plumbing, libvirt, remote administration, time, logging and auditing.
SERVICE_ALLOW = (
    "ssh", "sshd", "libvirtd", "virt*d", "systemd-machined", "polkit",
    "chrony", "chronyd", "ntp", "ntpd", "ntpsec", "openntpd", "systemd-timesyncd",
    "systemd-journald", "systemd-udevd", "systemd-logind", "systemd-userdbd", "dbus", "dbus-broker",
    "getty@*", "serial-getty@*", "user@*", "systemd-networkd", "systemd-resolved", "NetworkManager",
    "auditd", "rsyslog", "syslog-ng", "cron", "crond", "irqbalance", "firewalld",
    "multipathd", "iscsid", "lvm2-lvmpolld", "rasdaemon", "mcelog", "tuned", "unattended-upgrades",
)
# Processes that may listen on non-loopback sockets: remote administration, libvirt, QEMU (its VNC/
# SPICE/migration sockets are judged by M3-GRAPHICS-EXPOSED and M7), time sync, DHCP clients.
LISTENER_ALLOW = ("sshd", "libvirtd", "virt*d", "qemu-system-*", "qemu-kvm", "chronyd", "ntpd",
                  "ntpsec", "openntpd", "dhclient", "dhcpcd", "NetworkManager", "systemd-networkd")
# systemd (PID 1) holds the sockets of socket-activated units; these ports belong to sshd and libvirt.
SOCKET_ACTIVATED_PORTS = {22, 16509, 16514}


def _allowed(names: list[str], patterns: list[str]) -> str | None:
    for name in names:
        if not name:
            continue
        for pat in patterns:
            if fnmatch.fnmatchcase(name, pat):
                return pat
    return None


def _policy_allow(policy: Any) -> list[str]:
    allow = list(policy.get("services", "allow") or [])
    agent = policy.get("services", "monitoring_agent")
    if agent:
        allow.append(agent)
    out = []
    for a in allow:
        out.append(a)
        if a.endswith(".service"):
            out.append(a[: -len(".service")])
    return out


def _libvirt_dnsmasq(sock: dict) -> bool:
    """libvirt's own dnsmasq for its virtual networks reads its config from /var/lib/libvirt/dnsmasq/."""
    return any("/libvirt/dnsmasq/" in a for a in sock.get("cmdline") or [])


@check("M2-HOST-SERVICES", severity="medium",
       title="Services running on the host",
       remediation="Remove or disable the service, or move it into a guest; list legitimate agents under "
                   "[services] allow / monitoring_agent in the policy.",
       sources="(live) systemctl list-units --type=service --state=running; listening sockets (psutil)")
def host_services(facts, policy):
    """Every service on the hypervisor is attack surface next to all guests at once, and its
    administrators become administrators of every guest. The host should run virtualization only.

    Rule: each running service unit (where PID 1 is systemd) and each process listening on a
    non-loopback TCP port or receiving on a non-loopback UDP port that is not in the allowlist -> fail,
    one finding per offender (unit:<name>, socket:<proto>:<address>:<port>). Built-in allowlist: sshd,
    libvirtd / virt*d, QEMU, libvirt's own dnsmasq, time sync, journald / udev / logind / dbus / polkit,
    machined, getty, cron, logging and auditing, network and storage plumbing; plus [services] allow and
    monitoring_agent. No systemd: only the listeners are judged, and the evidence says so. Under --root
    -> skip (live facts).
    """
    listeners = facts.source("listeners")
    services, services_gap = facts.lookup("services")
    extra = _policy_allow(policy)
    offenders = 0
    checked_units: Any = _evidence(services, services_gap)
    if services_gap is None:
        checked_units = services.get("running", [])
        for unit in checked_units:
            base = unit[: -len(".service")] if unit.endswith(".service") else unit
            if _allowed([base, unit], list(SERVICE_ALLOW) + extra):
                continue
            offenders += 1
            yield Result("fail", f"service {unit} runs on the hypervisor", f"unit:{unit}", {"unit": unit},
                         "virtualization services only", unit)
    exposed = [s for s in listeners if not loopback(s["address"])]
    for sock in exposed:
        name = sock.get("process")
        exe = sock.get("exe")
        names = [name, os.path.basename(exe) if exe else None]
        if _allowed(names, list(LISTENER_ALLOW) + extra):
            continue
        if name == "dnsmasq" and _libvirt_dnsmasq(sock):
            continue
        if sock.get("pid") == 1 and name == "systemd" and sock["port"] in SOCKET_ACTIVATED_PORTS:
            continue
        offenders += 1
        addr = f"[{sock['address']}]" if ":" in sock["address"] else sock["address"]
        hidden = [h for _i, h, gap in partial(sock.get("hidden_owners") or []) if gap is None]
        if sock.get("pid") is not None:
            who = f"{name} (pid {sock['pid']})"
        elif hidden:
            # psutil matches sockets to processes through /proc/<pid>/fd: one it may not read (a PID 1
            # protected by another user namespace) owns a socket of this namespace as likely as the kernel
            cands = ", ".join(f"{h.get('name') or '?'} (pid {h.get('pid')})" for h in hidden[:3])
            who = f"an owner vmaudit cannot see (the open files of {cands} could not be read)"
        else:
            who = "an unidentified owner (kernel socket or another namespace)"
        yield Result("fail", f"{who} listens on {sock['proto']} {addr}:{sock['port']}",
                     f"socket:{sock['proto']}:{addr}:{sock['port']}",
                     {k: sock.get(k) for k in ("proto", "address", "port", "pid", "process", "exe", "hidden_owners")
                      if k in sock},
                     "no non-virtualization listener", who)
    evidence = {"running_services": checked_units, "exposed_listeners": len(exposed),
                "policy_allow": extra}
    if isinstance(services_gap, EvidenceMissing):
        yield Result("error", f"running services could not be listed: {services_gap}", "host",
                     evidence)
    elif offenders == 0:
        scope = ("running services and non-loopback listeners" if services_gap is None
                 else f"non-loopback listeners only ({services_gap})")
        yield Result("pass", f"nothing outside the virtualization allowlist runs ({scope})", "host",
                     evidence, "virtualization services only", "virtualization services only")


# --- statically allocated resources ---------------------------------------------------------------

@check("M2-BALLOON", severity="medium", scope="guest", definitions="both",
       title="Guest's memory allocation (ballooning)",
       remediation="<memballoon model='none'/> and currentMemory equal to memory.",
       sources="/domain/devices/memballoon/@model, @autodeflate, @freePageReporting; /domain/currentMemory")
def balloon(guest, facts, policy):
    """A memory balloon lets the host take RAM back from a running guest, which invites overcommitting
    the host, and is one more paravirtual device talking to the host. Memory should be assigned
    statically.

    Rule: per guest, currentMemory < memory -> fail (ballooned down, or booting with a lower target); a balloon device
    present (libvirt adds a virtio one unless <memballoon model='none'/>) -> warn; else pass.
    Definitions: both. The live currentMemory is the guest's actual memory (full until its balloon
    driver inflates); the persistent one is the target it boots with, so a target below memory fails
    "after the next start" while the running guest still looks full.
    """
    node = guest.find("devices/memballoon")
    model = node.get("model") if node is not None else "virtio (implicit: libvirt adds one by default)"
    evidence = {"memory_kib": guest.memory_kib, "current_memory_kib": guest.current_memory_kib,
                "memballoon_model": model}
    if node is not None:
        for attr in ("autodeflate", "freePageReporting"):
            if node.get(attr):
                evidence[attr] = node.get(attr)
    if guest.current_memory_kib < guest.memory_kib:
        what = ("guest is ballooned down to" if guest.definition == "live"
                else "guest's balloon target (currentMemory) is")
        yield Result("fail", f"{what} {_mib(guest.current_memory_kib)} MiB of "
                     f"{_mib(guest.memory_kib)} MiB", guest.resource, evidence,
                     "currentMemory = memory", f"{guest.current_memory_kib} < {guest.memory_kib} KiB")
    elif node is None or model != "none":
        extra = " with free page reporting" if evidence.get("freePageReporting") == "on" else ""
        yield Result("warn", f"guest has a memory balloon device ({model}){extra}", guest.resource, evidence,
                     "memballoon model none", str(model))
    else:
        yield Result("pass", "memory is statically allocated (no balloon)", guest.resource, evidence,
                     "memballoon model none", "none")


@check("M2-MEM-OVERCOMMIT", severity="medium",
       title="Guest memory against host RAM and reserve",
       remediation="Size running and autostart guests within host RAM minus the host reserve.",
       sources="/domain/memory of running and autostart guests; /proc/meminfo MemTotal or getInfo(); "
               "policy [limits] host_memory_reserve, host_memory_reserve_min")
def mem_overcommit(facts, policy):
    """Memory promised to guests beyond physical RAM is backed by swap, ballooning or page sharing: the
    host can run out and kill guests, and sharing pages between guests opens side channels.

    Rule: the sum of /domain/memory over running guests and autostart guests must not exceed host RAM
    (MemTotal, else libvirt's node info) minus the reserve (policy host_memory_reserve, default 10 %,
    at least host_memory_reserve_min, default 2 GiB) -> else fail. A guest whose autostart flag is
    unknown decides the verdict -> error. The sum is taken now (running guests' live memory) and after
    their next start (their persistent definitions); the larger counts. Under --root (an image) no
    guest is known to run: its autostart guests are what runs when it boots.
    """
    memory = host_memory(facts, policy)
    total_mib, source, reserve, available = memory.total_mib, memory.source, memory.reserve_mib, memory.available_mib
    counted, unknown = [], []
    for g in facts.guests():
        # what runs now (the live definition) and what runs after the next start (the persistent one)
        now, later = _mib(g.memory_kib), _mib(g.will_run.memory_kib)
        autostart, gap = g.lookup("autostart")
        entry = {"name": g.name, "memory_mib": now, "state": g.state if g.state_marker is None else "unknown",
                 "autostart": _evidence(autostart, gap)}
        if later != now:
            entry["memory_mib_after_next_start"] = later
        if counts_for_memory(g)[0]:
            counted.append(entry)
        elif gap is not None:
            unknown.append(entry)

    def total(entries: list) -> int:
        return max(sum(e["memory_mib"] for e in entries),
                   sum(e.get("memory_mib_after_next_start", e["memory_mib"]) for e in entries))

    used = total(counted)
    maybe = total(counted + unknown)
    when = ("after the next start of the running guests"
            if used > sum(e["memory_mib"] for e in counted) else "")
    evidence = {"host_ram_mib": int(total_mib), "ram_source": source, "reserve_mib": int(reserve),
                "available_mib": int(available), "guests_mib": used, "guests": counted}
    if when:
        evidence["guests_mib_now"] = sum(e["memory_mib"] for e in counted)
    if unknown:
        evidence["autostart_unknown"] = unknown
    if used > available:
        yield Result("fail", f"running and autostart guests need {used} MiB{' ' + when if when else ''}, "
                     f"more than the {int(available)} MiB left after the host reserve", "host", evidence,
                     f"<= {int(available)} MiB", f"{used} MiB")
    elif maybe > available:
        yield Result("error", "cannot tell: guests whose autostart flag is unknown would exceed host RAM "
                     f"({maybe} MiB > {int(available)} MiB)", "host", evidence)
    else:
        yield Result("pass", f"running and autostart guests need {used} MiB of {int(available)} MiB "
                     "available", "host", evidence, f"<= {int(available)} MiB", f"{used} MiB")


# --- guests' device model and configuration --------------------------------------------------------

def _legacy_devices(guest: Guest) -> list[str]:
    found = []
    for disk in guest.findall("devices/disk"):
        target = disk.find("target")
        dev = target.get("dev") if target is not None else "?"
        bus = target.get("bus") if target is not None else None
        if disk.get("device") == "floppy" or bus == "fdc":
            found.append(f"floppy disk {dev}")
        elif bus == "ide":
            found.append(f"IDE disk {dev}")
    for nic in guest.findall("devices/interface"):
        if nic.get("type") in ("hostdev", "vhostuser", "vdpa"):
            continue  # a real device, or virtio by definition
        model = nic.find("model")
        mtype = model.get("type") if model is not None else None
        if mtype is None or not mtype.startswith("virtio"):
            mac = nic.find("mac")
            label = mac.get("address") if mac is not None else nic.get("type", "?")
            found.append(f"NIC {label} with the hypervisor's default emulated model" if mtype is None
                         else f"emulated NIC {mtype} ({label})")
    for snd in guest.findall("devices/sound"):
        found.append(f"sound card {snd.get('model', '?')}")
    for rd in guest.findall("devices/redirdev"):
        found.append(f"USB redirection ({rd.get('bus', 'usb')}, {rd.get('type', '?')})")
    for sc in guest.findall("devices/smartcard"):
        found.append(f"smartcard ({sc.get('mode', '?')})")
    return found


@check("M2-LEGACY-DEVICES", severity="medium", scope="guest", definitions="both",
       title="Guest's device models (virtio or emulated legacy)",
       remediation="Use virtio disks and NICs; remove floppy, sound, USB redirection and smartcard devices "
                   "the guest does not need.",
       sources="/domain/devices: disk (floppy, bus ide/fdc), interface/model, sound, redirdev, smartcard")
def legacy_devices(guest, facts, policy):
    """Emulated legacy hardware (floppy controller, IDE, rtl8139/e1000/ne2k/pcnet NICs, sound cards, USB
    redirection, smartcards) is large, old device-model code running in QEMU with a long record of guest-
    to-host escapes (VENOM in the floppy controller, many NIC and audio bugs). virtio is small and built
    for virtualization.

    Rule: per guest, any floppy/fdc, IDE disk, non-virtio NIC model (or none given: the emulated
    default), <sound>, <redirdev> or <smartcard> -> warn, listing them; else pass.
    Definitions: both.
    """
    found = _legacy_devices(guest)
    evidence = {"legacy_devices": found}
    if found:
        yield Result("warn", f"emulated legacy devices: {'; '.join(found)}", guest.resource, evidence,
                     "virtio devices only", f"{len(found)} legacy device(s)")
    else:
        yield Result("pass", "no emulated legacy devices", guest.resource, evidence,
                     "virtio devices only", "virtio devices only")


QEMU_COMMANDLINE = f"{{{NS_QEMU}}}commandline"
QEMU_OVERRIDE = f"{{{NS_QEMU}}}override"


@check("M2-RAW-QEMU-ARGS", severity="high", scope="guest", definitions="both",
       title="Raw QEMU arguments in the guest definition",
       remediation="Model the setting in domain XML and remove <qemu:commandline> / <qemu:override>.",
       sources="/domain/qemu:commandline, /domain/qemu:override (http://libvirt.org/schemas/domain/qemu/1.0)")
def raw_qemu_args(guest, facts, policy):
    """<qemu:commandline> and <qemu:override> hand arguments, environment variables or device properties
    to QEMU that libvirt does not understand: they escape libvirt's validation, sVirt labelling and
    cgroup device rules, and libvirt marks such guests as tainted.

    Rule: per guest, any <qemu:commandline> or <qemu:override> -> fail (arguments and the names of
    environment variables as evidence; values of variables are left out, they may hold secrets);
    else pass.
    Definitions: both (qemu:commandline written into a running guest's saved definition applies at
    its next start).
    """
    cmd = guest.tree.findall(QEMU_COMMANDLINE)
    override = guest.tree.findall(QEMU_OVERRIDE)
    args = [a.get("value", "") for c in cmd for a in c.findall(f"{{{NS_QEMU}}}arg")]
    env = [e.get("name", "") for c in cmd for e in c.findall(f"{{{NS_QEMU}}}env")]
    props = [f"{d.get('alias', '?')}.{p.get('name', '?')}" for o in override
             for d in o.findall(f"{{{NS_QEMU}}}device") for p in d.iter(f"{{{NS_QEMU}}}property")]
    evidence = {"qemu_commandline": bool(cmd), "qemu_override": bool(override), "args": args,
                "env_names": env, "override_properties": props}
    if cmd or override:
        what = [w for w, present in (("<qemu:commandline>", cmd), ("<qemu:override>", override)) if present]
        yield Result("fail", f"guest passes raw settings to QEMU via {' and '.join(what)}", guest.resource,
                     evidence, "no qemu namespace passthrough", " ".join(args) or ", ".join(what))
    else:
        yield Result("pass", "no raw QEMU arguments", guest.resource, evidence,
                     "no qemu namespace passthrough", "none")
