"""Reports to test the renderers with, made by the real pipeline (collectors -> checks -> report) from
tests/fixtures/hosts/empty and the test-driver node XMLs tests/fixtures/libvirt/reports-*.xml, and
helpers for golden files (timestamps, version and checkout paths normalised).

Regenerate golden files on purpose with VMAUDIT_REGEN_GOLDEN=1 and review them as a diff.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

from vmtest import FIXTURES, host_root, make_policy, test_uri

from vmaudit.audit import build_report, collect_facts

REPO = FIXTURES.parent.parent
GOLDEN = FIXTURES / "reports"
NORMAL_TIME = "2025-01-01T00:00:00Z"

# Tenant- and admin-written strings that must stay text in every report. libvirt refuses '/' in a
# domain name, so the "</script>" payloads ride in metadata, waiver reasons and file paths.
HOSTILE_GUESTS = ("<img src=x onerror=alert(1)>", '"><svg onload=alert(2)><script>alert(8)<!--',
                  "ok-guest & \"quoted\" 'name'")
HOSTILE_POLICY = """
[[waivers]]
check = "M2-TCG-GUEST"
resource = "guest:<img*"
reason = "</script><script>alert(9)</script> <img src=x onerror=alert(10)>"
expires = 2099-12-31
ticket = "\\"><svg onload=alert(11)>"

[[waivers]]
check = "M1-*"
resource = "guest:*"
reason = "<iframe src=javascript:alert(12)></iframe>"
expires = 2000-01-01
ticket = "OLD-1"
"""
HOSTILE_ROOT_NAME = "<img src=x onerror=alert(14)>"
HOSTILE_FILE = "file:/etc/libvirt/</script><script>alert(13)</script>.conf"


# The input reports of the renderer golden tests (sample-old.json, sample-new.json): real reports of
# reports-old.xml / reports-new.xml under this policy, normalised, kept fixed so the golden output of
# each renderer changes only when the renderer does (not when a check is added). Remake them with
# `python tests/report/report_helpers.py` (run from the repository) and review the diff.
SAMPLE_POLICY = """
[host]
zone = "dmz"

[[waivers]]
check = "M5-GUEST-AGENT"
resource = "guest:web01"
reason = "appliance image without an agent"
expires = 2099-06-30
ticket = "SEC-42"
"""


def make_report(xml: str, policy: str = "", root: str | Path | None = None, checks=None) -> dict:
    root_path = Path(root) if root is not None else host_root("empty")
    facts = collect_facts(root=str(root_path), uri=test_uri(xml))
    return build_report(facts, make_policy(policy), checks=checks)


def hostile_report(tmp_path: Path) -> dict:
    """A real report of the hostile guests under a root directory with a hostile name, a hostile
    waiver, plus one finding on a file whose path is script (as a file check would report it)."""
    root = tmp_path / HOSTILE_ROOT_NAME
    shutil.copytree(host_root("empty"), root)
    report = make_report("reports-hostile", HOSTILE_POLICY, root=root)
    report["findings"].append({
        "check_id": "M6-SOCKET-PERMS", "measure": "M6", "title": "<b>Socket</b> permissions",
        "status": "fail", "severity": "critical", "resource": HOSTILE_FILE,
        "message": "unix_sock_rw_perms = \"0777\" in </script><script>alert(15)</script>",
        "evidence": {"path": HOSTILE_FILE[5:], "<i>key</i>": "<script>alert(16)</script>"},
        "expected": "0770", "actual": "<u>0777</u>", "remediation": "restrict <em>modes</em>",
    })
    report["collector_errors"].append({"collector": "files.</script><script>alert(17)</script>",
                                       "reason": "cannot read <img src=x onerror=alert(18)>"})
    report["summary"]["fail"] += 1
    report["summary"]["by_measure"]["M6"]["fail"] += 1
    return report


def normalise(report: dict) -> dict:
    """A copy without what differs between runs and checkouts: times, version, repository path."""
    out = copy.deepcopy(report)
    for key in ("started_at", "finished_at"):
        if key in out:
            out[key] = NORMAL_TIME
    if "tool" in out:
        out["tool"]["version"] = "VERSION"
    text = json.dumps(out, ensure_ascii=False).replace(str(REPO), "<repo>")
    return json.loads(text)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("VMAUDIT_REGEN_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} is missing: create it with VMAUDIT_REGEN_GOLDEN=1 and review it"
    expected = path.read_text(encoding="utf-8")
    assert text == expected, (f"{path} differs from this output; if the change is intended, regenerate "
                              f"with VMAUDIT_REGEN_GOLDEN=1 and review the diff")


def load_sample(name: str) -> dict:
    return json.loads((GOLDEN / name).read_text(encoding="utf-8"))


if __name__ == "__main__":
    for side in ("old", "new"):
        sample = normalise(make_report(f"reports-{side}", SAMPLE_POLICY))
        (GOLDEN / f"sample-{side}.json").write_text(json.dumps(sample, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {GOLDEN / f'sample-{side}.json'}")
