"""The virtualization platform as the kernel exposes it under the audited root: KVM, the machine the
VMM runs on, the IOMMU and its groups, and VFIO's unsafe switches. All of it is read from /dev and
/sys (effective state), never from configuration strings.

Sources:
  kvm            {"dev_kvm": {"present", "char_device", "mode" ("0660"), "uid", "gid", "group"} or marker,
                  "modules": ["kvm", "kvm_intel", ...] (directories under /sys/module, which lists loaded
                  AND built-in modules; /proc/modules only lists loadable ones) or marker}
  virt_platform  {"sys_vendor", "product_name", "board_vendor", "bios_vendor" (DMI, /sys/class/dmi/id),
                  "hypervisor_type" (/sys/hypervisor/type)}: each a string, None when the file does
                  not exist, or a marker when unreadable
  iommu          {"class_dir": bool, "class_entries": [names in /sys/class/iommu, e.g. "dmar0", "ivhd0"],
                  "acpi_tables": {"DMAR": bool, "IVRS": bool, "IORT": bool} or marker,
                  "group_count": int (excluding VFIO no-IOMMU groups),
                  "groups": {"<n>": {"type": "DMA-FQ"|"identity"|... or None, "name": str or None,
                             "devices": [{"bdf", "driver" (None: unbound), "class" ("0x060400")}]}},
                  "pci_devices": {"<bdf>": {"driver", "class", "iommu_group" (None: no group)}}}
  vfio           {"vfio": {"loaded": bool, "enable_unsafe_noiommu_mode": "Y"|"N"|None},
                  "vfio_iommu_type1": {"loaded", "allow_unsafe_interrupts"},
                  "iommufd": {"loaded", "allow_unsafe_interrupts"}}; a parameter is None when its module
                  is not loaded (or the kernel was built without it): then it cannot be on.

A source is `unavailable` when the audited root has no sysfs / devtmpfs at all (an offline image):
then nothing can be said about the running kernel.
"""

from __future__ import annotations

import grp
import os
import stat

from vmaudit.facts import unavailable
from vmaudit.schema import Bool, Int, ListOf, Optional, Record, Str, TableOf

from . import ABSENT, Context, collector

VFIO_PARAMS = {
    "vfio": ("enable_unsafe_noiommu_mode",),
    "vfio_iommu_type1": ("allow_unsafe_interrupts",),
    # iommufd's VFIO compatibility container (Linux 6.2+) has its own copy of the switch.
    "iommufd": ("allow_unsafe_interrupts",),
}
DMI_FILES = ("sys_vendor", "product_name", "board_vendor", "bios_vendor")


def _has_sysfs(ctx: Context) -> bool:
    listing = ctx.listdir("/sys")
    return listing is not ABSENT and bool(listing)


def _no_sysfs(ctx: Context) -> dict:
    return unavailable(f"no sysfs under {ctx.root} (/sys is absent or empty): the kernel's state is unknown")


def _text(ctx: Context, path: str):
    """A one-line sysfs value: the stripped text, None when absent, a marker when unreadable."""
    value = ctx.read_fact(path)
    return value.strip() if isinstance(value, str) else value


def _link_name(ctx: Context, path: str) -> str | None:
    """The last component of a sysfs symlink's target ('driver' -> 'vfio-pci'), None when absent."""
    try:
        return os.path.basename(os.readlink(ctx.path(path)))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == 22:  # EINVAL: not a link (a copied tree); its name is all we have
            return os.path.basename(os.path.realpath(ctx.path(path)))
        raise


def _group_name(ctx: Context, gid: int) -> str | None:
    """The group's name from the audited root's /etc/group (the host's own database when live)."""
    if ctx.live:
        try:
            return grp.getgrgid(gid).gr_name
        except KeyError:
            return None
    text = ctx.read_fact("/etc/group")
    if isinstance(text, str):
        for line in text.splitlines():
            parts = line.split(":")
            if len(parts) >= 3 and parts[2].strip() == str(gid):
                return parts[0]
    return None


KVM_SCHEMA = Record({"dev_kvm": Record({"present": Bool()},
                                     optional={"char_device": Bool(), "mode": Str(), "uid": Int(), "gid": Int(),
                                               "group": Optional(Str())}),
               "modules": ListOf(Str())})


@collector("kvm", schema=KVM_SCHEMA)
def collect_kvm(ctx: Context) -> dict:
    """/dev/kvm (present, mode, group) and the kvm modules under /sys/module."""
    dev = ctx.listdir("/dev")
    if dev is ABSENT or not dev:
        dev_kvm = unavailable(f"no /dev under {ctx.root} (devtmpfs not mounted): /dev/kvm unknown")
    else:
        try:
            st = os.stat(ctx.path("/dev/kvm"))
        except FileNotFoundError:
            dev_kvm = {"present": False}
        except OSError as exc:
            dev_kvm = unavailable(f"cannot stat /dev/kvm: {exc.strerror or exc}")
        else:
            dev_kvm = {"present": True, "char_device": stat.S_ISCHR(st.st_mode),
                       "mode": f"{stat.S_IMODE(st.st_mode):04o}", "uid": st.st_uid, "gid": st.st_gid,
                       "group": _group_name(ctx, st.st_gid)}
    if _has_sysfs(ctx):
        names = ctx.listdir("/sys/module")
        modules = ([n for n in names if n == "kvm" or n.startswith("kvm_")] if names is not ABSENT
                   else unavailable("/sys/module is absent"))
    else:
        modules = _no_sysfs(ctx)
    return {"dev_kvm": dev_kvm, "modules": modules}


VIRT_PLATFORM_SCHEMA = TableOf(Optional(Str()))


@collector("virt_platform", schema=VIRT_PLATFORM_SCHEMA)
def collect_virt_platform(ctx: Context) -> dict:
    """DMI identity of the machine and the Xen-style /sys/hypervisor/type."""
    if not _has_sysfs(ctx):
        return _no_sysfs(ctx)
    out = {name: _text(ctx, f"/sys/class/dmi/id/{name}") for name in DMI_FILES}
    out["hypervisor_type"] = _text(ctx, "/sys/hypervisor/type")
    return out


def _pci_device(ctx: Context, bdf: str) -> dict:
    base = f"/sys/bus/pci/devices/{bdf}"
    group = _link_name(ctx, f"{base}/iommu_group")
    return {"driver": _link_name(ctx, f"{base}/driver"), "class": _text(ctx, f"{base}/class"),
            "iommu_group": group}


_PCI_DEVICE = Record(optional={"driver": Optional(Str()), "class": Optional(Str()),
                                   "iommu_group": Optional(Str())})
IOMMU_SCHEMA = Record({"class_dir": Bool(), "class_entries": ListOf(Str()), "group_count": Int(min=0),
                "groups": TableOf(Record({"devices": ListOf(Record({"bdf": Str()},
                                                                    optional={"driver": Optional(Str()),
                                                                              "class": Optional(Str())}))},
                                         optional={"type": Optional(Str()), "name": Optional(Str())})),
                "pci_devices": TableOf(_PCI_DEVICE)},
               optional={"acpi_tables": TableOf(Bool())})


@collector("iommu", schema=IOMMU_SCHEMA)
def collect_iommu(ctx: Context) -> dict:
    """Active IOMMUs, the ACPI tables that describe them, IOMMU groups with their members' drivers."""
    if not _has_sysfs(ctx):
        return _no_sysfs(ctx)
    entries = ctx.listdir("/sys/class/iommu")
    tables_dir = ctx.listdir("/sys/firmware/acpi/tables")
    if tables_dir is ABSENT:
        # no ACPI (device-tree machine, or firmware tables not exported): say so, do not guess
        tables: dict = unavailable("/sys/firmware/acpi/tables is absent")
    else:
        tables = {name: name in tables_dir for name in ("DMAR", "IVRS", "IORT")}

    pci_devices: dict = {}
    pci = ctx.listdir("/sys/bus/pci/devices")
    for bdf in ([] if pci is ABSENT else pci):
        try:
            pci_devices[bdf] = _pci_device(ctx, bdf)
        except OSError as exc:
            pci_devices[bdf] = unavailable(f"cannot read /sys/bus/pci/devices/{bdf}: {exc.strerror or exc}")

    groups: dict = {}
    listing = ctx.listdir("/sys/kernel/iommu_groups")
    for name in ([] if listing is ABSENT else listing):
        base = f"/sys/kernel/iommu_groups/{name}"
        members = ctx.listdir(f"{base}/devices")
        devices = []
        for dev in ([] if members is ABSENT else members):
            info = pci_devices.get(dev)
            if isinstance(info, dict) and "unavailable" not in info:
                devices.append({"bdf": dev, "driver": info["driver"], "class": info["class"]})
            else:  # a non-PCI member (platform device on arm64) or an unreadable one
                devices.append({"bdf": dev, "driver": _link_name(ctx, f"{base}/devices/{dev}/driver"),
                                "class": None})
        groups[name] = {"type": _text(ctx, f"{base}/type"), "name": _text(ctx, f"{base}/name"),
                        "devices": devices}
    # vfio's no-IOMMU mode creates fake groups named "vfio-noiommu": they isolate nothing.
    real = [g for g in groups.values() if g["name"] != "vfio-noiommu"]
    return {
        "class_dir": entries is not ABSENT,
        "class_entries": [] if entries is ABSENT else entries,
        "acpi_tables": tables,
        "group_count": len(real),
        "groups": groups,
        "pci_devices": pci_devices,
    }


VFIO_SCHEMA = TableOf(Record({"loaded": Bool()}, extra=Optional(Str())))


@collector("vfio", schema=VFIO_SCHEMA)
def collect_vfio(ctx: Context) -> dict:
    """VFIO's unsafe module parameters; None when the module is not loaded (so the switch is off)."""
    if not _has_sysfs(ctx):
        return _no_sysfs(ctx)
    modules = ctx.listdir("/sys/module")
    if modules is ABSENT:
        return unavailable("/sys/module is absent")
    out = {}
    for module, params in VFIO_PARAMS.items():
        loaded = module in modules
        entry: dict = {"loaded": loaded}
        for param in params:
            entry[param] = _text(ctx, f"/sys/module/{module}/parameters/{param}") if loaded else None
        out[module] = entry
    return out
