"""Run `vmaudit` and SIGKILL it at one named point (for the fault tests in test_state_faults.py).

    python killpoint.py POINT vmaudit-arguments...

The product has no test hooks: this wrapper replaces one of its functions with one that kills the
process (the way a power cut or the OOM killer would) at that point, then runs the real command line.
"""

from __future__ import annotations

import os
import signal
import sys

import vmaudit.audit as audit
import vmaudit.fsutil as fsutil
import vmaudit.state as state


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def wrap(owner, name, before=None, after=None, when=lambda *a, **k: True):
    orig = getattr(owner, name)

    def patched(*args, **kw):
        if before and when(*args, **kw):
            die()
        out = orig(*args, **kw)
        if after and when(*args, **kw):
            die()
        return out

    static = isinstance(getattr(owner, "__dict__", {}).get(name), staticmethod)
    setattr(owner, name, staticmethod(patched) if static else patched)


POINTS = {
    # while collecting facts, holding the lock
    "collect": lambda: wrap(audit, "collect_facts", before=True),
    # the report is built; nothing stored yet
    "before-record": lambda: wrap(state.StateDir, "record", before=True),
    # inside the SQLite transaction: run row and findings inserted, not committed
    "in-transaction": lambda: wrap(state.StateDir, "_insert_findings", after=True),
    # the run's report.json is in its temporary file, fsynced, not yet renamed
    "before-rename": lambda: wrap(fsutil.os, "rename", before=True),
    # committed; the run's files are written, latest.* not yet
    "before-latest": lambda: wrap(state, "atomic_write_at", before=True,
                                  when=lambda fd, name, *a, **k: name.startswith("latest.")),
    # committed; latest.html replaced, latest.json not yet
    "between-latest": lambda: wrap(state, "atomic_write_at", before=True,
                                   when=lambda fd, name, *a, **k: name == "latest.json"),
    # committed, files and latest.* written; retention not applied
    "before-prune": lambda: wrap(state.StateDir, "prune", before=True),
}



def slow_collect() -> None:
    """Not a kill: announce each collection and make it last 3 s (to signal an agent mid-audit)."""
    import time

    orig = audit.collect_facts

    def patched(*args, **kw):
        print("vmaudit-test: collecting", file=sys.stderr, flush=True)
        time.sleep(3)
        return orig(*args, **kw)

    audit.collect_facts = patched


POINTS["slow-collect"] = slow_collect

if __name__ == "__main__":
    POINTS[sys.argv[1]]()
    from vmaudit.cli import main

    sys.exit(main(sys.argv[2:]))
