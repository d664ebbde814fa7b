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

Markers may also appear deeper inside a source (one guest's snapshot list, one sysfs file). The shape of
every source is declared next to its collector (vmaudit.schema); `Facts(data)` holds the snapshot to it,
turning a value of the wrong type into a marker naming its path. Checks read facts one way:

    ksm = facts.source("ksm")        # the source, or EvidenceMissing / NotApplicable for its marker
    run = ksm["run"]                 # a typed value, or EvidenceMissing naming "ksm.run" and why
    ksm.get("pages_shared", 0)       # absent -> the default; a marker still raises
    for name, value, missing in facts.source("vfio").partial(): ...   # per-item partial evidence

Containers that hold a marker are GuardedMap / GuardedList (dict / list subclasses) whose item access,
`get`, `items`, `values`, iteration, `pop`, `setdefault`, `in` (a list's: False is no answer while a
marker may be the item), `index`, `count`, `reversed` raise instead of returning the marker, and
whose copies (`copy`, `copy.copy`, `+`, `*`) stay guarded; `partial()` (and the
module function `partial(container)`, which also accepts plain containers) is the one explicit way
to see which items are missing.

Version 2 (this one) adds, for every running persistent guest, its persistent definition next to the
live one (`xml_inactive`), and `host.libvirt`. A version-1 snapshot is read through a mapped copy
(`upgrade_v1`): the persistent definition of its running guests is then missing evidence, never assumed
equal to the live one.
"""

from __future__ import annotations

import re
import sys
import weakref
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from functools import cached_property
from typing import Any, Iterator

from .fsutil import check_json_values, read_bounded
from .schema import MAX_SNAPSHOT_BYTES, Bool, Optional, Record, Str, conform_sources

# The snapshot format's version, in one place: what `collect()` writes and what Facts() accepts
# (version 1 through a mapped copy, see upgrade_v1).
SCHEMA = "vmaudit-facts/2"
SCHEMA_V1 = "vmaudit-facts/1"
SUPPORTED_SCHEMAS = (SCHEMA, SCHEMA_V1)

# XML namespaces of the domain metadata vmaudit reads.
NS_VMAUDIT = "urn:vmaudit:guest:1"
NS_LIBOSINFO = "http://libosinfo.org/xmlns/libvirt/domain/1.0"
NS_QEMU = "http://libvirt.org/schemas/domain/qemu/1.0"

_PLAIN_TAG = re.compile(r"[A-Za-z_][\w.-]*$")  # a bare element name: no predicate, namespace or step

# path -> its <tag> if it is a plain "devices/<tag>", else "" (Guest._device_list: checks ask the same
# few dozen paths for every guest, so the pattern is matched once per path, not once per call)
_DEVICE_TAG: dict[str, str] = {}

LABEL_KEYS = ("zone", "service", "owner", "redundancy", "patch_group")


class EvidenceMissing(Exception):
    """Evidence a check needs could not be collected; the check reports `error` with this reason."""


class NotApplicable(Exception):
    """Evidence does not exist in this kind of run (e.g. live facts under --root); the check says `skip`."""


from .errors import SnapshotError  # noqa: E402 - re-exported: a snapshot that is not one (exit 2)


def _missing(marker: dict, what: str) -> Exception:
    """The exception a marker at `what` (a path such as "ksm.run") stands for; `.reason` is the
    marker's own reason, `.path` where it was."""
    cls, reason = ((EvidenceMissing, marker["unavailable"]) if "unavailable" in marker
                   else (NotApplicable, marker["not_collected"]))
    exc = cls(reason if reason.startswith(what) else f"{what}: {reason}")
    exc.reason, exc.path = reason, what
    return exc


def _marked(v: Any) -> bool:
    return type(v) is dict and len(v) == 1 and ("unavailable" in v or "not_collected" in v)


class GuardedMap(dict):
    """A table of facts holding at least one marker: reading a marked entry raises (see module doc)."""

    __slots__ = ("where",)

    def __getitem__(self, key: Any) -> Any:
        v = dict.__getitem__(self, key)
        if _marked(v):
            raise _missing(v, f"{self.where}.{key}" if self.where else str(key))
        return v

    def get(self, key: Any, default: Any = None) -> Any:
        return self[key] if key in self else default

    def __iter__(self) -> Iterator[Any]:
        # the same keys as dict's; defined so that dict(m), {**m} and dict.update(m) go through
        # keys() and __getitem__ (and raise at a marker) instead of copying the markers out
        return dict.__iter__(self)

    def copy(self) -> GuardedMap:
        out = GuardedMap(dict.items(self))
        out.where = self.where
        return out

    __copy__ = copy  # copy.copy() would otherwise go through __reduce__ (a plain dict, markers in it)

    def pop(self, key: Any, *default: Any) -> Any:
        if key in self:
            self[key]  # raises at a marker, before removing it
        return dict.pop(self, key, *default)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        return self[key] if key in self else dict.setdefault(self, key, default)

    def popitem(self) -> tuple:
        if dict.__len__(self):
            self[next(reversed(dict.keys(self)))]  # the item popitem() takes: raises at a marker
        return dict.popitem(self)

    def values(self) -> list:  # type: ignore[override]
        return [self[k] for k in self]

    def items(self) -> list:  # type: ignore[override]
        return [(k, self[k]) for k in self]

    def partial(self) -> Iterator[tuple[Any, Any, Exception | None]]:
        """(key, value, None) for each entry with evidence, (key, None, EvidenceMissing|NotApplicable)
        for each marked one."""
        for k, v in dict.items(self):
            if _marked(v):
                yield k, None, _missing(v, f"{self.where}.{k}" if self.where else str(k))
            else:
                yield k, v, None

    def plain(self) -> dict:
        return dict(dict.items(self))

    def __deepcopy__(self, memo: dict) -> GuardedMap:
        import copy

        out = GuardedMap({k: copy.deepcopy(v, memo) for k, v in dict.items(self)})
        out.where = self.where
        return out

    def __reduce__(self) -> tuple:
        return (dict, (self.plain(),))


class GuardedList(list):
    """A list of facts holding at least one marker: reading a marked item raises."""

    __slots__ = ("where",)

    def __getitem__(self, index: Any) -> Any:
        v = list.__getitem__(self, index)
        if isinstance(index, slice):
            for i, item in enumerate(v):
                if _marked(item):
                    raise _missing(item, f"{self.where}[{i}]")
            return v
        if _marked(v):
            raise _missing(v, f"{self.where}[{index}]")
        return v

    def __iter__(self) -> Iterator[Any]:
        for i, v in enumerate(list.__iter__(self)):
            if _marked(v):
                raise _missing(v, f"{self.where}[{i}]")
            yield v

    # list's own methods that read items without __getitem__/__iter__: each either raises at the
    # marker or returns a list that still guards it
    def _first_gap(self) -> Exception:
        for i, v in enumerate(list.__iter__(self)):
            if _marked(v):
                return _missing(v, f"{self.where}[{i}]")
        raise AssertionError("a GuardedList holds a marker")  # only built around one

    def __contains__(self, item: Any) -> bool:
        # True is an answer; False is not while a marker may be that very item
        if list.__contains__(self, item) and not _marked(item):
            return True
        raise self._first_gap()

    def index(self, item: Any, start: int = 0, stop: int = sys.maxsize) -> int:
        # the first index is known only when no marker comes before it
        try:
            at = -1 if _marked(item) else list.index(self, item, start, stop)
        except ValueError:
            at = -1
        if at >= 0 and not any(_marked(v) for v in list.__getitem__(self, slice(start, at))):
            return at
        raise self._first_gap()

    def count(self, item: Any) -> int:
        raise self._first_gap()  # any marker may be one more

    def pop(self, index: int = -1) -> Any:
        value = self[index]  # raises at a marker, before removing it
        list.pop(self, index)
        return value

    def _guarded(self, items: Any) -> GuardedList:
        out = GuardedList(items)
        out.where = self.where
        return out

    def copy(self) -> GuardedList:
        return self._guarded(list.__iter__(self))

    __copy__ = copy

    def __reversed__(self) -> Iterator[Any]:
        return reversed(list(self))  # iteration raises at a marker

    def __add__(self, other: Any) -> GuardedList:
        return self._guarded(list.__add__(self.plain(), other))

    def __radd__(self, other: Any) -> GuardedList:
        return self._guarded(list.__add__(list(other), self.plain()))

    def __mul__(self, n: Any) -> GuardedList:
        return self._guarded(list.__mul__(self.plain(), n))

    __rmul__ = __mul__

    def partial(self) -> Iterator[tuple[int, Any, Exception | None]]:
        """(index, value, None) for each item with evidence, (index, None, exception) for a marked one."""
        for i, v in enumerate(list.__iter__(self)):
            if _marked(v):
                yield i, None, _missing(v, f"{self.where}[{i}]")
            else:
                yield i, v, None

    def plain(self) -> list:
        return list(list.__iter__(self))

    def __deepcopy__(self, memo: dict) -> GuardedList:
        import copy

        out = GuardedList(copy.deepcopy(v, memo) for v in list.__iter__(self))
        out.where = self.where
        return out

    def __reduce__(self) -> tuple:
        return (list, (self.plain(),))


def unguarded(value: Any) -> Any:
    """`value` with every guarded container inside replaced by a plain copy (markers shown as they are),
    or `value` itself when it holds none: findings' evidence goes through this, so that a check putting
    a source with a gap into its evidence cannot make json.dumps (which calls .items()) raise."""
    t = type(value)
    if t is GuardedMap or t is GuardedList:
        value = value.plain()
        t = type(value)
    if t is dict:
        out = None
        for k, v in value.items():
            if type(v) in _CONTAINERS:
                p = unguarded(v)
                if p is not v:
                    if out is None:
                        out = dict(value)
                    out[k] = p
        return value if out is None else out
    if t is list or t is tuple:  # json.dumps writes a tuple as an array: the same walk
        out = None
        for i, v in enumerate(value):
            if type(v) in _CONTAINERS:
                p = unguarded(v)
                if p is not v:
                    if out is None:
                        out = list(value)
                    out[i] = p
        return value if out is None else out
    return value


_CONTAINERS = frozenset((dict, list, tuple, GuardedMap, GuardedList))  # a set: `type(v) in` hashes once


def partial(container: Any) -> Iterator[tuple[Any, Any, Exception | None]]:
    """`container.partial()` for guarded containers; the same triples (never missing) for plain ones."""
    if isinstance(container, (GuardedMap, GuardedList)):
        return container.partial()
    if isinstance(container, dict):
        return ((k, v, None) for k, v in container.items())
    return ((i, v, None) for i, v in enumerate(container))


def lookup(container: Any, key: Any, default: Any = None) -> tuple[Any, Exception | None]:
    """`(container[key], None)`, `(default, None)` if the key is absent, or `(None, exception)` when it
    is a marker: for the few checks that report partial evidence instead of stopping at the first gap."""
    try:
        return (container[key] if key in container else default), None
    except (EvidenceMissing, NotApplicable) as exc:
        return None, exc


def unavailable(reason: object) -> dict:
    return {"unavailable": str(reason)}


def not_collected(reason: str) -> dict:
    return {"not_collected": reason}


def is_marker(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and ("unavailable" in value or "not_collected" in value)


def need(value: Any, what: str) -> Any:
    """Return `value`, or raise the exception its marker stands for, naming `what` was missing."""
    if isinstance(value, dict) and len(value) == 1 and ("unavailable" in value or "not_collected" in value):
        raise _missing(value, what)  # the reason once, also when it names the path already
    return value


def need_reason(value: Any) -> str | None:
    """The reason a marker gives, else None."""
    if is_marker(value):
        return value.get("unavailable") or value.get("not_collected")
    return None


# libvirt_uri is null where no libvirt was contacted (--root without --connect); libvirt: host.libvirt
_HOST = Record(optional={"hostname": Str(), "root": Str(), "live": Bool(), "libvirt_uri": Optional(Str()),
                         "libvirt": Str(), "mapped_from": Str()})


def check_envelope(data: Any) -> None:
    """SnapshotError unless `data` is a snapshot: a supported schema, a host record, a sources table."""
    if not isinstance(data, dict) or data.get("schema") not in SUPPORTED_SCHEMAS:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise SnapshotError(f"not a vmaudit facts snapshot (schema {found!r}, expected {SCHEMA!r})")
    for key in ("host", "sources"):
        if not isinstance(data.get(key), dict):
            raise SnapshotError(f"snapshot has no '{key}' object")
    host = _HOST.conform(data["host"], "host")
    if host is not data["host"]:
        bad = next(v for v in dict.values(host) if is_marker(v))
        raise SnapshotError(f"snapshot's {bad['unavailable']}")


def parse_snapshot(text: str | bytes, where: str) -> dict:
    """A snapshot from JSON text; SnapshotError with one line naming `where` if it is not one."""
    if len(text) > MAX_SNAPSHOT_BYTES:
        raise SnapshotError(f"{where}: a facts snapshot over {MAX_SNAPSHOT_BYTES >> 20} MiB (the limit)")
    check_json_values(text, where, "the facts snapshot", SnapshotError)
    import json

    try:
        data = json.loads(text)
    except RecursionError:
        raise SnapshotError(f"{where}: not a facts snapshot: JSON nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise SnapshotError(f"{where}, line {exc.lineno}: not a JSON facts snapshot: {exc.msg}") from None
    except (ValueError, UnicodeDecodeError) as exc:  # e.g. an integer of more than 4300 digits
        raise SnapshotError(f"{where}: not a JSON facts snapshot: {exc}") from None
    try:
        check_envelope(data)
    except SnapshotError as exc:
        raise SnapshotError(f"{where}: {exc}") from None
    return data


def load_snapshot_file(path: str) -> dict:
    """Read and parse a saved snapshot (SnapshotError, one line naming the file, if it is not one)."""
    return parse_snapshot(read_bounded(path, "facts snapshot", SnapshotError), path)


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
        """`data` held to the facts contract (vmaudit.schema): SnapshotError if it is not a snapshot at
        all; a value of the wrong type inside a source becomes a marker naming its path. `data` itself
        is not modified (`self.data` shares every part that conformed; a version-1 snapshot is read
        through a mapped copy)."""
        check_envelope(data)
        if data.get("schema") == SCHEMA_V1:
            data = upgrade_v1(data)
        from vmaudit.collectors import skippable_sources, source_schemas

        host = data["host"]
        # which not_collected markers are the collectors' own answers depends on the kind of host
        # (live or not, libvirt absent, an image read from its files); anywhere else they are errors
        skippable = skippable_sources(bool(host.get("live")), host.get("libvirt"))
        image = host.get("libvirt") == "offline" and host.get("root") not in (None, "/")
        sources = conform_sources(data["sources"], source_schemas(), skippable, image)
        self.data = data if sources is data["sources"] else {**data, "sources": sources}
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
        lv = dict.get(self.data["sources"], "libvirt")  # past the guard: the marker itself
        return "unreachable" if not isinstance(lv, dict) or "unavailable" in lv else "reachable"

    @property
    def libvirt_absent(self) -> bool:
        return self.libvirt_state == "absent"

    def require_libvirt(self, what: str) -> None:
        """Raise NotApplicable (the check says `skip`) on a host without any libvirt installed."""
        if self.libvirt_absent:
            reason = need_reason(dict.get(self.data["sources"], "libvirt")) or "libvirt is not installed on this host"
            raise NotApplicable(f"{what}: {reason}")

    def raw(self, name: str) -> Any:
        """A source as stored, markers included (for checks that report partial evidence)."""
        if name not in self.data["sources"]:
            return unavailable("not in this snapshot (collected by an older or limited collector)")
        return self.data["sources"][name]

    def source(self, name: str) -> Any:
        """The source's value (held to its schema), or EvidenceMissing / NotApplicable for its marker."""
        return need(self.raw(name), name)

    def lookup(self, name: str) -> tuple[Any, Exception | None]:
        """`(value, None)` or `(None, EvidenceMissing|NotApplicable)`: for checks that report what is
        missing in their evidence and go on with the rest."""
        try:
            return self.source(name), None
        except (EvidenceMissing, NotApplicable) as exc:
            return None, exc

    @cached_property
    def collected_at(self) -> datetime:
        """When the snapshot was collected (aware, UTC): ages are measured against it, never "now".
        EvidenceMissing when the snapshot carries no valid RFC 3339 time."""
        raw = self.data.get("collected_at")
        if not isinstance(raw, str):
            raise EvidenceMissing("the snapshot has no collected_at time to measure ages against")
        try:
            dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))  # 3.9's fromisoformat has no 'Z'
        except ValueError:
            raise EvidenceMissing(f"the snapshot's collected_at {raw!r} is not an RFC 3339 time") from None
        return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt

    def labelled_guests(self, inventory: Any = None) -> list[Guest]:
        """guests() with the inventory's labels applied (the one preparation engine and fleet share)."""
        guests = self.guests()
        if inventory is not None:
            for guest in guests:
                guest.inventory_labels = inventory.labels_for(guest.uuid, guest.name)
        return guests

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


_UNSET = object()


class _view:
    """functools.cached_property without its lock: before Python 3.12 every first read of one takes a
    lock, which for the ten views of each of 10,000s of guests (and definitions) was a tenth of the
    engine's own time. The value goes into the instance's __dict__, where later reads find it first;
    an exception (EvidenceMissing) is not cached, as with cached_property."""

    def __init__(self, func: Any):
        self.func, self.name, self.__doc__ = func, func.__name__, func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, cls: type | None = None) -> Any:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.func(obj)
        return value


class Guest:
    """One libvirt domain: the collected record plus views of its XML that checks share.

    The XML tree is parsed on first use and may be dropped with `release()` once the per-guest checks
    are done; the derived properties below stay cached so that host-wide checks do not re-parse it.
    """

    _xml_key = "xml"  # the record's key of the XML this object reads (libvirt's XMLDesc(0) answer)

    def __init__(self, record: dict):
        self.record = record
        # name and uuid label findings: a missing one is shown as such (dict.get sees past the guard)
        name, uuid = dict.get(record, "name", "?"), dict.get(record, "uuid")
        self.name: str = "?" if _marked(name) else str(name)
        self.uuid: str = "" if _marked(uuid) or not uuid else str(uuid)
        self._resource = f"guest:{self.name}"  # one string shared by all of the guest's findings
        self._tree: ET.Element | None = None
        self._views: dict = {}
        self._devices: dict | None = None  # <devices> children by tag, while the tree is held
        self.inventory_labels: dict = {}  # filled by the engine from the inventory
        # the guest's persistent definition while it runs (a GuestDefinition), None when it has only
        # one, _UNSET until asked; never a reference back to itself (see GuestDefinition)
        self._other: Any = _UNSET

    def __repr__(self) -> str:
        return f"Guest({self.name!r})"

    @property
    def resource(self) -> str:
        return self._resource

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
        if isinstance(self._other, Guest):
            self._other.release()

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
        tag = _DEVICE_TAG.get(path)
        if tag is None:
            tag = path[8:] if path.startswith("devices/") and _PLAIN_TAG.match(path, 8) else ""
            if len(_DEVICE_TAG) < 4096:  # bounded, should a caller ever build paths from data
                _DEVICE_TAG[path] = tag
        if not tag:
            return None
        if self._devices is None:
            index: dict = {}
            # every <devices> element, as libvirt's parser and ElementPath read them (libvirt writes
            # one; a hand-edited or hostile definition must not hide a device in a second one)
            for devices in self.tree.iterfind("devices"):
                for child in devices:
                    index.setdefault(child.tag, []).append(child)
            self._devices = index
        return self._devices.get(tag, [])

    # --- libvirt state --------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """'running', 'paused', 'shutoff', … as libvirt reports it."""
        return self.record.get("state", "unknown")  # a marker raises: an unknown state decides nothing

    @property
    def state_marker(self) -> dict | None:
        """The marker standing for the guest's state when it is not known (only a running libvirt knows
        it when an image's definitions are read from files), else None."""
        state = dict.get(self.record, "state")  # dict.get sees past the guard
        return state if _marked(state) else None

    def need_state(self) -> str:
        """The state, or raise NotApplicable (only a running libvirt knows it: --root) / EvidenceMissing."""
        state = self.state
        if state == "unknown" and "state_error" in self.record:
            raise EvidenceMissing(f"state of guest {self.name}: {self.record['state_error']}")
        return state

    @property
    def active(self) -> bool:
        return self.state not in ("shutoff", "crashed", "unknown", "nostate")

    @property
    def persistent(self) -> bool | None:
        """libvirt's flag (None: not in the record); EvidenceMissing when libvirt could not tell."""
        return self.record.get("persistent")

    @property
    def autostart(self) -> bool | None:
        """libvirt's flag (None: not in the record); EvidenceMissing when libvirt could not tell."""
        return self.record.get("autostart")

    def lookup(self, key: str, default: Any = None) -> tuple[Any, Exception | None]:
        """`lookup(self.record, key, default)`: a record field or the reason it is missing."""
        return lookup(self.record, key, default)

    # --- derived views shared by several checks -------------------------------------------------
    @_view
    def domain_type(self) -> str:
        return self.tree.get("type", "")

    @_view
    def memory_kib(self) -> int:
        """<memory> in KiB; EvidenceMissing when the definition has none (libvirt always writes it) or
        a value libvirt would refuse."""
        node = self.tree.find("memory")
        if node is None:
            raise EvidenceMissing(f"memory of guest {self.name}: its {self.definition} definition has no <memory>")
        return _kib(node, f"memory of guest {self.name}")

    @_view
    def current_memory_kib(self) -> int:
        node = self.tree.find("currentMemory")
        return _kib(node, f"currentMemory of guest {self.name}") if node is not None else self.memory_kib

    @_view
    def vcpus(self) -> int:
        """The vCPUs the guest starts with (<vcpu current=...>, else <vcpu>; libvirt's default is 1)."""
        node = self.tree.find("vcpu")
        if node is None:
            return 1
        current = node.get("current")
        text = (current if current is not None else (node.text or "1")).strip()
        if not _DIGITS.fullmatch(text) or not 0 < int(text) < 1 << 32:  # libvirt: an unsigned int, not 0
            raise EvidenceMissing(f"vcpu of guest {self.name}: {text[:40]!r} is not a number of vCPUs")
        return int(text)

    @_view
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

    @_view
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

    @_view
    def os_id(self) -> str | None:
        node = self.tree.find(f"metadata/{{{NS_LIBOSINFO}}}libosinfo/{{{NS_LIBOSINFO}}}os")
        return node.get("id") if node is not None else None

    @_view
    def hostdev_pci(self) -> list[str]:
        """PCI addresses (DDDD:BB:SS.F) of the guest's passed-through PCI devices, SR-IOV NICs included."""
        out = []
        nodes = ([d for d in self.findall("devices/hostdev") if d.get("type") == "pci"]
                 + [d for d in self.findall("devices/interface") if d.get("type") == "hostdev"])
        for hd in nodes:
            addr = hd.find("source/address")
            if addr is not None and addr.get("type", "pci") == "pci":
                out.append(pci_bdf(addr))
        return out

    @_view
    def has_hostdev(self) -> bool:
        """Any device passed through from the host: <hostdev> or <interface type='hostdev'>."""
        return (self.find("devices/hostdev") is not None
                or any(d.get("type") == "hostdev" for d in self.findall("devices/interface")))

    def settle(self) -> None:
        """Compute the shared views, then drop the XML tree (a guest without readable XML keeps
        raising EvidenceMissing from its views)."""
        try:
            self.precompute()
            self.release()
        except (EvidenceMissing, NotApplicable):
            pass

    def precompute(self) -> None:
        """Fill the shared views so `release()` can drop the tree without later re-parsing."""
        for name in ("domain_type", "memory_kib", "current_memory_kib", "vcpus", "labels", "os_id",
                     "hostdev_pci", "has_hostdev"):
            getattr(self, name)
        for func in GUEST_VIEWS:
            self.view(func)
        if isinstance(self._other, Guest):
            try:
                self._other.precompute()
            except EvidenceMissing:
                pass

    # --- its definitions (CHECKS.md: "Which definition a guest check judges") ----------------------
    @property
    def definition(self) -> str:
        """Which definition this object reads: "live" (what runs now) or "persistent" (what runs after
        the next start). A Guest reads libvirt's default XML: the live one while the guest is active."""
        return "live" if self.runs else "persistent"

    @property
    def runs(self) -> bool:
        """Whether the guest has a live definition: libvirt reports it active. False where only a running
        libvirt could tell (an image's definitions under --root); EvidenceMissing where its state could
        not be read (an unknown state decides nothing)."""
        marker = self.state_marker
        if marker is not None and "not_collected" in marker:
            return False
        return self.active

    def definitions(self) -> dict:
        """{"live": ..., "persistent": ...}: the definitions this guest has, as Guest objects sharing its
        record and labels. A running persistent guest has both, a shut-off guest only the persistent one,
        a transient guest only the live one."""
        if self._other is _UNSET:
            runs = self.runs  # EvidenceMissing (state unknown) is not cached: it is raised on every ask
            if runs and (dict.get(self.record, "persistent") is True or "xml_inactive" in self.record):
                # (persistence unknown: the collector recorded why xml_inactive is missing evidence)
                self._other = GuestDefinition(self, "xml_inactive", "persistent")
            else:
                self._other = None
        if self._other is None:
            return {self.definition: self}
        return {"live": self, "persistent": self._other}

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
        # The owner holds this object: a weak reference back keeps the pair free of a reference cycle,
        # so both go with the last reference to the Guest (a cycle would wait for the cyclic collector,
        # which an audit pauses: 10,000 guests' views and XML would live until exit).
        self._owner = weakref.ref(owner)
        self._other = None
        self._xml_key = key
        self._definition = definition

    @property
    def owner(self) -> Guest:
        owner = self._owner()
        if owner is None:
            raise RuntimeError(f"{self._xml_what()}: its guest object is gone")
        return owner

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


_DIGITS = re.compile(r"[0-9]{1,19}")  # a count or size as libvirt writes it (no sign, no exponent)

# libvirt's memory units (formatdomain, "Memory Allocation"; virScaleInteger), as bytes
_UNIT_BYTES = {"b": 1, "byte": 1, "bytes": 1, **{f"{p}{s}": base ** (i + 1)
                                                 for i, p in enumerate("kmgtpe")
                                                 for s, base in (("", 1024), ("ib", 1024), ("b", 1000))}}
_MAX_BYTES = (1 << 63) - 1  # libvirt refuses a size of more bytes (LLONG_MAX)


def _kib(node: ET.Element, what: str) -> int:
    """A libvirt memory size element in KiB, rounded up as libvirt does; EvidenceMissing for a value
    libvirt would refuse (no number, an unknown unit, more than LLONG_MAX bytes)."""
    text = (node.text or "").strip()
    unit = node.get("unit") or "KiB"
    factor = _UNIT_BYTES.get(unit.lower())
    if factor is None or not _DIGITS.fullmatch(text) or int(text) * factor > _MAX_BYTES:
        raise EvidenceMissing(f"{what}: {text[:40]!r} {unit[:20]!r} is not a memory size libvirt accepts")
    return -(-int(text) * factor // 1024)


# A number as C's strtoul reads it with base 0 (libvirt's parser of PCI addresses): hex, octal, decimal.
_C_NUMBER = re.compile(r"(0[xX][0-9a-fA-F]+)|(0[0-7]*)|([1-9][0-9]*)")
_PCI_MAX = {"domain": 0xFFFF, "bus": 0xFF, "slot": 0x1F, "function": 7}


def pci_bdf(addr: ET.Element) -> str:
    """`<address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>` -> '0000:01:00.0';
    EvidenceMissing for a part libvirt would refuse (not a number, out of its range)."""
    def num(attr: str) -> int:
        raw = addr.get(attr, "0")
        m = _C_NUMBER.fullmatch(raw) if len(raw) <= 12 else None
        value = -1 if m is None else int(m[1], 16) if m[1] else int(m[2], 8) if m[2] else int(m[3])
        if not 0 <= value <= _PCI_MAX[attr]:
            raise EvidenceMissing(f"PCI address: {attr} {raw[:40]!r} is not a number up to {_PCI_MAX[attr]:#x}")
        return value
    return f"{num('domain'):04x}:{num('bus'):02x}:{num('slot'):02x}.{num('function'):x}"


def iter_markers(value: Any, path: str = "") -> Iterator[tuple[str, str, str]]:
    """Yield (path, kind, reason) for every marker inside a source value."""
    if is_marker(value):
        kind = "unavailable" if "unavailable" in value else "not_collected"
        yield path, kind, value[kind]
    elif isinstance(value, dict):
        for k, v in dict.items(value):
            yield from iter_markers(v, f"{path}.{k}" if path else str(k))
