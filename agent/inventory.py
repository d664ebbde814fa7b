"""The central guest registry (CONTRACT.md, Inventory): CSV with a header, or JSON (a list of objects)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InventoryError

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
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InventoryError(f"{source}, line {exc.lineno}: invalid JSON: {exc.msg}") from None
        if not isinstance(data, list):
            raise InventoryError(f"{source}: the inventory must be a JSON list of objects")
        rows = []
        for i, item in enumerate(data, 1):
            if not isinstance(item, dict):
                raise InventoryError(f"{source}: entry #{i} is not an object")
            rows.append((i, item))
        where = "entry #"
    else:
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or "uuid" not in [f.strip() for f in reader.fieldnames]:
            raise InventoryError(f"{source}, line 1: the CSV header must name a 'uuid' column")
        rows = [(reader.line_num, {(k or "").strip(): v for k, v in row.items()}) for row in reader]
        where = "line "
    entries, seen = [], {}
    for no, row in rows:
        unknown = [k for k in row if k not in KEYS]
        if unknown:
            raise InventoryError(f"{source}, {where}{no}: unknown key(s) {', '.join(map(repr, unknown))} "
                              f"(known: {', '.join(KEYS)})")
        entry = {k: (str(v).strip() if v is not None else "") for k, v in row.items()}
        if not entry.get("uuid"):
            raise InventoryError(f"{source}, {where}{no}: 'uuid' is required")
        key = entry["uuid"].lower()
        if key in seen:
            raise InventoryError(f"{source}, {where}{no}: uuid {entry['uuid']} is listed twice "
                              f"(first at {where}{seen[key]})")
        seen[key] = no
        entries.append(entry)
    return Inventory(source=source, entries=entries)


def load_inventory(path: str) -> Inventory:
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # -sig: spreadsheet exports start with a BOM
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(f"{path}: cannot read inventory: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_inventory(text, path)
