"""The one sanitiser for text that reaches a terminal or a log line and came from somewhere vmaudit does
not control: a guest, an audited host, a remote process, an input file.

`clean(text)` replaces every character that is not printable (C0 and C1 controls with ESC, DEL, line
and paragraph separators, bidirectional and other format characters) by `?`, as the text report always
has: an escape sequence cannot drive the reader's terminal, a newline cannot forge another row or log
line. With `limit`, longer text keeps its first `limit` characters and says how much was cut.
Every renderer and command prints through it (`vmaudit.report.view.printable` is this function), and
`CleanFormatter` applies it to every log message.
"""

from __future__ import annotations

import logging
from typing import Any


def clean(text: Any, limit: int | None = None) -> str:
    """`text` (bytes are decoded as UTF-8, bad bytes replaced) with every non-printable character `?`."""
    if isinstance(text, (bytes, bytearray)):
        if limit is not None:
            text = bytes(text[:limit * 4 + 4])  # enough bytes for `limit` characters of UTF-8
        text = text.decode("utf-8", errors="replace")
    s = str(text)
    cut = 0
    if limit is not None and len(s) > limit:
        cut, s = len(s) - limit, s[:limit]
    out = s if s.isprintable() else "".join(ch if ch.isprintable() else "?" for ch in s)
    return f"{out}... ({cut} more characters)" if cut else out


def clean_tail(data: bytes | str, limit: int) -> str:
    """The last `limit` characters of `data`, cleaned: where a remote error message ends is its point."""
    if isinstance(data, (bytes, bytearray)):
        data = bytes(data[-(limit * 4 + 4):]).decode("utf-8", errors="replace")
    s = str(data)
    return ("..." if len(s) > limit else "") + clean(s[-limit:])


class CleanFormatter(logging.Formatter):
    """A log formatter whose messages are `clean`: one record is one line, with no terminal control.

    (A traceback appended with -v stays as Python formats it: it is vmaudit's own text.)"""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return clean(super().formatMessage(record))


__all__ = ["clean", "clean_tail", "CleanFormatter"]
