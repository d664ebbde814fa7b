"""The central guest registry: CSV or JSON, strict keys, clear errors."""

from __future__ import annotations

import pytest

from vmaudit.inventory import parse_inventory
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
