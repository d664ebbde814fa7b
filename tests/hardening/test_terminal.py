"""Text from an audited host reaches a terminal only through vmaudit.termsafe.clean: shown through a real
pseudo-terminal, a hostile host name never carries an escape sequence or another control, and a newline
in it never forges a row or a log line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hardhelp import HOSTILE, assert_terminal_clean, run_in_pty  # noqa: E402
from vmtest import host_root  # noqa: E402

from vmaudit.audit import collect_facts  # noqa: E402
from vmaudit.termsafe import clean, clean_tail  # noqa: E402

VMAUDIT = str(Path(sys.executable).with_name("vmaudit"))


def hostile_snapshot(tmp_path: Path) -> Path:
    facts = collect_facts(root=str(host_root("empty")), uri="test:///default")
    facts["host"]["hostname"] = HOSTILE
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(facts))
    return path


def test_clean_replaces_every_control():
    assert clean(HOSTILE) == "evil?]0;pwned??RUN FORGED 0 0??2J?moc"
    assert clean(b"a\x00b\xffc") == "a?b\ufffdc"
    assert clean("x" * 50, limit=10) == "x" * 10 + "... (40 more characters)"
    assert clean_tail(b"\x00" * 10_000 + b"sudo: denied\x1b[2J", 20) == "...????sudo: denied?[2J"


def test_run_state_dir_info_line_and_history_on_a_terminal(tmp_path):
    facts = hostile_snapshot(tmp_path)
    state = tmp_path / "state"
    rc, seen = run_in_pty([VMAUDIT, "run", "--facts", str(facts), "--state-dir", str(state)])
    assert rc in (0, 1, 3), seen
    assert_terminal_clean(seen)
    info = [line for line in seen.decode().splitlines() if "INFO" in line]
    assert len(info) == 1 and "evil?]0;pwned??RUN FORGED" in info[0], seen

    rc, seen = run_in_pty([VMAUDIT, "history", "--state-dir", str(state)])
    assert rc == 0, seen
    assert_terminal_clean(seen)
    lines = seen.decode().splitlines()
    assert len(lines) == 2 and lines[0].startswith("RUN") and "FORGED" in lines[1], seen


def test_one_line_error_quoting_an_input_file_is_clean(tmp_path):
    pol = tmp_path / "policy.toml"
    pol.write_text('[hosts]\n"\x1b]0;pwned\x07" = 1\n', encoding="utf-8")
    rc, seen = run_in_pty([VMAUDIT, "run", "--facts", "/nonexistent", "--policy", str(pol)])
    assert rc == 2, seen
    assert_terminal_clean(seen)
    assert len(seen.decode().strip().splitlines()) == 1, seen
