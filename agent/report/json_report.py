"""The JSON report (CONTRACT.md).

Written one finding per line: two reports of the same host diff cleanly line by line (findings are
sorted by check ID, then resource), and each line goes through json's C encoder, which an indented dump
cannot use (a 10,000-guest report would take several times longer).
"""

from __future__ import annotations

import json


def _dump(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def render(report: dict, *, color: bool = False) -> str:
    parts = []
    for key, value in report.items():
        if key == "findings" and value:
            body = "[\n  " + ",\n  ".join(_dump(f) for f in value) + "\n ]"
        elif isinstance(value, dict) and key == "summary":
            by_measure = value.get("by_measure", {})
            inner = [f'  {_dump(k)}: {_dump(v)}' for k, v in value.items() if k != "by_measure"]
            inner.append('  "by_measure": {\n' + ",\n".join(f'   {_dump(m)}: {_dump(c)}' for m, c in by_measure.items())
                         + "\n  }")
            body = "{\n" + ",\n".join(inner) + "\n }"
        elif key == "collector_errors" and value:
            body = "[\n  " + ",\n  ".join(_dump(e) for e in value) + "\n ]"
        else:
            body = _dump(value)
        parts.append(f" {_dump(key)}: {body}")
    return "{\n" + ",\n".join(parts) + "\n}\n"
