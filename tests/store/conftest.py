"""Fixtures for the fleet store tests: a real PostgreSQL cluster (pgcluster.py), torn down pass or fail."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pgcluster import Cluster, unavailable  # noqa: E402
from vmtest import REQUIRE_REAL  # noqa: E402


def _require_real(why: str | None) -> None:
    if why:
        (pytest.fail if REQUIRE_REAL else pytest.skip)(f"PostgreSQL unavailable: {why}")


@pytest.fixture(scope="session")
def pg_cluster():
    _require_real(unavailable())
    cluster = Cluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg(pg_cluster, monkeypatch):
    """A fresh database in the shared cluster: (cluster, url); PGPASSFILE set for this process."""
    db = pg_cluster.new_database()
    monkeypatch.setenv("PGPASSFILE", pg_cluster.passfile)
    try:
        yield pg_cluster, pg_cluster.url(db)
    finally:
        pg_cluster.drop_database(db)


@pytest.fixture
def own_cluster(monkeypatch):
    """A cluster of this test's own (for stopping it mid-run)."""
    _require_real(unavailable())
    cluster = Cluster("pgstop")
    try:
        cluster.start()
        monkeypatch.setenv("PGPASSFILE", cluster.passfile)
        yield cluster
    finally:
        cluster.stop()

