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


def test_policy_reference_and_example_are_current():
    """docs/policy.md and etc/vmaudit/policy.toml are generated from the schema in agent/policy.py."""
    proc = subprocess.run([sys.executable, str(REPO / "scripts/gen-policy-doc.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + " (run: .venv/bin/python scripts/gen-policy-doc.py)"


def test_readme_links_only_files_of_the_repository():
    """The repository documents its own interface: the contract beside it is an extra, never the only
    place a user is sent to (the policy, the commands and the report formats are documented here)."""
    import re

    text = (REPO / "README.md").read_text()
    for topic in ("docs/policy.md", "etc/vmaudit/policy.toml", "docs/reports.md", "docs/checks.md"):
        assert f"]({topic})" in text, f"README does not link {topic}"
    for m in re.finditer(r"\]\((\.\./shared/[^)]+)\)", text):
        assert "extra" in text[max(0, m.start() - 200):m.start()], \
            f"README sends users to {m.group(1)}, outside the repository, as more than an extra"


def test_source_table_is_generated_from_the_declared_schemas():
    proc = subprocess.run([sys.executable, str(REPO / "scripts/gen-facts-doc.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + " (run: .venv/bin/python scripts/gen-facts-doc.py)"
