"""M2 checks on the shared fixture hosts (real /proc, /sys, /dev contents) with libvirt test-driver
guests (m2-hardened: statically sized virtio guests, GPU passthrough of a whole group; m2-broken:
ballooned legacy guest under TCG, a NIC function whose group sibling the host still drives, a device
the host lacks, more guest RAM than the host has). Live sources are given in their collected shape."""

from __future__ import annotations

import copy
import re

import pytest
from vmtest import audit, domain_parses, findings, host_root, make_policy, one, test_uri, with_sources

from vmaudit.audit import collect_facts
from vmaudit.facts import not_collected, unavailable

_CACHE: dict = {}


def facts_of(host: str, node: str | None) -> dict:
    """Collected once per (host tree, node XML); callers get a deep copy to modify."""
    key = (host, node)
    if key not in _CACHE:
        uri = test_uri(node) if node else "test:///nonexistent-vmaudit-fixture"
        _CACHE[key] = collect_facts(root=str(host_root(host)), uri=uri)
    return copy.deepcopy(_CACHE[key])


def hardened():
    return facts_of("debian-hardened", "m2-hardened")


def broken():
    return facts_of("rhel-broken", "m2-broken")


def domain(facts: dict, name: str) -> dict:
    return next(d for d in facts["sources"]["libvirt"]["domains"] if d["name"] == name)


KVM_CAPS = """<capabilities><host><cpu><arch>x86_64</arch></cpu></host>
<guest><os_type>hvm</os_type><arch name='x86_64'><wordsize>64</wordsize>
<emulator>/usr/bin/qemu-system-x86_64</emulator><domain type='qemu'/><domain type='kvm'/></arch></guest>
</capabilities>"""


def tiny_root(tmp_path, *, flags: str, dev_kvm: bool, modules: list[str], vendor="AuthenticAMD"):
    """A minimal host tree: /proc/cpuinfo with the given flags, /dev, /sys/module/<modules>."""
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    (root / "proc/cpuinfo").write_text(
        f"processor\t: 0\nvendor_id\t: {vendor}\ncpu family\t: 25\nmodel\t\t: 1\n"
        f"model name\t: AMD EPYC 7313 16-Core Processor\nflags\t\t: {flags}\n\n")
    (root / "dev").mkdir()
    (root / "dev/null").write_text("")
    if dev_kvm:
        (root / "dev/kvm").write_text("")
    for m in modules + ["ext4"]:
        (root / "sys/module" / m).mkdir(parents=True)
        (root / "sys/module" / m / "refcnt").write_text("0\n")
    return root


# --- M2-HW-VIRT -----------------------------------------------------------------------------------

def test_hw_virt_passes_with_dev_kvm_and_kvm_intel():
    f = one(audit(facts=hardened()), "M2-HW-VIRT")
    assert f["status"] == "pass"
    ev = f["evidence"]
    assert ev["dev_kvm"]["present"] is True and ev["kvm_modules"] == ["kvm", "kvm_intel"]
    assert ev["cpu_virt_flags"] == ["vmx"]


def test_hw_virt_passes_paravirtual_kvm_without_vmx_flag(tmp_path):
    # like a PVM / nested host: no vmx/svm in cpuinfo, yet /dev/kvm and a kvm module work
    root = tiny_root(tmp_path, flags="fpu sse2 hypervisor", dev_kvm=True, modules=["kvm", "kvm_pvm"])
    f = one(audit(root), "M2-HW-VIRT")
    assert f["status"] == "pass", f["message"]
    assert f["evidence"]["cpu_virt_flags"] == [] and f["evidence"]["kvm_modules"] == ["kvm", "kvm_pvm"]
    assert "nested or paravirtual" in f["message"]


def test_hw_virt_fails_without_svm_and_dev_kvm(tmp_path):
    root = tiny_root(tmp_path, flags="fpu sse2 lm", dev_kvm=False, modules=["kvm"])
    f = one(audit(root), "M2-HW-VIRT")
    assert (f["status"], f["severity"], f["resource"]) == ("fail", "high", "host")
    assert f["evidence"]["dev_kvm"] == {"present": False}
    assert "VT-x/AMD-V" in f["message"] and f["actual"] == "no /dev/kvm"


def test_hw_virt_fails_when_module_not_loaded(tmp_path):
    root = tiny_root(tmp_path, flags="fpu sse2 svm", dev_kvm=False, modules=[])
    f = one(audit(root), "M2-HW-VIRT")
    assert f["status"] == "fail" and "no kvm module" in f["message"]
    assert f["evidence"]["cpu_virt_flags"] == ["svm"] and f["evidence"]["kvm_modules"] == []


def test_hw_virt_passes_on_libvirt_capabilities_alone():
    facts = hardened()
    facts["sources"]["kvm"] = unavailable("no sysfs")
    facts["sources"]["modules"] = unavailable("cannot read /proc/modules")
    facts["sources"]["libvirt"]["capabilities"] = KVM_CAPS
    f = one(audit(facts=facts), "M2-HW-VIRT")
    assert f["status"] == "pass" and f["evidence"]["libvirt_kvm_domain"] is True


def test_hw_virt_error_when_nothing_readable():
    facts = with_sources(hardened(), kvm=unavailable("no sysfs under /mnt"),
                         modules=unavailable("cannot read /proc/modules"), libvirt=unavailable("no libvirt"))
    f = one(audit(facts=facts), "M2-HW-VIRT")
    assert f["status"] == "error" and f["resource"] == "host"
    assert "unavailable" in f["evidence"]["dev_kvm"]


# --- M2-BARE-METAL --------------------------------------------------------------------------------

def test_bare_metal_passes_on_physical_dell():
    f = one(audit(facts=hardened()), "M2-BARE-METAL")
    assert f["status"] == "pass"
    assert f["evidence"]["hypervisor_flag"] is False and f["evidence"]["dmi"]["sys_vendor"] == "Dell Inc."


def test_bare_metal_warns_inside_qemu_vm():
    f = one(audit(facts=facts_of("debian-broken", None)), "M2-BARE-METAL")
    assert (f["status"], f["severity"]) == ("warn", "medium")
    ind = f["evidence"]["indicators"]
    assert any("hypervisor" in i for i in ind) and any("QEMU" in i for i in ind)
    assert any("Standard PC" in i for i in ind)


def test_bare_metal_ec2_metal_instance_is_bare_metal():
    facts = hardened()
    facts["sources"]["virt_platform"].update(sys_vendor="Amazon EC2", product_name="m5.metal")
    assert one(audit(facts=facts), "M2-BARE-METAL")["status"] == "pass"
    facts["sources"]["virt_platform"]["product_name"] = "m5.large"
    f = one(audit(facts=facts), "M2-BARE-METAL")
    assert f["status"] == "warn" and "m5.large" in f["message"]


def test_bare_metal_error_without_evidence():
    facts = with_sources(hardened(), cpu=unavailable("cannot read /proc/cpuinfo"),
                         virt_platform=unavailable("no sysfs"))
    f = one(audit(facts=facts), "M2-BARE-METAL")
    assert f["status"] == "error" and "unavailable" in f["evidence"]["dmi"]


# --- M2-IOMMU -------------------------------------------------------------------------------------

def test_iommu_passes_with_vt_d():
    f = one(audit(facts=hardened()), "M2-IOMMU")
    assert f["status"] == "pass"
    assert f["evidence"]["iommu_devices"] == ["dmar0", "dmar1"] and f["evidence"]["iommu_groups"] == 6
    assert f["evidence"]["acpi_tables"]["DMAR"] is True


def test_iommu_passes_amd_vi_without_any_cmdline_switch():
    f = one(audit(facts=facts_of("rhel-hardened", "m2-hardened")), "M2-IOMMU")
    assert f["status"] == "pass" and f["evidence"]["iommu_devices"] == ["ivhd0"]
    assert f["evidence"]["cmdline_iommu"] == {}


def test_iommu_effective_state_wins_over_cmdline():
    facts = with_sources(hardened(), cmdline="BOOT_IMAGE=/boot/vmlinuz ro intel_iommu=off")
    assert one(audit(facts=facts), "M2-IOMMU")["status"] == "pass"


def test_iommu_fails_high_when_off_and_guests_pass_devices():
    f = one(audit(facts=facts_of("debian-broken", "m2-broken")), "M2-IOMMU")
    assert (f["status"], f["severity"]) == ("fail", "high")
    assert "intel_iommu=off" in f["message"]
    assert f["evidence"]["iommu_groups"] == 0  # the vfio-noiommu group is not an IOMMU
    assert f["evidence"]["guests_with_hostdev"] == ["ghost01", "nic01"]


def test_iommu_fails_medium_without_passthrough(tmp_path):
    node = tmp_path / "node.xml"
    node.write_text("<node><domain type='kvm'><name>plain</name><memory unit='GiB'>1</memory>"
                    "<os><type arch='x86_64'>hvm</type></os></domain></node>")
    f = one(audit("debian-broken", f"test://{node}"), "M2-IOMMU")
    assert (f["status"], f["severity"]) == ("fail", "medium")
    assert f["evidence"]["guests_with_hostdev"] == []
    assert f["evidence"]["acpi_tables"] == {"DMAR": False, "IVRS": False, "IORT": False}


def test_iommu_on_a_nested_host_points_at_the_outer_hypervisor(tmp_path):
    """A VMM that is itself a VM (this machine) has no firmware of its own to switch VT-d on in."""
    node = tmp_path / "node.xml"
    node.write_text("<node><domain type='kvm'><name>plain</name><memory unit='GiB'>1</memory>"
                    "<os><type arch='x86_64'>hvm</type></os></domain></node>")
    facts = collect_facts(root=str(host_root("debian-broken")), uri=f"test://{node}")
    facts["sources"]["cmdline"] = "console=ttyS0 quiet"  # no intel_iommu=off: the VM simply has none
    facts["sources"]["cpu"]["flags"] = sorted(set(facts["sources"]["cpu"]["flags"]) | {"hypervisor"})
    f = one(audit(facts=facts), "M2-IOMMU")
    assert f["status"] == "fail" and "virtual machine whose hypervisor offers it no virtual IOMMU" in f["message"]
    assert "outer hypervisor" in f["remediation"] and "firmware" not in f["remediation"]
    bare = one(audit(facts=with_sources(facts, cpu={**facts["sources"]["cpu"], "flags": ["vmx"]})), "M2-IOMMU")
    assert "firmware" in bare["message"] and "firmware" in bare["remediation"]


def test_iommu_warns_on_passthrough_mode():
    f = one(audit(facts=broken()), "M2-IOMMU")
    assert f["status"] == "warn" and "iommu=pt" in f["message"]
    assert f["evidence"]["identity_groups"] == ["0", "10", "12", "20", "21"]


@pytest.mark.parametrize("cmdline,status", [
    ("ro iommu=force,pt", "warn"),     # x86 iommu= is an option list
    ("ro iommu=pt iommu=nopt", "pass"),  # every occurrence applies: nopt undoes pt
    ("ro iommu=nopt,force iommu=pt", "warn"),
])
def test_iommu_passthrough_option_lists(cmdline, status):
    f = one(audit(facts=with_sources(hardened(), cmdline=cmdline)), "M2-IOMMU")
    assert f["status"] == status, f["message"]
    if status == "warn":
        assert "iommu=pt" in f["message"]


def test_iommu_error_when_sysfs_unreadable():
    f = one(audit(facts=with_sources(hardened(), iommu=unavailable("no sysfs under /mnt"))), "M2-IOMMU")
    assert f["status"] == "error" and "no sysfs" in f["evidence"]["reason"]


# --- M2-VFIO-UNSAFE -------------------------------------------------------------------------------

def test_vfio_safe_params_pass():
    f = one(audit(facts=hardened()), "M2-VFIO-UNSAFE")
    assert f["status"] == "pass"
    assert f["evidence"]["vfio.enable_unsafe_noiommu_mode"] == "N"
    assert f["evidence"]["vfio_iommu_type1.allow_unsafe_interrupts"] == "N"


def test_vfio_not_loaded_is_a_pass():
    f = one(audit(facts=facts_of("rhel-hardened", None)), "M2-VFIO-UNSAFE")
    assert f["status"] == "pass" and f["evidence"]["vfio.enable_unsafe_noiommu_mode"] == "module not loaded"


def test_vfio_unsafe_modes_fail_critical():
    f = one(audit(facts=facts_of("debian-broken", None)), "M2-VFIO-UNSAFE")
    assert (f["status"], f["severity"]) == ("fail", "critical")
    assert "vfio.enable_unsafe_noiommu_mode" in f["message"]
    assert "vfio_iommu_type1.allow_unsafe_interrupts" in f["message"]


def test_vfio_unreadable_param_is_error():
    facts = hardened()
    facts["sources"]["vfio"]["vfio"]["enable_unsafe_noiommu_mode"] = unavailable("Permission denied")
    f = one(audit(facts=facts), "M2-VFIO-UNSAFE")
    assert f["status"] == "error" and "Permission denied" in f["message"]


# --- M2-PASSTHROUGH-GROUP -------------------------------------------------------------------------

def test_passthrough_whole_group_with_bridge_passes():
    f = one(audit(facts=hardened()), "M2-PASSTHROUGH-GROUP", "guest:gpu01")
    assert f["status"] == "pass"
    members = {m["bdf"]: m["driver"] for m in f["evidence"]["groups"]["1"]}
    assert members == {"0000:00:01.0": "pcieport", "0000:01:00.0": "vfio-pci", "0000:01:00.1": "vfio-pci"}
    assert one(audit(facts=hardened()), "M2-PASSTHROUGH-GROUP", "guest:db01")["status"] == "skip"


def test_passthrough_group_shared_with_host_driver_fails():
    r = audit(facts=broken())
    f = one(r, "M2-PASSTHROUGH-GROUP", "guest:nic01")
    assert (f["status"], f["severity"]) == ("fail", "high")
    assert "0000:41:00.1" in f["message"] and "i40e" in f["message"]
    assert f["evidence"]["pci_devices"] == ["0000:41:00.0"]
    assert one(r, "M2-PASSTHROUGH-GROUP", "guest:ghost01")["status"] == "warn"


def test_passthrough_group_shared_with_another_guest_fails():
    facts = broken()
    app = domain(facts, "app01")
    app["xml"] = app["xml"].replace(
        "</devices>", "<interface type='hostdev' managed='yes'><source><address type='pci' domain='0x0000' "
        "bus='0x41' slot='0x00' function='0x1'/></source></interface></devices>")
    r = audit(facts=facts)
    f = one(r, "M2-PASSTHROUGH-GROUP", "guest:nic01")
    assert f["status"] == "fail" and "passed to guest app01" in f["message"]
    g = one(r, "M2-PASSTHROUGH-GROUP", "guest:app01")  # an SR-IOV style <interface type='hostdev'>
    assert g["status"] == "fail" and g["evidence"]["pci_devices"] == ["0000:41:00.1"]


def test_passthrough_reads_a_second_devices_element():
    """libvirt's parser reads the devices of every <devices> element of a definition: an SR-IOV NIC in
    a second one is passed through too (not only the first element's devices count)."""
    facts = broken()
    app = domain(facts, "app01")
    app["xml"] = app["xml"].replace(
        "</devices>", "</devices><devices><interface type='hostdev' managed='yes'><source><address "
        "type='pci' domain='0x0000' bus='0x41' slot='0x00' function='0x1'/></source></interface></devices>", 1)
    g = one(audit(facts=facts), "M2-PASSTHROUGH-GROUP", "guest:app01")
    assert g["status"] == "fail" and g["evidence"]["pci_devices"] == ["0000:41:00.1"]


def test_passthrough_knows_the_other_guests_devices_without_parsing_them_again(monkeypatch):
    """Each definition is parsed once per audit: the devices other guests pass through come from a view
    kept when their tree was dropped, not from parsing every other guest again for each guest with
    passthrough (quadratic on a host of many guests, and it held their trees to the end)."""

    facts = broken()
    app = domain(facts, "app01")  # passes 0000:41:00.1 through, like nic01's group member
    app["xml"] = app["xml"].replace(
        "</devices>", "<interface type='hostdev' managed='yes'><source><address type='pci' domain='0x0000' "
        "bus='0x41' slot='0x00' function='0x1'/></source></interface></devices>")
    parsed = domain_parses(monkeypatch)
    r = audit(facts=facts)
    f = one(r, "M2-PASSTHROUGH-GROUP", "guest:nic01")  # app01 comes first: its tree is gone by then
    assert f["status"] == "fail" and "passed to guest app01" in f["message"]
    domains = facts["sources"]["libvirt"]["domains"]
    assert len(parsed) == sum(1 + isinstance(d.get("xml_inactive"), str) for d in domains)


def test_passthrough_error_without_iommu_facts():
    facts = with_sources(broken(), iommu=unavailable("cannot read /sys/bus/pci/devices"))
    f = one(audit(facts=facts), "M2-PASSTHROUGH-GROUP", "guest:nic01")
    assert f["status"] == "error" and "/sys/bus/pci" in f["evidence"]["reason"]


# --- M2-HOST-SERVICES (live facts in their collected shape) ----------------------------------------

def _sock(proto, address, port, pid, process, exe=None, cmdline=None):
    return {"proto": proto, "address": address, "port": port, "pid": pid, "process": process,
            "exe": exe, "cmdline": cmdline or []}


LISTENERS = [
    _sock("tcp", "0.0.0.0", 22, 801, "sshd", "/usr/sbin/sshd", ["sshd: /usr/sbin/sshd -D [listener]"]),
    _sock("tcp6", "::", 22, 801, "sshd", "/usr/sbin/sshd"),
    _sock("tcp", "0.0.0.0", 16509, 1, "systemd", "/usr/lib/systemd/systemd"),
    _sock("tcp", "192.168.122.1", 53, 1502, "dnsmasq", "/usr/sbin/dnsmasq",
          ["/usr/sbin/dnsmasq", "--conf-file=/var/lib/libvirt/dnsmasq/default.conf", "--leasefile-ro"]),
    _sock("udp", "0.0.0.0", 67, 1502, "dnsmasq", "/usr/sbin/dnsmasq",
          ["/usr/sbin/dnsmasq", "--conf-file=/var/lib/libvirt/dnsmasq/default.conf"]),
    _sock("tcp", "0.0.0.0", 5900, 2210, "qemu-system-x86_64", "/usr/bin/qemu-system-x86_64"),
    _sock("tcp", "127.0.0.1", 5432, 990, "postgres", "/usr/lib/postgresql/15/bin/postgres"),
    _sock("udp", "0.0.0.0", 123, 640, "chronyd", "/usr/sbin/chronyd"),
]
UNITS = ["chrony.service", "cron.service", "dbus.service", "getty@tty1.service", "libvirtd.service",
         "polkit.service", "rsyslog.service", "ssh.service", "systemd-journald.service",
         "systemd-logind.service", "systemd-udevd.service", "user@0.service", "virtlogd.service"]


def live(listeners=None, units=None):
    facts = hardened()
    facts["sources"]["listeners"] = LISTENERS + (listeners or [])
    facts["sources"]["services"] = {"systemd": True, "running": UNITS + (units or [])}
    return facts


def test_host_services_pass_with_virtualization_only():
    r = audit(facts=live())
    f = one(r, "M2-HOST-SERVICES")
    assert f["status"] == "pass" and len(findings(r, "M2-HOST-SERVICES")) == 1
    assert f["evidence"]["running_services"] == UNITS and f["evidence"]["exposed_listeners"] == 7


def test_host_services_fail_lists_each_offender():
    r = audit(facts=live(
        listeners=[_sock("tcp", "0.0.0.0", 5432, 991, "postgres", "/usr/lib/postgresql/15/bin/postgres"),
                   _sock("tcp6", "::", 631, 1200, "cupsd", "/usr/sbin/cupsd"),
                   _sock("udp", "0.0.0.0", 53, 700, "dnsmasq", "/usr/sbin/dnsmasq", ["/usr/sbin/dnsmasq", "-k"]),
                   _sock("tcp", "0.0.0.0", 2049, None, None)],
        units=["postgresql@15-main.service", "cups.service", "dnsmasq.service"]))
    bad = {f["resource"]: f for f in findings(r, "M2-HOST-SERVICES")}
    assert set(bad) == {"unit:postgresql@15-main.service", "unit:cups.service", "unit:dnsmasq.service",
                        "socket:tcp:0.0.0.0:5432", "socket:tcp6:[::]:631", "socket:udp:0.0.0.0:53",
                        "socket:tcp:0.0.0.0:2049"}
    assert all(f["status"] == "fail" and f["severity"] == "medium" for f in bad.values())
    pg = bad["socket:tcp:0.0.0.0:5432"]
    assert pg["evidence"]["process"] == "postgres" and pg["evidence"]["pid"] == 991
    assert "unidentified" in bad["socket:tcp:0.0.0.0:2049"]["message"]


def test_host_services_names_the_processes_it_could_not_see():
    """On this machine PID 1 (process_api) listens on 0.0.0.0:2024 but its open files cannot be read
    (another user namespace protects it): not 'a kernel socket or another namespace' (issue 11)."""
    sock = dict(_sock("tcp", "0.0.0.0", 2024, None, None), hidden_owners=[{"pid": 1, "name": "process_api"}])
    f = one(audit(facts=live(listeners=[sock])), "M2-HOST-SERVICES", "socket:tcp:0.0.0.0:2024")
    assert f["status"] == "fail"
    assert f["message"] == ("an owner vmaudit cannot see (the open files of process_api (pid 1) could not be "
                            "read) listens on tcp 0.0.0.0:2024")
    assert f["evidence"]["hidden_owners"] == [{"pid": 1, "name": "process_api"}]


def test_host_services_policy_allow_and_monitoring_agent():
    facts = live(listeners=[_sock("tcp", "0.0.0.0", 9100, 77, "node_exporter", "/usr/bin/node_exporter")],
                 units=["prometheus-node-exporter.service", "postgresql@15-main.service"])
    policy = make_policy('[services]\nallow = ["postgresql@*"]\nmonitoring_agent = "prometheus-node-exporter"\n')
    r = audit(facts=facts, policy=policy)
    bad = [f["resource"] for f in findings(r, "M2-HOST-SERVICES") if f["status"] == "fail"]
    assert bad == ["socket:tcp:0.0.0.0:9100"]  # the agent's unit is allowed, its process name differs
    policy = make_policy('[services]\nallow = ["postgresql@*", "node_exporter"]\n'
                         'monitoring_agent = "prometheus-node-exporter.service"\n')
    assert one(audit(facts=facts, policy=policy), "M2-HOST-SERVICES")["status"] == "pass"


def test_host_services_without_systemd_judges_listeners_only():
    facts = live()
    facts["sources"]["services"] = not_collected("PID 1 is not systemd (it is 'tini')")
    f = one(audit(facts=facts), "M2-HOST-SERVICES")
    assert f["status"] == "pass" and "listeners only" in f["message"]
    assert "not collected" in f["evidence"]["running_services"]


def test_host_services_error_and_skip():
    facts = live()
    facts["sources"]["services"] = unavailable("systemctl list-units failed (1): Failed to connect to bus")
    f = one(audit(facts=facts), "M2-HOST-SERVICES")
    assert f["status"] == "error" and "Failed to connect" in f["message"]
    facts["sources"]["listeners"] = unavailable("psutil: AccessDenied")
    assert one(audit(facts=facts), "M2-HOST-SERVICES")["status"] == "error"
    # a --root audit: live facts are not collected -> skip, never pass
    f = one(audit(facts=hardened()), "M2-HOST-SERVICES")
    assert f["status"] == "skip" and "live fact" in f["evidence"]["reason"]


# --- M2-BALLOON -----------------------------------------------------------------------------------

def test_balloon_per_guest():
    r = audit(facts=broken())
    f = one(r, "M2-BALLOON", "guest:legacy01")
    assert (f["status"], f["severity"]) == ("fail", "medium")
    assert f["evidence"]["memory_kib"] == 48 * 1024 ** 2 and f["evidence"]["current_memory_kib"] == 40 * 1024 ** 2
    assert f["evidence"]["freePageReporting"] == "on"
    w = one(r, "M2-BALLOON", "guest:app01")  # no <memballoon>: libvirt adds a virtio one
    assert w["status"] == "warn" and "implicit" in w["evidence"]["memballoon_model"]
    p = one(r, "M2-BALLOON", "guest:nic01")
    assert p["status"] == "pass" and p["evidence"]["memballoon_model"] == "none"


def test_balloon_error_without_guest_xml():
    facts = broken()
    domain(facts, "app01")["xml"] = unavailable("libvirt: Domain not found")
    f = one(audit(facts=facts), "M2-BALLOON", "guest:app01")
    assert f["status"] == "error" and "Domain not found" in f["evidence"]["reason"]


# --- M2-MEM-OVERCOMMIT ----------------------------------------------------------------------------

def test_mem_overcommit_fails_above_ram_minus_reserve():
    f = one(audit(facts=broken()), "M2-MEM-OVERCOMMIT")
    assert (f["status"], f["severity"]) == ("fail", "medium")
    ev = f["evidence"]
    assert ev["host_ram_mib"] == 65846484 // 1024 and ev["ram_source"] == "/proc/meminfo MemTotal"
    assert ev["reserve_mib"] == int(65846484 / 1024 * 0.10)
    assert ev["guests_mib"] == 48 * 1024 + 12 * 1024
    assert sorted(g["name"] for g in ev["guests"]) == ["app01", "legacy01"]  # shut-off guests not counted


def test_mem_overcommit_policy_reserve_and_autostart():
    policy = make_policy('[limits]\nhost_memory_reserve = "1GiB"\nhost_memory_reserve_min = "1GiB"\n')
    assert one(audit(facts=broken(), policy=policy), "M2-MEM-OVERCOMMIT")["status"] == "pass"
    facts = broken()
    domain(facts, "nic01")["autostart"] = True  # shut off, but starts with the host: counted
    f = one(audit(facts=facts, policy=policy), "M2-MEM-OVERCOMMIT")
    assert f["status"] == "fail" and f["evidence"]["guests_mib"] == 64 * 1024


def test_mem_overcommit_passes_on_hardened_host():
    f = one(audit(facts=hardened()), "M2-MEM-OVERCOMMIT")
    assert f["status"] == "pass" and f["evidence"]["guests_mib"] == 16 * 1024  # db01 is shut off


def test_mem_overcommit_errors():
    facts = broken()
    domain(facts, "nic01")["autostart"] = unavailable("libvirt: operation failed")
    policy = make_policy('[limits]\nhost_memory_reserve = "1GiB"\nhost_memory_reserve_min = "1GiB"\n')
    f = one(audit(facts=facts, policy=policy), "M2-MEM-OVERCOMMIT")
    assert f["status"] == "error" and f["evidence"]["autostart_unknown"][0]["name"] == "nic01"
    facts = with_sources(broken(), meminfo=unavailable("cannot read /proc/meminfo"))
    facts["sources"]["libvirt"]["nodeinfo"] = unavailable("libvirt: unsupported")
    f = one(audit(facts=facts), "M2-MEM-OVERCOMMIT")
    assert f["status"] == "error" and "/proc/meminfo" in f["evidence"]["reason"]


def test_mem_overcommit_falls_back_to_libvirt_nodeinfo():
    facts = with_sources(broken(), meminfo=unavailable("cannot read /proc/meminfo"))
    f = one(audit(facts=facts), "M2-MEM-OVERCOMMIT")
    # the test driver's node has 3 GiB: far too little for these guests
    assert f["status"] == "fail" and f["evidence"]["ram_source"] == "libvirt getInfo()"


# --- M2-LEGACY-DEVICES ----------------------------------------------------------------------------

def test_legacy_devices():
    r = audit(facts=broken())
    f = one(r, "M2-LEGACY-DEVICES", "guest:legacy01")
    assert (f["status"], f["severity"]) == ("warn", "medium")
    found = f["evidence"]["legacy_devices"]
    for expected in ("IDE disk hda", "floppy disk fda", "emulated NIC rtl8139 (52:54:00:8d:00:01)",
                     "emulated NIC e1000 (52:54:00:8d:00:02)", "sound card ich6",
                     "USB redirection (usb, spicevmc)", "smartcard (host)"):
        assert expected in found
    assert one(r, "M2-LEGACY-DEVICES", "guest:nic01")["status"] == "pass"
    assert one(audit(facts=hardened()), "M2-LEGACY-DEVICES", "guest:db01")["evidence"]["legacy_devices"] == []


def test_legacy_devices_error_without_xml():
    facts = broken()
    domain(facts, "legacy01")["xml"] = unavailable("libvirt: internal error")
    f = one(audit(facts=facts), "M2-LEGACY-DEVICES", "guest:legacy01")
    assert f["status"] == "error"


# --- M2-RAW-QEMU-ARGS -----------------------------------------------------------------------------

QEMU_NS = "xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'"


def with_qemu_ns(xml: str, element: str) -> str:
    """Declare the qemu namespace on <domain ...> (live XML carries id='N') and append `element`."""
    return xml.replace("<domain ", f"<domain {QEMU_NS} ", 1).replace("</domain>", element + "</domain>")


def test_raw_qemu_args_fail():
    # the test driver drops the qemu namespace; this is the XML the QEMU driver returns for such a guest
    facts = hardened()
    d = domain(facts, "db01")
    d["xml"] = with_qemu_ns(d["xml"], "<qemu:commandline><qemu:arg value='-device'/>"
                            "<qemu:arg value='ivshmem-plain,memdev=hostmem'/>"
                            "<qemu:env name='SPICE_DEBUG_ALLOW_MC' value='1'/></qemu:commandline>")
    r = audit(facts=facts)
    f = one(r, "M2-RAW-QEMU-ARGS", "guest:db01")
    assert (f["status"], f["severity"]) == ("fail", "high")
    assert f["evidence"]["args"] == ["-device", "ivshmem-plain,memdev=hostmem"]
    assert f["evidence"]["env_names"] == ["SPICE_DEBUG_ALLOW_MC"] and "value" not in str(f["evidence"])
    assert one(r, "M2-RAW-QEMU-ARGS", "guest:gpu01")["status"] == "pass"


def test_raw_qemu_override_fail():
    facts = hardened()
    d = domain(facts, "gpu01")
    d["xml"] = with_qemu_ns(d["xml"], "<qemu:override><qemu:device alias='hostdev0'><qemu:frontend>"
                            "<qemu:property name='x-vga' type='bool' value='true'/></qemu:frontend>"
                            "</qemu:device></qemu:override>")
    f = one(audit(facts=facts), "M2-RAW-QEMU-ARGS", "guest:gpu01")
    assert f["status"] == "fail" and f["evidence"]["override_properties"] == ["hostdev0.x-vga"]


def test_raw_qemu_args_error_without_xml():
    facts = hardened()
    domain(facts, "gpu01")["xml"] = unavailable("libvirt: Domain not found")
    assert one(audit(facts=facts), "M2-RAW-QEMU-ARGS", "guest:gpu01")["status"] == "error"


@pytest.mark.parametrize("host", ["debian-hardened", "rhel-hardened", "debian-broken", "rhel-broken"])
def test_fixture_trees_have_the_m2_facts(host):
    """The shared trees hold real-format /proc and /sys files the M2 collectors read."""
    facts = facts_of(host, None)["sources"]
    for name in ("cpu", "meminfo", "cmdline", "modules", "kvm", "virt_platform", "iommu", "vfio"):
        assert not (isinstance(facts[name], dict) and "unavailable" in facts[name]), (name, facts[name])


def test_passthrough_group_another_guests_unreadable_device_is_a_gap_not_a_pass():
    """Another guest's malformed PCI address (a hand-edited definition, a hostile agent) must not hide
    the device it also passes through: the guest's verdict is an error naming it, never a pass."""
    share = ("<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='0x01' "
             "slot='0x00' function='0x1'/></source></hostdev>")
    bad = ("<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='0x02' "
           "slot='junk' function='0x0'/></source></hostdev>")

    def gpu01(extra: str) -> dict:
        facts = hardened()
        gpu = domain(facts, "gpu01")
        for key in ("xml", "xml_inactive"):  # gpu01 keeps 01:00.0 only; db01 takes its group peer 01:00.1
            gpu[key] = re.sub(r"<hostdev[^<]*<source>\s*<address domain='0x0000' bus='0x01' slot='0x00' "
                              r"function='0x1'/>\s*</source>\s*</hostdev>", "", gpu[key])
        db = domain(facts, "db01")
        for key in ("xml", "xml_inactive"):
            if key in db:
                db[key] = db[key].replace("</devices>", extra + "</devices>")
        return one(audit(facts=facts), "M2-PASSTHROUGH-GROUP", "guest:gpu01")

    assert gpu01(share)["status"] == "fail"
    hidden = gpu01(bad + share)
    assert hidden["status"] == "error" and "db01" in hidden["message"] and "junk" in hidden["message"], hidden
