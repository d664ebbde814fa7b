"""The facts contract: a small typed vocabulary that declares the shape of every source, and the
validation that holds a snapshot to it where it enters (`Facts(...)`).

Each collector declares its schema next to itself (`@collector("ksm", schema=Record(...))`). Validation
never raises for a value of the wrong type: it replaces the value by an `unavailable` marker whose
reason names the path ("libvirt_config.qemu.conf.values: expected a table, got a list"), so only the
checks that need that value say `error`. A marker is allowed at every position (evidence may be
missing anywhere). Containers holding a marker become `Guarded` maps or lists whose item access
raises EvidenceMissing/NotApplicable (see agent/facts.py), so a check never reads a marker as a value.

The input is never modified: a container is copied only when something inside it changed or holds a
marker; everything else is shared with the input (validation of a 10,000-guest snapshot allocates
little). Limits on size and depth are part of the contract (MAX_* below): what exceeds them is not a
snapshot (exit 2) or, for a single value, a marker.
"""

from __future__ import annotations

import math
from contextvars import ContextVar
from typing import Any, Callable

from .fsutil import MAX_DEPTH as FILE_MAX_DEPTH
from .fsutil import MAX_INPUT_BYTES, MAX_JSON_VALUES

# --- limits (part of the contract; docs/architecture.md) ----------------------------------------
# the one size and depth limit of every input file (vmaudit.fsutil); a 10,000-guest snapshot is ~100 MB
MAX_SNAPSHOT_BYTES = MAX_INPUT_BYTES
MAX_VALUES = MAX_JSON_VALUES      # JSON values in one snapshot, counted before it is parsed
MAX_DEPTH = FILE_MAX_DEPTH        # nesting of arrays/objects anywhere in a snapshot
MAX_INT = 1 << 63                 # |integer| bound (sizes, counters, ids all fit in 64 bits)
MAX_STR = 16 << 20                # one string (a guest's XML, a config file) at most 16 MiB
MAX_ITEMS = 1_000_000             # entries of one array or object
MAX_REASON = 1000                 # a marker's reason (longer ones are cut): one line for a person, which
                                  # every finding that needs the value repeats


def is_marker(value: Any) -> bool:
    return (type(value) is dict or isinstance(value, dict)) and len(value) == 1 and (
        "unavailable" in value or "not_collected" in value)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer" if abs(value) < MAX_INT else "an integer out of range"
    if isinstance(value, float):
        return "a number" if math.isfinite(value) else "a non-finite number"
    if isinstance(value, str):
        return "a string" if len(value) <= MAX_STR else "a string over the size limit"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _unavailable(reason: str) -> dict:
    """A marker whose reason is at most MAX_REASON characters (a path may hold a key of any length)."""
    return {"unavailable": reason if len(reason) <= MAX_REASON else reason[:MAX_REASON - 1] + "…"}


def wrong(path: str, expected: str, value: Any) -> dict:
    return _unavailable(f"{path}: expected {expected}, got {_json_type(value)}")


class Schema:
    """One position of the contract. `conform(value, path)` returns the value, a copy with bad parts
    replaced by markers, or a marker for the whole value."""

    describe = "a value"
    types: tuple = ()

    def conform(self, value: Any, path: str, depth: int = 0) -> Any:
        raise NotImplementedError(type(self).__name__)

    def __or__(self, other: Schema) -> Schema:
        return OneOf(self, other)

    def doc(self) -> str:
        return self.describe

    def notation(self) -> str:
        """A compact type expression for docs/architecture.md: str, int ≥ 0, [str], {*: int},
        {name: str, uuid?: str}, str | null."""
        return self.describe

    def may_skip(self) -> bool:
        """Whether `not_collected` is a legitimate value at this position in the snapshot being
        validated (see Skippable); nowhere below the top of a source otherwise."""
        return False


# Set by conform_sources for the snapshot at hand: True in the snapshot of an image audited from its
# files (host.libvirt "offline"), where what only a running libvirt knows is `not_collected`.
_IMAGE_SKIPS: ContextVar[bool] = ContextVar("image_skips", default=False)


class Skippable(Schema):
    """A position that an image audited from its definition files cannot know (a guest's run state,
    its snapshots, the host's capabilities: only a running libvirt tells). There, and only in such a
    snapshot, `not_collected` is the collector's own answer (its checks say `skip`); in any other
    snapshot it is missing evidence like every other nested `not_collected`."""

    def __init__(self, inner: Schema):
        self.inner = inner
        self.types = inner.types
        self.describe = inner.describe

    def conform(self, value: Any, path: str, depth: int = 0) -> Any:
        return self.inner.conform(value, path, depth)

    def doc(self) -> str:
        return self.inner.doc()

    def notation(self) -> str:
        return f"{self.inner.notation()} (image: not_collected)"

    def may_skip(self) -> bool:
        return _IMAGE_SKIPS.get()


class _Scalar(Schema):
    def conform(self, value: Any, path: str, depth: int = 0) -> Any:
        if type(value) in self.types and self.ok(value):
            return value
        return wrong(path, self.doc(), value)

    def ok(self, value: Any) -> bool:
        return True


class Str(_Scalar):
    types = (str,)

    def __init__(self, nonempty: bool = False):
        self.nonempty = nonempty  # "" describes nothing real here (a kernel release, a name)
        self.describe = "a non-empty string" if nonempty else "a string"

    def notation(self) -> str:
        return "str ≠ \"\"" if self.nonempty else "str"

    def ok(self, value: str) -> bool:
        return len(value) <= MAX_STR and (bool(value) or not self.nonempty)


class Int(_Scalar):
    types = (int,)

    def __init__(self, min: int | None = None, max: int | None = None):
        self.min = -MAX_INT if min is None else min
        self.max = MAX_INT if max is None else max

    def ok(self, value: int) -> bool:
        return self.min <= value <= self.max and abs(value) < MAX_INT

    def doc(self) -> str:
        if self.min == 0 and self.max == MAX_INT:
            return "an integer ≥ 0"
        if self.min == -MAX_INT and self.max == MAX_INT:
            return "an integer"
        return f"an integer in {self.min}..{self.max}"

    def notation(self) -> str:
        if self.min == 0 and self.max == MAX_INT:
            return "int ≥ 0"
        if self.min == -MAX_INT and self.max == MAX_INT:
            return "int"
        return f"int {self.min}..{self.max}"


class Float(_Scalar):
    """A finite number (JSON does not tell 1 from 1.0: integers are accepted)."""

    describe = "a number"
    types = (float, int)

    def ok(self, value: float) -> bool:
        return math.isfinite(value) and abs(value) < MAX_INT

    def notation(self) -> str:
        return "number"


class Bool(_Scalar):
    describe = "a boolean"
    types = (bool,)

    def notation(self) -> str:
        return "bool"


class Null(_Scalar):
    describe = "null"
    types = (type(None),)

    def notation(self) -> str:
        return "null"


class Enum(Schema):
    """One of a few literal values (e.g. the three values of /sys/kernel/mm/ksm/run)."""

    def __init__(self, *values: Any):
        self.values = values
        self.types = tuple({type(v) for v in values})
        self.describe = "one of " + ", ".join(repr(v) for v in values)

    def notation(self) -> str:
        return " \\| ".join(json_literal(v) for v in self.values)

    def conform(self, value: Any, path: str, depth: int = 0) -> Any:
        # type() first: True == 1 and 1.0 == 1, which JSON tells apart
        if type(value) in self.types and value in self.values:
            return value
        return wrong(path, self.describe, value)


class AnyJSON(Schema):
    """Any JSON value within the limits (for free-form data no check reads as a typed value)."""

    describe = "any JSON value"
    types = (str, int, float, bool, type(None), list, dict)

    def notation(self) -> str:
        return "any"

    def conform(self, value: Any, path: str, depth: int = 0) -> Any:
        problem = _bounded(value, depth)
        return value if problem is None else _unavailable(f"{path}: {problem}")


def _bounded(value: Any, depth: int) -> str | None:
    if depth > MAX_DEPTH:
        return f"nested deeper than {MAX_DEPTH} levels"
    if isinstance(value, (list, dict)):
        if len(value) > MAX_ITEMS:
            return f"more than {MAX_ITEMS} entries"
        for v in (value.values() if isinstance(value, dict) else value):
            problem = _bounded(v, depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, (str, bool, type(None))):
        return None if not isinstance(value, str) or len(value) <= MAX_STR else "a string over the size limit"
    if isinstance(value, int):
        return None if abs(value) < MAX_INT else "an integer out of range"
    if isinstance(value, float):
        return None if math.isfinite(value) else "a non-finite number"
    return f"not JSON ({type(value).__name__})"


def _guard(items: Any, path: str, kind: type) -> Any:
    from vmaudit.facts import GuardedList, GuardedMap

    # built from dict's / list's own views: copying a guarded container would raise at its marker
    out = GuardedMap(dict.items(items)) if kind is dict else GuardedList(list.__iter__(items))
    out.where = path
    return out


class ListOf(Schema):
    types = (list,)

    def __init__(self, item: Schema, max_len: int = MAX_ITEMS, min_len: int = 0):
        self.item = item
        self.max_len = max_len
        self.min_len = min_len  # 1 where an empty list describes no real host (an /etc/passwd without root)

    def doc(self) -> str:
        return f"a {'non-empty ' if self.min_len else ''}list of {_noun(self.item.doc())}"

    def notation(self) -> str:
        return f"[{self.item.notation()}, …]" if self.min_len else f"[{self.item.notation()}]"

    @property
    def describe(self) -> str:  # type: ignore[override]
        return "a non-empty list" if self.min_len else "a list"

    def conform(self, value: Any, path: str, depth: int = 0) -> Any:
        if type(value) is not list and not isinstance(value, list):
            return wrong(path, self.describe, value)
        if len(value) > self.max_len:
            return _unavailable(f"{path}: expected no entries, got {len(value)}" if not self.max_len
                                else f"{path}: more than {self.max_len} entries")
        if len(value) < self.min_len:
            return _unavailable(f"{path}: expected at least {self.min_len} entries, got {len(value)}")
        if depth >= MAX_DEPTH:
            return _unavailable(f"{path}: nested deeper than {MAX_DEPTH} levels")
        item = self.item
        changed = marked = False
        out = None
        for i, v in enumerate(list.__iter__(value)):  # list's own: a GuardedList would raise
            if type(v) is dict and len(v) == 1 and ("unavailable" in v or "not_collected" in v):
                r = _marker(v, f"{path}[{i}]", item.may_skip())
            else:
                r = item.conform(v, f"{path}[{i}]", depth + 1)
            if r is not v:
                if out is None:
                    out = list.__getitem__(value, slice(0, i))
                changed = True
            if out is not None:
                out.append(r)
            if type(r) is dict and len(r) == 1 and ("unavailable" in r or "not_collected" in r):
                marked = True
        if marked:
            return _guard(out if changed else value, path, list)
        return out if changed else value


class TableOf(Schema):
    """An object with free keys (file names, PCI addresses, module names) and values of one schema."""

    describe = "a table"
    types = (dict,)

    def __init__(self, value: Schema, max_len: int = MAX_ITEMS):
        self.value = value
        self.max_len = max_len

    def doc(self) -> str:
        return f"a table of {_noun(self.value.doc())}"

    def notation(self) -> str:
        return f"{{*: {self.value.notation()}}}"

    def conform(self, value: Any, path: str, depth: int = 0) -> Any:
        if not isinstance(value, dict):
            return wrong(path, "a table", value)
        if len(value) > self.max_len:
            return _unavailable(f"{path}: more than {self.max_len} entries")
        if depth >= MAX_DEPTH:
            return _unavailable(f"{path}: nested deeper than {MAX_DEPTH} levels")
        return _conform_items(value, path, depth, lambda _k: self.value)


class Record(Schema):
    """An object with named keys. `required` keys must be there (a missing one becomes a marker),
    `optional` ones may be absent; other keys are kept unvalidated only if `extra` says so (a newer
    collector may add keys), within the limits."""

    describe = "a table"
    types = (dict,)

    def __init__(self, required: dict | None = None, optional: dict | None = None,
                 extra: Schema | None = None):
        self.required = required or {}
        self.optional = optional or {}
        self.fields = {**self.optional, **self.required}
        self.extra = extra or AnyJSON()

    def doc(self) -> str:
        keys = [*self.required, *(f"{k}?" for k in self.optional)]
        return "{" + ", ".join(keys) + "}"

    def notation(self) -> str:
        keys = [f"{_key(k)}: {v.notation()}" for k, v in self.required.items()]
        keys += [f"{_key(k)}?: {v.notation()}" for k, v in self.optional.items()]
        if not isinstance(self.extra, AnyJSON):
            keys.append(f"*: {self.extra.notation()}")
        return "{" + ", ".join(keys) + "}"

    def conform(self, value: Any, path: str, depth: int = 0) -> Any:
        if not isinstance(value, dict):
            return wrong(path, "a table", value)
        if depth >= MAX_DEPTH:
            return _unavailable(f"{path}: nested deeper than {MAX_DEPTH} levels")
        fields, extra = self.fields, self.extra
        out = _conform_items(value, path, depth, lambda k: fields.get(k, extra))
        missing = [k for k in self.required if k not in value]
        if missing:
            out = dict(dict.items(out))
            for k in missing:
                out[k] = _unavailable(f"{path}.{k}: missing from this snapshot")
            return _guard(out, path, dict)
        return out


def _marker(value: dict, path: str, may_skip: bool = False) -> dict:
    """A marker as found; its reason must be a string. `not_collected` only where `may_skip`: below
    the top of a source no collector writes it, and a `skip` does not count against the exit status,
    so anywhere else it is missing evidence."""
    reason = value.get("unavailable", value.get("not_collected"))
    if not isinstance(reason, str):
        return _unavailable(f"{path}: a marker whose reason is not a string")
    if "not_collected" in value and not may_skip:
        return _unavailable(f"{path}: not_collected, which this snapshot's collector never records "
                            f"here ({reason[:200]})")
    if len(reason) > MAX_REASON:
        return {next(iter(value)): _unavailable(reason)["unavailable"]}
    return value


def _conform_items(value: dict, path: str, depth: int, schema_of: Callable[[str], Schema]) -> Any:
    changed = marked = False
    out = None
    for k, v in dict.items(value):  # dict's own: a GuardedMap would raise
        where = f"{path}.{k}" if path else k
        if type(v) is dict and len(v) == 1 and ("unavailable" in v or "not_collected" in v):
            r = _marker(v, where, schema_of(k).may_skip())
        else:
            r = schema_of(k).conform(v, where, depth + 1)
        if r is not v:
            if out is None:
                out = dict(dict.items(value))
            out[k] = r
            changed = True
        if type(r) is dict and len(r) == 1 and ("unavailable" in r or "not_collected" in r):
            marked = True
    if marked:
        return _guard(out if changed else value, path, dict)
    return out if changed else value


class Presence(Schema):
    """A record with a `present` flag: held to `present` (the shape of something that exists) or, when
    the flag is false, to `absent` (null / empty values). Checks stop reading at present = false (no
    KSM: pass; no sshd: skip), so a record that says absent yet carries values contradicts itself and
    is no evidence either way: a marker for the whole record."""

    describe = "a table"
    types = (dict,)

    def __init__(self, present: Record, absent: Record):
        self.present = present
        self.absent = absent

    def doc(self) -> str:
        return self.present.doc()

    def notation(self) -> str:
        return f"{self.present.notation()} \\| {self.absent.notation()}"

    def conform(self, value: Any, path: str, depth: int = 0) -> Any:
        if not isinstance(value, dict) or dict.get(value, "present") is not False:
            return self.present.conform(value, path, depth)
        out = self.absent.conform(value, path, depth)
        if out is value:
            return value
        why = next((m.get("unavailable", "") for m in dict.values(out) if type(m) is dict and len(m) == 1
                    and "unavailable" in m), "")
        return _unavailable(f"{path}: says present: false, but {why.removeprefix(path + '.')}")


class OneOf(Schema):
    """A union, told apart by JSON type: the first alternative whose type matches is used."""

    def __init__(self, *alternatives: Schema):
        flat: list[Schema] = []
        for a in alternatives:
            flat.extend(a.alternatives if isinstance(a, OneOf) else [a])
        self.alternatives = flat
        self.types = tuple(t for a in flat for t in a.types)

    def doc(self) -> str:
        return " or ".join(a.doc() for a in self.alternatives)

    def notation(self) -> str:
        return " \\| ".join(a.notation() for a in self.alternatives)

    @property
    def describe(self) -> str:  # type: ignore[override]
        return self.doc()

    def conform(self, value: Any, path: str, depth: int = 0) -> Any:
        t = type(value)
        for alt in self.alternatives:
            if t in alt.types:
                return alt.conform(value, path, depth)
        for alt in self.alternatives:  # dict/list subclasses
            if isinstance(value, alt.types) and not isinstance(value, bool):
                return alt.conform(value, path, depth)
        return wrong(path, self.doc(), value)


def Optional(schema: Schema) -> Schema:  # noqa: N802 - reads as a type
    """`schema` or null."""
    return OneOf(schema, Null())


def json_literal(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else repr(value)


def _key(name: str) -> str:
    return name if name.isidentifier() else f'"{name}"'


def _noun(text: str) -> str:
    for article in ("an ", "a "):
        if text.startswith(article):
            return text[len(article):] + "s" if " " not in text[len(article):] else text[len(article):]
    return text


# --- whole snapshots ----------------------------------------------------------------------------


def conform_sources(sources: dict, schemas: dict[str, Schema], skippable: frozenset = frozenset(),
                    image: bool = False) -> dict:
    """The snapshot's sources held to their declared schemas (a source without one: any JSON); a
    whole source may be `not_collected` if it is in `skippable` or has no schema (a newer collector's);
    a nested one only at a `Skippable` position of an `image` snapshot."""
    token = _IMAGE_SKIPS.set(image)
    try:
        out = None
        for name, v in dict.items(sources):
            if type(v) is dict and len(v) == 1 and ("unavailable" in v or "not_collected" in v):
                r = _marker(v, name, name in skippable or name not in schemas)
            else:
                r = schemas.get(name, _ANY).conform(v, name, 0)
            if r is not v:
                if out is None:
                    out = dict(dict.items(sources))
                out[name] = r
    finally:
        _IMAGE_SKIPS.reset(token)
    # the table of sources stays plain: Facts.source() is its guard, and reporting lists its markers
    return sources if out is None else out


_ANY = AnyJSON()
