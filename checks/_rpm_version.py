"""RPM version order (rpmvercmp, as rpm 4.15+ implements it: '~' sorts before everything, '^' after the
version it follows but before anything else appended), and EVR comparison. No sound library exists on
PyPI: rpm-vercmp 0.1.2 (2018) predates '^'; the rpm Python bindings are not installable from PyPI. Tested
against the rpm binary's own rpm.vercmp (tests/checks/test_rpm_version.py)."""

from __future__ import annotations


def _alnum(c: str) -> bool:
    return c.isascii() and c.isalnum()  # rpm's risalnum: ASCII only


def rpmvercmp(a: str, b: str) -> int:
    """-1, 0 or 1 as version string `a` sorts before, equal to or after `b`."""
    if a == b:
        return 0
    i = j = 0
    while i < len(a) or j < len(b):
        while i < len(a) and not _alnum(a[i]) and a[i] not in "~^":
            i += 1
        while j < len(b) and not _alnum(b[j]) and b[j] not in "~^":
            j += 1
        x, y = a[i:i + 1], b[j:j + 1]
        if x == "~" or y == "~":  # a tilde sorts before anything, even the end of the string
            if x != "~":
                return 1
            if y != "~":
                return -1
            i, j = i + 1, j + 1
            continue
        if x == "^" or y == "^":  # a caret sorts after the end of the string, before anything else
            if not x:
                return -1
            if not y:
                return 1
            if x != "^":
                return 1
            if y != "^":
                return -1
            i, j = i + 1, j + 1
            continue
        if not (x and y):
            break
        kind = str.isdigit if x.isdigit() else str.isalpha
        si, sj = i, j
        while i < len(a) and a[i].isascii() and kind(a[i]):
            i += 1
        while j < len(b) and b[j].isascii() and kind(b[j]):
            j += 1
        seg1, seg2 = a[si:i], b[sj:j]
        if not seg1:
            return -1  # cannot happen (x is alphanumeric); rpm's "arbitrary"
        if not seg2:
            return 1 if kind is str.isdigit else -1  # a number is newer than letters
        if kind is str.isdigit:
            seg1, seg2 = seg1.lstrip("0"), seg2.lstrip("0")
            if len(seg1) != len(seg2):
                return 1 if len(seg1) > len(seg2) else -1
        if seg1 != seg2:
            return 1 if seg1 > seg2 else -1
    if i >= len(a) and j >= len(b):
        return 0
    return -1 if i >= len(a) else 1


def evr_cmp(e1: str | int | None, v1: str, r1: str, e2: str | int | None, v2: str, r2: str) -> int:
    """Compare (epoch, version, release) as rpm does; a missing epoch is 0."""
    n1, n2 = int(e1 or 0), int(e2 or 0)
    if n1 != n2:
        return 1 if n1 > n2 else -1
    return rpmvercmp(v1, v2) or rpmvercmp(r1, r2)
