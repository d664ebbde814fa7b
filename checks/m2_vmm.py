"""M2: run a low-complexity VMM — hardware virtualization, an IOMMU, nothing else on the host,
statically allocated memory."""

from __future__ import annotations

from vmaudit.engine import Result, check


@check("M2-TCG-GUEST", severity="high", scope="guest",
       title="Guest runs under binary translation (TCG) instead of KVM",
       remediation="Define the guest with <domain type='kvm'> on a host with hardware virtualization.",
       sources="/domain/@type")
def tcg_guest(guest, facts, policy):
    """A guest of domain type 'qemu' is emulated by QEMU's TCG binary translator: a large, complex
    code path that runs guest instructions in the host's QEMU process, far weaker isolation than
    hardware-assisted virtualization (KVM) and a much larger attack surface.

    Rule: per guest, /domain/@type = 'qemu' -> fail; 'kvm' -> pass.
    Source: the guest's libvirt domain XML.
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
