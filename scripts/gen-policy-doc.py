#!/usr/bin/env python3
"""Write the policy reference (docs/policy.md) and the commented example policy (etc/vmaudit/policy.toml)
from the policy schema in agent/policy.py, so that neither can drift from what vmaudit accepts.

    .venv/bin/python scripts/gen-policy-doc.py          # rewrite both files
    .venv/bin/python scripts/gen-policy-doc.py --check  # exit 1 if either is out of date
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

from vmaudit.policy import _NUM, DEFAULT_PATH, SCHEMA, SECTIONS, WAIVER_DOCS, WAIVER_KEYS

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs/policy.md"
EXAMPLE = REPO / "etc/vmaudit/policy.toml"

# Example values for keys without a default (the example file shows them commented out).
EXAMPLES = {
    ("host", "zone"): "dmz",
    ("host", "migration_peers"): ["hv02", "hv03"],
    ("zones", "networks"): {"br-dmz": "dmz", "vlan:20": "internal"},
    ("limits", "max_services"): 10,
    ("services", "monitoring_agent"): "node_exporter",
    ("admins", "allow"): ["alice", "bob"],
    ("admins", "root_equivalent_groups"): ["docker", "lxd", "incus-admin", "disk"],  # the built-in list
    ("inventory", "path"): "/etc/vmaudit/inventory.csv",
    ("guests", "eol_os"): ["http://centos.org/centos/7*", "http://debian.org/debian/10"],
    ("agent", "state_dir"): "/var/lib/vmaudit",
    ("fleet", "history_days"): 90,
}
WAIVER_EXAMPLE = {"check": "M2-IOMMU", "resource": "host", "reason": "lab host without VT-d",
                  "expires": "2027-01-31", "ticket": "SEC-1234"}


def type_name(kind) -> str:
    if isinstance(kind, list):
        return f"list of {type_name(kind[0])}s"
    if kind == _NUM:
        return "number"
    if isinstance(kind, tuple):
        return " or ".join(type_name(k) for k in kind)
    return {int: "integer", float: "number", str: "string", bool: "boolean", dict: "table"}.get(kind, "date")


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def example_value(section: str, key: str):
    default = SCHEMA[section][key][1]
    if (section, key) in EXAMPLES:
        return EXAMPLES[(section, key)]
    if default is None:
        raise SystemExit(f"gen-policy-doc: [{section}] {key} has no default: give it an example in EXAMPLES")
    return default


def render_doc() -> str:
    out = ["# Policy reference", "",
           "Generated from the policy schema (`agent/policy.py`) by `scripts/gen-policy-doc.py`; a test keeps it",
           "current. The same schema validates every policy vmaudit reads.", "",
           f"vmaudit reads `{DEFAULT_PATH}` when it exists (or the file given with `--policy FILE`); without",
           "one it uses the defaults below. The file is TOML. Every section and key is optional; an unknown",
           "section or key, a value of the wrong type and a waiver without `reason` or `expires` are errors:",
           "vmaudit then audits nothing and exits 2 with one line naming the file, the line and the problem.",
           "Check a file before deploying it:", "",
           "```sh", f"vmaudit policy check {DEFAULT_PATH}   # exit 0: valid; exit 2: the reason, on one line",
           "```", "",
           "A commented example with every key is [`etc/vmaudit/policy.toml`](../etc/vmaudit/policy.toml)",
           f"(`scripts/install.sh` installs it as `{DEFAULT_PATH}` when there is none).", ""]
    for section, keys in SCHEMA.items():
        header = "[zones.networks]" if section == "zones" else f"[{section}]"
        out += [f"## `{header}`", "", SECTIONS[section], "",
                "| key | type | default | meaning |", "|---|---|---|---|"]
        for key, (kind, default, meaning) in keys.items():
            shown = "unset" if default is None else f"`{toml_value(default)}`"
            name = "*network* = *zone*" if section == "zones" else f"`{key}`"
            out.append(f"| {name} | {type_name(kind)} | {shown} | {meaning} |")
        out.append("")
    out += ["## `[[waivers]]`", "",
            "Accepted findings, one `[[waivers]]` table each. A waived finding keeps its status, gains `waiver`,",
            "counts as `waived` and never changes the exit status; an expired waiver no longer applies.", "",
            "| key | type | default | meaning |", "|---|---|---|---|"]
    for key, kind in WAIVER_KEYS.items():
        default, meaning = WAIVER_DOCS[key]
        out.append(f"| `{key}` | {type_name(kind)} | {default} | {meaning} |")
    out += ["", "## Example", "", "```toml", example_text(commented=False).rstrip("\n"), "```"]
    return "\n".join(out) + "\n"


def _comment(text: str) -> list[str]:
    return ["# " + line for line in textwrap.wrap(text, width=98)]


def example_text(commented: bool = True) -> str:
    """The example policy: every key with its default or an example value. commented=True writes the
    settings as comments (the installed file then changes nothing until someone edits it)."""
    c = "# " if commented else ""
    out = []
    if commented:
        out += [f"# vmaudit policy ({DEFAULT_PATH}). Every key is optional: each commented-out setting below",
                "# shows the built-in default, or an example where there is none. Uncomment to change it.",
                "# Reference: docs/policy.md in the vmaudit repository. After an edit, check the file with:",
                f"#   vmaudit policy check {DEFAULT_PATH}", ""]
    for section, keys in SCHEMA.items():
        if commented:
            out += _comment(SECTIONS[section])
        if section == "zones":
            out.append("[zones.networks]")
            if commented:
                out += _comment(keys["networks"][2])
            out += [f"{c}{json.dumps(k)} = {json.dumps(v)}" for k, v in example_value("zones", "networks").items()]
            out.append("")
            continue
        out.append(f"[{section}]")
        for key, (_kind, _default, meaning) in keys.items():
            if commented:
                out += _comment(meaning)
            out.append(f"{c}{key} = {toml_value(example_value(section, key))}")
        out.append("")
    if commented:
        out += _comment("Accepted findings: one [[waivers]] table each; check, reason and expires are required.")
    out.append(f"{c}[[waivers]]")
    for key, value in WAIVER_EXAMPLE.items():
        out.append(f"{c}{key} = {value if key == 'expires' else json.dumps(value)}")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    outputs = {DOC: render_doc(), EXAMPLE: example_text()}
    if "--check" in sys.argv:
        stale = [str(p.relative_to(REPO)) for p, text in outputs.items()
                 if not p.exists() or p.read_text() != text]
        if stale:
            sys.exit(f"{', '.join(stale)} out of date: run scripts/gen-policy-doc.py")
        sys.exit(0)
    for path, text in outputs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
