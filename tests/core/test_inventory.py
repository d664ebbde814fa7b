"""The central guest registry: CSV or JSON, strict keys, clear errors."""

from __future__ import annotations

import pytest

from vmaudit.inventory import load_inventory, parse_inventory
from vmaudit.policy import PolicyError

U1 = "11111111-2222-3333-4444-555555555555"
U2 = "aaaaaaaa-2222-3333-4444-555555555555"


def test_csv_and_json_give_the_same_labels():
    csv_inv = parse_inventory(f"uuid,name,zone,service,owner,redundancy,patch_group,host\n"
                              f"{U1},web01,dmz,shop,web-team,shop-fe,pg1,hv01\n", "inv.csv")
    json_inv = parse_inventory(f'[{{"uuid": "{U1.upper()}", "name": "web01", "zone": "dmz", "service": "shop",'
                               f' "owner": "web-team", "redundancy": "shop-fe", "patch_group": "pg1",'
                               f' "host": "hv01"}}]', "inv.json")
    for inv in (csv_inv, json_inv):
        assert inv.labels_for(U1) == {"zone": "dmz", "service": "shop", "owner": "web-team",
                                      "redundancy": "shop-fe", "patch_group": "pg1"}
        assert inv.find(U2) is None


@pytest.mark.parametrize("text, words", [
    ("name,zone\nweb01,dmz\n", "line 1: the CSV header must name a 'uuid' column"),
    (f"uuid,name,colour\n{U1},web01,blue\n", "line 2: unknown key(s) 'colour'"),
    (f"uuid,name\n{U1},a\n{U1},b\n", "line 3: uuid " + U1 + " is listed twice (first at line 2)"),
    ("uuid,name\n,web01\n", "line 2: 'uuid' is required"),
    ('[{"uuid": "x",}]', "line 1: invalid JSON"),
    ('{"uuid": "x"}', "must be a JSON list"),
    # issue 12: values that cannot be a guest's UUID or label
    ("uuid,name\nweb01,web01\n", "line 2: uuid 'web01' is not a UUID"),
    (f"uuid,name\n{U1}x,web01\n", "line 2: uuid '" + U1 + "x' is not a UUID"),
    (f'[{{"uuid": "{U1}", "zone": ["dmz", "internal"]}}]', "entry #1: 'zone' must be a string, not a list"),
    (f'[{{"uuid": "{U1}", "zone": NaN}}]', "entry #1: 'zone' must be a string, not a number NaN"),
    (f'[{{"uuid": "{U1}", "owner": true}}]', "entry #1: 'owner' must be a string, not a boolean"),
    (f'[{{"uuid": "{U1}", "service": {{"a": 1}}}}]', "entry #1: 'service' must be a string, not an object"),
    (f'[{{"uuid": "{U1}", "zone": ""}}]', "entry #1: 'zone' is an empty string"),
    (f'[{{"uuid": "{U1}", "name": "web\\u0000x"}}]', "entry #1: 'name' holds a NUL character"),
    ('[{"uuid": 5}]', "entry #1: 'uuid' must be a string, not a number"),
])
def test_bad_inventories(text, words):
    with pytest.raises(PolicyError) as err:
        parse_inventory(text, "/etc/vmaudit/inventory.csv")
    assert str(err.value).startswith("/etc/vmaudit/inventory.csv") and words in str(err.value), str(err.value)


def test_csv_saved_by_a_spreadsheet_with_a_bom(tmp_path):
    # Excel's "CSV UTF-8" starts the file with U+FEFF; the header is still 'uuid'
    from vmaudit.inventory import load_inventory

    path = tmp_path / "registry.csv"
    path.write_bytes(b"\xef\xbb\xbfuuid,name,zone\n11111111-2222-3333-4444-555555555555,web01,dmz\n")
    inv = load_inventory(str(path))
    assert inv.labels_for("11111111-2222-3333-4444-555555555555") == {"zone": "dmz"}


def test_nul_in_a_csv_inventory_file_names_file_and_offset(tmp_path):
    path = tmp_path / "inventory.csv"
    path.write_bytes(f"uuid,name\n{U1},web\x0001\n".encode())
    with pytest.raises(PolicyError, match=f"^{path}: inventory holds binary data \\(a NUL byte at offset 50\\)"):
        load_inventory(str(path))


def test_uuid_forms_libvirt_accepts():
    inv = parse_inventory(f"uuid,zone\n{U1.replace('-', '')},dmz\n{U2.upper()},lab\n", "inv.csv")
    assert len(inv.entries) == 2
