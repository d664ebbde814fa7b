"""The machine formats and the terminal report: JSON golden files, JUnit XML against the Jenkins
schema, the Prometheus textfile through prometheus_client's parser, the text report's colour rules."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree
from prometheus_client.parser import text_string_to_metric_families
from report_helpers import (
    GOLDEN,
    HOSTILE_GUESTS,
    REPO,
    SAMPLE_POLICY,
    check_golden,
    hostile_report,
    load_sample,
    make_report,
    normalise,
)

from vmaudit.engine import load_checks
from vmaudit.report import render

SCHEMA = etree.XMLSchema(etree.parse(str(GOLDEN / "junit-10.xsd")))


def vmaudit(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vmaudit", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


# --- JSON -------------------------------------------------------------------------------------------

def test_json_report_golden_from_real_pipeline():
    # only the core's example check: the golden file changes when the pipeline or report shape does,
    # not whenever another measure gains a check
    checks = {k: v for k, v in load_checks().items() if k == "M2-TCG-GUEST"}
    report = make_report("reports-old", SAMPLE_POLICY.replace("M5-GUEST-AGENT", "M2-TCG-GUEST")
                         .replace("guest:web01", "guest:legacy02"), checks=checks)
    tcg = {f["resource"]: f for f in report["findings"]}
    assert tcg["guest:legacy02"]["status"] == "fail" and "waiver" in tcg["guest:legacy02"]
    assert report["summary"]["waived"] == 1
    check_golden("json-reports-old.json", render("json", normalise(report)))


@pytest.mark.parametrize("side", ["old", "new"])
def test_json_report_round_trips(side):
    sample = load_sample(f"sample-{side}.json")
    assert json.loads(render("json", sample)) == sample


def test_json_report_of_many_findings_is_one_finding_a_line():
    """Findings are written in pieces of several hundred; the text is the same as one a line."""
    from vmaudit.report import json_report

    sample = load_sample("sample-new.json")
    many = [dict(f, resource=f"guest:g{i:05d}") for i in range(1201) for f in sample["findings"][:1]]
    text = render("json", {**sample, "findings": many})
    assert json.loads(text)["findings"] == many
    start = text.index('"findings": [\n') + len('"findings": [\n')
    lines = text[start:text.index("\n ]", start)].split(",\n  ")
    assert [json.loads(line) for line in lines] == many
    assert "".join(json_report.render_chunks({"findings": many})) == (
        '{\n "findings": [\n  ' + ",\n  ".join(json_report._dump(f) for f in many) + "\n ]\n}\n")


# --- text -------------------------------------------------------------------------------------------

def test_text_golden_plain():
    check_golden("sample-new.txt", render("text", load_sample("sample-new.json"), color=False))


def test_text_lists_every_non_pass_once_worst_first():
    sample = load_sample("sample-new.json")
    text = render("text", sample)
    lines = [ln for ln in text.splitlines() if ln.split(" ", 1)[0] in ("FAIL", "ERROR", "WARN", "WAIVED", "SKIP")]
    assert len(lines) == sum(1 for f in sample["findings"] if f["status"] != "pass")
    order = [ln.split(" ", 1)[0] for ln in lines]
    rank = {"FAIL": 0, "ERROR": 1, "WARN": 2, "WAIVED": 3, "SKIP": 4}
    assert order == sorted(order, key=rank.__getitem__)
    waived = [ln for ln in lines if ln.startswith("WAIVED")]
    assert waived and "SEC-42" in waived[0] and "appliance image without an agent" in waived[0]
    tcg = [ln for ln in lines if re.search(r"M2-TCG-GUEST +guest:web01: ", ln)]
    assert len(tcg) == 1 and tcg[0].startswith("FAIL   high ")


def test_text_failures_come_first_with_their_remediation_and_a_pointer_at_the_end():
    sample = load_sample("sample-new.json")
    lines = render("text", sample).splitlines()
    first = next(i for i, ln in enumerate(lines) if ln.split(" ", 1)[0] in ("FAIL", "ERROR", "WARN", "SKIP"))
    assert lines[first].startswith("FAIL")
    assert first < next(i for i, ln in enumerate(lines) if ln.startswith("measure "))
    fails = [f for f in sample["findings"] if f["status"] == "fail" and "waiver" not in f]
    for f in fails:
        i = next(i for i, ln in enumerate(lines)
                 if ln.startswith("FAIL") and f" {f['check_id']} " in ln and f"{f['resource']}: " in ln)
        assert lines[i + 1].strip() == f"fix: {f['remediation']}", lines[i:i + 2]
    assert lines[-1].startswith("More: `vmaudit explain ") and "--format html" in lines[-1]


def test_text_colour_only_when_asked_and_no_color_unset(monkeypatch):
    sample = load_sample("sample-new.json")
    monkeypatch.delenv("NO_COLOR", raising=False)
    coloured = render("text", sample, color=True)
    assert "\x1b[1;31mFAIL" in coloured
    assert "\x1b[" not in render("text", sample, color=False)
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in render("text", sample, color=True)
    # stripping the colour gives exactly the plain report
    monkeypatch.delenv("NO_COLOR")
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == render("text", sample)


def test_text_piped_from_the_cli_is_plain():
    uri = f"test://{REPO}/tests/fixtures/libvirt/reports-new.xml"
    res = vmaudit("run", "--root", str(REPO / "tests/fixtures/hosts/empty"), "--connect", uri,
                  env={"NO_COLOR": ""})
    assert res.returncode == 1, res.stderr
    assert "\x1b[" not in res.stdout
    assert "M2-TCG-GUEST" in res.stdout and "guest:web01" in res.stdout


def test_text_keeps_terminal_escapes_out(tmp_path):
    report = load_sample("sample-new.json")
    report["findings"][0].update(status="fail", resource="guest:evil\x1b]0;owned\x07\x1b[2J",
                                 message="line1\nline2\r")
    text = render("text", report, color=False)
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text
    assert "guest:evil?]0;owned??[2J: line1?line2?" in text


def test_verdict_words():
    from vmaudit.report.view import verdict

    zero = dict.fromkeys(("fail", "error", "warn", "waived", "skip", "pass"), 0)
    assert verdict({**zero, "pass": 3, "error": 1})[0] == "error"
    assert verdict({**zero, "pass": 3, "fail": 1, "error": 1})[0] == "fail"
    assert verdict({**zero, "pass": 3, "waived": 1}) == ("pass", "Met (1 waived)")
    assert verdict({**zero, "skip": 2})[0] == "skip"
    assert verdict(zero)[0] == "none"


def test_text_summary_names_measures_and_verdicts():
    text = render("text", load_sample("sample-new.json"))
    assert "M2  Run a low-complexity VMM" in text
    rows = {ln[:2]: ln for ln in text.splitlines() if re.match(r"M[1-8]  ", ln)}
    assert rows["M2"].endswith("Not met: 2 failures to fix")          # web01 under TCG, memory
    assert rows["M4"].endswith("Met")
    assert rows["M6"].endswith("Unknown: evidence missing for 2 findings")  # error is never "met"
    assert rows["M5"].endswith("Needs review: 3 warnings")


# --- JUnit ------------------------------------------------------------------------------------------

def _junit(report: dict) -> etree._Element:
    doc = etree.fromstring(render("junit", report).encode("utf-8"))
    SCHEMA.assertValid(doc)
    return doc


def test_junit_valid_and_one_case_per_check_and_resource():
    sample = load_sample("sample-new.json")
    doc = _junit(sample)
    cases = doc.findall("testsuite/testcase")
    assert len(cases) == len(sample["findings"])
    keys = {(c.get("classname").rsplit(".", 1)[1], c.get("name")) for c in cases}
    assert keys == {(f["check_id"], f["resource"]) for f in sample["findings"]}
    tcg = next(c for c in cases if c.get("classname") == "vmaudit.M2.M2-TCG-GUEST" and c.get("name") == "guest:web01")
    failure = tcg.find("failure")
    assert failure is not None and failure.get("type") == "high"
    assert "expected: kvm, actual: qemu" in failure.text
    waived = next(c for c in cases if c.get("classname") == "vmaudit.M5.M5-GUEST-AGENT" and c.get("name") == "guest:web01")
    assert waived.find("skipped").get("type") == "waived" and "SEC-42" in waived.find("skipped").get("message")
    # suite counts agree with the cases
    for suite in doc.findall("testsuite"):
        cs = suite.findall("testcase")
        assert int(suite.get("tests")) == len(cs)
        assert int(suite.get("failures")) == sum(1 for c in cs if c.find("failure") is not None)
        assert int(suite.get("errors")) == sum(1 for c in cs if c.find("error") is not None)
        assert int(suite.get("skipped")) == sum(1 for c in cs if c.find("skipped") is not None)
    assert int(doc.get("failures")) == sum(1 for f in sample["findings"] if f["status"] == "fail" and "waiver" not in f)


def test_junit_golden():
    check_golden("sample-new.junit.xml", render("junit", load_sample("sample-new.json")))


def test_junit_hostile_and_control_characters(tmp_path):
    report = hostile_report(tmp_path)
    report["findings"][0]["message"] = "bell\x07 and nul\x00 and esc\x1b"
    doc = _junit(report)
    names = {c.get("name") for c in doc.iter("testcase")}
    for guest in HOSTILE_GUESTS:
        assert f"guest:{guest}" in names
    assert any("\ufffd" in (e.get("message") or "") for e in doc.iter()) or \
        any("\ufffd" in (e.text or "") for e in doc.iter())


def test_junit_error_and_skip_mapping():
    sample = load_sample("sample-new.json")
    doc = _junit(sample)
    by_key = {(c.get("classname").rsplit(".", 1)[1], c.get("name")): c for c in doc.iter("testcase")}
    for f in sample["findings"]:
        case = by_key[(f["check_id"], f["resource"])]
        if "waiver" in f:
            continue
        if f["status"] == "error":
            assert case.find("error").get("type") == "evidence-missing"
        elif f["status"] == "skip":
            assert case.find("skipped") is not None
        elif f["status"] in ("pass", "warn"):
            assert case.find("failure") is None and case.find("error") is None and case.find("skipped") is None


# --- Prometheus -------------------------------------------------------------------------------------

def _families(text: str) -> dict:
    return {fam.name: fam for fam in text_string_to_metric_families(text)}


def test_prometheus_parses_and_counts_match():
    sample = load_sample("sample-new.json")
    fams = _families(render("prometheus", sample))
    findings = fams["vmaudit_findings"]
    assert findings.type == "gauge"
    total = sum(s.value for s in findings.samples)
    assert total == len(sample["findings"])
    got = {(s.labels["status"], s.labels["severity"], s.labels["measure"]): s.value for s in findings.samples}
    # every combination present, zeros included (series never vanish)
    assert len(got) == 6 * 5 * 8
    expect: dict = {}
    for f in sample["findings"]:
        key = ("waived" if "waiver" in f else f["status"], f["severity"], f["measure"])
        expect[key] = expect.get(key, 0) + 1
    for key, value in got.items():
        assert value == expect.get(key, 0), key
    assert got[("fail", "high", "M2")] == 1 and got[("waived", "low", "M5")] == 1
    ts = fams["vmaudit_last_run_timestamp_seconds"].samples[0].value
    assert ts == 1735689600.0  # NORMAL_TIME, 2025-01-01T00:00:00Z
    assert fams["vmaudit_collector_errors"].samples[0].value == len(sample["collector_errors"])


def test_prometheus_escapes_label_values(tmp_path):
    report = hostile_report(tmp_path)
    report["host"]["hostname"] = 'hv"01\\x\nnext'
    fams = _families(render("prometheus", report))
    info = fams["vmaudit_info"].samples[0]
    assert info.labels["hostname"] == 'hv"01\\x\nnext'


def test_prometheus_golden():
    check_golden("sample-new.prom", render("prometheus", load_sample("sample-new.json")))


def test_prometheus_written_atomically_for_node_exporter(tmp_path):
    textfile_dir = tmp_path / "textfile_collector"
    textfile_dir.mkdir()
    target = textfile_dir / "vmaudit.prom"
    target.write_text("# previous run\nvmaudit_collector_errors 0\n")
    uri = f"test://{REPO}/tests/fixtures/libvirt/reports-new.xml"
    res = vmaudit("run", "--root", str(REPO / "tests/fixtures/hosts/empty"), "--connect", uri,
                  "--format", "prometheus", "--output", str(target))
    assert res.returncode == 1, res.stderr
    # only the finished file is there, under the one name node_exporter reads (*.prom)
    assert sorted(p.name for p in textfile_dir.iterdir()) == ["vmaudit.prom"]
    fams = _families(target.read_text())
    assert fams["vmaudit_last_run_timestamp_seconds"].samples[0].value > 1.6e9


def test_several_formats_into_a_directory(tmp_path):
    uri = f"test://{REPO}/tests/fixtures/libvirt/reports-old.xml"
    res = vmaudit("run", "--root", str(REPO / "tests/fixtures/hosts/empty"), "--connect", uri,
                  "--format", "json", "--format", "html", "--format", "junit", "--format", "prometheus",
                  "--format", "text", "--output", str(tmp_path / "out"))
    assert res.returncode == 1, res.stderr
    out = Path(tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "report.junit.xml",
                                                      "report.txt", "vmaudit.prom"]
    SCHEMA.assertValid(etree.parse(str(out / "report.junit.xml")))
    assert "\x1b[" not in (out / "report.txt").read_text()


def test_prometheus_label_values_with_carriage_return_and_controls(tmp_path):
    """A raw CR (or another control) in a label made the whole textfile unparsable (issue 12)."""
    report = hostile_report(tmp_path)
    report["host"]["hostname"] = 'hv\r01"\\\n\x1b[31m\x00\x85end'
    report["host"]["zone"] = "dmz\rzone"
    text = render("prometheus", report)
    assert "\r" not in text and "\x1b" not in text and "\x00" not in text and "\x85" not in text
    fams = _families(text)
    labels = fams["vmaudit_info"].samples[0].labels
    assert labels["hostname"] == 'hv?01"\\\n?[31m??end' and labels["zone"] == "dmz?zone"
    assert fams["vmaudit_findings"].samples  # everything after the info line still parses
