"""Every value of a guest's XML, replaced by something libvirt would never write: no check may crash and
the audit must finish. The XML is one string to the facts schemas, so a hand-edited definition file
(`--root` reads them) or a hostile agent can put anything there; what reads a value it cannot use
reports missing evidence (`error`), never an internal error."""

from __future__ import annotations

import copy
import functools
import json
import xml.etree.ElementTree as ET

import pytest
from vmtest import audit, host_root, test_uri

from vmaudit.audit import collect_facts
from vmaudit.engine import INTERNAL_ERROR

JUNK = ("junk", "-1", "", "99999999999999999999999", "0x10")


@functools.cache
def _snapshot(node: str) -> str:
    return json.dumps(collect_facts(root=str(host_root("debian-broken")), uri=test_uri(node)))


def _sites(tree: ET.Element) -> list[tuple[ET.Element, str | None]]:
    """(element, attribute) of every attribute and (element, None) of every text in document order."""
    out: list = []
    for el in tree.iter():
        out.extend((el, a) for a in el.attrib)
        if el.text and el.text.strip():
            out.append((el, None))
    return out


def _mutations(node: str):
    base = json.loads(_snapshot(node))
    for index, record in enumerate(base["sources"]["libvirt"]["domains"]):
        count = len(_sites(ET.fromstring(record["xml"])))
        for site in range(count):
            for junk in JUNK:
                yield base, index, site, junk


@pytest.mark.parametrize("node", ["m2-broken", "m3-broken", "guests-mixed"])
def test_no_value_in_a_guest_definition_crashes_a_check(node):
    crashed: dict = {}
    for base, index, site, junk in _mutations(node):
        facts = copy.deepcopy(base)
        record = facts["sources"]["libvirt"]["domains"][index]
        tree = ET.fromstring(record["xml"])
        element, attr = _sites(tree)[site]
        if attr is None:
            element.text = junk
        else:
            element.set(attr, junk)
        xml = ET.tostring(tree, encoding="unicode")
        for key in ("xml", "xml_inactive"):  # every definition the guest has
            if key in record:
                record[key] = xml
        where = f"<{element.tag}{' ' + attr if attr else ''}> = {junk!r} in guest {record['name']}"
        report = audit(facts=facts)  # raises if the audit itself crashes
        for f in report["findings"]:
            if f["message"].startswith(INTERNAL_ERROR):
                crashed.setdefault(f["check_id"], f"{where}: {f['message']}")
    assert not crashed, crashed
