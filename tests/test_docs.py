"""Documentation that is generated from the code stays in step with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_checks_doc_is_current():
    proc = subprocess.run([sys.executable, str(REPO / "scripts/gen-checks-doc.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + " (run: .venv/bin/python scripts/gen-checks-doc.py)"


def test_readme_links_resolve():
    import re

    text = (REPO / "README.md").read_text()
    for target in re.findall(r"\]\(((?!https?:|#)[^)]+)\)", text):
        if target.startswith("../shared/"):
            continue  # the shared specs sit beside the repository, not in it
        assert (REPO / target).exists(), f"README links to missing {target}"


def test_source_table_is_generated_from_the_declared_schemas():
    proc = subprocess.run([sys.executable, str(REPO / "scripts/gen-facts-doc.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + " (run: .venv/bin/python scripts/gen-facts-doc.py)"
