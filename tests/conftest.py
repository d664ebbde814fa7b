"""pytest fixtures and hooks shared by every test directory. Helpers live in tests/vmtest.py
(a plain module: several conftest.py files exist, so `from vmtest import` would be ambiguous)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # vmtest, realenv

from vmtest import OBSERVED, REQUIRE_REAL, TESTS  # noqa: E402


@pytest.fixture
def tmp_policy(tmp_path):
    def write(text: str, name: str = "policy.toml") -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p
    return write


@pytest.fixture(scope="session")
def real_libvirtd():
    """A private real libvirtd of this session (tests/realenv.py) with the e2e guests; yields its URI.
    Stopped, with everything defined on it, when the session ends, pass or fail."""
    import realenv

    reason = realenv.available()
    if reason:
        if REQUIRE_REAL:
            pytest.fail(f"real libvirtd required in CI: {reason}")
        pytest.skip(reason)
    try:
        realenv.setup()
        yield realenv.URI
    finally:
        realenv.stop()


@pytest.fixture
def libvirt_guests(real_libvirtd):
    """Define guests of one test on the private libvirtd: `libvirt_guests.define(name, ...)`; every one
    is destroyed and undefined (snapshots, images too) when the test ends, pass or fail."""
    import realenv

    factory = realenv.GuestFactory()
    try:
        yield factory
    finally:
        factory.remove_all()


_SYSTEM_BEFORE: list = []


def pytest_sessionstart(session):
    """Record what the host's own libvirtd holds: the suite must leave it exactly so."""
    import realenv

    _SYSTEM_BEFORE[:] = [realenv.system_state()]


def pytest_sessionfinish(session, exitstatus):
    """With the whole suite run, every host check must have been seen failing (or warning)."""
    import realenv

    if _SYSTEM_BEFORE and _SYSTEM_BEFORE[0] is not None:
        after = realenv.system_state()
        if after != _SYSTEM_BEFORE[0]:
            session.exitstatus = 1
            changed = sorted(set(_SYSTEM_BEFORE[0].items()) ^ set((after or {}).items()), key=str)
            print(f"\nthe test session changed the host's libvirtd ({realenv.SYSTEM_URI}): {changed}")
    opt = session.config.option
    if exitstatus != 0 or opt.keyword or opt.markexpr or opt.collectonly or getattr(opt, "lf", False):
        return
    args = [str(a) for a in session.config.args]
    if any(a not in (str(TESTS), "tests", ".") for a in args) or not session.items:
        return  # a partial run proves nothing about coverage
    from vmaudit.engine import load_checks

    never = sorted(c.id for c in load_checks().values()
                   if c.scope != "fleet" and not ({(c.id, "fail"), (c.id, "warn")} & OBSERVED))
    if never:
        session.exitstatus = 1
        print(f"\ncatalogue coverage: no test made these checks fail or warn: {', '.join(never)}")
