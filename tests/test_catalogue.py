"""The check registry held to the catalogue (shared/spec/CHECKS.md): every host check ID of the catalogue
is registered with its measure and default severity, every fleet check (F-*) too once it exists, and
nothing is registered that the catalogue does not define.

The project's own catalogue is the code and docs/checks.md (generated from it; tests/test_docs.py keeps
it current): those tests run in any clone. This module compares it with the shared spec, found beside the
repository (in CI the repository is a clone with shared/ beside it) or in the directory named by
VMAUDIT_SPEC_DIR. Where the spec is missing these tests skip, except in CI (vmtest.REQUIRE_REAL), where a
missing spec fails them like any other missing real part.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from vmtest import REQUIRE_REAL

from vmaudit.engine import SEVERITIES, load_checks


def spec_path() -> Path:
    env = os.environ.get("VMAUDIT_SPEC_DIR")
    if env:
        return Path(env) / "CHECKS.md"
    return Path(__file__).resolve().parents[2] / "shared/spec/CHECKS.md"


def _cells(line: str) -> list[str]:
    """Cells of a markdown table row; `\\|` inside a cell is a literal pipe, not a separator."""
    body = line.strip()
    if body.startswith("|"):
        body = body[1:]
    if body.endswith("|") and not body.endswith("\\|"):
        body = body[:-1]
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", body)]


def parse_tables(text: str) -> dict[str, list[dict]]:
    """{"host": [{id, measure, severity}], "fleet": [{id, measure, severity}]} from the catalogue."""
    tables: dict[str, list[dict]] = {"host": [], "fleet": []}
    section = None
    header: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("## "):
            title = line[3:].strip().lower()
            section = "host" if title.startswith("host checks") else "fleet" if title.startswith("fleet") else None
            header = None
            continue
        if section is None or not line.lstrip().startswith("|"):
            if header is not None and not line.strip():
                header = None
            continue
        cells = _cells(line)
        if header is None:
            header = [c.lower() for c in cells]
            continue
        if all(set(c) <= set("-: ") for c in cells):  # the |---|---| separator row
            continue
        row = dict(zip(header, cells))
        check_id = row.get("id", "")
        measure = row.get("m", "F") if section == "host" else "F"
        tables[section].append({"id": check_id, "measure": measure, "severity": row.get("sev", "")})
    return tables


def _catalogue() -> dict[str, list[dict]] | None:
    path = spec_path()
    if not path.is_file():
        return None
    return parse_tables(path.read_text(encoding="utf-8"))


CATALOGUE = _catalogue()


@pytest.fixture
def catalogue():
    """The shared spec's tables; a missing spec skips the test (fails it in CI)."""
    if CATALOGUE is None:
        (pytest.fail if REQUIRE_REAL else pytest.skip)(
            f"the shared check catalogue {spec_path()} is not here (set VMAUDIT_SPEC_DIR to the "
            "directory holding CHECKS.md)")
    return CATALOGUE
HOST_ROWS = CATALOGUE["host"] if CATALOGUE else []
FLEET_ROWS = CATALOGUE["fleet"] if CATALOGUE else []


def test_the_catalogue_is_found_and_parsed(catalogue):
    assert len(HOST_ROWS) >= 40 and len(FLEET_ROWS) >= 5
    ids = [r["id"] for r in HOST_ROWS + FLEET_ROWS]
    assert len(ids) == len(set(ids)), "a check ID appears twice in the catalogue"
    for row in HOST_ROWS:
        assert re.fullmatch(r"M[1-8]-[A-Z0-9-]+", row["id"]), row
        assert row["id"].split("-", 1)[0] == row["measure"], row
        assert row["severity"] in SEVERITIES, row
    for row in FLEET_ROWS:
        assert re.fullmatch(r"F-[A-Z0-9-]+", row["id"]) and row["severity"] in SEVERITIES, row


def test_the_parser_reads_escaped_pipes_and_both_tables():
    text = ("## Host checks\n\n| ID | M | fact and source | rule | sev | remediation |\n|---|---|---|---|---|---|\n"
            "| M1-NET-ZONE | M1 | `@network\\|@bridge` | x | high | y |\n\n"
            "## Fleet checks (central)\n\n| ID | rule | sev |\n|---|---|---|\n| F-X | r | medium |\n")
    assert parse_tables(text) == {"host": [{"id": "M1-NET-ZONE", "measure": "M1", "severity": "high"}],
                                  "fleet": [{"id": "F-X", "measure": "F", "severity": "medium"}]}


@pytest.mark.parametrize("row", HOST_ROWS, ids=[r["id"] for r in HOST_ROWS])
def test_every_host_check_is_registered_as_catalogued(row):
    checks = load_checks()
    assert row["id"] in checks, f"{row['id']} is in the catalogue but no check registers it"
    spec = checks[row["id"]]
    assert (spec.measure, spec.severity) == (row["measure"], row["severity"])
    assert spec.scope in ("host", "guest")
    assert spec.doc and spec.title and spec.remediation


@pytest.mark.parametrize("row", FLEET_ROWS, ids=[r["id"] for r in FLEET_ROWS])
def test_every_fleet_check_is_registered_as_catalogued(row):
    checks = load_checks()
    if row["id"] not in checks:
        pytest.xfail(f"fleet check {row['id']} not written yet")
    spec = checks[row["id"]]
    assert (spec.measure, spec.severity, spec.scope) == ("F", row["severity"], "fleet")


def readme_extra_checks() -> set[str]:
    """Check IDs the README lists under its Extensions as beyond CHECKS.md (additive, documented)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    line = next((x for x in readme.split("\n- ") if x.startswith("Checks beyond CHECKS.md:")), "")
    return set(re.findall(r"`([A-Z][A-Z0-9]*(?:-[A-Z0-9]+)+)`", line))


def test_nothing_is_registered_outside_the_catalogue(catalogue):
    known = {r["id"] for r in HOST_ROWS + FLEET_ROWS} | readme_extra_checks()
    extra = sorted(set(load_checks()) - known)
    assert not extra, f"registered but not in the catalogue: {extra}"


# a verdict word in a title makes it wrong next to some status ("KVM is not usable" beside a green pass)
VERDICT_WORDS = re.compile(r"\b(not|no|none|without|too|never|nobody|exceeds?|unsafe|stale|old|enabled|"
                           r"disabled|weakened|open|fails?|missing|bypassing|instead|beyond|more than)\b", re.I)


def test_titles_name_the_subject_not_the_verdict():
    """A title is shown beside every status (pass, fail, warn, error, skip): it names what is checked;
    the finding's message says what was found."""
    bad = {c.id: c.title for c in load_checks().values() if VERDICT_WORDS.search(c.title)}
    assert not bad, f"titles that state a verdict: {bad}"
