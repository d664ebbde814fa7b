"""The command line as scripts use it: exit statuses, bad input, snapshots, waivers (CONTRACT.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from vmtest import LIBVIRT, audit, findings, host_root, one, test_uri

URI = test_uri("core")
ROOT = str(host_root("empty"))


def vmaudit(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vmaudit", *args], capture_output=True, text=True,
                          input=stdin, timeout=300)


def run_json(*args: str) -> tuple[int, dict]:
    proc = vmaudit("run", "--root", ROOT, "--connect", URI, "--format", "json", *args)
    return proc.returncode, json.loads(proc.stdout)


def test_report_follows_the_contract():
    rc, report = run_json()
    assert report["schema"] == "vmaudit-report/1"
    assert set(report) >= {"tool", "host", "started_at", "finished_at", "policy", "summary", "findings",
                           "collector_errors"}
    assert report["host"]["libvirt_uri"] == URI and report["host"]["root"] == str(Path(ROOT).resolve())
    keys = [(f["check_id"], f["resource"]) for f in report["findings"]]
    assert keys == sorted(keys)
    total = sum(report["summary"][s] for s in ("pass", "fail", "warn", "error", "skip", "waived"))
    assert total == len(report["findings"])
    for f in report["findings"]:
        assert {"check_id", "measure", "title", "status", "severity", "resource", "message", "evidence",
                "remediation"} <= set(f)
    tcg = one(report, "M2-TCG-GUEST", "guest:legacy01")
    assert tcg["status"] == "fail" and tcg["evidence"] == {"domain_type": "qemu"}
    assert tcg["expected"] == "kvm" and tcg["actual"] == "qemu"
    assert one(report, "M2-TCG-GUEST", "guest:web01")["status"] == "pass"
    assert rc == 1  # an unwaived high failure at the default --fail-on low


def test_fail_on_threshold():
    # only failures at or above --fail-on count; M2-TCG-GUEST is high
    rc_critical, report = run_json("--fail-on", "critical")
    worst = {f["severity"] for f in report["findings"] if f["status"] == "fail" and "waiver" not in f}
    assert rc_critical == (1 if "critical" in worst else 3 if report["summary"]["error"] else 0)


def test_waiver_keeps_status_counts_as_waived_and_does_not_fail(tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text('[[waivers]]\ncheck = "M2-TCG-*"\nresource = "guest:legacy*"\n'
                      'reason = "lab guest, <b>bold</b>"\nexpires = 2099-01-01\nticket = "SEC-1"\n'
                      '[[waivers]]\ncheck = "M2-IOMMU"\nreason = "old"\nexpires = 2000-01-01\n')
    _, report = run_json("--policy", str(policy))
    f = one(report, "M2-TCG-GUEST", "guest:legacy01")
    assert f["status"] == "fail" and f["waiver"] == {"check": "M2-TCG-*", "resource": "guest:legacy*",
                                                     "reason": "lab guest, <b>bold</b>",
                                                     "expires": "2099-01-01", "ticket": "SEC-1"}
    assert report["summary"]["waived"] >= 1
    assert report["expired_waivers"] == [{"check": "M2-IOMMU", "resource": "*", "reason": "old",
                                          "expires": "2000-01-01"}]
    assert report["policy"]["source"] == str(policy) and len(report["policy"]["sha256"]) == 64


def test_facts_snapshot_round_trip(tmp_path):
    snap = tmp_path / "facts.json"
    assert vmaudit("facts", "--root", ROOT, "--connect", URI, "--output", str(snap)).returncode == 0
    data = json.loads(snap.read_text())
    assert data["schema"] == "vmaudit-facts/2" and data["host"]["live"] is False
    assert {d["name"] for d in data["sources"]["libvirt"]["domains"]} == {"web01", "legacy01"}
    _, direct = run_json()
    proc = vmaudit("run", "--facts", str(snap), "--format", "json")
    offline = json.loads(proc.stdout)
    strip = lambda r: [(f["check_id"], f["resource"], f["status"]) for f in r["findings"]]  # noqa: E731
    assert strip(offline) == strip(direct)


def test_live_facts_are_skipped_under_a_root():
    proc = vmaudit("facts", "--root", ROOT, "--connect", URI)
    sources = json.loads(proc.stdout)["sources"]
    from vmaudit.collectors import load_collectors

    for name, col in load_collectors().items():
        if col.live:
            assert sources[name] == {"not_collected": f"live fact, not collected when auditing root "
                                                      f"{Path(ROOT).resolve()}"}


def test_unreachable_libvirt_still_audits_the_host():
    missing = LIBVIRT / "does-not-exist.xml"
    proc = vmaudit("run", "--root", ROOT, "--connect", f"test://{missing}", "--format", "json")
    report = json.loads(proc.stdout)
    assert proc.returncode in (1, 3)
    assert "libvirt could not be reached" in proc.stderr and str(missing) in proc.stderr
    tcg = findings(report, "M2-TCG-GUEST")
    assert [f["status"] for f in tcg] == ["error"] and str(missing) in tcg[0]["message"]
    assert any(e["collector"] == "libvirt" for e in report["collector_errors"])


def test_root_that_does_not_exist():
    proc = vmaudit("run", "--root", "/nonexistent/vmaudit-root")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "vmaudit run: /nonexistent/vmaudit-root: --root is not a directory"


def test_invalid_policy_exits_2_naming_file_and_line(tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text("[limits]\nmax_running_guests = 20\ncpu_overcomit = 2.0\n")
    proc = vmaudit("run", "--root", ROOT, "--connect", URI, "--policy", str(policy))
    assert proc.returncode == 2 and proc.stdout == ""
    assert f"{policy}, line 3: unknown key 'cpu_overcomit' in [limits]" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_waiver_without_reason_exits_2(tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text('[[waivers]]\ncheck = "M2-IOMMU"\nexpires = 2027-01-31\n')
    proc = vmaudit("run", "--root", ROOT, "--connect", URI, "--policy", str(policy))
    assert proc.returncode == 2 and "needs 'reason'" in proc.stderr and str(policy) in proc.stderr


def test_malformed_snapshot_exits_2(tmp_path):
    bad = tmp_path / "facts.json"
    bad.write_text('{"schema": "vmaudit-facts/2",\n "host": {}\n "sources": {}}')
    proc = vmaudit("run", "--facts", str(bad))
    assert proc.returncode == 2 and f"{bad}, line 3: not a JSON facts snapshot" in proc.stderr
    bad.write_text('{"schema": "something-else/1"}')
    proc = vmaudit("run", "--facts", str(bad))
    assert proc.returncode == 2 and "not a vmaudit facts snapshot" in proc.stderr


def test_several_formats_need_a_directory(tmp_path):
    proc = vmaudit("run", "--root", ROOT, "--connect", URI, "--format", "json", "--format", "text")
    assert proc.returncode == 2 and "--output DIR" in proc.stderr
    out = tmp_path / "reports"
    proc = vmaudit("run", "--root", ROOT, "--connect", URI, "--format", "json", "--format", "text",
                   "--output", str(out))
    assert proc.returncode in (1, 3)
    assert json.loads((out / "report.json").read_text())["schema"] == "vmaudit-report/1"
    assert "M2-TCG-GUEST" in (out / "report.txt").read_text()


def test_output_to_a_device_fifo_or_link_writes_through_it(tmp_path):
    """`--output /dev/null`, a FIFO or a symbolic link: written through, never replaced by a file."""
    import os
    import stat
    import threading

    proc = vmaudit("run", "--root", ROOT, "--connect", URI, "--format", "json", "--output", "/dev/null")
    assert proc.returncode in (0, 1, 3), proc.stderr
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)

    fifo = tmp_path / "report.fifo"
    os.mkfifo(fifo)
    got = {}
    reader = threading.Thread(target=lambda: got.setdefault("text", fifo.read_text()))
    reader.start()
    proc = vmaudit("run", "--root", ROOT, "--connect", URI, "--format", "json", "--output", str(fifo))
    reader.join(timeout=60)
    assert proc.returncode in (1, 3), proc.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert json.loads(got["text"])["schema"] == "vmaudit-report/1"

    target = tmp_path / "reports" / "host.json"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    proc = vmaudit("run", "--root", ROOT, "--connect", URI, "--format", "json", "--output", str(link))
    assert proc.returncode in (1, 3), proc.stderr
    assert link.is_symlink() and json.loads(target.read_text())["schema"] == "vmaudit-report/1"


def test_checks_and_explain():
    listing = vmaudit("checks").stdout
    assert "M2-TCG-GUEST" in listing
    text = vmaudit("explain", "m2-tcg-guest").stdout
    assert "Rule:" in text and "Remediation:" in text
    proc = vmaudit("explain", "M9-NOPE")
    assert proc.returncode == 2 and "no check 'M9-NOPE'" in proc.stderr


def test_run_does_not_import_central_collection():
    code = ("import sys, io, contextlib\nfrom vmaudit.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    main(['run', '--root', {ROOT!r}, '--connect', {URI!r}, '--format', 'json'])\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('paramiko', 'jinja2', 'yaml')))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout + proc.stderr


def test_in_process_audit_matches_cli():
    report = audit("empty", URI)
    assert one(report, "M2-TCG-GUEST", "guest:legacy01")["status"] == "fail"


def test_mangled_snapshot_sections_are_missing_evidence_not_a_crash(tmp_path):
    # a snapshot is input (saved, or shipped from a remote host): wrong shapes deep inside are `error`
    base = {"schema": "vmaudit-facts/2", "host": {"hostname": "hv"}}
    for libvirt in ("x", [1], {"domains": "x"}, {"domains": [1]}):
        report = audit(facts={**base, "sources": {"libvirt": libvirt}})
        assert one(report, "M2-TCG-GUEST")["status"] == "error"
    report = audit(facts={**base, "sources": {"libvirt": {"domains": [{"name": 5, "xml": 5}, {"name": "a"}]}}})
    assert one(report, "M2-TCG-GUEST", "guest:5")["status"] == "error"
    snap = tmp_path / "facts.json"
    snap.write_text(json.dumps({**base, "sources": {"libvirt": {"domains": "x"}}}))
    proc = vmaudit("run", "--facts", str(snap), "--format", "json")
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr


def test_a_defect_or_a_bad_output_directory_never_exits_1(tmp_path, monkeypatch, capsys):
    # exit 1 means "failures found" (and is a success for vmaudit.service): a crash must not look like it
    from vmaudit import cli

    def boom(args):
        raise KeyError("oops")

    import vmaudit.commands.checks as checks_cmd

    monkeypatch.setattr(checks_cmd, "main", boom)
    assert cli.main(["checks"]) == 2
    assert "internal error" in capsys.readouterr().err
    afile = tmp_path / "afile"
    afile.write_text("")
    proc = vmaudit("run", "--root", ROOT, "--connect", URI, "--format", "json", "--format", "text",
                   "--output", str(afile / "reports"))
    assert proc.returncode == 2 and "cannot create the report directory" in proc.stderr, proc.stderr


def test_help_is_written_for_users():
    """`vmaudit --help` says what the tool does, how it is commonly run and what its exit statuses
    mean, not how the code is organised."""
    top = vmaudit("--help")
    assert top.returncode == 0
    assert "vmaudit.commands" not in top.stdout and "module" not in top.stdout
    for text in ("read-only", "vmaudit run", "vmaudit explain", "vmaudit policy check", "exit status",
                 "1 failures found", "docs/policy.md"):
        assert text in top.stdout, text
    run = vmaudit("run", "--help")
    assert run.returncode == 0 and "exit status: 0 " in run.stdout and "3 no such failures" in run.stdout
