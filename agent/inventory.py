"""The central guest registry (CONTRACT.md, Inventory): CSV with a header, or JSON (a list of objects)."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field

from .errors import InventoryError
from .fsutil import check_json_values, read_text_bounded, too_deep

# the forms libvirt accepts for a domain UUID: 8-4-4-4-12 hex digits, or the 32 digits alone
_UUID = re.compile(r"^(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
                   r"|[0-9a-fA-F]{32})$")
KEYS = ("uuid", "name", "zone", "service", "owner", "redundancy", "patch_group", "host")


@dataclass
class Inventory:
    source: str
    entries: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._by_uuid = {e["uuid"].lower(): e for e in self.entries}

    def find(self, uuid: str) -> dict | None:
        return self._by_uuid.get((uuid or "").lower())

    def labels_for(self, uuid: str, name: str = "") -> dict:
        entry = self.find(uuid)
        return {k: v for k, v in entry.items() if k not in ("uuid", "name", "host") and v} if entry else {}


def parse_inventory(text: str, source: str) -> Inventory:
    stripped = text.lstrip()
    rows: list[tuple[int, dict]]
    if stripped.startswith("[") or stripped.startswith("{"):
        check_json_values(text, source, "inventory", InventoryError)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InventoryError(f"{source}, line {exc.lineno}: invalid JSON: {exc.msg}") from None
        except RecursionError:
            raise too_deep(source, "inventory", InventoryError) from None
        if not isinstance(data, list):
            raise InventoryError(f"{source}: the inventory must be a JSON list of objects")
        rows = []
        for i, item in enumerate(data, 1):
            if not isinstance(item, dict):
                raise InventoryError(f"{source}: entry #{i} is not an object")
            rows.append((i, item))
        where = "entry #"
        json_rows = True
    else:
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or "uuid" not in [f.strip() for f in reader.fieldnames]:
            raise InventoryError(f"{source}, line 1: the CSV header must name a 'uuid' column")
        rows = [(reader.line_num, {(k or "").strip(): v for k, v in row.items()}) for row in reader]
        where = "line "
        json_rows = False
    entries, seen = [], {}
    for no, row in rows:
        unknown = [k for k in row if k not in KEYS]
        if unknown:
            raise InventoryError(f"{source}, {where}{no}: unknown key(s) {', '.join(map(repr, unknown))} "
                              f"(known: {', '.join(KEYS)})")
        entry = {}
        for k, v in row.items():
            if v is None:  # JSON null, or a CSV row shorter than the header: not given
                entry[k] = ""
            elif isinstance(v, str):
                if "\0" in v:
                    raise InventoryError(f"{source}, {where}{no}: {k!r} holds a NUL character")
                entry[k] = v.strip()
                if json_rows and not entry[k] and k != "uuid":
                    raise InventoryError(f"{source}, {where}{no}: {k!r} is an empty string (leave it out, or "
                                         f"null, when there is none)")
            else:  # a list, an object, a number (NaN), true: labels are names
                raise InventoryError(f"{source}, {where}{no}: {k!r} must be a string, not "
                                     f"{_json_type(v)} {json.dumps(v)[:60]}")
        if not entry.get("uuid"):
            raise InventoryError(f"{source}, {where}{no}: 'uuid' is required")
        if not _UUID.match(entry["uuid"]):
            raise InventoryError(f"{source}, {where}{no}: uuid {entry['uuid'][:60]!r} is not a UUID "
                                 f"(libvirt's form: 8-4-4-4-12 hexadecimal digits)")
        key = entry["uuid"].lower()
        if key in seen:
            raise InventoryError(f"{source}, {where}{no}: uuid {entry['uuid']} is listed twice "
                              f"(first at {where}{seen[key]})")
        seen[key] = no
        entries.append(entry)
    return Inventory(source=source, entries=entries)


def _json_type(v: object) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}.get(
        type(v), type(v).__name__)


def load_inventory(path: str) -> Inventory:
    # -sig: spreadsheet exports start with a BOM
    text = read_text_bounded(path, "inventory", InventoryError, encoding="utf-8-sig")
    return parse_inventory(text, path)
