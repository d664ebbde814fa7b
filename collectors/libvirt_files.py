"""The `libvirt` source of an image (`--root DIR` without `--connect`): the persistent definitions libvirt
would load when that system boots, read from its files, with no libvirt daemon contacted.

    guests    DIR/etc/libvirt/qemu/*.xml            (autostart: a link in .../qemu/autostart/)
    networks  DIR/etc/libvirt/qemu/networks/*.xml   (autostart: .../networks/autostart/)

Each file is parsed as libvirt's driver loads its configuration directory: only names ending in ".xml",
one <domain> (<network>) per file with a <name>. A file that is not one is kept as a record whose `xml`
is an `unavailable` marker naming the file and the parse error, so that every check reports that guest
as `error` while the others are audited. What only a running libvirt knows — state, snapshots, managed
save, capabilities, node info, storage pools — is `not_collected` (its checks say `skip`).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from vmaudit.facts import not_collected, unavailable

QEMU_DIR = "/etc/libvirt/qemu"
NETWORK_DIR = "/etc/libvirt/qemu/networks"
OFFLINE = "only a running libvirt knows it (the image's files under --root are audited; no libvirt contacted)"


def _definition(ctx: Any, path: str, root_tag: str) -> tuple[ET.Element | None, str, str | None]:
    """(parsed root, text, None) or (None, text, reason) for one definition file."""
    try:
        text = ctx.read(path)
    except OSError as exc:
        return None, "", f"cannot read {path}: {exc.strerror or exc}"
    if not isinstance(text, str):
        return None, "", f"{path} vanished while it was read"
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        return None, text, f"{path} is not well-formed XML ({exc}): libvirt would not load it"
    if root.tag != root_tag:
        return None, text, f"{path}: root element <{root.tag}>, not <{root_tag}>: libvirt would not load it"
    if not (root.findtext("name") or "").strip():
        return None, text, f"{path}: no <name>: libvirt would not load it"
    return root, text, None


def _files(ctx: Any, directory: str) -> Any:
    names = ctx.listdir(directory)
    if not names:  # ABSENT (no such directory) or empty: nothing defined
        return []
    return [n for n in names if n.endswith(".xml") and ctx.resolve(f"{directory}/{n}").is_file()]


def _autostart(ctx: Any, directory: str, filename: str) -> bool:
    return ctx.exists(f"{directory}/autostart/{filename}")


def _domains(ctx: Any) -> Any:
    try:
        files = _files(ctx, QEMU_DIR)
    except OSError as exc:
        return unavailable(f"cannot list {QEMU_DIR}: {exc.strerror or exc}")
    out = []
    for filename in files:
        path = f"{QEMU_DIR}/{filename}"
        root, text, error = _definition(ctx, path, "domain")
        record: dict = {
            "name": root.findtext("name").strip() if root is not None else filename[: -len(".xml")],
            "uuid": (root.findtext("uuid") or "").strip() if root is not None else "",
            "state": not_collected(OFFLINE),
            # a file libvirt would not load defines nothing: not even persistence or autostart is known
            "persistent": True if error is None else unavailable(error),
            "autostart": _autostart(ctx, QEMU_DIR, filename) if error is None else unavailable(error),
            "managed_save": not_collected(OFFLINE),
            "xml": text if error is None else unavailable(error),
            "snapshots": not_collected(OFFLINE),
            "file": path,
        }
        out.append(record)
    return out


def _networks(ctx: Any) -> Any:
    try:
        files = _files(ctx, NETWORK_DIR)
    except OSError as exc:
        return unavailable(f"cannot list {NETWORK_DIR}: {exc.strerror or exc}")
    out = []
    for filename in files:
        path = f"{NETWORK_DIR}/{filename}"
        root, text, error = _definition(ctx, path, "network")
        out.append({"name": root.findtext("name").strip() if root is not None else filename[: -len(".xml")],
                    "active": not_collected(OFFLINE), "autostart": _autostart(ctx, NETWORK_DIR, filename),
                    "xml": text if error is None else unavailable(error), "file": path})
    return out


def offline_libvirt(ctx: Any) -> dict:
    """The libvirt source of an image, from its persistent definitions only."""
    missing = not_collected(OFFLINE)
    return {"uri": None, "definitions_from": QEMU_DIR, "lib_version": missing, "hv_version": missing,
            "hv_type": missing, "capabilities": missing, "nodeinfo": missing,
            "domains": _domains(ctx), "pools": missing, "networks": _networks(ctx)}
