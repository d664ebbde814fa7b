"""The hosts `vmaudit collect` audits: an Ansible inventory (INI or YAML) or a plain host list.

Ansible semantics are kept where vmaudit reads them: groups and `:children` / `children:` nesting,
`:vars` / `vars:` inheritance (all < parent groups < child groups < the host's own variables), host
ranges (`hv[01:20]`, `db-[a:c]`), `host:port` in INI, and the variables `ansible_host`, `ansible_port`,
`ansible_user`, `ansible_ssh_private_key_file`, `ansible_python_interpreter` and the privilege escalation
variables `ansible_become` (Ansible's booleans: yes/no, true/false, on/off, 1/0, y/n, t/f in any case, or
YAML booleans), `ansible_become_method` (sudo or doas; another method refuses the host) and
`ansible_become_user` (default root). vmaudit's own variables (all optional):

    vmaudit_zone             the zone the host serves (else the central policy's [host] zone)
    vmaudit_migration_group  hosts sharing a group are each other's migration peers
    vmaudit_migration_peers  inventory names of the host's peers (comma-separated or a YAML list)
    vmaudit_mode             auto (default), installed or agentless
    vmaudit_command          the remote vmaudit command line (default: vmaudit, found on the remote PATH;
                             split like a shell would, e.g. "/opt/vmaudit/bin/python -m vmaudit")
    vmaudit_become           escalate with sudo/doas (same booleans as ansible_become, which it overrides)
    vmaudit_python           the remote Python for the agentless run (default: ansible_python_interpreter,
                             else python3)
    vmaudit_connect          libvirt URI on the remote host (default: qemu:///system)
    vmaudit_root             audited root on the remote host (default: /)

A plain host list is the INI form without sections: one `[user@]host[:port]` per line, optionally
followed by `key=value` variables. Every error names the file and the line.
"""

from __future__ import annotations

import re
import shlex
import string
from dataclasses import dataclass, field
from typing import Any

from vmaudit.fsutil import MAX_DEPTH, read_text_bounded, too_deep

MODES = ("auto", "installed", "agentless")
BECOME_METHODS = ("sudo", "doas")
# Ansible's boolean() (module_utils/parsing/convert_bool.py), compared case-insensitively
_TRUE = frozenset(("y", "yes", "on", "1", "true", "t"))
_FALSE = frozenset(("n", "no", "off", "0", "false", "f"))
# a user name as sudo -u / doas -u take it (sudo's "#uid" too); never an option or shell text
_BECOME_USER_RE = re.compile(r"^(#[0-9]+|[A-Za-z0-9_][A-Za-z0-9_.-]*\$?)$")
_GROUP_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
_HOST_RE = re.compile(r"^[A-Za-z0-9_.\-:\[\]]+$")
_RANGE_RE = re.compile(r"\[([0-9a-zA-Z]+):([0-9a-zA-Z]+)(?::(\d+))?\]")
_MAX_EXPANSION = 100_000
_MAX_DIGITS = 10  # of a number in a host range
_MAX_NAME = 253  # characters of a host name (DNS)


from vmaudit.errors import InventoryError  # noqa: E402,F401 - re-exported


@dataclass
class FleetHost:
    """One host to audit, with its merged variables (group variables, then its own)."""

    name: str
    vars: dict = field(default_factory=dict)
    groups: list = field(default_factory=list)
    where: str = ""  # "file, line N" of its first definition, for messages

    @property
    def address(self) -> str:
        return str(self.vars.get("ansible_host") or self.name)

    @property
    def port(self) -> int | None:
        value = self.vars.get("ansible_port")
        return int(value) if value not in (None, "") else None

    @property
    def user(self) -> str | None:
        value = self.vars.get("ansible_user")
        return str(value) if value else None

    @property
    def zone(self) -> str | None:
        value = self.vars.get("vmaudit_zone")
        return str(value) if value else None

    @property
    def migration_group(self) -> str | None:
        value = self.vars.get("vmaudit_migration_group")
        return str(value) if value else None

    @property
    def migration_peers(self) -> list[str]:
        value = self.vars.get("vmaudit_migration_peers")
        if not value:
            return []
        items = value if isinstance(value, list) else str(value).split(",")
        return [str(v).strip() for v in items if str(v).strip()]

    @property
    def mode(self) -> str:
        return str(self.vars.get("vmaudit_mode") or "auto")

    @property
    def command(self) -> list[str]:
        """vmaudit_command as words (a command line, split as the shell would); ValueError if broken."""
        value = self.vars.get("vmaudit_command")
        if value in (None, ""):
            return ["vmaudit"]
        words = shlex.split(str(value))
        if not words:
            raise ValueError("vmaudit_command is blank")
        return words

    @property
    def become(self) -> bool | None:
        """vmaudit_become, else ansible_become; None when neither is set. ValueError for a non-boolean."""
        for key in ("vmaudit_become", "ansible_become"):
            value = parse_bool(self.vars.get(key))
            if value is not None:
                return value
        return None

    @property
    def become_method(self) -> str | None:
        value = self.vars.get("ansible_become_method")
        return str(value).strip() if value not in (None, "") else None

    @property
    def become_user(self) -> str | None:
        value = self.vars.get("ansible_become_user")
        return str(value).strip() if value not in (None, "") else None


def parse_bool(value: Any) -> bool | None:
    """An inventory boolean as Ansible reads it: None when unset or empty; ValueError when not one."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text == "":
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{value!r} is not a boolean (yes/no, true/false, on/off, 1/0)")


@dataclass
class Group:
    name: str
    hosts: list = field(default_factory=list)      # host names, in order of appearance
    children: list = field(default_factory=list)
    vars: dict = field(default_factory=dict)
    where: str = ""


@dataclass
class HostInventory:
    """Hosts and groups, in the order the file lists them."""

    source: str
    hosts: dict = field(default_factory=dict)       # name -> FleetHost
    groups: dict = field(default_factory=dict)      # name -> Group

    def select(self, patterns: list[str] | None) -> list[FleetHost]:
        """Hosts named by `patterns` (host or group names, `all`, shell globs); all hosts without any.

        A pattern that matches nothing is an error: a typo must not silently shrink the audit."""
        if not patterns:
            return list(self.hosts.values())
        import fnmatch

        chosen: dict[str, FleetHost] = {}
        for pattern in patterns:
            names: list[str] = []
            if pattern == "all":
                names = list(self.hosts)
            elif pattern in self.groups:
                names = self._members(pattern)
            elif pattern in self.hosts:
                names = [pattern]
            else:
                names = [h for h in self.hosts if fnmatch.fnmatchcase(h, pattern)]
                for g in self.groups:
                    if fnmatch.fnmatchcase(g, pattern):
                        names.extend(self._members(g))
            if not names:
                raise InventoryError(f"{self.source}: --limit {pattern}: no such host or group in the inventory")
            for n in names:
                chosen.setdefault(n, self.hosts[n])
        order = list(self.hosts)
        return sorted(chosen.values(), key=lambda h: order.index(h.name))

    def _members(self, group: str, seen: set | None = None) -> list[str]:
        seen = seen if seen is not None else set()
        if group in seen or group not in self.groups:
            return []
        seen.add(group)
        g = self.groups[group]
        out = list(g.hosts)
        for child in g.children:
            out.extend(self._members(child, seen))
        return out

    # --- variable inheritance ------------------------------------------------------------------
    def finish(self) -> None:
        """Check the group graph and merge variables into each host (Ansible's precedence)."""
        self.groups.setdefault("all", Group("all"))
        self.groups.setdefault("ungrouped", Group("ungrouped"))
        parents: dict[str, list[str]] = {g: [] for g in self.groups}
        for g in self.groups.values():
            for child in g.children:
                parents.setdefault(child, []).append(g.name)
        # top-level groups are children of "all"
        for name in self.groups:
            if name != "all" and not parents.get(name):
                parents[name] = ["all"]

        depth: dict[str, int] = {}

        def depth_of(name: str, path: tuple) -> int:
            if name in path:
                chain = " -> ".join(path[path.index(name):] + (name,))
                raise InventoryError(f"{self.source}: group {name!r} is its own ancestor ({chain})")
            if name not in depth:
                ps = parents.get(name) or []
                depth[name] = 0 if name == "all" else 1 + max(depth_of(p, path + (name,)) for p in ps)
            return depth[name]

        for name in list(self.groups):
            depth_of(name, ())

        host_groups: dict[str, set] = {h: {"all"} for h in self.hosts}
        for g in self.groups.values():
            for h in g.hosts:
                host_groups[h].add(g.name)

        def ancestors(name: str) -> set:
            out = {name}
            for p in parents.get(name, []):
                out |= ancestors(p)
            return out

        for name, host in self.hosts.items():
            direct = host_groups[name] - {"all"}
            if not direct:
                self.groups["ungrouped"].hosts.append(name)
                direct = {"ungrouped"}
            every: set = {"all"}
            for g in direct:
                every |= ancestors(g)
            merged: dict = {}
            for g in sorted(every, key=lambda n: (depth[n], n)):
                merged.update(self.groups[g].vars)
            merged.update(host.vars)
            host.vars = merged
            host.groups = sorted(every - {"all"})
            _check_host_vars(host, self.source)


def _check_host_vars(host: FleetHost, source: str) -> None:
    where = host.where or source
    port = host.vars.get("ansible_port")
    if port not in (None, ""):
        # an integer, or a string of digits (INI): int() would take YAML's 22.5 as 22 and true as 1
        if isinstance(port, bool) or not isinstance(port, (int, str)):
            ok = False
        elif isinstance(port, str):
            ok = re.fullmatch(r"[0-9]+", port.strip()) is not None and 0 < int(port) < 65536
        else:
            ok = 0 < port < 65536
        if not ok:
            raise InventoryError(f"{where}: host {host.name}: ansible_port {port!r} is not a TCP port")
    if host.mode not in MODES:
        raise InventoryError(f"{where}: host {host.name}: vmaudit_mode {host.mode!r} is not one of "
                             f"{', '.join(MODES)}")
    for key in ("vmaudit_become", "ansible_become"):
        try:
            parse_bool(host.vars.get(key))
        except ValueError as exc:
            raise InventoryError(f"{where}: host {host.name}: {key}: {exc}") from None
    user = host.become_user
    if user is not None and not valid_become_user(user):
        raise InventoryError(f"{where}: host {host.name}: ansible_become_user {user!r} is not a user name")
    try:
        _ = host.command  # shlex: an unclosed quote
    except ValueError as exc:
        raise InventoryError(f"{where}: host {host.name}: vmaudit_command: {exc}") from None


def valid_become_user(user: str) -> bool:
    return bool(_BECOME_USER_RE.match(user))


# --- host patterns ------------------------------------------------------------------------------

def expand_pattern(pattern: str, where: str) -> list[str]:
    """Expand Ansible host ranges: hv[01:03] -> hv01 hv02 hv03; db-[a:c] -> db-a db-b db-c."""
    m = _RANGE_RE.search(pattern)
    if not m:
        if "[" in pattern or "]" in pattern:
            raise InventoryError(f"{where}: bad host range in {pattern!r} (expected [start:end] or [start:end:step])")
        if len(pattern) > _MAX_NAME:
            raise InventoryError(f"{where}: host name {pattern[:40]!r}... is longer than {_MAX_NAME} characters")
        return [pattern]
    start, end, step_text = m.group(1), m.group(2), m.group(3) or "1"
    if max(len(start), len(end), len(step_text)) > _MAX_DIGITS:
        raise InventoryError(f"{where}: host range in {pattern[:80]!r}: numbers of at most {_MAX_DIGITS} digits")
    step = int(step_text)
    head, tail = pattern[:m.start()], pattern[m.end():]
    if step < 1:
        raise InventoryError(f"{where}: bad host range in {pattern!r}: the step must be positive")
    if start.isdigit() and end.isdigit():
        a, b = int(start), int(end)
        width = len(start) if start.startswith("0") and len(start) > 1 else 0
        if (b - a) // step + 1 > _MAX_EXPANSION:  # refused before a list of that length is built
            raise InventoryError(f"{where}: host range in {pattern!r} expands to too many hosts")
        values = [str(i).zfill(width) for i in range(a, b + 1, step)]
    elif len(start) == 1 and len(end) == 1 and start.isalpha() and end.isalpha():
        letters = string.ascii_letters
        a, b = letters.index(start), letters.index(end)
        values = [letters[i] for i in range(a, b + 1, step)]
    else:
        raise InventoryError(f"{where}: bad host range in {pattern!r}: use numbers ([01:20]) or single letters ([a:f])")
    if not values:
        raise InventoryError(f"{where}: host range in {pattern!r} is empty (start after end)")
    out: list[str] = []
    for v in values:
        out.extend(expand_pattern(head + v + tail, where))
        if len(out) > _MAX_EXPANSION:
            raise InventoryError(f"{where}: host range in {pattern!r} expands to too many hosts")
    return out


def _split_host_token(token: str, where: str, allow_user: bool) -> tuple[str, dict]:
    """'[user@]host[:port]' -> (host, vars)."""
    hvars: dict = {}
    if "@" in token:
        if not allow_user:
            raise InventoryError(f"{where}: {token!r}: user@host is only accepted in a plain host list "
                                 f"(use ansible_user=)")
        user, _, token = token.rpartition("@")
        if not user:
            raise InventoryError(f"{where}: {token!r}: empty user name before '@'")
        hvars["ansible_user"] = user
    if token.count(":") == 1:
        token, _, port = token.partition(":")
        if not port.isdigit():
            raise InventoryError(f"{where}: {token}:{port}: the port after ':' must be a number")
        hvars["ansible_port"] = port
    if not token or not _HOST_RE.match(token):
        raise InventoryError(f"{where}: {token!r} is not a host name")
    return token, hvars


# --- INI (and plain lists) ----------------------------------------------------------------------

def parse_ini(text: str, source: str, plain: bool = False) -> HostInventory:
    inv = HostInventory(source=source)
    section, kind = None, "hosts"  # hosts before any header are ungrouped
    seen_in_section: dict[tuple, int] = {}
    for no, raw in enumerate(text.splitlines(), 1):
        where = f"{source}, line {no}"
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            m = re.fullmatch(r"\[([^\]:\s]+)(?::([a-z]+))?\]\s*(?:[#;].*)?", line)
            if not m:
                raise InventoryError(f"{where}: bad section header {line!r} (expected [group], "
                                     f"[group:vars] or [group:children])")
            section, kind = m.group(1), m.group(2) or "hosts"
            if m.group(2) is not None and kind not in ("vars", "children"):
                raise InventoryError(f"{where}: unknown section type ':{kind}' (expected :vars or :children)")
            if not _GROUP_RE.match(section):
                raise InventoryError(f"{where}: {section!r} is not a valid group name")
            inv.groups.setdefault(section, Group(section, where=where))
            continue
        if kind == "vars":
            key, eq, value = line.partition("=")
            key = key.strip()
            if not eq or not key or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise InventoryError(f"{where}: expected 'name=value' in [{section}:vars], got {line!r}")
            inv.groups[section].vars[key] = _ini_value(value.strip(), where)
            continue
        if kind == "children":
            child = line.split()[0]
            if not _GROUP_RE.match(child) or len(line.split()) > 1 and not line.split()[1].startswith(("#", ";")):
                raise InventoryError(f"{where}: expected one group name in [{section}:children], got {line!r}")
            if child == section:
                raise InventoryError(f"{where}: group {section!r} lists itself as a child")
            inv.groups.setdefault(child, Group(child, where=where))
            if child not in inv.groups[section].children:
                inv.groups[section].children.append(child)
            continue
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as exc:
            raise InventoryError(f"{where}: {exc} in {line!r}") from None
        if not tokens:
            continue
        first, *rest = tokens
        hvars: dict = {}
        for tok in rest:
            key, eq, value = tok.partition("=")
            if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise InventoryError(f"{where}: expected 'name=value' after the host name, got {tok!r}")
            hvars[key] = value
        for name in expand_pattern(first, where):
            name, extra = _split_host_token(name, where, allow_user=plain or section is None)
            key = (section, name)
            if key in seen_in_section:
                scope = f"group [{section}]" if section else "the list"
                raise InventoryError(f"{where}: host {name} is listed twice in {scope} "
                                     f"(first at line {seen_in_section[key]})")
            seen_in_section[key] = no
            host = inv.hosts.get(name)
            if host is None:
                host = inv.hosts[name] = FleetHost(name=name, where=where)
            host.vars.update(extra)
            host.vars.update(hvars)
            if section is not None and name not in inv.groups[section].hosts:
                inv.groups[section].hosts.append(name)
    inv.finish()
    return inv


def _ini_value(value: str, where: str) -> str:
    if value[:1] in ("'", '"'):
        try:
            parts = shlex.split(value)
        except ValueError as exc:
            raise InventoryError(f"{where}: {exc} in {value!r}") from None
        return parts[0] if len(parts) == 1 else value
    return value


# --- YAML ---------------------------------------------------------------------------------------

def parse_yaml(text: str, source: str) -> HostInventory:
    try:
        import yaml
    except ImportError:
        raise InventoryError(f"{source}: YAML inventories need PyYAML (pip install pyyaml)") from None

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InventoryError(f"{source}{line}: invalid YAML: {problem}") from None
    except RecursionError:
        raise too_deep(source, "inventory", InventoryError) from None
    _check_node_depth(root, source)
    inv = HostInventory(source=source)
    if root is None:
        inv.finish()
        return inv

    def at(node: Any) -> str:
        return f"{source}, line {node.start_mark.line + 1}"

    def mapping(node: Any, what: str) -> list[tuple[str, Any]]:
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            return []
        if not isinstance(node, yaml.MappingNode):
            raise InventoryError(f"{at(node)}: {what} must be a mapping")
        out, seen = [], {}
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode):
                raise InventoryError(f"{at(knode)}: keys of {what} must be names")
            key = str(knode.value)
            if key in seen:
                raise InventoryError(f"{at(knode)}: duplicate key {key!r} in {what} (first at line {seen[key]})")
            seen[key] = knode.start_mark.line + 1
            out.append((key, vnode))
        return out

    def value(node: Any) -> Any:
        return yaml.SafeLoader("").construct_document(node)

    def group(name: str, node: Any, where: str) -> None:
        if not _GROUP_RE.match(name):
            raise InventoryError(f"{where}: {name!r} is not a valid group name")
        g = inv.groups.setdefault(name, Group(name, where=where))
        for key, vnode in mapping(node, f"group {name!r}"):
            if key == "hosts":
                for pattern, hnode in mapping(vnode, f"the hosts of group {name!r}"):
                    hwhere = at(hnode) if hnode.start_mark else where
                    hvars = {k: value(v) for k, v in mapping(hnode, f"host {pattern!r}")}
                    for hname in expand_pattern(pattern, hwhere):
                        hname, extra = _split_host_token(hname, hwhere, allow_user=False)
                        host = inv.hosts.get(hname)
                        if host is None:
                            host = inv.hosts[hname] = FleetHost(name=hname, where=hwhere)
                        host.vars.update(extra)
                        host.vars.update(hvars)
                        if hname not in g.hosts:
                            g.hosts.append(hname)
            elif key == "children":
                for child, cnode in mapping(vnode, f"the children of group {name!r}"):
                    if child == name:
                        raise InventoryError(f"{at(cnode)}: group {name!r} lists itself as a child")
                    group(child, cnode, at(cnode))
                    if child not in g.children:
                        g.children.append(child)
            elif key == "vars":
                g.vars.update({k: value(v) for k, v in mapping(vnode, f"the vars of group {name!r}")})
            else:
                raise InventoryError(f"{at(vnode)}: unknown key {key!r} in group {name!r} "
                                     f"(expected hosts, children or vars)")

    for name, node in mapping(root, "the inventory"):
        group(name, node, at(node))
    inv.finish()
    return inv


def _check_node_depth(root: Any, source: str) -> None:
    """MAX_DEPTH for a composed YAML document (group trees and host variables are walked recursively)."""
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        value = getattr(node, "value", None)
        if not isinstance(value, list):
            continue  # a scalar
        if depth > MAX_DEPTH:
            raise InventoryError(f"{source}, line {node.start_mark.line + 1}: inventory nests deeper than "
                                 f"{MAX_DEPTH} levels")
        for item in value:
            stack.extend((n, depth + 1) for n in (item if isinstance(item, tuple) else (item,)))


# --- entry points -------------------------------------------------------------------------------

def load_hosts(path: str) -> HostInventory:
    """Parse an inventory file; the format is chosen by suffix (.yml/.yaml) or, failing that, content."""
    return parse_hosts_text(read_text_bounded(path, "inventory", InventoryError), path)


def parse_hosts_text(text: str, source: str) -> HostInventory:
    if source.endswith((".yml", ".yaml")) or _looks_like_yaml(text):
        return parse_yaml(text, source)
    if source.endswith(".json"):
        raise InventoryError(f"{source}: JSON host inventories are not supported (use INI, YAML or a host list)")
    has_sections = any(line.strip().startswith("[") for line in text.splitlines())
    return parse_ini(text, source, plain=not has_sections)


def _looks_like_yaml(text: str) -> bool:
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        return s == "---" or bool(re.fullmatch(r"[A-Za-z0-9_.\-]+:\s*(#.*)?", s))
    return False


def hosts_from_list(items: list[str], source: str = "--hosts") -> HostInventory:
    """`--hosts a,user@b:2222`: a plain list given on the command line."""
    lines = [i.strip() for item in items for i in item.split(",") if i.strip()]
    if not lines:
        raise InventoryError(f"{source}: no hosts given")
    return parse_ini("\n".join(lines), source, plain=True)


__all__ = ["FleetHost", "Group", "HostInventory", "InventoryError", "load_hosts", "parse_hosts_text",
           "parse_ini", "parse_yaml", "hosts_from_list", "expand_pattern", "parse_bool", "valid_become_user",
           "MODES", "BECOME_METHODS"]
