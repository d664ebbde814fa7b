"""When the cyclic garbage collector runs during an audit.

An audit allocates hundreds of thousands of acyclic objects (XML trees, views, findings) that the cyclic
collector would rescan over and over (about 15 % of a large run): it is paused around collection and
evaluation (`paused`), and a one-shot command (`vmaudit run`, `vmaudit facts`) runs without it
altogether (`disable_for_process`). The few reference cycles an audit makes (a check that keeps an
exception, whose traceback holds the frame that keeps it) are then collected where they are made
(`cycles_collected`), so that they never hold a snapshot until the process exits.
"""

from __future__ import annotations

import contextlib
import gc

_process_without_gc = False


def disable_for_process() -> None:
    """A one-shot command: no cyclic collection for the rest of the process (it exits when done)."""
    global _process_without_gc
    _process_without_gc = True
    gc.disable()


@contextlib.contextmanager
def paused():
    """No cyclic collection inside the block; the collector's state as it was afterwards (re-enabled,
    its next collection scans what the block allocated once, and finds any cycles among it)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def cycles_collected():
    """In a process without the cyclic collector: collect the cycles the block makes, scanning only
    what it allocated. Objects tracked before it are first moved to the oldest generation unscanned
    (freeze + unfreeze), so the young generation holds the block's own objects only. Elsewhere nothing
    is done: the collector, running again after the audit, finds those cycles itself (moving objects
    there would reset its counts and postpone its full collections indefinitely in a daemon)."""
    if not _process_without_gc:
        yield
        return
    gc.freeze()
    gc.unfreeze()
    try:
        yield
    finally:
        gc.collect(0)
