"""The fleet's history, kept by `vmaudit collect` and `vmaudit fleet`: now vmaudit.store (SQLite or
PostgreSQL, versioned schema migrated forward). `Store(path)` opens a SQLite store, as before."""

from __future__ import annotations

from vmaudit.store import VERSION, FleetStore, StoreError, open_store


def Store(path) -> FleetStore:  # noqa: N802 - the former class, kept for its callers
    return open_store(str(path))


__all__ = ["Store", "StoreError", "VERSION", "open_store"]
