"""Numbers on the command line and in the policy that Python accepts but no run can use: refused with
exit 2 and a clear message, never a traceback per host or an overflow (issue 12)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hardhelp import vmaudit  # noqa: E402


def refused(r, *words: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    for w in words:
        assert w in r.stderr, r.stderr


@pytest.mark.parametrize("option,value,words", [
    ("--connect-timeout", "nan", "must be a number of seconds above 0"),
    ("--command-timeout", "inf", "must be a number of seconds above 0"),
    ("--command-timeout", "-1", "must be a number of seconds above 0"),
    ("--connect-timeout", "0", "must be a number of seconds above 0"),
    ("--command-timeout", "1e300", "at most 86400"),
    ("-f", "0", "must be at least 1"),
    ("--concurrency", "-3", "must be at least 1"),
])
def test_collect_numbers_refused_before_any_host(tmp_path, option, value, words):
    r = vmaudit("collect", "--hosts", "127.0.6.99", "--output", str(tmp_path / "out"), option, value)
    refused(r, option.lstrip("-") if option != "-f" else "concurrency", words)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["999999999999d", "367d", "99999999999999999999999"])
def test_agent_interval_too_long(tmp_path, value):
    r = vmaudit("agent", "--interval", value, "--state-dir", str(tmp_path / "s"))
    refused(r, "--interval", "longer than 366 days")
    assert not (tmp_path / "s").exists()


def test_agent_interval_from_the_policy_too_long(tmp_path):
    pol = tmp_path / "policy.toml"
    pol.write_text('[agent]\ninterval = "999999999999d"\n')
    r = vmaudit("agent", "--policy", str(pol), "--state-dir", str(tmp_path / "s"))
    refused(r, "longer than 366 days")
