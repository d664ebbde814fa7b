"""The JSON report (CONTRACT.md): stable key order, findings already sorted by check ID and resource."""

from __future__ import annotations

import json


def render(report: dict, *, color: bool = False) -> str:
    return json.dumps(report, indent=1, ensure_ascii=False) + "\n"
