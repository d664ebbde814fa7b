"""Live collectors (processes, listeners, services) on this very machine: real sockets and processes
started by the test, read back through psutil and /proc."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
from vmtest import findings

from vmaudit.audit import build_report, collect_facts
from vmaudit.collectors import Context
from vmaudit.collectors.live import (
    _guest_name,
    collect_listeners,
    collect_processes,
    collect_services,
    deleted_maps,
    parse_list_units,
    systemd_booted,
)
from vmaudit.policy import Policy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    return predicate()


@pytest.fixture
def http_server():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "0.0.0.0", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc, port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _mine(port):
    return [s for s in collect_listeners(Context()) if s["port"] == port]


def test_listeners_see_a_real_tcp_server(http_server):
    proc, port = http_server
    socks = wait_for(lambda: _mine(port))
    assert len(socks) == 1, socks
    s = socks[0]
    assert (s["proto"], s["address"], s["pid"]) == ("tcp", "0.0.0.0", proc.pid)
    assert s["process"].startswith("python") and os.path.realpath(s["exe"]) == os.path.realpath(sys.executable)
    assert "http.server" in s["cmdline"]


def test_listeners_udp_bound_and_connected():
    bound = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    bound.bind(("0.0.0.0", 0))
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.connect(("127.0.0.1", bound.getsockname()[1]))
    try:
        listed = collect_listeners(Context())
        ports = {(s["proto"], s["port"]) for s in listed if s["pid"] == os.getpid()}
        assert ("udp", bound.getsockname()[1]) in ports
        assert ("udp", client.getsockname()[1]) not in ports  # a connected (client) socket is not a listener
    finally:
        bound.close()
        client.close()


def test_host_services_fails_on_a_real_listener(http_server):
    proc, port = http_server
    wait_for(lambda: _mine(port))
    facts = collect_facts(root="/", uri="test:///default", only=["listeners", "services"])
    report = build_report(facts, Policy())
    bad = [f for f in findings(report, "M2-HOST-SERVICES") if f["resource"] == f"socket:tcp:0.0.0.0:{port}"]
    assert len(bad) == 1 and bad[0]["status"] == "fail" and bad[0]["evidence"]["pid"] == proc.pid
    # the services half: systemd or not, as this machine really is
    services = facts["sources"]["services"]
    assert ("not_collected" in services) != systemd_booted()


def test_loopback_listener_is_listed_but_not_an_offender():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: _mine(port))[0]["address"] == "127.0.0.1"
        facts = collect_facts(root="/", uri="test:///default", only=["listeners", "services"])
        report = build_report(facts, Policy())
        assert not [f for f in findings(report, "M2-HOST-SERVICES") if str(port) in f["resource"]]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_processes_find_a_qemu_named_process_and_its_deleted_binary(tmp_path):
    fake = tmp_path / "qemu-system-x86_64"
    shutil.copy("/bin/sleep", fake)
    proc = subprocess.Popen([str(fake), "300"])
    try:
        def found():
            return [p for p in collect_processes(Context()) if p["pid"] == proc.pid]
        entry = wait_for(found)[0]
        assert entry["kind"] == "qemu" and entry["exe"] == str(fake)
        assert entry["uid"] == os.geteuid() and entry["cmdline"] == [str(fake), "300"]
        assert isinstance(entry["seccomp"], int) and entry["deleted_maps"] == []
        fake.unlink()  # an upgrade replaced the binary under the running process
        entry = found()[0]
        assert entry["deleted_maps"] == [str(fake)]
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_processes_skip_unrelated_and_include_libvirt_daemons():
    procs = collect_processes(Context())
    assert all(p["kind"] in ("qemu", "libvirt") for p in procs)
    assert os.getpid() not in {p["pid"] for p in procs}
    for p in procs:  # whatever libvirt/QEMU runs here right now must be fully described
        assert set(p) >= {"pid", "name", "exe", "cmdline", "uid", "user", "gid", "seccomp", "deleted_maps"}


def test_services_collector_matches_init():
    value = collect_services(Context())
    if systemd_booted():
        assert value["systemd"] is True and isinstance(value["running"], list)
    else:
        assert "PID 1 is not systemd" in value["not_collected"]


def test_live_sources_not_collected_under_root(tmp_path):
    facts = collect_facts(root=str(tmp_path), uri="test:///default", only=["processes", "listeners", "services"])
    for name in ("processes", "listeners", "services"):
        assert "not_collected" in facts["sources"][name]


def test_parse_list_units_real_output():
    text = ("  chrony.service                 loaded active running chrony, an NTP client/server\n"
            "● ksmtuned.service               loaded active running Kernel Samepage Merging (KSM) Tuning Daemon\n"
            "libvirtd.service                 loaded active running Virtualization daemon\n"
            "user@0.service                   loaded active running User Manager for UID 0\n")
    assert parse_list_units(text) == ["chrony.service", "ksmtuned.service", "libvirtd.service", "user@0.service"]


def test_deleted_maps_keeps_code_not_guest_ram():
    maps = (
        "55d0c0a00000-55d0c0b00000 r-xp 00000000 fd:01 1312 /usr/bin/qemu-system-x86_64 (deleted)\n"
        "7f0000000000-7f0040000000 rw-s 00000000 00:01 2048 /memfd:pc.ram (deleted)\n"
        "7f1000000000-7f1000100000 r--p 00000000 fd:01 4242 /usr/lib/x86_64-linux-gnu/libssl.so.3 (deleted)\n"
        "7f2000000000-7f2000100000 rw-s 00000000 00:05 99 /dev/shm/vm-shared (deleted)\n"
        "7f3000000000-7f3000100000 r--p 00000000 fd:01 77 /var/lib/libvirt/qemu/data.txt (deleted)\n"
        "7f4000000000-7f4000100000 r-xp 00000000 fd:01 88 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
    assert deleted_maps(maps) == ["/usr/bin/qemu-system-x86_64", "/usr/lib/x86_64-linux-gnu/libssl.so.3"]


@pytest.mark.parametrize("argv, name", [
    (["/usr/bin/qemu-system-x86_64", "-name", "guest=web01,debug-threads=on", "-S"], "web01"),
    (["qemu-kvm", "-name", "guest=a,,b,debug-threads=on"], "a,b"),
    (["qemu-kvm", "-name", "legacy"], "legacy"),
    (["qemu-kvm", "-m", "1024"], None),
])
def test_guest_name_from_qemu_cmdline(argv, name):
    assert _guest_name(argv) == name
