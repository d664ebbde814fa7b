"""The fleet store (SQLite or PostgreSQL): runs, hosts, findings and the latest facts of every host.

    from vmaudit.store import open_store
    with open_store("postgresql:///vmaudit?service=fleet") as store:   # or a SQLite path
        for host, facts in store.latest_facts():
            ...

See base.py for the interface, engines.py for opening and migrating, schema.py for the tables and
views, and docs/fleet-store.md.
"""

from .base import FleetStore, RunWriter, StoredHost, StoreError, StoreTooNew, record_run, utc_text
from .engines import is_postgresql, open_store, redact
from .schema import VERSION

__all__ = ["open_store", "redact", "is_postgresql", "FleetStore", "RunWriter", "StoredHost", "StoreError",
           "StoreTooNew", "record_run", "utc_text", "VERSION"]
