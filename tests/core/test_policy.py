"""The policy file: strict TOML, errors that name the file and line, waivers, defaults."""

from __future__ import annotations

from datetime import date

import pytest

from vmaudit.policy import Policy, PolicyError, load_policy, parse_interval, parse_policy, parse_size

FULL = """
[host]
zone = "dmz"                       # the one zone this host may serve
migration_peers = ["hv02", "hv03"]

[zones.networks]
"br-dmz" = "dmz"
"vlan:20" = "internal"

[limits]
max_running_guests = 20
cpu_overcommit = 4.0
host_memory_reserve = "10%"

[patch]
warn_days = 14
fail_days = 30

[services]
allow = ["node_exporter"]

[admins]
max = 3
allow = ["alice", "bob"]

[[waivers]]
check = "M2-IOMMU"
resource = "host"
reason = "lab host without VT-d"
expires = 2027-01-31
ticket = "SEC-1234"
"""


def test_contract_example_parses():
    p = parse_policy(FULL, "policy.toml")
    assert p.zone == "dmz"
    assert p.get("host", "migration_peers") == ["hv02", "hv03"]
    assert p.get("zones", "networks") == {"br-dmz": "dmz", "vlan:20": "internal"}
    assert p.get("limits", "cpu_overcommit") == 4.0
    assert p.waivers[0].expires == date(2027, 1, 31) and p.waivers[0].ticket == "SEC-1234"
    assert len(p.sha256) == 64


def test_defaults_when_unset():
    p = Policy()
    assert p.get("limits", "max_running_guests") == 20
    assert p.get("patch", "fail_days") == 30
    assert p.get("admins", "max") == 3
    assert p.zone is None


@pytest.mark.parametrize("text, where, words", [
    ("[host]\nzone = dmz\n", "line 2", "invalid TOML"),
    ("[limits]\nmax_running_guests = 20\nmax_guests = 4\n", "line 3", "unknown key 'max_guests' in [limits]"),
    ("[nosuch]\na = 1\n", "line 1", "unknown section [nosuch]"),
    ("\n[limits]\nmax_running_guests = \"many\"\n", "line 3", "must be an integer"),
    ("[admins]\nallow = \"alice\"\n", "line 2", "must be a list of a string"),
    ("[fleet]\ncommand_timeout = inf\n", "line 2", "finite number"),
    ("[limits]\ncpu_overcommit = nan\n", "line 2", "finite number"),
    ("[limits]\nhost_memory_reserve = \"lots\"\n", "line 2", "not a size"),
    ("[[waivers]]\ncheck = \"M2-IOMMU\"\nexpires = 2027-01-01\n", "line 2", "needs 'reason'"),
    ("[[waivers]]\ncheck = \"M2-IOMMU\"\nreason = \"x\"\n", "line 2", "needs 'expires'"),
    ("[[waivers]]\ncheck = \"M2-IOMMU\"\nreason = \"x\"\nexpires = \"soon\"\n", "line 4", "must be a date"),
    ("[[waivers]]\ncheck = \"M2-IOMMU\"\nreason = \"x\"\nexpires = 2027-01-01\nowner = \"me\"\n",
     "line 5", "unknown key 'owner'"),
])
def test_bad_policies_name_file_and_line(text, where, words):
    with pytest.raises(PolicyError) as err:
        parse_policy(text, "/etc/vmaudit/policy.toml")
    msg = str(err.value)
    assert msg.startswith("/etc/vmaudit/policy.toml") and where in msg and words in msg, msg
    assert "\n" not in msg


WAIVERS = ('[[waivers]]\ncheck = "M2-IOMMU"\nreason = "lab"\nexpires = 2027-01-01\n\n'
           '[[waivers]]\ncheck = "M2-BALLOON"\nreason = "x"\nexpires = 2027-01-01\n\n')


@pytest.mark.parametrize("third, where, words", [
    ('[[waivers]]\ncheck = "M3-KSM"\nreason = "x"\nexpires = "2027-01-01"\n', "line 14", "waiver #3: 'expires'"),
    ('[[waivers]]\ncheck = "M3-KSM"\nexpires = 2027-01-01\n', "line 12", "waiver #3 needs 'reason'"),
    ('[[waivers]]\nexpires = 2027-01-01\nreason = "x"\n', "line 11", "waiver #3 needs 'check'"),
    ('[[waivers]]\ncheck = "M3-KSM"\nreason = "x"\nexpires = 2027-01-01\nowner = "me"\n', "line 15",
     "waiver #3: unknown key 'owner'"),
])
def test_a_bad_waiver_is_named_by_its_own_line(third, where, words):
    # not the line of the same key in the first waiver
    with pytest.raises(PolicyError) as err:
        parse_policy(WAIVERS + third, "p.toml")
    assert str(err.value).startswith(f"p.toml, {where}: ") and words in str(err.value), str(err.value)


def test_datetime_expiry_is_refused():
    with pytest.raises(PolicyError, match="must be a date"):
        parse_policy('[[waivers]]\ncheck="X"\nreason="r"\nexpires=2027-01-01T10:00:00\n', "p.toml")


def test_load_policy_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(PolicyError, match="nope.toml: cannot read policy"):
        load_policy(str(tmp_path / "nope.toml"))


def test_load_policy_resolves_relative_inventory(tmp_path):
    (tmp_path / "inv.csv").write_text("uuid,name,zone\n11111111-2222-3333-4444-555555555555,web01,dmz\n")
    (tmp_path / "policy.toml").write_text('[inventory]\npath = "inv.csv"\n')
    p = load_policy(str(tmp_path / "policy.toml"))
    assert p.inventory.labels_for("11111111-2222-3333-4444-555555555555") == {"zone": "dmz"}


def test_sizes_and_intervals():
    assert parse_size("10%", total_mib=2048) == pytest.approx(204.8)
    assert parse_size("2GiB", total_mib=1) == 2048
    assert parse_size(512, total_mib=1) == 512
    assert parse_interval("6h") == 21600 and parse_interval("1d") == 86400 and parse_interval(90) == 90
    with pytest.raises(ValueError):
        parse_interval("0m")


# --- the example policy (etc/vmaudit/policy.toml) and `vmaudit policy check` ---

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "etc/vmaudit/policy.toml"
SETTING = __import__("re").compile(r"^# (\[\[waivers\]\]|[a-z_\"][\w\".:-]* = .*)$")


def _uncommented(text: str) -> str:
    return "\n".join(SETTING.sub(r"\1", line) for line in text.splitlines()) + "\n"


def test_the_example_policy_is_valid_and_changes_no_default():
    policy = parse_policy(EXAMPLE.read_text(), str(EXAMPLE))
    set_keys = {(section, key) for section, keys in policy.values.items() for key in keys}
    assert set_keys <= {("zones", "networks")} and not policy.get("zones", "networks")
    assert not policy.waivers


def test_every_setting_of_the_example_is_valid_and_every_key_is_there():
    """Uncommented, the example sets every key of the schema (and a waiver) with values vmaudit accepts;
    where a key has a default, the example shows that default."""
    from vmaudit.policy import SCHEMA

    policy = parse_policy(_uncommented(EXAMPLE.read_text()), "example")
    for section, keys in SCHEMA.items():
        for key, (_kind, default, _doc) in keys.items():
            assert policy.is_set(section, key), f"[{section}] {key} missing from the example"
            if default is not None and section != "zones":
                assert policy.get(section, key) == default, (section, key)
    assert len(policy.waivers) == 1 and policy.waivers[0].reason


def _cli(*args: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "vmaudit", *args], capture_output=True, text=True, timeout=60)


def test_policy_check_accepts_a_valid_file():
    proc = _cli("policy", "check", str(EXAMPLE))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{EXAMPLE}: valid")


@pytest.mark.parametrize("text, reason", [
    ("[limits]\nmax_running_guests = \"20\"\n", "line 2: [limits] max_running_guests must be an integer"),
    ("[host]\nzone = \"dmz\"\nzones = 1\n", "line 3: unknown key 'zones' in [host]"),
    ("[[waivers]]\ncheck = \"M2-IOMMU\"\nreason = \"lab\"\n", "waiver #1 needs 'expires'"),
    ("[inventory]\npath = \"missing.csv\"\n", "missing.csv"),
])
def test_policy_check_refuses_a_bad_file_in_one_line(tmp_path, text, reason):
    path = tmp_path / "policy.toml"
    path.write_text(text)
    proc = _cli("policy", "check", str(path))
    assert proc.returncode == 2 and proc.stdout == ""
    # the file at fault is named: the policy, or the inventory it names
    assert proc.stderr.count("\n") == 1 and str(tmp_path) in proc.stderr and reason in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_policy_check_of_a_missing_file():
    proc = _cli("policy", "check", "/nonexistent/policy.toml")
    assert proc.returncode == 2 and "/nonexistent/policy.toml: cannot read policy" in proc.stderr
