"""`vmaudit diff`: pairs of real reports of the fixture guests (reports-old.xml -> reports-new.xml:
legacy02 moved to KVM, web01 moved to TCG, db03 undefined, app04 new), exit statuses, bad input,
`--last` through the state directory's last_two_reports()."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
from report_helpers import SAMPLE_POLICY, check_golden, load_sample, make_report

from vmaudit.cli import main as cli_main
from vmaudit.report.diff import ReportError, compute, render_text, validate


def vmaudit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vmaudit", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "NO_COLOR": "1"})


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("diff")
    old, new = make_report("reports-old", SAMPLE_POLICY), make_report("reports-new", SAMPLE_POLICY)
    (d / "old.json").write_text(json.dumps(old))
    (d / "new.json").write_text(json.dumps(new))
    return d, old, new


def _entry(diff, category, check_id, resource):
    found = [e for e in diff[category] if e["check_id"] == check_id and e["resource"] == resource]
    assert len(found) == 1, (category, check_id, resource, [(e["check_id"], e["resource"]) for e in diff[category]])
    return found[0]


def test_real_pair_worse_better_changed(pair):
    _, old, new = pair
    diff = compute(old, new)
    web = _entry(diff, "worse", "M2-TCG-GUEST", "guest:web01")
    assert web["change"] == "status" and web["old"]["status"] == "pass" and web["new"]["status"] == "fail"
    assert web["evidence_changes"] == {"domain_type": {"old": "kvm", "new": "qemu"}}
    legacy = _entry(diff, "better", "M2-TCG-GUEST", "guest:legacy02")
    assert legacy["old"]["status"] == "fail" and legacy["new"]["status"] == "pass"
    gone = _entry(diff, "changed", "M2-TCG-GUEST", "guest:db03")      # a pass that went with its guest
    assert gone["change"] == "gone" and gone["new"] is None
    added = _entry(diff, "changed", "M2-TCG-GUEST", "guest:app04")
    assert added["change"] == "new" and added["old"] is None and added["new"]["status"] == "pass"
    assert diff["same_host"] is True and diff["schema"] == "vmaudit-diff/1"
    # identical reports: nothing at all
    same = compute(new, copy.deepcopy(new))
    assert same["counts"] == {"worse": 0, "better": 0, "changed": 0}


def test_cli_exit_statuses_and_formats(pair):
    d, _, _ = pair
    res = vmaudit("diff", str(d / "old.json"), str(d / "new.json"))
    assert res.returncode == 1, res.stderr
    assert "Worse (" in res.stdout and "M2-TCG-GUEST guest:web01: status: pass high -> fail high" in res.stdout
    assert "evidence domain_type: kvm -> qemu" in res.stdout
    res = vmaudit("diff", "--format", "json", str(d / "old.json"), str(d / "new.json"))
    assert res.returncode == 1
    doc = json.loads(res.stdout)
    assert any(e["check_id"] == "M2-TCG-GUEST" and e["resource"] == "guest:web01" for e in doc["worse"])
    # the other way round nothing got worse that was not there before... except legacy02 back to TCG
    res = vmaudit("diff", "--format", "json", str(d / "new.json"), str(d / "old.json"))
    back = json.loads(res.stdout)
    assert res.returncode == 1
    assert {(e["check_id"], e["resource"]) for e in back["better"]} >= {("M2-TCG-GUEST", "guest:web01")}
    res = vmaudit("diff", str(d / "new.json"), str(d / "new.json"))
    assert res.returncode == 0 and "no change: every finding is as it was" in res.stdout


def test_only_improvements_exit_0(pair):
    _, old, new = pair
    fixed = copy.deepcopy(old)
    for f in fixed["findings"]:
        if f["check_id"] == "M2-TCG-GUEST" and f["resource"] == "guest:legacy02":
            f.update(status="pass", evidence={"domain_type": "kvm"})
    diff = compute(old, fixed)
    assert diff["counts"]["worse"] == 0 and diff["counts"]["better"] == 1


def _finding(status="fail", severity="high", **kw):
    f = {"check_id": "M3-KSM", "measure": "M3", "title": "KSM", "status": status, "severity": severity,
         "resource": "host", "message": "m", "evidence": {"run": 1}}
    f.update(kw)
    return f


def _report(*findings):
    return {"schema": "vmaudit-report/1", "host": {"hostname": "hv01"}, "started_at": "x",
            "policy": {"sha256": "a"}, "summary": {}, "findings": list(findings)}


@pytest.mark.parametrize("old,new,category,change", [
    (_finding("warn", "medium"), _finding("fail", "medium"), "worse", "status"),       # warn -> fail
    (_finding("fail", "medium"), _finding("fail", "critical"), "worse", "severity"),   # severity raised
    (_finding("fail", "critical"), _finding("fail", "medium"), "better", "severity"),
    (_finding("pass"), _finding("error"), "worse", "status"),                          # new error
    (_finding("error"), _finding("fail"), "worse", "status"),
    (_finding("fail"), _finding("error"), "changed", "status"),                        # not known fixed
    (_finding("fail"), _finding("fail", waiver={"reason": "r", "expires": "2099-01-01"}), "better", "status"),
    (_finding("fail", waiver={"reason": "r", "expires": "2099-01-01"}), _finding("fail"), "worse", "status"),
    (_finding("fail"), _finding("fail", evidence={"run": 2}), "changed", "evidence"),
    (_finding("pass"), _finding("skip"), "changed", "status"),
    (None, _finding("warn", "low"), "worse", "new"),
    (_finding("fail"), None, "better", "gone"),
])
def test_classification(old, new, category, change):
    diff = compute(_report(*([old] if old else [])), _report(*([new] if new else [])))
    assert diff["counts"][category] == 1 and sum(diff["counts"].values()) == 1
    assert diff[category][0]["change"] == change


def test_duplicate_resources_are_told_apart():
    a = _report(_finding(message="one"), _finding(message="two"))
    b = _report(_finding(message="one"), _finding(status="pass", message="two"))
    diff = compute(a, b)
    assert diff["counts"] == {"worse": 0, "better": 1, "changed": 0}


def test_bad_input_exit_2(tmp_path, pair):
    d, _, _ = pair
    bad_json = tmp_path / "broken.json"
    bad_json.write_text('{"schema": ')
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps({"schema": "vmaudit-facts/2", "sources": {}}))
    bad_finding = tmp_path / "bad-finding.json"
    bad_finding.write_text(json.dumps(_report({"check_id": "M3-KSM", "resource": "host", "status": "broken",
                                               "severity": "high"})))
    for path, words in ((tmp_path / "missing.json", "cannot read report"), (bad_json, "not a JSON report"),
                        (facts, "not a vmaudit report"), (bad_finding, "bad status or severity")):
        res = vmaudit("diff", str(d / "old.json"), str(path))
        assert res.returncode == 2, (path, res.stdout, res.stderr)
        assert res.stdout == ""
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0] and words in lines[0], lines
    res = vmaudit("diff", str(d / "old.json"))
    assert res.returncode == 2 and "OLD.json NEW.json" in res.stderr


def test_validate_rejects_non_reports():
    with pytest.raises(ReportError, match="x.json: not a vmaudit report"):
        validate([], "x.json")
    with pytest.raises(ReportError, match="no findings list"):
        validate({"schema": "vmaudit-report/1"}, "x.json")


def test_last_uses_state_dir(monkeypatch, pair, capsys, tmp_path):
    """--last passes --state-dir, else the policy's [agent] state_dir, else the default, to the state
    directory and diffs (previous, latest)."""
    _, old, new = pair
    calls = []

    def last_two_reports(state_dir):
        calls.append(state_dir)
        return old, new

    monkeypatch.setattr("vmaudit.state.last_two_reports", last_two_reports)
    assert cli_main(["diff", "--last", "--state-dir", "/srv/vmaudit-state", "--format", "json"]) == 1
    assert calls == ["/srv/vmaudit-state"]
    assert json.loads(capsys.readouterr().out)["counts"]["worse"] >= 1
    assert cli_main(["diff", "--last"]) == 1
    assert calls[-1] == "/var/lib/vmaudit"
    policy = tmp_path / "policy.toml"
    policy.write_text('[agent]\nstate_dir = "/srv/from-policy"\n')
    assert cli_main(["diff", "--last", "--policy", str(policy)]) == 1
    assert calls[-1] == "/srv/from-policy"
    assert cli_main(["diff", "a.json", "b.json", "--policy", str(policy)]) == 2


def test_last_with_too_few_runs_exit_2(monkeypatch, capsys):
    from vmaudit.policy import PolicyError

    def last_two_reports(state_dir):
        raise PolicyError(f"{state_dir}: the history holds 1 run(s); diff --last needs two")

    monkeypatch.setattr("vmaudit.state.last_two_reports", last_two_reports)
    assert cli_main(["diff", "--last", "--state-dir", "/nowhere"]) == 2
    assert "/nowhere: the history holds 1 run(s)" in capsys.readouterr().err


def test_last_with_real_state_dir(tmp_path):
    """The real state directory, filled by two real runs, when `run` can store into one."""
    state = pytest.importorskip("vmaudit.state")
    if not hasattr(state, "last_two_reports"):
        pytest.skip("vmaudit.state has no last_two_reports yet")
    from report_helpers import REPO
    help_text = vmaudit("run", "--help").stdout
    if "--state-dir" not in help_text:
        pytest.skip("vmaudit run cannot store into a state directory yet")
    sd = tmp_path / "state"
    for side in ("old", "new"):
        res = vmaudit("run", "--root", str(REPO / "tests/fixtures/hosts/empty"), "--connect",
                      f"test://{REPO}/tests/fixtures/libvirt/reports-{side}.xml", "--state-dir", str(sd),
                      "--format", "json", "--output", str(tmp_path / f"{side}.json"))
        assert res.returncode in (1, 3), res.stderr
    res = vmaudit("diff", "--last", "--state-dir", str(sd), "--format", "json")
    assert res.returncode == 1, res.stderr
    doc = json.loads(res.stdout)
    assert any(e["check_id"] == "M2-TCG-GUEST" and e["resource"] == "guest:web01" for e in doc["worse"])


def test_diff_golden():
    diff = compute(load_sample("sample-old.json"), load_sample("sample-new.json"))
    check_golden("sample.diff.json", json.dumps(diff, indent=1, ensure_ascii=False) + "\n")
    check_golden("sample.diff.txt", render_text(diff))


def test_two_consecutive_runs_of_an_unchanged_host_differ_in_nothing(tmp_path):
    """Two `vmaudit run`s a second apart: only per-run fields (times, evidence collected_at) differ, and
    those are no change."""
    import time

    from vmtest import HOSTS, test_uri

    args = ["run", "--root", str(HOSTS / "debian-broken"), "--connect", test_uri("guests-mixed"),
            "--format", "json", "--output"]
    vmaudit(*args, str(tmp_path / "a.json"))
    time.sleep(1.1)  # report times have whole seconds
    vmaudit(*args, str(tmp_path / "b.json"))
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert a["started_at"] != b["started_at"]
    assert any("collected_at" in (f.get("evidence") or {}) for f in a["findings"])
    proc = vmaudit("diff", str(tmp_path / "a.json"), str(tmp_path / "b.json"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "no change: every finding is as it was", proc.stdout
    assert compute(a, b)["counts"] == {"worse": 0, "better": 0, "changed": 0}
