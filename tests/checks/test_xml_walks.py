"""checks/_xml.py: the plain-tag walks the guest checks use instead of ElementPath find the same
elements, in the same order, as Element.find / findall of the same path."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from vmaudit.checks._xml import find_all, find_first

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "libvirt"

# repeated parents, a first parent without the child, children at the wrong depth
TRICKY = """<domain>
  <memoryBacking><hugepages/></memoryBacking>
  <memoryBacking><access mode='private'/><access mode='shared'/></memoryBacking>
  <devices>
    <interface type='hostdev'><source><address bus='0x01'/></source><source><address bus='0x02'/></source></interface>
    <interface type='network'><source network='default'/></interface>
    <address bus='0x03'/>
  </devices>
  <devices><interface type='hostdev'><source><address bus='0x04'/></source></interface></devices>
</domain>"""

PATHS = [("memoryBacking", "access"), ("devices", "interface", "source", "address"), ("devices", "interface"),
         ("devices", "address"), ("os", "loader"), ("devices",), ("nothere", "access")]


def trees() -> list[ET.Element]:
    out = [ET.fromstring(TRICKY)]
    for path in sorted(FIXTURES.glob("*.xml")):
        out.extend(ET.fromstring(path.read_text()).iter("domain"))
    return out


def test_find_all_is_findall_of_the_path():
    for tree in trees():
        for tags in PATHS:
            assert find_all(tree, *tags) == tree.findall("/".join(tags)), tags


def test_find_first_is_find_of_the_path():
    for tree in trees():
        for tags in PATHS:
            assert find_first(tree, *tags) is tree.find("/".join(tags)), tags


def test_the_tricky_tree_has_what_the_checks_look_for():
    tree = ET.fromstring(TRICKY)
    assert find_first(tree, "memoryBacking", "access").get("mode") == "private"  # the first in document order
    assert [a.get("bus") for a in find_all(tree, "devices", "interface", "source", "address")] == \
        ["0x01", "0x02", "0x04"]
    assert find_first(tree, "memoryBacking", "nothere") is None
