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
from typing import Any, Callable

# --- limits (part of the contract; docs/architecture.md) ----------------------------------------
MAX_SNAPSHOT_BYTES = 1 << 30      # a 10,000-guest snapshot is ~100 MB
MAX_DEPTH = 64                    # nesting of arrays/objects anywhere in a snapshot
MAX_INT = 1 << 63                 # |integer| bound (sizes, counters, ids all fit in 64 bits)
MAX_STR = 16 << 20                # one string (a guest's XML, a config file) at most 16 MiB
MAX_ITEMS = 1_000_000             # entries of one array or object


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


def wrong(path: str, expected: str, value: Any) -> dict:
    return {"unavailable": f"{path}: expected {expected}, got {_json_type(value)}"}


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


class _Scalar(Schema):
    def conform(self, value: Any, path: str, depth: int = 0) -> Any:
        if type(value) in self.types and self.ok(value):
            return value
        return wrong(path, self.doc(), value)

    def ok(self, value: Any) -> bool:
        return True


class Str(_Scalar):
    describe = "a string"
    types = (str,)

    def notation(self) -> str:
        return "str"

    def ok(self, value: str) -> bool:
        return len(value) <= MAX_STR


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
        return value if problem is None else {"unavailable": f"{path}: {problem}"}


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

    def __init__(self, item: Schema, max_len: int = MAX_ITEMS):
        self.item = item
        self.max_len = max_len

    def doc(self) -> str:
        return f"a list of {_noun(self.item.doc())}"

    def notation(self) -> str:
        return f"[{self.item.notation()}]"

    @property
    def describe(self) -> str:  # type: ignore[override]
        return "a list"

    def conform(self, value: Any, path: str, depth: int = 0) -> Any:
        if type(value) is not list and not isinstance(value, list):
            return wrong(path, "a list", value)
        if len(value) > self.max_len:
            return {"unavailable": f"{path}: more than {self.max_len} entries"}
        if depth >= MAX_DEPTH:
            return {"unavailable": f"{path}: nested deeper than {MAX_DEPTH} levels"}
        item = self.item
        changed = marked = False
        out = None
        for i, v in enumerate(list.__iter__(value)):  # list's own: a GuardedList would raise
            if type(v) is dict and len(v) == 1 and ("unavailable" in v or "not_collected" in v):
                r = _marker(v, f"{path}[{i}]")
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
            return {"unavailable": f"{path}: more than {self.max_len} entries"}
        if depth >= MAX_DEPTH:
            return {"unavailable": f"{path}: nested deeper than {MAX_DEPTH} levels"}
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
            return {"unavailable": f"{path}: nested deeper than {MAX_DEPTH} levels"}
        fields, extra = self.fields, self.extra
        out = _conform_items(value, path, depth, lambda k: fields.get(k, extra))
        missing = [k for k in self.required if k not in value]
        if missing:
            out = dict(dict.items(out))
            for k in missing:
                out[k] = {"unavailable": f"{path}.{k}: missing from this snapshot"}
            return _guard(out, path, dict)
        return out


def _marker(value: dict, path: str) -> dict:
    """A marker as found; its reason must be a string."""
    reason = value.get("unavailable", value.get("not_collected"))
    if isinstance(reason, str) and len(reason) <= MAX_STR:
        return value
    return {"unavailable": f"{path}: a marker whose reason is not a string"}


def _conform_items(value: dict, path: str, depth: int, schema_of: Callable[[str], Schema]) -> Any:
    changed = marked = False
    out = None
    for k, v in dict.items(value):  # dict's own: a GuardedMap would raise
        where = f"{path}.{k}" if path else k
        if type(v) is dict and len(v) == 1 and ("unavailable" in v or "not_collected" in v):
            r = _marker(v, where)
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


def conform_sources(sources: dict, schemas: dict[str, Schema]) -> dict:
    """The snapshot's sources held to their declared schemas (a source without one: any JSON)."""
    out = _conform_items(sources, "", -1, lambda name: schemas.get(name, _ANY))
    # the table of sources stays plain: Facts.source() is its guard, and reporting lists its markers
    return dict(dict.items(out)) if out is not sources else out


_ANY = AnyJSON()
