"""Who can administer the VMM: local accounts and groups, sudo rules, polkit rules, the OpenSSH server's
configuration, and (live) the permissions of libvirt's UNIX sockets. Read under the audited root; the
checks of M6 (and M7, for the daemons' remote access) judge them.

Sources (a read failure anywhere is an `{"unavailable": reason}` marker at that place):

  accounts        {"passwd": [{"name", "uid", "gid", "home", "shell"}] | marker,
                   "group":  [{"name", "gid", "members": [...]}] | marker,
                   "nsswitch": {"passwd": [...], "group": [...]}   (databases' sources; {} if no file),
                   "compat": ["+", "+@netgroup", ...]}              (NIS compat lines, not resolvable here)
                  A missing /etc/passwd or /etc/group is `unavailable` (every Linux host has both).
  sudoers         {"present": bool (/etc/sudoers exists),
                   "files": {path: {"included_from": path | None} | marker}   (every file read, in order),
                   "skipped": [{"path", "reason"}]      (sudoers.d names sudo ignores: with '.' or '~'),
                   "aliases": {"User_Alias": {NAME: [item, ...]}, "Runas_Alias": ..., "Host_Alias": ...,
                               "Cmnd_Alias": ...},
                   "specs": [{"file", "line", "users": [...], "hosts": [...], "runas": str | None,
                              "commands": [...]}]}
                  One spec per run of commands under one Runas_Spec ("(root) /bin/sh, (bob) /bin/ls" is
                  two specs). Parsed like sudoers(5): '\\' continuations, `#include`/`@include`,
                  `#includedir`/`@includedir` (relative paths from the including file's directory),
                  `Defaults` lines ignored, tags (NOPASSWD: ...) and options (TIMEOUT=...) stripped
                  from the commands.
  polkit_rules    {"dirs": {dir: "present" | "absent" | marker},
                   "files": [{"name", "path", "same_name": [paths], "text": str | marker}],
                   "pkla": {"roots": {root: "present" | "absent" | marker}, "dirs": {dir: "present" | marker},
                            "files": [{"path", "dir", "sections": [{"name", "line", "identity": [...],
                                       "action": [...], "any", "inactive", "active", "ignored"?}]}
                                      | {"path", "dir", "invalid": reason} | {"path", "dir", "text": marker}]}}
                  Every .rules file of the four rules.d directories, in polkitd's order (by file name, the
                  full path breaking a tie: /etc first; a same-named file is not hidden, it runs too);
                  the .pkla files of /var/lib/polkit-1/localauthority and /etc/polkit-1/localauthority
                  in pkla-check-authorization's order (sub-directories by name, /var/lib first).
  sudoers (order) specs are appended in sudo's order: an include is read where it stands.
  sshd_config     {"path", "present", "files": [paths read], "unreadable": {path: marker},
                   "entries": [{"keyword" (lower case), "value", "file", "line", "match": str | None}]}
                  `Include` expanded in place (globs sorted, relative to /etc/ssh); `match` is the
                  criteria of the Match block the line sits in (None: global). A line after
                  `Match all` has match None and "match_all": true: sshd reads it as a global line,
                  and for a connection applies it over the global lines, like any matching block.
  libvirt_sockets (live) {path: {"mode": "0666", "uid", "gid", "owner", "group"}} for the UNIX sockets
                  in /run/libvirt ({} when the directory does not exist: no daemon running).
"""

from __future__ import annotations

import fnmatch
import glob
import os
import posixpath
import re
import stat
from typing import Callable

from vmaudit.facts import unavailable
from vmaudit.schema import AnyJSON, Bool, Enum, Int, ListOf, Optional, Presence, Record, Str, TableOf

from . import ABSENT, Context, collector

# --- accounts -----------------------------------------------------------------------------------


def _required(ctx: Context, path: str):
    text = ctx.read_fact(path, absent=ABSENT)
    if text is ABSENT:
        return unavailable(f"{path} does not exist")
    return text


def parse_passwd(text: str) -> tuple[list[dict], list[str]]:
    entries, compat = [], []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line[0] in "+-":  # NIS compat: accounts this file cannot resolve
            compat.append(line.split(":", 1)[0])
            continue
        f = line.split(":")
        if len(f) < 7:
            continue
        try:
            uid, gid = int(f[2]), int(f[3])
        except ValueError:
            continue
        entries.append({"name": f[0], "uid": uid, "gid": gid, "home": f[5], "shell": f[6].strip()})
    return entries, compat


def parse_group(text: str) -> tuple[list[dict], list[str]]:
    entries, compat = [], []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line[0] in "+-":
            compat.append(line.split(":", 1)[0])
            continue
        f = line.split(":")
        if len(f) < 4:
            continue
        try:
            gid = int(f[2])
        except ValueError:
            continue
        members = [m.strip() for m in f[3].split(",") if m.strip()]
        entries.append({"name": f[0], "gid": gid, "members": members})
    return entries, compat


def parse_nsswitch(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if ":" not in line:
            continue
        db, _, rest = line.partition(":")
        if db.strip() in ("passwd", "group"):
            # "[NOTFOUND=return]" actions are not sources
            out[db.strip()] = [w for w in rest.split() if not w.startswith("[")]
    return out


# every /etc/passwd holds root and every /etc/group the root group: an empty one was not read right
ACCOUNTS_SCHEMA = Record({"passwd": ListOf(Record({"name": Str(), "uid": Int(), "gid": Int()},
                                                  optional={"home": Str(), "shell": Str()}), min_len=1),
                    "group": ListOf(Record({"name": Str(), "gid": Int(), "members": ListOf(Str())}), min_len=1)},
                   optional={"nsswitch": TableOf(ListOf(Str())), "compat": ListOf(Str())})


@collector("accounts", schema=ACCOUNTS_SCHEMA)
def collect_accounts(ctx: Context) -> dict:
    """`{passwd: [{name, uid, gid, home, shell}] or marker, group: [{name, gid, members: [...]}] or marker,
    nsswitch: {passwd: [sources], group: [sources]}, compat: ["passwd:+", ...]}` (a missing /etc/passwd or
    /etc/group is a marker)
    """
    out: dict = {"compat": []}
    for name, parse in (("passwd", parse_passwd), ("group", parse_group)):
        text = _required(ctx, f"/etc/{name}")
        if isinstance(text, dict):
            out[name] = text
            continue
        out[name], compat = parse(text)
        out["compat"].extend(f"{name}:{c}" for c in compat)
    ns = ctx.read_fact("/etc/nsswitch.conf", absent=None)
    out["nsswitch"] = parse_nsswitch(ns) if isinstance(ns, str) else (ns or {})
    return out


# --- sudoers ------------------------------------------------------------------------------------

ALIAS_KINDS = ("User_Alias", "Runas_Alias", "Host_Alias", "Cmnd_Alias", "Cmd_Alias")
TAGS = {"NOPASSWD", "PASSWD", "NOEXEC", "EXEC", "SETENV", "NOSETENV", "LOG_INPUT", "NOLOG_INPUT",
        "LOG_OUTPUT", "NOLOG_OUTPUT", "MAIL", "NOMAIL", "FOLLOW", "NOFOLLOW", "INTERCEPT", "NOINTERCEPT"}
OPTIONS = re.compile(r"^(CWD|CHROOT|ROLE|TYPE|TIMEOUT|NOTBEFORE|NOTAFTER|APPARMOR_PROFILE|PRIVS|LIMITPRIVS)=\S*\s*")
_INCLUDE = re.compile(r"^[#@](include|includedir)\s+(.+?)\s*$")


def _logical_lines(text: str):
    """(line number, text) with '\\' continuations joined and comments removed."""
    buf, start = "", 0
    for no, raw in enumerate(text.splitlines(), 1):
        if not buf:
            start = no
        if raw.endswith("\\") and not raw.endswith("\\\\"):
            buf += raw[:-1] + " "
            continue
        line = (buf + raw).strip()
        buf = ""
        if _INCLUDE.match(line):
            yield start, line
            continue
        # '#' starts a comment unless it introduces a uid/gid ("#1000", "%#1000")
        line = re.sub(r"(^|(?<=[\s,=!(:]))#(?!\d).*$", "", line).strip()
        if line:
            yield start, line


def _split_top(text: str, sep: str) -> list[str]:
    """Split on `sep` outside parentheses, honouring '\\' escapes."""
    out, cur, depth, i = [], "", 0, 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur += text[i:i + 2]
            i += 2
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth = max(0, depth - 1)
        if c == sep and depth == 0:
            if sep == ":" and re.search(r"(^|[\s,])[A-Z_]+$", cur) and \
                    re.search(r"([A-Z_]+)$", cur).group(1) in TAGS:
                cur += c  # a tag such as NOPASSWD:
            else:
                out.append(cur)
                cur = ""
        else:
            cur += c
        i += 1
    out.append(cur)
    return [s.strip() for s in out]


def _items(text: str) -> list[str]:
    return [i.strip().replace("\\,", ",") for i in _split_top(text, ",") if i.strip()]


def _commands(text: str) -> list[tuple[str | None, list[str]]]:
    """'(ALL:ALL) NOPASSWD: /usr/bin/virsh, (bob) /bin/ls' -> [('ALL:ALL', ['/usr/bin/virsh']), ('bob', ['/bin/ls'])].

    A Runas_Spec applies to the commands after it until the next one (sudoers(5)), so each run of
    commands keeps its own; the list starts with (None, []) when no Runas_Spec comes first.
    """
    groups: list[tuple[str | None, list[str]]] = [(None, [])]
    for item in _items(text):
        m = re.match(r"^\(([^)]*)\)\s*", item)
        if m:
            groups.append((m.group(1).strip(), []))
            item = item[m.end():]
        while True:
            m = OPTIONS.match(item) or re.match(r"^([A-Z_]+):\s*", item)
            if m and (m.re is OPTIONS or m.group(1) in TAGS):
                item = item[m.end():]
                continue
            break
        if item:
            groups[-1][1].append(item)
    return [g for g in groups if g[1]] or [(groups[-1][0], [])]


def parse_sudoers(text: str, path: str, data: dict, include: Callable[[str, str], None]) -> None:
    """Add the aliases and user specs of one file to `data`, calling `include(kind, target)` for each
    include where it stands: sudo suspends the current file there and goes on after it, and with
    last-match-wins the order of the specs matters."""
    for no, line in _logical_lines(text):
        m = _INCLUDE.match(line)
        if m:
            include(m.group(1), m.group(2).strip('"'))
            continue
        word = line.split(None, 1)[0]
        if word.startswith("Defaults"):
            continue
        if word in ALIAS_KINDS:
            kind = "Cmnd_Alias" if word == "Cmd_Alias" else word
            for part in _split_top(line[len(word):], ":"):
                name, eq, members = part.partition("=")
                if eq:
                    data["aliases"][kind][name.strip()] = _items(members)
            continue
        left, eq, right = line.partition("=")
        if not eq:
            continue
        # "alice, %admins  ALL" : the user list, then the host list
        left = re.sub(r"\s*,\s*", ",", left.strip())
        parts = left.split(None, 1)
        users = _items(parts[0])
        # further "host = commands" groups are separated by ':' ("ALL = /bin/ls : db1 = ALL")
        groups = _split_top(right, ":")
        hosts = _items(parts[1]) if len(parts) > 1 else []
        base = {"file": path, "line": no, "users": users}
        for runas, commands in _commands(groups[0]):
            data["specs"].append(dict(base, hosts=hosts, runas=runas, commands=commands))
        for extra in groups[1:]:
            h, eq2, cmds = extra.partition("=")
            if eq2:
                for runas, commands in _commands(cmds):
                    data["specs"].append(dict(base, hosts=_items(h), runas=runas, commands=commands))


SUDOERS_SCHEMA = Record({"present": Bool(), "files": TableOf(Record(optional={"included_from": Optional(Str())})),
                   "aliases": TableOf(TableOf(ListOf(Str()))),
                   "specs": ListOf(Record({"file": Str(), "line": Int(min=0), "users": ListOf(Str())},
                                          optional={"hosts": ListOf(Str()), "runas": Optional(Str()),
                                                    "commands": ListOf(Str())}))},
                  optional={"skipped": ListOf(Record({"path": Str(), "reason": Str()}))})


@collector("sudoers", schema=SUDOERS_SCHEMA)
def collect_sudoers(ctx: Context) -> dict:
    """`{present, files: {path: {included_from} or marker}, skipped: [{path, reason}], aliases: {User_Alias:
    {NAME: [...]}, Runas_Alias, Host_Alias, Cmnd_Alias}, specs: [{file, line, users, hosts, runas,
    commands}]}`: /etc/sudoers and its `#`/`@include(dir)`s (read in place, so specs are in sudo's order),
    sudoers.d names with '.' or '~' skipped as sudo does
    """
    data: dict = {"present": False, "files": {}, "skipped": [],
                  "aliases": {k: {} for k in ALIAS_KINDS if k != "Cmd_Alias"}, "specs": []}

    def read(path: str, parent: str | None, depth: int) -> None:
        if path in data["files"] or depth > 128:  # sudo refuses include loops
            return
        try:
            text = ctx.read(path)
        except OSError as exc:
            data["files"][path] = unavailable(f"cannot read {path}: {exc.strerror or exc}")
            return
        if text is ABSENT:
            if parent is not None:
                data["skipped"].append({"path": path, "reason": f"included from {parent} but absent"})
            return
        data["files"][path] = {"included_from": parent}

        def include(kind: str, target: str) -> None:
            if "%h" in target:
                data["skipped"].append({"path": target, "reason": "include with %h (host name) not resolved"})
                return
            if not target.startswith("/"):
                target = posixpath.join(posixpath.dirname(path), target)
            if kind == "include":
                read(target, path, depth + 1)
                return
            try:
                names = ctx.listdir(target)  # sorted: sudo reads an includedir in lexical order
            except OSError as exc:
                data["files"][target] = unavailable(f"cannot list {target}: {exc.strerror or exc}")
                return
            if names is ABSENT:
                return
            for name in names:
                if "." in name or name.endswith("~"):
                    data["skipped"].append({"path": f"{target}/{name}",
                                            "reason": "sudo skips names containing '.' or ending in '~'"})
                    continue
                if os.path.isdir(ctx.resolve(f"{target}/{name}")):
                    continue
                read(f"{target}/{name}", path, depth + 1)

        parse_sudoers(text, path, data, include)

    data["present"] = ctx.exists("/etc/sudoers")
    if data["present"]:
        read("/etc/sudoers", None, 0)
    return data


# --- polkit -------------------------------------------------------------------------------------

# polkitd (JS authority) reads .rules from these, all of them: sorted by file name, a tie broken by the
# full path, so /etc runs before /run, /usr/local/share and /usr/share. A file of the same name in a later
# directory is NOT hidden: it runs after (polkit(8); polkit_backend_common_rules_file_name_cmp). /run and
# /usr/local/share are read since polkit 126; older polkitd ignores them (reading them over-reports only).
POLKIT_DIRS = ("/etc/polkit-1/rules.d", "/run/polkit-1/rules.d", "/usr/local/share/polkit-1/rules.d",
               "/usr/share/polkit-1/rules.d")
# The local authority (.pkla): polkit 0.105 natively (Debian <= 11, Ubuntu <= 23.04), later polkit through
# 49-polkit-pkla-compat.rules (Debian 12+ polkitd-pkla, RHEL 7/8 polkit-pkla-compat). Default search
# path of pkla-check-authorization(8), in this order: a sub-directory name in both sorts /var/lib first.
PKLA_ROOTS = ("/var/lib/polkit-1/localauthority", "/etc/polkit-1/localauthority")
PKLA_KEYS = {"Identity": "identity", "Action": "action", "ResultAny": "any", "ResultInactive": "inactive",
             "ResultActive": "active"}
PKLA_RESULTS = ("no", "auth_self", "auth_admin", "auth_self_keep", "auth_admin_keep", "yes")
_KEYFILE_ESCAPES = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def _keyfile_value(raw: str) -> str:
    """GKeyFile string unescaping (\\s \\n \\t \\r \\\\)."""
    return re.sub(r"\\(.)", lambda m: _KEYFILE_ESCAPES.get(m.group(1), m.group(0)), raw)


def parse_pkla(text: str) -> dict:
    """One .pkla key file -> {"sections": [{"name", "line", "identity": [...], "action": [...], "any",
    "inactive", "active", "ignored"?}]} or {"invalid": reason} (GKeyFile rejects it: polkit skips the file).

    A section lacking Identity or Action, or every Result key, is skipped by polkit ("ignored").
    """
    sections: list[dict] = []
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            if not line.rstrip().endswith("]"):
                return {"invalid": f"line {no}: group header without ']'"}
            name = line.rstrip()[1:-1]
            # a repeated group name continues that group (GKeyFile merges them)
            sec = next((x for x in sections if x["name"] == name), None)
            if sec is None:
                sec = {"name": name, "line": no, "identity": None, "action": None, "any": None,
                       "inactive": None, "active": None}
                sections.append(sec)
            sections.append(sections.pop(sections.index(sec)))
            continue
        key, eq, value = line.partition("=")
        if not eq:
            return {"invalid": f"line {no}: not a key=value pair, group or comment"}
        if not sections:
            return {"invalid": f"line {no}: key outside any [group]"}
        key = key.strip()
        if key in PKLA_KEYS:
            value = _keyfile_value(value.strip())
            field = PKLA_KEYS[key]
            sections[-1][field] = ([v for v in value.split(";") if v] if field in ("identity", "action")
                                   else value.strip())
    sections.sort(key=lambda x: x["line"])
    for sec in sections:
        bad = [f"{key}={sec[field]}" for key, field in PKLA_KEYS.items()
               if field in ("any", "inactive", "active") and sec[field] is not None
               and sec[field] not in PKLA_RESULTS]
        if not sec["identity"] or not sec["action"]:
            sec["ignored"] = "no Identity or no Action"
        elif bad:
            # polkit_implicit_authorization_from_string() compares exactly: 'Yes' or 'NO' is an error and
            # the whole entry is skipped, so it neither grants nor overrides an earlier entry
            sec["ignored"] = f"not a polkit result: {', '.join(bad)}"
        elif not any(sec[k] for k in ("any", "inactive", "active")):
            sec["ignored"] = "none of ResultAny, ResultInactive, ResultActive"
    return {"sections": sections}


def _collect_pkla(ctx: Context) -> dict:
    out: dict = {"roots": {}, "dirs": {}, "files": []}
    subdirs: dict[str, list[str]] = {}
    for root in PKLA_ROOTS:
        try:
            names = ctx.listdir(root)
        except OSError as exc:
            out["roots"][root] = unavailable(f"cannot list {root}: {exc.strerror or exc}")
            continue
        if names is ABSENT:
            out["roots"][root] = "absent"
            continue
        out["roots"][root] = "present"
        for name in names:
            if os.path.isdir(ctx.resolve(f"{root}/{name}")):
                subdirs.setdefault(name, []).append(root)
    # by sub-directory name across both roots; /var/lib before /etc for the same name (pkla-check-authorization(8))
    for name in sorted(subdirs):
        for root in sorted(subdirs[name], key=PKLA_ROOTS.index):
            d = f"{root}/{name}"
            try:
                files = ctx.listdir(d)
            except OSError as exc:
                out["dirs"][d] = unavailable(f"cannot list {d}: {exc.strerror or exc}")
                continue
            out["dirs"][d] = "present"
            for fname in files if files is not ABSENT else []:
                if not fname.endswith(".pkla"):
                    continue
                path = f"{d}/{fname}"
                text = ctx.read_fact(path, absent=unavailable(f"{path} vanished"))
                entry = {"path": path, "dir": d}
                entry.update(parse_pkla(text) if isinstance(text, str) else {"text": text})
                out["files"].append(entry)
    return out


_PKLA_SECTION = Record({"name": Str(), "line": Int(min=0), "identity": Optional(ListOf(Str())),
                        "action": Optional(ListOf(Str()))},
                       optional={"any": Optional(Str()), "inactive": Optional(Str()), "active": Optional(Str()),
                                 "ignored": AnyJSON()})
POLKIT_RULES_SCHEMA = Record({"dirs": TableOf(Str()),
                       "files": ListOf(Record({"name": Str(), "path": Str(), "text": Str()},
                                              optional={"same_name": ListOf(Str())})),
                       "pkla": Record({"roots": TableOf(Str()), "dirs": TableOf(Str()),
                                       "files": ListOf(Record({"path": Str(), "dir": Str()},
                                                              optional={"sections": ListOf(_PKLA_SECTION),
                                                                        "invalid": Str(), "text": Str()}))})})


@collector("polkit_rules", schema=POLKIT_RULES_SCHEMA)
def collect_polkit_rules(ctx: Context) -> dict:
    """`{dirs: {dir: "present"/"absent"/marker}, files: [{name, path, same_name: [paths], text (or marker)}],
    pkla: {roots: {root: state}, dirs: {dir: state}, files: [{path, dir, sections: [{name, line, identity,
    action, any, inactive, active, ignored?}]} or {path, dir, invalid} or {path, dir, text: marker}]}}`:
    .rules of /etc, /run, /usr/local/share and /usr/share `polkit-1/rules.d` in polkitd's load order (by
    name, /etc first on a tie; a same-named file is not hidden); .pkla of /var/lib and /etc
    `polkit-1/localauthority/*/` in pkla-check-authorization's order
    """
    dirs: dict = {}
    files: list[dict] = []
    for d in POLKIT_DIRS:
        try:
            names = ctx.listdir(d)
        except OSError as exc:
            dirs[d] = unavailable(f"cannot list {d}: {exc.strerror or exc}")
            continue
        if names is ABSENT:
            dirs[d] = "absent"
            continue
        dirs[d] = "present"
        for name in names:
            if not name.endswith(".rules"):
                continue
            path = f"{d}/{name}"
            files.append({"name": name, "path": path, "same_name": [],
                          "text": ctx.read_fact(path, absent=unavailable(f"{path} vanished"))})
    files.sort(key=lambda f: (f["name"], f["path"]))
    for f in files:
        f["same_name"] = [g["path"] for g in files if g["name"] == f["name"] and g is not f]
    return {"dirs": dirs, "files": files, "pkla": _collect_pkla(ctx)}


# --- sshd_config --------------------------------------------------------------------------------

SSHD_CONFIG = "/etc/ssh/sshd_config"


def _sshd_words(line: str) -> list[str]:
    """sshd_config tokenisation: 'Key value', 'Key=value', double quotes group words."""
    m = re.match(r"^\s*([A-Za-z0-9]+)\s*(?:=\s*|\s+)(.*)$", line)
    if not m:
        return [line.strip()]
    words = [m.group(1)]
    words += [a if a is not None and a != "" else b for a, b in re.findall(r'"([^"]*)"|(\S+)', m.group(2))]
    return words


SSHD_CONFIG_SCHEMA = Presence(
    Record({"path": Str(), "present": Bool(), "files": ListOf(Str()), "unreadable": TableOf(AnyJSON()),
            "entries": ListOf(Record({"keyword": Str(), "value": Str(), "file": Str(), "line": Int(min=0),
                                      "match": Optional(Str())}, optional={"match_all": Bool()}))}),
    # no sshd_config: no file read, no entry (an unreadable one is present: false with its marker)
    Record({"path": Str(), "present": Enum(False), "files": ListOf(AnyJSON(), max_len=0),
            "unreadable": TableOf(AnyJSON()), "entries": ListOf(AnyJSON(), max_len=0)}))


@collector("sshd_config", schema=SSHD_CONFIG_SCHEMA)
def collect_sshd_config(ctx: Context) -> dict:
    """`{path, present, files: [...], unreadable: {path: marker}, entries: [{keyword (lower case), value, file,
    line, match (criteria or null)}]}` with `Include` expanded in place (globs sorted, relative to /etc/ssh)
    """
    out: dict = {"path": SSHD_CONFIG, "present": False, "files": [], "unreadable": {}, "entries": []}

    def read(path: str, match: str | None, depth: int, match_all: bool = False) -> str | None:
        """Append the entries of `path`; return the Match context at its end (for the main file)."""
        try:
            text = ctx.read(path)
        except OSError as exc:
            out["unreadable"][path] = unavailable(f"cannot read {path}: {exc.strerror or exc}")
            return match
        if text is ABSENT:
            return match
        out["files"].append(path)
        for no, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            words = _sshd_words(line)
            key = words[0].lower()
            value = " ".join(words[1:])
            if key == "match":
                match_all = value.lower() == "all"
                match = None if match_all else value
                continue
            if key == "include":
                if depth >= 16:  # sshd's own limit on nested includes
                    out["unreadable"][path] = unavailable(f"{path}:{no}: includes nested too deeply")
                    continue
                for pattern in words[1:]:
                    if not pattern.startswith("/"):
                        pattern = f"/etc/ssh/{pattern}"
                    found = sorted(glob.glob(str(ctx.path(pattern))))
                    for f in found:
                        rel = "/" + os.path.relpath(f, ctx.root) if str(ctx.root) != "/" else f
                        read(rel, match, depth + 1, match_all)  # a Match inside ends with the included file
                continue
            entry = {"keyword": key, "value": value, "file": path, "line": no, "match": match}
            if match_all:
                entry["match_all"] = True
            out["entries"].append(entry)
        return match

    out["present"] = ctx.exists(SSHD_CONFIG)
    if out["present"]:
        read(SSHD_CONFIG, None, 0)
    return out


# --- live libvirt sockets -----------------------------------------------------------------------


LIBVIRT_SOCKETS_SCHEMA = TableOf(Record({"mode": Str()}, optional={"uid": Int(), "gid": Int(), "owner": Optional(Str()),
                                                        "group": Optional(Str())}))


@collector("libvirt_sockets", schema=LIBVIRT_SOCKETS_SCHEMA, live=True)
def collect_libvirt_sockets(ctx: Context) -> dict:
    """(live) `{"/run/libvirt/<name>-sock": {mode: "0666", uid, gid, owner, group}}`; `{}` when /run/libvirt
    does not exist
    """
    import grp
    import pwd

    base = "/run/libvirt"
    names = ctx.listdir(base)
    out: dict = {}
    if names is ABSENT:
        return out
    for name in names:
        if not fnmatch.fnmatch(name, "*-sock*"):
            continue
        path = f"{base}/{name}"
        try:
            st = os.lstat(ctx.path(path))
        except OSError as exc:
            out[path] = unavailable(f"cannot stat {path}: {exc.strerror or exc}")
            continue
        if not stat.S_ISSOCK(st.st_mode):
            continue
        try:
            owner = pwd.getpwuid(st.st_uid).pw_name
        except KeyError:
            owner = None
        try:
            group = grp.getgrgid(st.st_gid).gr_name
        except KeyError:
            group = None
        out[path] = {"mode": f"{stat.S_IMODE(st.st_mode):04o}", "uid": st.st_uid, "gid": st.st_gid,
                     "owner": owner, "group": group}
    return out
