"""Values derived from a snapshot that every guest's check reads the same way (qemu.conf's settings,
the host's accounts, the snapshot's day): computed once per Facts instead of once per guest.

Only values are kept: a function that raises (missing evidence) raises again on every call, so
each guest's check still says `error`. A Facts is never modified after it is made, and an entry goes
with its Facts (weak keys): a value must not refer to the Facts or its guests, or it would keep them
alive."""

from __future__ import annotations

import weakref
from typing import Any, Callable

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def per_snapshot(facts: Any, func: Callable[[Any], Any]) -> Any:
    """`func(facts)`, computed once per Facts."""
    values = _CACHE.get(facts)
    if values is None:
        values = _CACHE[facts] = {}
    if func not in values:
        values[func] = func(facts)
    return values[func]
