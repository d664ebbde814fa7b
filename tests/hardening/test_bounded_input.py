"""Every input file is read with one size and depth limit (vmaudit.fsutil): an endless or deeply nested
file is a one-line exit 2 naming it, in little memory, never a traceback or gigabytes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hardhelp import vmaudit_measured  # noqa: E402

from vmaudit.fsutil import MAX_DEPTH, MAX_INPUT_BYTES  # noqa: E402

SMALL_KIB = 200 * 1024  # peak resident set of a refused input: far below the 512 MiB limit


def assert_refused(res: dict, name: str) -> None:
    lines = res["err"].strip().splitlines()
    assert res["rc"] == 2, res
    assert len(lines) == 1 and name in lines[0], res["err"]
    assert "internal error" not in res["err"] and "Traceback" not in res["err"], res["err"]
    assert res["maxrss_kib"] < SMALL_KIB, res


def test_facts_from_dev_zero():
    res = vmaudit_measured("run", "--facts", "/dev/zero")
    assert_refused(res, "/dev/zero")
    assert "NUL" in res["err"]


def test_policy_from_dev_zero():
    assert_refused(vmaudit_measured("run", "--facts", "/nonexistent", "--policy", "/dev/zero"), "/dev/zero")


def test_guest_inventory_path_dev_zero(tmp_path):
    pol = tmp_path / "policy.toml"
    pol.write_text('[inventory]\npath = "/dev/zero"\n')
    assert_refused(vmaudit_measured("run", "--facts", "/nonexistent", "--policy", str(pol)), "/dev/zero")


def test_collect_inventory_dev_zero(tmp_path):
    res = vmaudit_measured("collect", "-i", "/dev/zero", "--output", str(tmp_path / "out"))
    assert_refused(res, "/dev/zero")


def test_oversized_regular_file_refused_by_its_size(tmp_path):
    big = tmp_path / "facts.json"
    with open(big, "wb") as fh:  # sparse: takes no disk, and must not be read to be refused
        fh.truncate(MAX_INPUT_BYTES + 1)
    res = vmaudit_measured("run", "--facts", str(big))
    assert_refused(res, str(big))
    assert f"larger than {MAX_INPUT_BYTES >> 20} MiB" in res["err"]


def deep_json(depth: int) -> str:
    return '{"schema": "vmaudit-facts/1", "x": ' + "[" * depth + "]" * depth + "}"


def test_deeply_nested_facts(tmp_path):
    """Deeper than the parser goes: exit 2. (Nesting beyond MAX_DEPTH inside a source that parses is
    the facts contract's: an unavailable marker naming its path, tests/core/test_facts_contract.py.)"""
    f = tmp_path / "facts.json"
    f.write_text(deep_json(100_000))
    res = vmaudit_measured("run", "--facts", str(f))
    assert_refused(res, str(f))
    assert "nested too deeply" in res["err"]


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 50_000])
def test_deeply_nested_policy(tmp_path, depth):
    pol = tmp_path / "policy.toml"
    pol.write_text("[fleet]\nx = " + "[" * depth + "]" * depth + "\n")
    res = vmaudit_measured("run", "--facts", "/nonexistent", "--policy", str(pol))
    assert_refused(res, str(pol))
    assert "deeper than" in res["err"]


def test_deeply_nested_json_guest_inventory(tmp_path):
    inv = tmp_path / "inventory.json"
    inv.write_text("[" * 100_000 + "]" * 100_000)
    pol = tmp_path / "policy.toml"
    pol.write_text(f'[inventory]\npath = "{inv}"\n')
    res = vmaudit_measured("run", "--facts", "/nonexistent", "--policy", str(pol))
    assert_refused(res, str(inv))


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 20_000])
def test_deeply_nested_yaml_host_inventory(tmp_path, depth):
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  hosts:\n    h1:\n      x: " + "[" * depth + "]" * depth + "\n")
    res = vmaudit_measured("collect", "-i", str(inv), "--output", str(tmp_path / "out"))
    assert_refused(res, str(inv))
    assert not (tmp_path / "out").exists()


def test_report_to_diff_from_dev_zero(tmp_path):
    good = tmp_path / "r.json"
    good.write_text(json.dumps({"schema": "vmaudit-report/1"}))
    res = vmaudit_measured("diff", "/dev/zero", str(good))
    assert_refused(res, "/dev/zero")


def test_fifo_input_is_still_read(tmp_path):
    """A pipe (process substitution, <(...)) is an input like a file: read up to the limit."""
    fifo = tmp_path / "policy.toml"
    os.mkfifo(fifo)
    pid = os.fork()
    if pid == 0:
        try:
            with open(fifo, "w") as fh:
                fh.write("[fleet\n")
        finally:
            os._exit(0)
    res = vmaudit_measured("run", "--facts", "/nonexistent", "--policy", str(fifo))
    os.waitpid(pid, 0)
    assert res["rc"] == 2 and "invalid TOML" in res["err"], res


@pytest.mark.parametrize("command", ["run", "diff", "plan"])
def test_json_of_too_many_values_is_refused_before_it_is_parsed(tmp_path, command):
    """30 MiB of empty arrays parse to 10,000,000 lists (a 1 GiB file of them to 20 GB): refused by
    counting, in little memory, naming the file."""
    from vmaudit.fsutil import MAX_JSON_VALUES

    (tmp_path / "fleet").mkdir()
    many = tmp_path / ("fleet/fleet.json" if command == "plan" else "many.json")
    with open(many, "w") as fh:
        fh.write('{"schema": "vmaudit-facts/2", "host": {}, "sources": {"x": [')
        fh.write("[]," * MAX_JSON_VALUES)
        fh.write("[]]}}")
    argv = {"run": ["run", "--facts", str(many)], "diff": ["diff", str(many), str(many)],
            "plan": ["plan", str(tmp_path / "fleet")]}[command]
    res = vmaudit_measured(*argv)
    assert_refused(res, str(many))
    assert "10,000,000 JSON values" in res["err"]


def test_marks_inside_strings_are_not_values():
    """A description of commas is one string: the count sets strings aside before it refuses."""
    from vmaudit.fsutil import MAX_JSON_VALUES, check_json_values

    commas = '{"x": "' + "," * (MAX_JSON_VALUES + 5) + '", "y": [1, 2, {"z": "\\"[,"}]}'
    check_json_values(commas, "f.json", "snapshot")  # accepted, as text and as bytes
    check_json_values(commas.encode(), "f.json", "snapshot")
    many = "[" + "[]," * MAX_JSON_VALUES + "[]]"
    for text in (many, many.encode(), '["\\"",' + many[1:]):  # an escaped quote ends no string
        with pytest.raises(ValueError, match="more than 10,000,000 JSON values"):
            check_json_values(text, "f.json", "snapshot")
    # an unterminated string swallows the rest (not JSON: the parser says so), in linear time
    check_json_values('["' + '\\"' * (MAX_JSON_VALUES // 4) + ",," * MAX_JSON_VALUES + "\\", "f.json", "x")


def test_a_json_input_may_start_with_a_byte_order_mark(tmp_path):
    from vmaudit.fsutil import read_json

    bom = tmp_path / "plan.json"
    bom.write_bytes(b'\xef\xbb\xbf{"moves": []}')
    assert read_json(str(bom), "the plan") == {"moves": []}
