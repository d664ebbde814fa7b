#!/usr/bin/env python3
"""Write docs/checks.md from the check registry (the same text `vmaudit explain ID` prints).

    .venv/bin/python scripts/gen-checks-doc.py          # rewrite docs/checks.md
    .venv/bin/python scripts/gen-checks-doc.py --check  # exit 1 if docs/checks.md is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path

from vmaudit.commands.explain import MEASURES
from vmaudit.engine import load_checks

DOC = Path(__file__).resolve().parents[1] / "docs/checks.md"


def render() -> str:
    checks = load_checks()
    out = ["# The check catalogue", "",
           "Generated from the check registry by `scripts/gen-checks-doc.py`; `vmaudit explain ID` prints the",
           "same text. The specification is CHECKS.md in the project's shared specs.", "",
           "| ID | severity | one finding per | title |", "|---|---|---|---|"]
    for c in checks.values():
        per = {"guest": "guest", "host": "host or resource", "fleet": "fleet or host"}[c.scope]
        out.append(f"| [{c.id}](#{c.id.lower()}) | {c.severity} | {per} | {c.title} |")
    for measure, text in MEASURES.items():
        members = [c for c in checks.values() if c.measure == measure]
        if not members:
            continue
        out += ["", f"## {measure}: {text}"]
        for c in members:
            out += ["", f"### {c.id}", "", f"**{c.title}** — severity {c.severity}.", "", c.doc, "",
                    f"Remediation: {c.remediation}"]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        if not DOC.exists() or DOC.read_text() != text:
            sys.exit("docs/checks.md is out of date: run scripts/gen-checks-doc.py")
        sys.exit(0)
    DOC.write_text(text)
