"""rpmvercmp (checks/_rpm_version.py) against the rpm binary's own comparator (rpm.vercmp in rpm's Lua),
over hand-picked pairs (tilde, caret, leading zeros, letters against numbers) and many random ones."""

from __future__ import annotations

import random
import shutil
import subprocess

import pytest
from vmtest import REQUIRE_REAL

from vmaudit.checks._rpm_version import evr_cmp, rpmvercmp

pytestmark = pytest.mark.skipif(not shutil.which("rpm") and not REQUIRE_REAL,
                                reason="no rpm binary (scripts/install-deps.sh --test installs it)")

CASES = [("1.0", "1.0"), ("1.0", "2.0"), ("2.0.1", "2.0"), ("2.0a", "2.0"), ("1.0~rc1", "1.0"),
         ("1.0~rc1", "1.0~rc2"), ("1.0^", "1.0"), ("1.0^git1", "1.0"), ("1.0^git1", "1.0.1"),
         ("1.0^git1", "1.0^git2"), ("1.0~rc1^git1", "1.0~rc1"), ("1.0^git1~pre", "1.0^git1"),
         ("001", "1"), ("1.01", "1.1"), ("1.010", "1.9"), ("a", "1"), ("5.4p1", "5.4"), ("el9_3", "el9_10"),
         ("1.0.", "1.0"), ("1..0", "1.0"), ("~", "0"), ("^", "0"), ("~", "^"), ("1_0", "1.0"), ("xyz", "XYZ"),
         ("1.0.0", "1.0"), ("553.el9", "553.1.1.el9")]


def rpm_vercmp_all(pairs: list[tuple[str, str]], tmp_path) -> list[int]:
    """rpm's own answers, one rpm process for all pairs (read by rpm's Lua from a tab-separated file)."""
    data = tmp_path / "pairs.tsv"
    data.write_text("".join(f"{a}\t{b}\n" for a, b in pairs))
    lua = ("%{lua: for line in io.lines('" + str(data) + "') do local t = string.find(line, string.char(9), 1, "
           "true); print(rpm.vercmp(line:sub(1, t - 1), line:sub(t + 1)) .. string.char(10)) end}")
    out = subprocess.run(["rpm", "--eval", lua], capture_output=True, text=True, check=True, timeout=120).stdout
    return [int(x) for x in out.split()]


def random_version(rng: random.Random) -> str:
    # no '-' or ':' (rpm.vercmp reads those as release and epoch separators), never empty (rpm refuses it)
    parts = ["0", "1", "01", "10", "2", "a", "b", "rc", "git", "~", "^", ".", "_", "+", "p", "Z"]
    return "".join(rng.choice(parts) for _ in range(rng.randint(1, 7)))


def test_rpmvercmp_matches_rpm_on_chosen_pairs(tmp_path):
    pairs = CASES + [(b, a) for a, b in CASES]
    assert [rpmvercmp(a, b) for a, b in pairs] == rpm_vercmp_all(pairs, tmp_path)


def test_rpmvercmp_matches_rpm_on_random_pairs(tmp_path):
    rng = random.Random(11)
    pairs = [(random_version(rng), random_version(rng)) for _ in range(5000)]
    mine = [rpmvercmp(a, b) for a, b in pairs]
    theirs = rpm_vercmp_all(pairs, tmp_path)
    assert [(p, m, t) for p, m, t in zip(pairs, mine, theirs) if m != t] == []


def test_evr_epoch_first():
    assert evr_cmp("1", "1.0", "1", None, "9.9", "9") == 1
    assert evr_cmp(None, "1.0", "1.el9", "0", "1.0", "1.el9_2") == -1
    assert evr_cmp("0", "2.0", "1", "", "2.0", "1") == 0
