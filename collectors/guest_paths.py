"""The host files and directories guests use, stat'ed under the audited root: disk images and their
backing chains, kernels, initrds, firmware loaders and NVRAM stores, and the host directories shared
into guests (`<filesystem>`), with every directory above them. Nothing is ever opened or changed: only
lstat/stat, and symlinks are resolved inside the root (an absolute link under `--root` means that root's
file, never the auditing host's).

The paths come from every guest's definitions as libvirt gives them: the live XML of a running guest
and, for a persistent one, the XML of its next start (`VIR_DOMAIN_XML_INACTIVE`); a disk of type
`volume` is turned into its file through the storage pool. Auditing an image (`--root` without
`--connect`) they come from the definitions libvirt would load at boot (collectors/libvirt_files.py);
volumes are then unknown. Checks map a guest's own XML to these
entries by path, so a tenant-chosen guest name never becomes a path here.

Source:
  guest_paths  {"paths": {"<path as written in the XML>": entry},
                "volumes": {"<pool>/<volume>": "<path>" or marker}}
    entry: {"type": "file"/"dir"/"block"/"char"/"socket"/"fifo"/"link", "mode": "0640", "uid", "gid"}
           plus, for a link, "target": the path it resolves to (inside the root; its entry is there too);
           {"type": "absent"} for a path that does not exist; or a marker when it cannot be stat'ed.
    Every directory above a file, as written and as resolved, has an entry too
    ("/var/lib/libvirt/images", "/var/lib/libvirt", ..., "/").
"""

from __future__ import annotations

import os
import stat
import xml.etree.ElementTree as ET
from typing import Any, Iterator

from vmaudit.facts import unavailable
from vmaudit.schema import Enum, Int, Record, Str, TableOf

from . import Context, collector
from .libvirt import domain_records

_TYPES = ((stat.S_ISLNK, "link"), (stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISBLK, "block"),
          (stat.S_ISCHR, "char"), (stat.S_ISSOCK, "socket"), (stat.S_ISFIFO, "fifo"))


def _backing_chain(disk: ET.Element) -> Iterator[ET.Element]:
    backing = disk.find("backingStore")
    while backing is not None and backing.get("type"):
        yield backing
        backing = backing.find("backingStore")


def guest_file_refs(tree: ET.Element) -> list[tuple[str, str]]:
    """(what, path) of every host file or directory a guest definition names: disks with their backing
    chains, os/loader, os/nvram (and its source), os/kernel, os/initrd, filesystem share sources.
    Volume disks are named ("volume", "<pool>/<volume>"). The checks build the same list with
    definition_file_refs, so they judge what the collector stat'ed."""
    # one pass over <devices> children (ElementPath's findall costs more than the walk itself; a
    # plain tag such as "devices" is looked up by the C code of findall, iterfind always goes through
    # ElementPath)
    disks: list[ET.Element] = []
    shares: list[ET.Element] = []
    for devices in tree.findall("devices"):
        for el in devices:
            if el.tag == "disk":
                disks.append(el)
            elif el.tag == "filesystem":
                shares.append(el)
    return definition_file_refs(disks, tree.find("os"), shares)


_REF_PREFIXES = ("/", "volume:")  # a host path, or a pool volume named by definition_file_refs


def definition_file_refs(disks: list[ET.Element], os_el: ET.Element | None,
                         shares: list[ET.Element]) -> list[tuple[str, str]]:
    """guest_file_refs of a definition from its <disk> elements, its (first) <os> and its <filesystem>
    elements, for a caller that holds them already (the checks read them from the guest's device
    index)."""
    refs: list[tuple[str, str]] = []

    def add_source(what: str, source: ET.Element | None) -> None:
        if source is not None:
            for attr in ("file", "dev", "dir"):
                path = source.get(attr)
                if path and path.startswith(_REF_PREFIXES):
                    refs.append((what, path))

    for disk in disks:
        target = disk.find("target")
        dev = target.get("dev") if target is not None else None
        what = f"disk {dev}" if dev else "disk"
        source = disk.find("source")
        if source is not None and disk.get("type") == "volume" and source.get("pool") and source.get("volume"):
            refs.append((f"{what} (volume)", f"volume:{source.get('pool')}/{source.get('volume')}"))
        add_source(what, source)
        if disk.find("backingStore") is not None:
            for depth, backing in enumerate(_backing_chain(disk), 1):
                add_source(f"{what} backing file {depth}", backing.find("source"))
    if os_el is not None:
        for tag in ("loader", "kernel", "initrd"):
            text = (os_el.findtext(tag) or "").strip()
            if text.startswith(_REF_PREFIXES):
                refs.append((tag, text))
        nvram = os_el.find("nvram")
        if nvram is not None:
            text = (nvram.text or "").strip()
            if text.startswith(_REF_PREFIXES):
                refs.append(("nvram", text))
            add_source("nvram", nvram.find("source"))
    for fs in shares:
        if fs.get("type", "mount") == "mount":
            add_source("filesystem", fs.find("source"))
    return refs


def _entry(st: os.stat_result) -> dict:
    kind = next((name for test, name in _TYPES if test(st.st_mode)), "other")
    return {"type": kind, "mode": f"{stat.S_IMODE(st.st_mode):04o}", "uid": st.st_uid, "gid": st.st_gid}


def _audited(ctx: Context, real: str) -> str:
    """A path on this machine (under the root) as the audited host sees it."""
    if str(ctx.root) == "/":
        return real
    rel = os.path.relpath(real, ctx.root)
    return "/" if rel == "." else "/" + rel


def _resolved(ctx: Context, path: str) -> str:
    if str(ctx.root) == "/":
        return os.path.realpath(path)
    return _audited(ctx, str(ctx.resolve(path)))


def _under_root(ctx: Context, path: str) -> Any:
    """ctx.path(path), with the directory part resolved once per run: many guests' images share one
    directory, and walking it component by component under --root costs more than the lstat."""
    if str(ctx.root) == "/":
        return path
    parent, _, name = path.rstrip("/").rpartition("/")
    if not parent or name in ("", ".", ".."):
        return ctx.path(path)
    base = ctx._resolved_dirs.get(parent)
    if base is None:
        base = ctx._resolved_dirs[parent] = ctx.resolve(parent)  # the directory's own symlinks followed, as path() does
    return base / name


def _stat_into(ctx: Context, path: str, out: dict) -> None:
    """Record `path`, its link target and every directory above the target."""
    if path in out:
        return
    try:
        st = os.lstat(_under_root(ctx, path))
    except (FileNotFoundError, NotADirectoryError):
        out[path] = {"type": "absent"}
        return
    except OSError as exc:
        out[path] = unavailable(f"cannot stat {path}: {exc.strerror or exc}")
        return
    out[path] = _entry(st)
    # the directories above the path as written (whoever can write one can replace a link in it) ...
    parent = os.path.dirname(path.rstrip("/")) or "/"
    if parent != path:
        _stat_into(ctx, parent, out)
    if stat.S_ISLNK(st.st_mode):
        try:
            real = _resolved(ctx, path)
        except OSError as exc:  # a link loop
            out[path]["target"] = unavailable(f"cannot resolve {path}: {exc.strerror or exc}")
            return
        out[path]["target"] = real
        _stat_into(ctx, real, out)  # ... and the file a link leads to, with the directories above it


def _volume_path(conn: Any, ref: str) -> Any:
    pool, _, volume = ref.partition("/")
    try:
        return conn.storagePoolLookupByName(pool).storageVolLookupByName(volume).path()
    except Exception as exc:
        msg = exc.get_error_message() if hasattr(exc, "get_error_message") else str(exc)
        return unavailable(f"libvirt: volume {volume!r} of pool {pool!r}: {msg}")


_ENTRY = Record({"type": Enum("file", "dir", "block", "char", "socket", "fifo", "link", "other", "absent")},
                optional={"mode": Str(), "uid": Int(min=0), "gid": Int(min=0), "target": Str()})
GUEST_PATHS_SCHEMA = Record({"paths": TableOf(_ENTRY), "volumes": TableOf(Str())})


@collector("guest_paths", schema=GUEST_PATHS_SCHEMA)
def collect_guest_paths(ctx: Context) -> dict:
    """`{paths: {"<path as the guest XML names it>": {type, mode ("0640"), uid, gid, target (a link's path
    resolved inside the root)}}, volumes: {"<pool>/<volume>": path}}`: lstat of every disk (and backing
    chain), loader, NVRAM, kernel, initrd and shared directory of every guest's live and next-start
    definition, and of every directory above them, as written and as resolved; never opened
    """
    paths: dict = {}
    volumes: dict = {}
    # the definitions the libvirt source holds (fetched once for both); under --root without --connect
    # those an image would load at boot, with no libvirt to ask about volumes
    records = domain_records(ctx)
    if not isinstance(records, list):  # the guests could not be listed: neither can their files
        return records
    conn = ctx.libvirt() if ctx.uri is not None else None
    xmls = [record[key] for record in records for key in ("xml", "xml_inactive") if isinstance(record.get(key), str)]
    for xml in dict.fromkeys(xmls):  # a definition unchanged since start: its files once
        for _what, ref in guest_file_refs(ET.fromstring(xml)):
            if ref.startswith("volume:"):
                key = ref[len("volume:"):]
                if key not in volumes:
                    volumes[key] = (_volume_path(conn, key) if conn is not None
                                    else unavailable("a storage volume's path: only a running libvirt knows it"))
                if isinstance(volumes[key], str):
                    _stat_into(ctx, volumes[key], paths)
            else:
                _stat_into(ctx, ref, paths)
    return {"paths": dict(sorted(paths.items())), "volumes": dict(sorted(volumes.items()))}
