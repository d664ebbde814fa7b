"""The facts snapshot: everything vmaudit knows about one host, collected before any check runs.

A snapshot is plain JSON (so it can be saved with `vmaudit facts`, shipped from a remote host and
evaluated elsewhere with `vmaudit run --facts`). Its shape:

    {"schema": "vmaudit-facts/2",
     "tool": {"name": "vmaudit", "version": "…"},
     "collected_at": "RFC 3339 UTC",
     "host": {"hostname": "…", "root": "/", "live": true, "libvirt_uri": "qemu:///system",
              "libvirt": "reachable" | "unreachable" | "absent" | "offline"},
     "sources": {"<source name>": <value>, …}}

Each source value is whatever its collector returns, or one of two markers:

    {"unavailable": "reason"}   the evidence could not be read   -> checks that need it say `error`
    {"not_collected": "reason"} the evidence does not apply here -> checks that need it say `skip`

Markers may also appear deeper inside a source (one guest's snapshot list, one sysfs file). Checks get
values through `need()` / `Facts.source()`, which turn markers into exceptions the engine reports.

Version 2 (this one) adds, for every running persistent guest, its persistent definition next to the
live one (`xml_inactive`), and `host.libvirt`. A version-1 snapshot is read through a mapped copy
(`upgrade_v1`): the persistent definition of its running guests is then missing evidence, never assumed
equal to the live one.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from functools import cached_property
from typing import Any, Iterator

SCHEMA = "vmaudit-facts/2"
SCHEMA_V1 = "vmaudit-facts/1"

# XML namespaces of the domain metadata vmaudit reads.
NS_VMAUDIT = "urn:vmaudit:guest:1"
NS_LIBOSINFO = "http://libosinfo.org/xmlns/libvirt/domain/1.0"
NS_QEMU = "http://libvirt.org/schemas/domain/qemu/1.0"

_PLAIN_TAG = re.compile(r"[A-Za-z_][\w.-]*$")  # a bare element name: no predicate, namespace or step

LABEL_KEYS = ("zone", "service", "owner", "redundancy", "patch_group")


class EvidenceMissing(Exception):
    """Evidence a check needs could not be collected; the check reports `error` with this reason."""


class NotApplicable(Exception):
    """Evidence does not exist in this kind of run (e.g. live facts under --root); the check says `skip`."""


class SnapshotError(ValueError):
    """A facts snapshot that is not one (wrong schema, wrong shape)."""


def unavailable(reason: object) -> dict:
    return {"unavailable": str(reason)}


def not_collected(reason: str) -> dict:
    return {"not_collected": reason}


def is_marker(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and ("unavailable" in value or "not_collected" in value)


def need(value: Any, what: str) -> Any:
    """Return `value`, or raise the exception its marker stands for, naming `what` was missing."""
    if isinstance(value, dict) and len(value) == 1:
        if "unavailable" in value:
            raise EvidenceMissing(f"{what}: {value['unavailable']}")
        if "not_collected" in value:
            raise NotApplicable(f"{what}: {value['not_collected']}")
    return value


def need_reason(value: Any) -> str | None:
    """The reason a marker gives, else None."""
    if is_marker(value):
        return value.get("unavailable") or value.get("not_collected")
    return None


# Functions of a guest's XML tree that host-scope checks need (see Guest.view): the engine computes
# them while the tree is parsed for the guest checks, so a host check never parses the XML again.
GUEST_VIEWS: list = []


def guest_view(func):
    """Register `func(tree) -> value` as a view host-scope checks read with `guest.view(func)`."""
    GUEST_VIEWS.append(func)
    return func


class Facts:
    """Read access to a snapshot, with guests' XML parsed once and shared by every check."""

    def __init__(self, data: dict):
        if isinstance(data, dict) and data.get("schema") == SCHEMA_V1:
            data = upgrade_v1(data)
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            found = data.get("schema") if isinstance(data, dict) else type(data).__name__
            raise SnapshotError(f"not a vmaudit facts snapshot (schema {found!r}, expected {SCHEMA!r})")
        for key, kind in (("host", dict), ("sources", dict)):
            if not isinstance(data.get(key), kind):
                raise SnapshotError(f"snapshot has no '{key}' object")
        self.data = data
        self._guests: list[Guest] | None = None

    @property
    def host(self) -> dict:
        return self.data["host"]

    @property
    def live(self) -> bool:
        return bool(self.host.get("live"))

    @property
    def libvirt_state(self) -> str:
        """host.libvirt: "reachable", "unreachable", "absent" (not installed) or "offline" (an image's
        definitions read from files, no daemon contacted)."""
        state = self.host.get("libvirt")
        if state in ("reachable", "unreachable", "absent", "offline"):
            return state
        lv = self.data["sources"].get("libvirt")
        return "unreachable" if not isinstance(lv, dict) or "unavailable" in lv else "reachable"

    @property
    def libvirt_absent(self) -> bool:
        return self.libvirt_state == "absent"

    def require_libvirt(self, what: str) -> None:
        """Raise NotApplicable (the check says `skip`) on a host without any libvirt installed."""
        if self.libvirt_absent:
            reason = need_reason(self.data["sources"].get("libvirt")) or "libvirt is not installed on this host"
            raise NotApplicable(f"{what}: {reason}")

    def raw(self, name: str) -> Any:
        """A source as stored, markers included (for checks that report partial evidence)."""
        if name not in self.data["sources"]:
            return unavailable("not in this snapshot (collected by an older or limited collector)")
        return self.data["sources"][name]

    def source(self, name: str) -> Any:
        return need(self.raw(name), name)

    @property
    def libvirt(self) -> dict:
        value = self.source("libvirt")
        if not isinstance(value, dict):
            raise EvidenceMissing("libvirt: not an object in this snapshot")
        return value

    def guests(self) -> list[Guest]:
        """Every defined guest, running or not. Raises EvidenceMissing when libvirt was not reachable."""
        if self._guests is None:
            domains = need(self.libvirt.get("domains", unavailable("no domain list")), "libvirt domains")
            # a saved or shipped snapshot is input: a mangled domain list is missing evidence, not a crash
            if not isinstance(domains, list) or not all(isinstance(d, dict) for d in domains):
                raise EvidenceMissing("libvirt domains: not a list of guest records in this snapshot")
            # libvirt lists domains in no stable order: sort, so evidence lists diff cleanly between runs
            self._guests = sorted((Guest(d) for d in domains), key=lambda g: (g.name, g.uuid))
        return self._guests


class Guest:
    """One libvirt domain: the collected record plus views of its XML that checks share.

    The XML tree is parsed on first use and may be dropped with `release()` once the per-guest checks
    are done; the derived properties below stay cached so that host-wide checks do not re-parse it.
    """

    _xml_key = "xml"  # the record's key of the XML this object reads (libvirt's XMLDesc(0) answer)

    def __init__(self, record: dict):
        self.record = record
        self.name: str = str(record.get("name", "?"))
        self.uuid: str = str(record.get("uuid") or "")
        self._tree: ET.Element | None = None
        self._views: dict = {}
        self._devices: dict | None = None  # <devices> children by tag, while the tree is held
        self.inventory_labels: dict = {}  # filled by the engine from the inventory
        self._definitions: dict | None = None

    def __repr__(self) -> str:
        return f"Guest({self.name!r})"

    @property
    def resource(self) -> str:
        return f"guest:{self.name}"

    # --- the XML --------------------------------------------------------------------------------
    @property
    def tree(self) -> ET.Element:
        if self._tree is None:
            xml = need(self.record.get(self._xml_key, unavailable("no XML")), self._xml_what())
            if not isinstance(xml, str):
                raise EvidenceMissing(f"XML of guest {self.name}: not a string in this snapshot")
            try:
                self._tree = ET.fromstring(xml)
            except ET.ParseError as exc:
                raise EvidenceMissing(f"XML of guest {self.name} does not parse: {exc}") from None
        return self._tree

    def _xml_what(self) -> str:
        return f"XML of guest {self.name}"

    def release(self) -> None:
        self._tree = None
        self._devices = None
        for other in (self._definitions or {}).values():
            if other is not self:
                other.release()

    def view(self, func) -> Any:
        """The value of a registered guest view (computed once from the XML tree)."""
        if func not in self._views:
            self._views[func] = func(self.tree)
        return self._views[func]

    def find(self, path: str) -> ET.Element | None:
        found = self._device_list(path)
        if found is not None:
            return found[0] if found else None
        return self.tree.find(path)

    def findall(self, path: str) -> list[ET.Element]:
        found = self._device_list(path)
        return list(found) if found is not None else self.tree.findall(path)

    def _device_list(self, path: str) -> list | None:
        """`devices/<tag>` from an index of the device children, built once per guest: the guest checks
        ask for a dozen device kinds each, and ElementPath would walk <devices> for every one."""
        if not path.startswith("devices/") or not _PLAIN_TAG.match(path, 8):
            return None
        if self._devices is None:
            index: dict = {}
            devices = self.tree.find("devices")
            for child in devices if devices is not None else ():
                index.setdefault(child.tag, []).append(child)
            self._devices = index
        return self._devices.get(path[8:], [])

    # --- libvirt state --------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """'running', 'paused', 'shutoff', … as libvirt reports it; 'unknown' when it could not be read
        or only a running libvirt knows it (definitions read from files under --root)."""
        state = self.record.get("state", "unknown")
        return state if isinstance(state, str) else "unknown"

    @property
    def state_marker(self) -> dict | None:
        """The marker standing for the guest's state when it is not known (see `need_state`)."""
        state = self.record.get("state")
        return state if is_marker(state) else None

    def need_state(self) -> str:
        """The state, or raise NotApplicable (only a running libvirt knows it: --root) / EvidenceMissing."""
        marker = self.state_marker
        if marker is not None:
            need(marker, f"state of guest {self.name}")
        if self.state == "unknown" and "state_error" in self.record:
            raise EvidenceMissing(f"state of guest {self.name}: {self.record['state_error']}")
        return self.state

    @property
    def active(self) -> bool:
        return self.state not in ("shutoff", "crashed", "unknown", "nostate")

    @property
    def persistent(self) -> Any:
        return self.record.get("persistent")

    @property
    def autostart(self) -> Any:
        return self.record.get("autostart")

    # --- derived views shared by several checks -------------------------------------------------
    @cached_property
    def domain_type(self) -> str:
        return self.tree.get("type", "")

    @cached_property
    def memory_kib(self) -> int:
        return _kib(self.tree.find("memory"))

    @cached_property
    def current_memory_kib(self) -> int:
        node = self.tree.find("currentMemory")
        return _kib(node) if node is not None else self.memory_kib

    @cached_property
    def vcpus(self) -> int:
        node = self.tree.find("vcpu")
        if node is None:
            return 1
        current = node.get("current")
        return int(current if current else (node.text or "1").strip())

    @cached_property
    def metadata_labels(self) -> dict:
        """Labels from the vmaudit metadata element (`urn:vmaudit:guest:1`)."""
        labels: dict = {}
        metadata = self.tree.find("metadata")
        prefix = f"{{{NS_VMAUDIT}}}"
        for root in metadata if metadata is not None else ():
            if not isinstance(root.tag, str) or not root.tag.startswith(prefix):
                continue
            # virsh metadata stores the element given (commonly <guest>); accept any root element.
            for node in root:
                if isinstance(node.tag, str) and node.tag.startswith(prefix):
                    key = node.tag[len(prefix):].replace("-", "_")  # <patch-group> or <patch_group>
                    text = (node.text or "").strip()
                    if key in LABEL_KEYS and text:
                        labels.setdefault(key, text)
        return labels

    @cached_property
    def _label_info(self) -> tuple[dict, dict]:
        return guest_labels(self)

    @property
    def labels(self) -> dict:
        """Zone, service, owner, redundancy, patch_group, each from the persistent definition's metadata,
        else the live one's, else the inventory (see guest_labels)."""
        return self._label_info[0]

    def label_source(self, key: str) -> str | None:
        """"metadata" (the persistent definition, or a guest's only one), "live metadata" (only the
        running guest's live definition has it: it is gone after the next start) or "inventory"."""
        return self._label_info[1].get(key)

    @cached_property
    def os_id(self) -> str | None:
        node = self.tree.find(f"metadata/{{{NS_LIBOSINFO}}}libosinfo/{{{NS_LIBOSINFO}}}os")
        return node.get("id") if node is not None else None

    @cached_property
    def hostdev_pci(self) -> list[str]:
        """PCI addresses (DDDD:BB:SS.F) of the guest's passed-through PCI devices, SR-IOV NICs included."""
        out = []
        nodes = self.tree.findall("devices/hostdev[@type='pci']") + self.tree.findall("devices/interface[@type='hostdev']")
        for hd in nodes:
            addr = hd.find("source/address")
            if addr is not None and addr.get("type", "pci") == "pci":
                out.append(pci_bdf(addr))
        return out

    @cached_property
    def has_hostdev(self) -> bool:
        """Any device passed through from the host: <hostdev> or <interface type='hostdev'>."""
        return (self.tree.find("devices/hostdev") is not None
                or self.tree.find("devices/interface[@type='hostdev']") is not None)

    def precompute(self) -> None:
        """Fill the shared views so `release()` can drop the tree without later re-parsing."""
        for name in ("domain_type", "memory_kib", "current_memory_kib", "vcpus", "labels", "os_id",
                     "hostdev_pci", "has_hostdev"):
            getattr(self, name)
        for func in GUEST_VIEWS:
            self.view(func)
        for other in (self._definitions or {}).values():
            if other is not self:
                try:
                    other.precompute()
                except EvidenceMissing:
                    pass

    # --- its definitions (CHECKS.md: "Which definition a guest check judges") ----------------------
    @property
    def definition(self) -> str:
        """Which definition this object reads: "live" (what runs now) or "persistent" (what runs after
        the next start). A Guest reads libvirt's default XML: the live one while the guest is active."""
        return "live" if self.active else "persistent"

    def definitions(self) -> dict:
        """{"live": ..., "persistent": ...}: the definitions this guest has, as Guest objects sharing its
        record and labels. A running persistent guest has both, a shut-off guest only the persistent one,
        a transient guest only the live one."""
        if self._definitions is None:
            own = {self.definition: self}
            if self.active and (self.persistent is True or "xml_inactive" in self.record):
                # (persistence unknown: the collector recorded why xml_inactive is missing evidence)
                own["persistent"] = GuestDefinition(self, "xml_inactive", "persistent")
            self._definitions = {k: own[k] for k in ("live", "persistent") if k in own}
        return self._definitions

    def definition_of(self, which: str) -> Guest | None:
        """The live or persistent definition, or None when the guest has no such one."""
        return self.definitions().get(which)

    @property
    def will_run(self) -> Guest:
        """The definition the guest runs after its next start (the persistent one), else the live one
        (a transient guest has no next start)."""
        defs = self.definitions()
        return defs.get("persistent") or defs["live"]


class GuestDefinition(Guest):
    """The other definition of a running persistent guest (its persistent one, `xml_inactive`): a Guest
    whose XML views come from that definition while the record, state and labels are the guest's."""

    def __init__(self, owner: Guest, key: str, definition: str):
        super().__init__(owner.record)
        self.owner = owner
        self._xml_key = key
        self._definition = definition

    @property
    def definition(self) -> str:
        return self._definition

    def _xml_what(self) -> str:
        return f"{self._definition} definition of guest {self.name}"

    def definitions(self) -> dict:
        return self.owner.definitions()

    @property
    def inventory_labels(self) -> dict:
        return self.owner.inventory_labels

    @inventory_labels.setter
    def inventory_labels(self, value: dict) -> None:
        pass  # set on the owner only

    @property
    def labels(self) -> dict:
        return self.owner.labels

    def label_source(self, key: str) -> str | None:
        return self.owner.label_source(key)

    def release(self) -> None:
        self._tree = None
        self._devices = None


def guest_labels(guest: Guest) -> tuple[dict, dict]:
    """({key: value}, {key: source}) of a guest's labels: the persistent definition's metadata first
    (what the guest carries from its next start on; `virsh metadata --config` writes only there), then
    the live definition's, then the inventory. Raises EvidenceMissing when a definition that could hold
    a label cannot be read."""
    owner = getattr(guest, "owner", guest)
    defs = owner.definitions()
    values: dict = {}
    sources: dict = {}
    order = [(defs.get("persistent"), "metadata"), (defs.get("live"), "metadata" if len(defs) == 1 else "live metadata")]
    for definition, source in order:
        if definition is None:
            continue
        for key, value in definition.metadata_labels.items():
            if key not in values:
                values[key], sources[key] = value, source
    for key, value in owner.inventory_labels.items():
        if key in LABEL_KEYS and value and key not in values:
            values[key], sources[key] = value, "inventory"
    return values, sources


def upgrade_v1(data: dict) -> dict:
    """A vmaudit-facts/1 snapshot mapped onto version 2 (the input is not modified; unchanged parts are
    shared). Version 1 kept only libvirt's default XML of each guest: for a running persistent guest the
    persistent definition is missing evidence, never assumed equal to the live one."""
    host, sources = data.get("host"), data.get("sources")
    if not isinstance(host, dict) or not isinstance(sources, dict):
        return {**data, "schema": SCHEMA}  # Facts() reports the shape
    lv = sources.get("libvirt")
    host = {**host, "mapped_from": SCHEMA_V1}
    if "libvirt" not in host:
        host["libvirt"] = ("unreachable" if isinstance(lv, dict) and "unavailable" in lv and len(lv) == 1
                           else "reachable")
    domains = lv.get("domains") if isinstance(lv, dict) else None
    if isinstance(domains, list):
        missing = unavailable(f"not in this {SCHEMA_V1} snapshot (collected by an older vmaudit, which "
                              "kept only the live definition)")
        mapped = []
        for record in domains:
            if (isinstance(record, dict) and record.get("persistent") is not False
                    and "xml_inactive" not in record
                    and record.get("state") not in ("shutoff", "crashed", "unknown", "nostate", None)):
                record = {**record, "xml_inactive": missing}
            mapped.append(record)
        sources = {**sources, "libvirt": {**lv, "domains": mapped}}
    return {**data, "schema": SCHEMA, "host": host, "sources": sources}


def _kib(node: ET.Element | None) -> int:
    if node is None or not (node.text or "").strip():
        return 0
    value = int(node.text.strip())
    unit = (node.get("unit") or "KiB").lower()
    factor = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "kb": 1000 / 1024, "m": 1024,
              "mib": 1024, "mb": 1000 ** 2 / 1024, "g": 1024 ** 2, "gib": 1024 ** 2,
              "gb": 1000 ** 3 / 1024, "t": 1024 ** 3, "tib": 1024 ** 3, "tb": 1000 ** 4 / 1024}
    return int(value * factor.get(unit, 1))


def pci_bdf(addr: ET.Element) -> str:
    """`<address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>` -> '0000:01:00.0'."""
    def num(attr: str) -> int:
        return int(addr.get(attr, "0"), 0)
    return f"{num('domain'):04x}:{num('bus'):02x}:{num('slot'):02x}.{num('function'):x}"


def iter_markers(value: Any, path: str = "") -> Iterator[tuple[str, str, str]]:
    """Yield (path, kind, reason) for every marker inside a source value."""
    if is_marker(value):
        kind = "unavailable" if "unavailable" in value else "not_collected"
        yield path, kind, value[kind]
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from iter_markers(v, f"{path}.{k}" if path else str(k))
