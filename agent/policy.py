"""The policy file (TOML): thresholds, allowlists, zones, waivers. Strict: unknown keys and wrong types
are errors naming the file and line, never silently ignored (CONTRACT.md, Policy)."""

from __future__ import annotations

import hashlib
import math
import re
import sys
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from .fsutil import check_depth, read_text_bounded, too_deep

if sys.version_info >= (3, 11):
    import tomllib
else:  # RHEL 9 ships Python 3.9
    import tomli as tomllib

DEFAULT_PATH = "/etc/vmaudit/policy.toml"


from .errors import PolicyError  # noqa: E402 - re-exported for callers of load_policy()

# Section -> key -> (type or tuple of types, default, meaning). A list type is written [type].
# docs/policy.md is generated from this table (scripts/gen-policy-doc.py): a key's meaning lives here only.
_NUM = (int, float)
SCHEMA: dict[str, dict[str, tuple[Any, Any, str]]] = {
    "host": {
        "zone": (str, None, "The one security zone this host may serve (M1-ZONE-MIX, M1-NET-ZONE). "
                 "Unset: the guests' own zones are compared with each other only."),
        "migration_peers": ([str], None, "Host names this host may exchange guests with by live migration: "
                            "hosts of the same administrators and zone (M7-MIGRATION-PEERS). "
                            "Unset: peers are not declared (a warning)."),
        "allow_nested": (bool, False, "Accept nested virtualization (kvm_intel/kvm_amd nested=1) on this "
                         "host (M3-NESTED)."),
    },
    "zones": {"networks": (dict, {}, "Table of libvirt network, bridge, direct device or \"vlan:ID\" (a VLAN "
                           "tag) -> "
                           "zone name; a guest attached to a network of another zone fails M1-NET-ZONE. "
                           "Written as its own table: [zones.networks].")},
    "limits": {
        "max_running_guests": (int, 20, "Most guests that may run on the host (M4-GUEST-COUNT); twice this "
                               "many may be defined."),
        "cpu_overcommit": (_NUM, 4.0, "Most vCPUs of running guests per host CPU (M4-CPU-OVERCOMMIT)."),
        "host_memory_reserve": ((str, int), "10%", "RAM kept for the host, not promised to guests "
                                "(M2-MEM-OVERCOMMIT): a share (\"10%\"), a size (\"4GiB\", \"512MiB\") or a "
                                "number of MiB."),
        "host_memory_reserve_min": ((str, int), "2GiB", "Lower bound of the reserve above, in the same "
                                    "forms (the larger of the two applies)."),
        "max_services": (int, None, "Most independent services (guest service labels) on one host "
                         "(M4-INDEPENDENT-SERVICES). Unset: no limit."),
    },
    "patch": {
        "warn_days": (int, 14, "Days since the last package upgrade after which M3-PATCH-AGE warns."),
        "fail_days": (int, 30, "Days since the last package upgrade after which M3-PATCH-AGE fails."),
        "lists_max_age_days": (int, 7, "Days the cached package lists of the security suites may age "
                               "(by their files' mtime) before M3-PENDING-UPDATES warns that pending "
                               "updates are unknown."),
    },
    "services": {
        "allow": ([str], [], "Services (unit or process names) allowed on the host beyond the built-in "
                  "virtualization allowlist (M2-HOST-SERVICES)."),
        "monitoring_agent": (str, None, "The one monitoring agent allowed on the host (M2-HOST-SERVICES)."),
    },
    "admins": {
        "max": (int, 3, "Most administrator accounts on the host (M6-ADMINS)."),
        "allow": ([str], None, "The administrators by name; any other administrator fails M6-ADMINS, and "
                  "M6-POLKIT / M6-SOCKET-PERMS compare libvirt's access with this list. Unset: the "
                  "accounts found to be administrators."),
        "root_equivalent_groups": ([str], None, "Groups whose members count as administrators without "
                                   "sudo (M6-ADMINS), replacing the built-in list. Unset: docker, lxd, "
                                   "incus-admin, disk."),
    },
    "inventory": {"path": (str, None, "The central registry of guests, CSV or JSON (M8-UNREGISTERED, "
                           "M8-AUTOSTART; guest labels where the metadata has none). A relative path is "
                           "read from the policy file's directory. Unset: registration is not verified.")},
    "guests": {
        "eol_os": ([str], None, "libosinfo IDs or globs of end-of-life guest OSes (M5-GUEST-OS), e.g. "
                   "\"http://centos.org/centos/7*\". Unset: the built-in list (checks/eol_os.toml)."),
        "idle_days": (int, 90, "Days a guest may stay shut off before M8-IDLE-GUEST reports it."),
        "never_started_days": (int, 30, "Days a defined guest may stay never started before "
                               "M8-IDLE-GUEST reports it."),
        "sensitive_paths": ([str], [], "Host directories added to M3-HOST-SHARE's built-in list (/, /etc, "
                            "/root, /boot, /usr, /var/lib/libvirt, /proc, /sys, /dev, /home): a share "
                            "into a guest at or above one fails."),
    },
    "snapshots": {
        "max_age_days": (int, 30, "Oldest snapshot age in days before M8-SNAPSHOTS warns."),
        "max_count": (int, 3, "Most snapshots per guest before M8-SNAPSHOTS warns."),
    },
    "saved_state": {"max_age_days": (int, 30, "Oldest saved memory image (managed save) in days before "
                                     "M8-SAVED-STATE reports it.")},
    "agent": {
        "interval": ((str, int), "1d", "How often `vmaudit agent` audits: \"30m\", \"6h\", \"1d\" or a "
                     "number of seconds."),
        "history_days": (int, 90, "Days of reports and history the state directory keeps."),
        "state_dir": (str, None, "The state directory of `vmaudit agent`, `vmaudit history` and "
                      "`vmaudit diff --last` when --state-dir is not given."),
    },
    "fleet": {
        "concurrency": (int, 16, "Hosts `vmaudit collect` audits at the same time."),
        "connect_timeout": (_NUM, 10, "Seconds to wait for a host's SSH connection."),
        "command_timeout": (_NUM, 300, "Seconds a host's collection may take before it is reported as "
                            "not audited."),
        "facts_max_age_days": (int, 7, "Days a host's latest facts may age before `vmaudit fleet` reports "
                               "the host stale (F-HOST-UNREACHED) instead of evaluating them."),
        "history_days": (int, None, "Days of runs the fleet store keeps (a host's latest facts are always "
                         "kept). Unset: [agent] history_days."),
    },
    "plan": {
        "pinned": ([str], [], "Guests (name or UUID globs) `vmaudit plan` never moves."),
        "drain": ([str], [], "Hosts (names or globs) every guest must leave in `vmaudit plan`."),
    },
}
SECTIONS = {
    "host": "This hypervisor's place in the fleet.",
    "zones": "Which security zone each network belongs to.",
    "limits": "How much one host may consolidate.",
    "patch": "How old the host's packages may get.",
    "services": "What may run on the host beside virtualization.",
    "admins": "Who administers the host.",
    "inventory": "The central guest registry.",
    "guests": "Guest life cycle.",
    "snapshots": "Snapshots kept per guest.",
    "saved_state": "Saved guest memory images.",
    "agent": "The scheduled audit (`vmaudit agent`, the systemd timer) and its state directory.",
    "fleet": "Collection over SSH (`vmaudit collect`), the fleet store and `vmaudit fleet`.",
    "plan": "Migration plans (`vmaudit plan`).",
}
WAIVER_KEYS = {"check": str, "resource": str, "reason": str, "expires": date, "ticket": str}
WAIVER_DOCS = {
    "check": ("required", "The check ID, or a glob of IDs (\"M8-*\")."),
    "resource": ("\"*\"", "The resource, or a glob (\"host\", \"guest:lab-*\")."),
    "reason": ("required", "Why the finding is accepted; shown in every report."),
    "expires": ("required", "The last day the waiver applies (a TOML date, 2027-01-31); after it the "
                "finding counts again and the waiver is listed under expired_waivers."),
    "ticket": ("none", "A reference for the record (\"SEC-1234\")."),
}


@dataclass(frozen=True)
class Waiver:
    check: str
    resource: str
    reason: str
    expires: date
    ticket: str | None = None

    def as_dict(self) -> dict:
        out = {"check": self.check, "resource": self.resource, "reason": self.reason,
               "expires": self.expires.isoformat()}
        if self.ticket:
            out["ticket"] = self.ticket
        return out


@dataclass
class Policy:
    source: str = "builtin"
    sha256: str = ""
    values: dict = field(default_factory=dict)
    waivers: list[Waiver] = field(default_factory=list)
    inventory: Any = None  # vmaudit.inventory.Inventory when [inventory] path is set

    def get(self, section: str, key: str) -> Any:
        """The policy's value, else the default from SCHEMA."""
        sect = self.values.get(section, {})
        if key in sect:
            return sect[key]
        return SCHEMA[section][key][1]

    def is_set(self, section: str, key: str) -> bool:
        return key in self.values.get(section, {})

    @property
    def zone(self) -> str | None:
        return self.get("host", "zone")


def _line_of(text: str, section: str | None, key: str) -> int | None:
    """Best-effort line number of `key` (inside [section]) for error messages."""
    lines = text.splitlines()
    in_section = section is None
    key_re = re.compile(rf'^\s*("{re.escape(key)}"|{re.escape(key)})\s*=')
    for no, line in enumerate(lines, 1):
        header = re.match(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?", line)
        if header:
            name = header.group(1).strip()
            in_section = section is None or name == section or name.startswith(section + ".")
            if name == (key if section is None else f"{section}.{key}"):
                return no
            continue
        if in_section and key_re.match(line):
            return no
    return None


def _waiver_line(text: str, index: int, key: str | None) -> int | None:
    """Line of `key` in the index-th (1-based) [[waivers]] table, else of that table's header; None
    when the waivers are not written as [[waivers]] tables."""
    header_re = re.compile(r"^\s*\[\[\s*waivers\s*\]\]")
    key_re = re.compile(rf'^\s*("{re.escape(key)}"|{re.escape(key)})\s*=') if key else None
    seen, header = 0, None
    for no, line in enumerate(text.splitlines(), 1):
        if re.match(r"^\s*\[", line):
            if header is not None:
                break  # past the table: the key is not in it
            if header_re.match(line):
                seen += 1
                if seen == index:
                    header = no
            continue
        if header is not None and key_re is not None and key_re.match(line):
            return no
    return header


def _type_ok(value: Any, kind: Any) -> bool:
    if isinstance(kind, list):
        return isinstance(value, list) and all(_type_ok(v, kind[0]) for v in value)
    if kind is int or kind == (int,):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(kind, tuple):
        return any(_type_ok(value, k) for k in kind)
    if kind in (float, str, bool, dict, date):
        if kind is float:  # inf and nan are TOML floats too, and no threshold or timeout
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return isinstance(value, kind)
    return isinstance(value, kind)


def _type_name(kind: Any) -> str:
    if isinstance(kind, list):
        return f"a list of {_type_name(kind[0])}"
    if isinstance(kind, tuple):
        return " or ".join(_type_name(k) for k in kind)
    return {int: "an integer", float: "a finite number", str: "a string", bool: "true/false", dict: "a table",
            date: "a date (YYYY-MM-DD)"}.get(kind, str(kind))


def parse_policy(text: str, source: str) -> Policy:
    def fail(msg: str, section: str | None = None, key: str | None = None) -> PolicyError:
        line = _line_of(text, section, key) if key else None
        where = f"{source}, line {line}" if line else source
        return PolicyError(f"{where}: {msg}")

    def _waiver_fail(index: int) -> Any:
        def fail_waiver(msg: str, section: str | None = None, key: str | None = None) -> PolicyError:
            line = _waiver_line(text, index, key) or (_line_of(text, section, key) if key else None)
            return PolicyError(f"{source}, line {line}: {msg}" if line else f"{source}: {msg}")
        return fail_waiver

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: invalid TOML: {exc}") from None
    except RecursionError:
        raise too_deep(source, "policy", PolicyError) from None
    check_depth(data, source, "policy", PolicyError)

    values: dict[str, dict] = {}
    waivers: list[Waiver] = []
    for section, body in data.items():
        if section == "waivers":
            if not isinstance(body, list):
                raise fail("'waivers' must be an array of tables ([[waivers]])", None, "waivers")
            waivers = [_waiver(w, i, _waiver_fail(i)) for i, w in enumerate(body, 1)]
            continue
        if section not in SCHEMA:
            raise fail(f"unknown section [{section}] (known: {', '.join(sorted(SCHEMA))}, waivers)",
                       None, section)
        if not isinstance(body, dict):
            raise fail(f"'{section}' must be a table", None, section)
        for key, value in body.items():
            if key not in SCHEMA[section]:
                raise fail(f"unknown key '{key}' in [{section}] (known: {', '.join(SCHEMA[section])})",
                           section, key)
            kind = SCHEMA[section][key][0]
            if not _type_ok(value, kind):
                raise fail(f"[{section}] {key} must be {_type_name(kind)}, not {value!r}", section, key)
        values[section] = dict(body)

    zmap = values.get("zones", {}).get("networks", {})
    for k, v in zmap.items():
        if not isinstance(v, str):
            raise fail(f"[zones.networks] {k!r} must map to a zone name (a string)", "zones.networks", k)
    for key in ("host_memory_reserve", "host_memory_reserve_min"):
        if key in values.get("limits", {}):
            try:
                parse_size(values["limits"][key], total_mib=1)
            except ValueError as exc:
                raise fail(f"[limits] {key}: {exc}", "limits", key) from None
    if "interval" in values.get("agent", {}):
        try:
            parse_interval(values["agent"]["interval"])
        except ValueError as exc:
            raise fail(f"[agent] interval: {exc}", "agent", "interval") from None

    return Policy(source=source, sha256=hashlib.sha256(text.encode()).hexdigest(), values=values,
                  waivers=waivers)


def _waiver(w: Any, index: int, fail: Any) -> Waiver:
    if not isinstance(w, dict):
        raise fail(f"waiver #{index} must be a table", None, "waivers")
    for key in w:
        if key not in WAIVER_KEYS:
            raise fail(f"waiver #{index}: unknown key '{key}' (known: {', '.join(WAIVER_KEYS)})",
                       "waivers", key)
    for key in ("check", "reason", "expires"):
        if key not in w or (isinstance(w[key], str) and not w[key].strip()):
            raise fail(f"waiver #{index} needs '{key}' (waivers need check, reason and expires)",
                       "waivers", "check")
    for key, kind in WAIVER_KEYS.items():
        # A TOML datetime is a date subclass in Python: waivers expire on a day, so refuse it.
        if key in w and (not isinstance(w[key], kind) or (kind is date and isinstance(w[key], datetime))):
            raise fail(f"waiver #{index}: '{key}' must be {_type_name(kind)}, not {w[key]!r}", "waivers", key)
    return Waiver(check=w["check"], resource=w.get("resource", "*"), reason=w["reason"],
                  expires=w["expires"], ticket=w.get("ticket"))



def parse_size(value: Any, total_mib: float) -> float:
    """'10%' of total, '4GiB', '512MiB', or an int of MiB -> MiB."""
    if isinstance(value, int):
        return float(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(%|[KMGT]i?B?|)\s*", str(value), re.I)
    if not m:
        raise ValueError(f"{value!r} is not a size like '10%', '4GiB' or '512MiB'")
    num, unit = float(m.group(1)), m.group(2).upper()
    if unit == "%":
        return total_mib * num / 100
    scale = {"": 1, "M": 1, "MB": 1, "MIB": 1, "G": 1024, "GB": 1024, "GIB": 1024, "T": 1024 ** 2,
             "TB": 1024 ** 2, "TIB": 1024 ** 2, "K": 1 / 1024, "KB": 1 / 1024, "KIB": 1 / 1024}
    return num * scale[unit]


MAX_INTERVAL = 366 * 86400  # a year and a day: beyond it the scheduler's clock arithmetic overflows


def parse_interval(value: Any) -> int:
    """'30m', '6h', '1d', '90s' or a number of seconds -> seconds (at most MAX_INTERVAL)."""
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
        if seconds <= 0:
            raise ValueError("must be positive")
    else:
        m = re.fullmatch(r"\s*([0-9]+)\s*([smhd]?)\s*", str(value))
        if not m or int(m.group(1)) <= 0:
            raise ValueError(f"{value!r} is not an interval like '30m', '6h' or '1d'")
        seconds = int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if seconds > MAX_INTERVAL:
        raise ValueError(f"{value!r} is longer than {MAX_INTERVAL // 86400} days")
    return seconds


def load_policy(path: str | None) -> Policy:
    """Load the policy from `path`, or the default location when present, else built-in defaults.

    Also loads the inventory it names. Raises PolicyError with a one-line message.
    """
    explicit = path is not None
    path = path or DEFAULT_PATH
    p = Path(path)
    if not explicit and not p.exists():
        return Policy()
    text = read_text_bounded(path, "policy", PolicyError)
    policy = parse_policy(text, str(p))
    inv_path = policy.get("inventory", "path")
    if inv_path:
        from .inventory import load_inventory

        if not Path(inv_path).is_absolute():
            inv_path = str(p.parent / inv_path)
        policy.inventory = load_inventory(inv_path)
    return policy
