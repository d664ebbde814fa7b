"""The JSON report (CONTRACT.md).

Written one finding per line: two reports of the same host diff cleanly line by line (findings are
sorted by check ID, then resource), and each line is encoded on its own, compactly, by a C encoder
(orjson where installed, else json's), which an indented dump cannot use: a 10,000-guest report would
take several times longer.
"""

from __future__ import annotations

import json

try:  # orjson encodes the 100,000s of findings of a large host about six times faster than json
    import orjson
except ImportError:  # an optional speed-up: the output is the same without it
    orjson = None

_BATCH = 500  # findings per piece of render_chunks
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _dump(value: object) -> str:
    if orjson is not None:
        try:
            return orjson.dumps(value).decode()
        except TypeError:  # e.g. a surrogate-escaped (non-UTF-8) host file name: json writes it escaped
            pass
    return _encode(value)


def render(report: dict, *, color: bool = False) -> str:
    return "".join(render_chunks(report))


def render_chunks(report: dict, *, color: bool = False):
    """The report as a stream of text pieces (a 10,000-guest report need not be built whole in memory)."""
    yield "{\n"
    for i, (key, value) in enumerate(report.items()):
        yield (",\n" if i else "") + f" {_dump(key)}: "
        if key == "findings" and value:
            # a few hundred findings a piece: one write per finding cost more than encoding it
            yield "[\n  "
            for start in range(0, len(value), _BATCH):
                yield (",\n  " if start else "") + ",\n  ".join(map(_dump, value[start:start + _BATCH]))
            yield "\n ]"
        else:
            yield _body(key, value)
    yield "\n}\n"


def _body(key: str, value: object) -> str:
    """Small top-level values: the summary one measure a line, collector errors one a line."""
    if key == "summary" and isinstance(value, dict):
        inner = [f"  {_dump(k)}: {_dump(v)}" for k, v in value.items() if k != "by_measure"]
        measures = ",\n".join(f"   {_dump(m)}: {_dump(c)}" for m, c in value.get("by_measure", {}).items())
        inner.append('  "by_measure": {\n' + measures + "\n  }")
        return "{\n" + ",\n".join(inner) + "\n }"
    if key == "collector_errors" and value:
        return "[\n  " + ",\n  ".join(_dump(e) for e in value) + "\n ]"
    return _dump(value)
