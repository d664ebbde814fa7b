"""What several M3 modules read the same way: qemu.conf's effective values (libvirt's defaults where the
file is silent, the distro's build-time QEMU user), and the live QEMU and libvirt processes."""

from __future__ import annotations

from typing import Any

from vmaudit.checks._cache import per_snapshot
from vmaudit.facts import EvidenceMissing, NotApplicable, need

# qemu.conf defaults (libvirt's qemu_conf.c) for keys the checks read when the file does not set them.
QEMU_DEFAULTS = {"security_default_confined": 1, "security_require_confined": 0, "seccomp_sandbox": 1,
                 "dynamic_ownership": 1, "namespaces": ["mount"], "clear_emulator_capabilities": 1,
                 "vnc_listen": "127.0.0.1", "spice_listen": "127.0.0.1", "vnc_tls": 0, "spice_tls": 0,
                 "vnc_auto_unix_socket": 0, "vnc_sasl": 0, "spice_sasl": 0}


# The user/group libvirt's distro packages build in (meson qemu_user/qemu_group) when qemu.conf sets none.
DISTRO_QEMU_USER = (
    (("debian", "ubuntu"), ("libvirt-qemu", "libvirt-qemu")),
    (("rhel", "fedora", "centos", "rocky", "almalinux", "ol", "suse", "opensuse"), ("qemu", "qemu")),
)


def qemu_conf(facts) -> tuple[dict, bool]:
    """qemu.conf's parsed values and whether the file exists (absent: every default applies); read
    once per snapshot (guest checks ask for every guest)."""
    return per_snapshot(facts, _read_qemu_conf)


def _read_qemu_conf(facts) -> tuple[dict, bool]:
    conf = need(facts.source("libvirt_config").get("qemu.conf"), "qemu.conf")
    return conf["values"], conf["present"]  # guarded: a value with a gap raises where it is read


def conf_value(values: dict, key: str) -> Any:
    return values[key] if key in values else QEMU_DEFAULTS.get(key)


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


def proc_label(proc: dict) -> str:
    return f"{proc.get('name')}[{proc.get('pid')}]"


def distro_ids(facts) -> list[str]:
    """The audited host's os-release ID followed by its ID_LIKE entries; [] when unknown."""
    try:
        osr = facts.source("os_release")
        return [i for i in [str(osr.get("ID", ""))] + str(osr.get("ID_LIKE", "")).split() if i]
    except (EvidenceMissing, NotApplicable):
        return []


def distro_qemu_default(ids: list[str]) -> tuple[str, str] | None:
    """The (user, group) the distro's libvirt build runs QEMU as when qemu.conf sets none."""
    return next((d for names, d in DISTRO_QEMU_USER if any(i in names for i in ids)), None)
