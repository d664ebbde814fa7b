"""Basic host facts from /proc under the audited root: CPU flags, loaded modules, kernel command line,
memory, the running and installed kernels."""

from __future__ import annotations

import re

from vmaudit.facts import unavailable
from vmaudit.schema import Int, ListOf, Optional, Record, Str, TableOf

from . import ABSENT, Context, collector


def _required(ctx: Context, path: str) -> str:
    text = ctx.read(path)
    if text is ABSENT:
        raise FileNotFoundError(2, "No such file or directory", path)
    return text


CPU_SCHEMA = Record({"flags": ListOf(Str()), "logical_cpus": Int(min=0)},
               optional={"vendor": Optional(Str()), "model": Optional(Str())})


@collector("cpu", schema=CPU_SCHEMA)
def collect_cpu(ctx: Context) -> dict:
    """/proc/cpuinfo: the union of CPU flags, the vendor, the number of logical CPUs."""
    text = _required(ctx, "/proc/cpuinfo")
    flags: set[str] = set()
    vendor = model = None
    processors = 0
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "processor":
            processors += 1
        elif key in ("flags", "Features"):  # x86 / arm64
            flags.update(value.split())
        elif key == "vendor_id" and vendor is None:
            vendor = value.strip()
        elif key == "model name" and model is None:
            model = value.strip()
    return {"flags": sorted(flags), "vendor": vendor, "model": model, "logical_cpus": processors}


MODULES_SCHEMA = ListOf(Str())


@collector("modules", schema=MODULES_SCHEMA)
def collect_modules(ctx: Context) -> list[str]:
    """/proc/modules: names of the loaded kernel modules."""
    return sorted(line.split()[0] for line in _required(ctx, "/proc/modules").splitlines() if line.strip())


CMDLINE_SCHEMA = Str()


@collector("cmdline", schema=CMDLINE_SCHEMA)
def collect_cmdline(ctx: Context) -> str:
    """/proc/cmdline text"""
    return _required(ctx, "/proc/cmdline").strip()


MEMINFO_SCHEMA = TableOf(Int(min=0))


@collector("meminfo", schema=MEMINFO_SCHEMA)
def collect_meminfo(ctx: Context) -> dict:
    """/proc/meminfo in KiB."""
    out = {}
    for line in _required(ctx, "/proc/meminfo").splitlines():
        m = re.match(r"(\w+(?:\(\w+\))?):\s+(\d+)", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


KERNEL_SCHEMA = Record({"running": Str(nonempty=True), "installed": ListOf(Str())})


@collector("kernel", schema=KERNEL_SCHEMA)
def collect_kernel(ctx: Context) -> dict:
    """The running kernel release and the kernels installed under /lib/modules."""
    running = ctx.read_fact("/proc/sys/kernel/osrelease", absent=unavailable("/proc/sys/kernel/osrelease is absent"))
    installed = ctx.listdir("/lib/modules")
    if installed is ABSENT:
        installed = ctx.listdir("/usr/lib/modules")
    return {
        "running": running.strip() if isinstance(running, str) else running,
        "installed": installed if installed is not ABSENT else unavailable("no /lib/modules directory"),
    }
