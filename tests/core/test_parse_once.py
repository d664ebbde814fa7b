"""Each guest definition is parsed once per audit: the engine parses a guest's XML for its guest checks,
keeps the views host checks need, and drops the tree. A check that reads a dropped tree parses the XML
again (Guest.tree), every guest of the host over: on 10,000 guests that costs as much as the audit's
own parse, and keeps every tree in memory. Audited here on every fixture host, with a policy that turns
on the checks that read guests host-wide (networks mapped to zones, a host zone)."""

from __future__ import annotations

import functools
import json

import pytest
from vmtest import audit, domain_parses, host_root, make_policy, test_uri

from vmaudit.audit import collect_facts

POLICY = """
[host]
zone = "dmz"

[zones.networks]
"br-dmz" = "dmz"
"br-int" = "internal"
"default" = "internal"
"""

NODES = [("debian-broken", "m2-broken"), ("debian-broken", "m3-broken"), ("rhel-broken", "m3-broken"),
         ("debian-hardened", "m3-hardened"), ("debian-broken", "guests-mixed"), ("debian-broken", "core"),
         ("debian-hardened", "hardened"), ("empty", "reports-hostile")]


@functools.cache
def _snapshot(host: str, node: str) -> str:
    return json.dumps(collect_facts(root=str(host_root(host)), uri=test_uri(node)))


@pytest.mark.parametrize("host,node", NODES)
def test_each_definition_is_parsed_once(host, node, monkeypatch):
    facts = json.loads(_snapshot(host, node))
    definitions = sum(isinstance(d.get(k), str) for d in facts["sources"]["libvirt"]["domains"]
                      for k in ("xml", "xml_inactive"))
    assert definitions, "a fixture without guests proves nothing here"
    parsed = domain_parses(monkeypatch)
    audit(facts=facts, policy=make_policy(POLICY))
    assert len(parsed) <= definitions, f"{len(parsed)} parses of {definitions} definitions"
