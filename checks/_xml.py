"""Walks of a guest's XML tree that several check modules share.

`Element.find("a/b")` and `findall("a/b")` hand every path with a '/' (or a predicate) to ElementPath,
which costs more per call than the few children it visits; the guest checks run these walks for every
definition of every guest. A plain tag (no '/') is looked up by the C code of `find`/`findall`, so a
path is walked here one plain tag at a time. Same elements, same (document) order.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET


def find_first(element: ET.Element, *tags: str) -> ET.Element | None:
    """`element.find("t1/t2/...")` for plain tags: the first match in document order, else None."""
    if len(tags) == 1:
        return element.find(tags[0])
    for child in element.findall(tags[0]):
        found = find_first(child, *tags[1:])
        if found is not None:
            return found
    return None


def find_all(element: ET.Element, *tags: str) -> list[ET.Element]:
    """`element.findall("t1/t2/...")` for plain tags, in document order."""
    nodes = element.findall(tags[0])
    for tag in tags[1:]:
        nodes = [child for node in nodes for child in node.findall(tag)]
    return nodes
