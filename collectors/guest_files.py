"""Per-guest files libvirt's QEMU driver keeps on the host, read under the audited root: the guests'
QEMU logs and persistent configs (their mtimes date a guest's last run and its definition), the
managed-save directory (saved guest RAM), and libvirt's QEMU hook script.

Guest names are never turned into paths here: the collector lists each directory and records every
regular file by its directory-entry name, and checks look a guest up by `<name>.log` / `<name>.xml` /
`<name>.save` as a dictionary key. A tenant-chosen name such as "../../etc/x" can therefore never make
vmaudit stat a file outside these directories.

Sources:
  guest_files    {"qemu_logs":    {"dir": "/var/log/libvirt/qemu", "present": bool,
                                   "entries": {"<file name>": {"mtime": epoch s, "size": bytes}}},
                  "qemu_configs": {"dir": "/etc/libvirt/qemu", "present": bool, "entries": {...}},
                  "saved_images": {"dir": "/var/lib/libvirt/qemu/save", "present": bool, "entries": {...}}}
                 Each of the three may be the marker {"unavailable": reason} (unreadable directory, or a
                 log/config directory that does not exist: on a libvirt host the packages create both,
                 so their absence means the evidence is elsewhere, e.g. an unmounted /var). A save
                 directory that does not exist means no saved images (`present: false`, no entries).
                 Only regular files are listed (lstat: a symlink is never followed out of the root).
  libvirt_hooks  {"qemu": {"path": "/etc/libvirt/hooks/qemu", "present": bool, "executable": bool}}
                 or, for an unreadable hook, {"qemu": {"unavailable": reason}}. libvirt runs the hook
                 (for migrations among others) only when it is an executable file.
"""

from __future__ import annotations

import os
import stat

from vmaudit.facts import unavailable
from vmaudit.schema import Bool, Float, Int, Record, Str, TableOf

from . import Context, collector

QEMU_LOG_DIR = "/var/log/libvirt/qemu"
QEMU_CONFIG_DIR = "/etc/libvirt/qemu"
SAVE_DIR = "/var/lib/libvirt/qemu/save"
QEMU_HOOK = "/etc/libvirt/hooks/qemu"


def list_files(ctx: Context, directory: str, *, absent_is_empty: bool) -> dict:
    """Regular files of `directory` (under the root) with their mtime and size."""
    try:
        names = os.listdir(ctx.path(directory))
    except (FileNotFoundError, NotADirectoryError):
        if absent_is_empty:
            return {"dir": directory, "present": False, "entries": {}}
        return unavailable(f"{directory} does not exist under the audited root")
    except OSError as exc:
        return unavailable(f"cannot list {directory}: {exc.strerror or exc}")
    entries: dict = {}
    for name in sorted(names):
        try:
            st = os.lstat(ctx.path(f"{directory}/{name}"))
        except FileNotFoundError:  # removed while we listed
            continue
        except OSError as exc:
            entries[name] = unavailable(f"cannot stat {directory}/{name}: {exc.strerror or exc}")
            continue
        if stat.S_ISREG(st.st_mode):
            entries[name] = {"mtime": round(st.st_mtime, 3), "size": st.st_size}
    return {"dir": directory, "present": True, "entries": entries}


_LISTING = Record({"dir": Str(), "present": Bool(),
                   "entries": TableOf(Record({"mtime": Float(), "size": Int(min=0)}))})
GUEST_FILES_SCHEMA = TableOf(_LISTING)


@collector("guest_files", schema=GUEST_FILES_SCHEMA)
def collect_guest_files(ctx: Context) -> dict:
    """`{qemu_logs: {dir: "/var/log/libvirt/qemu", present, entries: {"<file>": {mtime (epoch s), size}}},
    qemu_configs: {dir: "/etc/libvirt/qemu", ...}, saved_images: {dir: "/var/lib/libvirt/qemu/save", ...}}`;
    regular files only (lstat); a missing log/config directory or an unreadable one is a marker, a missing
    save directory is `present: false`. Checks look guests up by entry name (`<name>.log`), never by
    building a path
    """
    return {
        "qemu_logs": list_files(ctx, QEMU_LOG_DIR, absent_is_empty=False),
        "qemu_configs": list_files(ctx, QEMU_CONFIG_DIR, absent_is_empty=False),
        "saved_images": list_files(ctx, SAVE_DIR, absent_is_empty=True),
    }


LIBVIRT_HOOKS_SCHEMA = TableOf(Record({"present": Bool()}, optional={"path": Str(), "executable": Bool()}))


@collector("libvirt_hooks", schema=LIBVIRT_HOOKS_SCHEMA)
def collect_libvirt_hooks(ctx: Context) -> dict:
    """`{qemu: {path: "/etc/libvirt/hooks/qemu", present, executable}}` (a symlink is resolved inside the root)
    or `{qemu: marker}`
    """
    try:
        st = os.stat(ctx.resolve(QEMU_HOOK))  # a link to the real hook is followed inside the root
    except (FileNotFoundError, NotADirectoryError):
        return {"qemu": {"path": QEMU_HOOK, "present": False, "executable": False}}
    except OSError as exc:
        return {"qemu": unavailable(f"cannot stat {QEMU_HOOK}: {exc.strerror or exc}")}
    regular = stat.S_ISREG(st.st_mode)
    return {"qemu": {"path": QEMU_HOOK, "present": regular,
                     "executable": regular and bool(st.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH))}}
