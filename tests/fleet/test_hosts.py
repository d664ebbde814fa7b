"""Host inventories for `vmaudit collect`: Ansible INI and YAML, plain lists; errors name file and line."""

from __future__ import annotations

import pytest

from vmaudit.fleet.hosts import InventoryError, hosts_from_list, load_hosts, parse_hosts_text

INI = """\
# production hypervisors
jump01 ansible_host=10.0.0.1

[dmz]
hv[01:03].example.net ansible_user=audit
hv-special:2222 ansible_host=10.1.1.9 vmaudit_zone="internal"

[dmz:vars]
vmaudit_zone=dmz
vmaudit_migration_group=mg-dmz

[hypervisors:children]
dmz

[hypervisors:vars]
vmaudit_zone=none
ansible_port=22
"""

YAML = """\
all:
  vars:
    ansible_user: root
  children:
    hypervisors:
      vars:
        vmaudit_zone: internal
        ansible_port: 2206
      children:
        dmz:
          vars:
            vmaudit_zone: dmz
          hosts:
            hv-a:
              ansible_host: 127.0.6.11
              vmaudit_migration_peers: [hv-b]
        internal:
          hosts:
            hv-b:
              ansible_host: 127.0.6.12
              ansible_port: 2207
            db[a:c]:
"""


def test_ini_groups_ranges_and_variable_precedence():
    inv = parse_hosts_text(INI, "prod.ini")
    assert list(inv.hosts) == ["jump01", "hv01.example.net", "hv02.example.net", "hv03.example.net", "hv-special"]
    hv = inv.hosts["hv02.example.net"]
    # the child group's vars (dmz) win over the parent's (hypervisors); host vars over both
    assert (hv.zone, hv.user, hv.port, hv.migration_group) == ("dmz", "audit", 22, "mg-dmz")
    assert hv.groups == ["dmz", "hypervisors"]
    special = inv.hosts["hv-special"]
    assert (special.address, special.port, special.zone) == ("10.1.1.9", 2222, "internal")
    jump = inv.hosts["jump01"]
    assert (jump.address, jump.port, jump.zone, jump.groups) == ("10.0.0.1", None, None, ["ungrouped"])
    assert [h.name for h in inv.select(["hypervisors"])] == ["hv01.example.net", "hv02.example.net",
                                                             "hv03.example.net", "hv-special"]
    assert [h.name for h in inv.select(["hv0[13]*", "jump01"])] == ["jump01", "hv01.example.net", "hv03.example.net"]


def test_yaml_nested_children_and_typed_values(tmp_path):
    path = tmp_path / "hosts.yml"
    path.write_text(YAML)
    inv = load_hosts(str(path))
    a, b = inv.hosts["hv-a"], inv.hosts["hv-b"]
    assert (a.address, a.port, a.user, a.zone, a.migration_peers) == ("127.0.6.11", 2206, "root", "dmz", ["hv-b"])
    assert (b.address, b.port, b.zone) == ("127.0.6.12", 2207, "internal")
    assert [h for h in inv.hosts if h.startswith("db")] == ["dba", "dbb", "dbc"]
    assert inv.hosts["dbb"].zone == "internal"


def test_plain_list_with_user_and_port(tmp_path):
    path = tmp_path / "hosts.txt"
    path.write_text("# one a line\nroot@hv01:2206\nhv02\n\nops@10.0.0.3 vmaudit_zone=dmz\n")
    inv = load_hosts(str(path))
    assert [(h.name, h.user, h.port, h.zone) for h in inv.hosts.values()] == [
        ("hv01", "root", 2206, None), ("hv02", None, None, None), ("10.0.0.3", "ops", None, "dmz")]
    cli = hosts_from_list(["a,b", "root@c:22"])
    assert list(cli.hosts) == ["a", "b", "c"] and cli.hosts["c"].user == "root"


@pytest.mark.parametrize("name, text, words", [
    ("bad.ini", "[dmz\nhv01\n", "bad.ini, line 1: bad section header"),
    ("bad.ini", "[dmz:hosts]\nhv01\n", "bad.ini, line 1: unknown section type ':hosts'"),
    ("bad.ini", "[dmz]\nhv01 zone\n", "bad.ini, line 2: expected 'name=value' after the host name"),
    ("bad.ini", "[dmz]\nhv01\nhv02\nhv01 ansible_port=22\n", "bad.ini, line 4: host hv01 is listed twice in group [dmz] (first at line 2)"),
    ("bad.ini", "[dmz]\nhv[01-03]\n", "bad.ini, line 2: bad host range"),
    # refused before 10^12 names are built (a typo must not exhaust the collector's memory)
    ("bad.ini", "[dmz]\nhv[0:9999999999]\n", "bad.ini, line 2: host range in 'hv[0:9999999999]' expands to too many hosts"),
    ("bad.ini", "[dmz]\nhv[1:" + "9" * 5000 + "]\n", "bad.ini, line 2: host range in 'hv[1:9999"),  # int() would refuse it
    ("bad.ini", "[dmz]\n" + "h" * 300 + "[1:90000]\n", "bad.ini, line 2: host name 'hhhh"),  # 90,000 names of 300+ chars
    ("bad.ini", "[dmz]\nhv01 ansible_port=ssh\n", "bad.ini, line 2: host hv01: ansible_port 'ssh' is not a TCP port"),
    # issue 12: int() made 22.5 port 22 and true port 1
    ("bad.yml", "all:\n  hosts:\n    hv01:\n      ansible_port: 22.5\n", "bad.yml, line 4: host hv01: ansible_port 22.5 is not a TCP port"),
    ("bad.yml", "all:\n  hosts:\n    hv01:\n      ansible_port: true\n", "bad.yml, line 4: host hv01: ansible_port True is not a TCP port"),
    ("bad.yml", "all:\n  hosts:\n    hv01:\n      ansible_port: [22]\n", "bad.yml, line 4: host hv01: ansible_port [22] is not a TCP port"),
    ("bad.ini", "[dmz]\nhv01 ansible_port=0x16\n", "bad.ini, line 2: host hv01: ansible_port '0x16' is not a TCP port"),
    ("bad.ini", "[dmz]\nhv01 vmaudit_mode=magic\n", "line 2: host hv01: vmaudit_mode 'magic' is not one of"),
    ("bad.ini", "[a:children]\nb\n[b:children]\na\n", "bad.ini: group 'a' is its own ancestor"),
    ("bad.ini", "[dmz]\nhv01 ansible_become=sure\n", "line 2: host hv01: ansible_become: 'sure' is not a boolean"),
    ("bad.ini", "[dmz]\nhv01\n[dmz:vars]\nvmaudit_become=maybe\n", "line 2: host hv01: vmaudit_become: 'maybe'"),
    ("bad.ini", "[dmz]\nhv01 ansible_become_user=-oops\n", "host hv01: ansible_become_user '-oops' is not a user"),
    ("bad.ini", "[dmz]\nhv01 \"ansible_become_user=a b\"\n", "host hv01: ansible_become_user 'a b' is not a user"),
    ("bad.ini", "[dmz]\nhv01 \"vmaudit_command=vmaudit 'x\"\n", "line 2: host hv01: vmaudit_command: No closing"),
    ("bad.ini", "[dmz]\nhv01 \"vmaudit_command= \"\n", "line 2: host hv01: vmaudit_command: vmaudit_command is blank"),
    ("bad.yml", "all:\n  hosts:\n    hv01:\n      ansible_become: [yes]\n", "bad.yml, line 4: host hv01: ansible_become: [True] is not a boolean"),
    ("list.txt", "hv01\nhv02\nhv01\n", "list.txt, line 3: host hv01 is listed twice in the list (first at line 1)"),
    ("list.txt", "hv01\nhv02:twenty\n", "list.txt, line 2: hv02:twenty: the port after ':' must be a number"),
    ("bad.yml", "all:\n  hosts:\n    hv01:\n   bad: [\n", "bad.yml, line 4: invalid YAML"),
    ("bad.yml", "all:\n  hosts:\n    hv01:\n    hv01:\n", "bad.yml, line 4: duplicate key 'hv01' in the hosts of group 'all' (first at line 3)"),
    ("bad.yml", "all:\n  host:\n    hv01:\n", "bad.yml, line 3: unknown key 'host' in group 'all'"),
    ("bad.yml", "all:\n  hosts:\n    - hv01\n", "bad.yml, line 3: the hosts of group 'all' must be a mapping"),
])
def test_bad_inventories_name_the_file_and_line(tmp_path, name, text, words):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InventoryError) as err:
        load_hosts(str(path))
    assert str(err.value).startswith(str(path)), str(err.value)
    assert words in str(err.value), str(err.value)


def test_unknown_hosts_in_limit_and_peers_are_errors(tmp_path):
    from vmaudit.fleet.evaluate import peer_map
    from vmaudit.policy import Policy

    path = tmp_path / "inv.ini"
    path.write_text("[dmz]\nhv01\nhv02 vmaudit_migration_peers=hv09\n")
    inv = load_hosts(str(path))
    with pytest.raises(InventoryError, match=r"inv.ini: --limit hv07: no such host or group"):
        inv.select(["hv07"])
    with pytest.raises(Exception, match=r"inv.ini, line 3: host hv02: vmaudit_migration_peers names 'hv09'"):
        peer_map(list(inv.hosts.values()), Policy())


def test_missing_inventory_file(tmp_path):
    with pytest.raises(InventoryError, match="nope.ini: cannot read inventory"):
        load_hosts(str(tmp_path / "nope.ini"))


BECOME_INI = """\
[hv]
hv01 ansible_become=YES
hv02 ansible_become=Off ansible_become_method=doas ansible_become_user="#0"
hv03 ansible_become=1 vmaudit_become=no
hv04 vmaudit_become=On ansible_become=false
hv05
hv06 ansible_become=t ansible_become_user=audit$
hv07 ansible_become= vmaudit_command="/opt/vmaudit/bin/python -m vmaudit"

[hv:vars]
ansible_become_user=svc-audit
"""

BECOME_YAML = """\
all:
  vars:
    ansible_become: true
  hosts:
    y1:
    y2:
      ansible_become: no
    y3:
      vmaudit_become: "False"
    y4:
      ansible_become: 0
      vmaudit_become: 1
"""


def test_become_variables_ini_strings_yaml_booleans_and_precedence():
    inv = parse_hosts_text(BECOME_INI, "become.ini")
    h = inv.hosts
    assert [h[n].become for n in h] == [True, False, False, True, None, True, None]
    assert (h["hv02"].become_method, h["hv02"].become_user) == ("doas", "#0")
    assert (h["hv01"].become_method, h["hv01"].become_user) == (None, "svc-audit")   # group var
    assert h["hv06"].become_user == "audit$"
    assert h["hv07"].command == ["/opt/vmaudit/bin/python", "-m", "vmaudit"]
    assert h["hv01"].command == ["vmaudit"]
    y = parse_hosts_text(BECOME_YAML, "become.yml").hosts
    assert [y[n].become for n in ("y1", "y2", "y3", "y4")] == [True, False, False, True]


def test_become_for_host_vars_win_over_the_runs_defaults_and_unsupported_methods_are_refused():
    from vmaudit.fleet.collect import Become, Settings, become_for
    from vmaudit.fleet.hosts import FleetHost
    from vmaudit.fleet.ssh import Unreached

    flag = Settings(become=True, become_method="doas", become_user="audit")
    assert become_for(FleetHost("h"), Settings()) is None
    assert become_for(FleetHost("h"), flag) == Become("doas", "audit")
    assert become_for(FleetHost("h", {"vmaudit_become": "no"}), flag) is None
    assert become_for(FleetHost("h", {"ansible_become": "yes", "ansible_become_method": "sudo"}), flag) \
        == Become("sudo", "audit")
    assert become_for(FleetHost("h", {"ansible_become": True}), Settings()) == Become("sudo", "root")
    # a method set for the whole inventory does not matter where nothing is escalated
    assert become_for(FleetHost("h", {"ansible_become_method": "su"}), Settings()) is None
    for method in ("su", "pbrun", "SUDO", "machinectl"):
        with pytest.raises(Unreached) as err:
            become_for(FleetHost("h", {"ansible_become": "yes", "ansible_become_method": method}), Settings())
        assert err.value.stage == "become"
        assert f"become method {method!r} is not supported" in str(err.value)
