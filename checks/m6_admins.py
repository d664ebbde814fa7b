"""M6: few administrators — whoever administers the VMM owns every guest on it.

Who is an administrator here: members of the groups that open libvirt or the KVM device (libvirt, kvm,
libvirt-qemu), of the groups that grant root (sudo, wheel, admin), accounts sudo lets run everything (or a
shell, su, or libvirt's tools) as root, and every uid-0 account. Then how wide libvirt's own doors are:
polkit rules, the UNIX sockets' modes and authentication, and root logins over SSH.
"""

from __future__ import annotations

import re

from vmaudit.collectors.polkit_js import polkit_rules_of
from vmaudit.collectors.sudo_rules import Sudo, login_capable
from vmaudit.engine import Result, check
from vmaudit.facts import EvidenceMissing, NotApplicable, need

from ._libvirtd import DAEMONS, daemon_conf, daemons_in_use, enabled_units, live_sockets, socket_unit

LIBVIRT_GROUPS = ("libvirt", "kvm", "libvirt-qemu")  # only login-capable members count
ROOT_GROUPS = ("sudo", "wheel", "admin")
# groups whose members can become root without sudo: the docker/LXD/Incus sockets start a privileged
# container with / mounted; disk reads and writes every block device (and so every guest's LVM disk)
ROOT_EQUIVALENT_GROUPS = ("docker", "lxd", "incus-admin", "disk")
# nsswitch sources whose accounts and groups vmaudit cannot see in files
DIRECTORY_SOURCES = ("sss", "ldap", "nis", "nisplus", "winbind", "compat", "hesiod")


class Accounts:
    """Lookups over the `accounts` source (the kernel's view: primary gid and secondary members)."""

    def __init__(self, facts):
        src = need(facts.source("accounts"), "accounts")
        self.passwd = need(src.get("passwd"), "/etc/passwd")
        self.group = need(src.get("group"), "/etc/group")
        self.by_name = {p["name"]: p for p in self.passwd}
        self.groups = {g["name"]: g for g in self.group}
        self.groups_by_gid = {g["gid"]: g for g in self.group}
        ns = src.get("nsswitch") or {}
        self.directory_sources = sorted({s for db in ("passwd", "group") for s in ns.get(db, [])
                                         if s in DIRECTORY_SOURCES} | ({"compat"} if src.get("compat") else set()))

    def members(self, group: dict) -> dict[str, str]:
        """name -> 'secondary' | 'primary' for a group entry."""
        out = {m: "secondary" for m in group["members"]}
        for p in self.passwd:
            if p["gid"] == group["gid"]:
                out.setdefault(p["name"], "primary")
        return out

    def shell(self, name: str) -> str | None:
        p = self.by_name.get(name)
        return p["shell"] if p else None


def admin_accounts(facts, policy=None) -> tuple[dict[str, list[str]], dict]:
    """({account: [why, ...]}, context) for every account that administers this VMM (root excluded)."""
    acc = Accounts(facts)
    admins: dict[str, list[str]] = {}
    excluded: dict[str, str] = {}
    equivalent = policy.get("admins", "root_equivalent_groups") if policy is not None else None
    equivalent = tuple(ROOT_EQUIVALENT_GROUPS if equivalent is None else equivalent)
    for gname in LIBVIRT_GROUPS + ROOT_GROUPS + tuple(g for g in equivalent if g not in ROOT_GROUPS):
        g = acc.groups.get(gname)
        if g is None:
            continue
        for name, how in acc.members(g).items():
            if gname in LIBVIRT_GROUPS and not login_capable(acc.shell(name)):
                excluded[name] = f"member of {gname} with shell {acc.shell(name)} (cannot log in)"
                continue
            kind = " (root-equivalent)" if gname in equivalent else ""
            admins.setdefault(name, []).append(f"{how} member of group {gname}{kind}")
    sudo = Sudo(facts, acc)
    for name, why in sudo.grants().items():
        admins.setdefault(name, []).extend(why)
    uid0 = sorted(p["name"] for p in acc.passwd if p["uid"] == 0)
    for name in uid0:
        if name != "root":
            admins.setdefault(name, []).append("uid 0")
    admins.pop("root", None)
    ctx = {"accounts": acc, "uid0": uid0, "excluded": excluded, "unresolved": sorted(set(sudo.unresolved)),
           "sudo_withdrawn": sudo.revoked, "sudo_undecided": sudo.undecided,
           "sudoers_files": sorted(sudo.src.get("files", {})), "sudoers_skipped": sudo.src.get("skipped", []),
           "directory_sources": acc.directory_sources, "root_equivalent_groups": list(equivalent)}
    return {k: admins[k] for k in sorted(admins)}, ctx


# Declared interface of M6-ADMINS' findings: F-MIGRATION-PARITY (checks/fleet.py) compares peers'
# administrators through these two names; tests/checks/test_m6.py holds both sides to them.
ADMINS_EVIDENCE = "admins"


def admins_of(report: dict) -> list[str] | None:
    """The administrators M6-ADMINS names in a host report's findings, None if it names none (error)."""
    for f in report["findings"]:
        if f["check_id"] == "M6-ADMINS" and isinstance(f.get("evidence"), dict):
            found = f["evidence"].get(ADMINS_EVIDENCE)
            if isinstance(found, (list, dict)):
                return sorted(found)
    return None


@check("M6-ADMINS", severity="high",
       title="Administrator accounts",
       remediation="Remove accounts from libvirt/kvm/sudo/wheel, from the root-equivalent groups (docker, lxd, "
                   "incus-admin, disk) and from sudoers grants until only the declared administrators remain; "
                   "delete any second uid-0 account.",
       sources="/etc/passwd, /etc/group, /etc/sudoers (+ includes), /etc/nsswitch.conf")
def admins(facts, policy):
    """Every administrator of the hypervisor can read, change or stop every guest on it, whatever the
    guests' owners agreed: their number is the number of people a tenant has to trust.

    Rule: administrators are the login-capable members (secondary, and by primary gid as the kernel
    sees it) of libvirt, kvm, libvirt-qemu; all members of sudo, wheel, admin and of the groups that are
    root-equivalent without sudo (docker, lxd, incus-admin: their daemons start privileged containers
    with the host's / mounted; disk: raw access to every block device, every guest's LVM volume; policy
    [admins] root_equivalent_groups replaces this list); accounts sudoers lets run
    ALL (or a shell, su, or libvirt's tools) as root, through users, %groups and User_Aliases in
    /etc/sudoers and every file it includes (read in place, in sudo's order); and uid-0 accounts. sudo
    applies the last matching entry: a later '!ALL' as root on every host withdraws an account's earlier
    sudo grants (not its group memberships: sudo/wheel/admin members stay polkit administrators); a
    denial vmaudit cannot be sure applies here withdraws nothing. root itself is not counted. More than
    [admins] max (default 3) -> fail; with [admins] allow set, each administrator outside it -> fail
    (account:<name>); a uid-0 account other than root -> fail, critical. Accounts or groups kept in a
    directory (sss, ldap, nis) are invisible in files: a count that would pass is then a warn.
    Sources: /etc/passwd, /etc/group, /etc/nsswitch.conf, /etc/sudoers and its includes.
    """
    found, ctx = admin_accounts(facts, policy)
    limit = policy.get("admins", "max")
    allow = policy.get("admins", "allow")
    acc: Accounts = ctx["accounts"]
    evidence = {ADMINS_EVIDENCE: found, "count": len(found), "max": limit, "allow": allow,
                "uid0_accounts": ctx["uid0"], "not_counted": ctx["excluded"],
                "unresolved_sudoers_users": ctx["unresolved"], "sudoers_files": ctx["sudoers_files"],
                "sudoers_skipped": ctx["sudoers_skipped"], "directory_sources": ctx["directory_sources"],
                "sudo_withdrawn": ctx["sudo_withdrawn"], "sudo_undecided": ctx["sudo_undecided"],
                "root_equivalent_groups": ctx["root_equivalent_groups"]}
    names = ", ".join(found) or "none"
    if len(found) > limit:
        yield Result("fail", f"{len(found)} accounts administer this VMM ({names}); the policy allows {limit}",
                     "host", evidence, expected=f"<= {limit}", actual=str(len(found)))
    elif ctx["directory_sources"] or ctx["unresolved"]:
        hidden = ", ".join(ctx["directory_sources"] + ctx["unresolved"])
        yield Result("warn", f"{len(found)} administrators in local files ({names}), but accounts or groups "
                     f"from {hidden} cannot be counted here", "host", evidence,
                     expected=f"<= {limit}", actual=f"{len(found)} + unknown")
    else:
        yield Result("pass", f"{len(found)} administrators ({names}), within the policy's {limit}", "host",
                     evidence, expected=f"<= {limit}", actual=str(len(found)))
    for name, why in found.items():
        entry = acc.by_name.get(name)
        ev = {"account": name, "uid": entry["uid"] if entry else None,
              "shell": entry["shell"] if entry else None, "via": why, "allow": allow}
        if "uid 0" in why:
            yield Result("fail", f"account {name} has uid 0: a second root account", f"account:{name}", ev,
                         expected="only root has uid 0", actual="uid 0", severity="critical")
        elif allow is not None and name not in allow:
            yield Result("fail", f"{name} administers this VMM ({'; '.join(why)}) but is not in the policy's "
                         f"[admins] allow list", f"account:{name}", ev,
                         expected="in [admins] allow", actual="not listed")
        else:
            note = "listed in [admins] allow" if allow is not None else "no [admins] allow list declared"
            yield Result("pass", f"{name} administers this VMM ({note})", f"account:{name}", ev)


# --- polkit -------------------------------------------------------------------------------------


# --- polkit local authority (.pkla) -------------------------------------------------------------

PKLA_GRANTS = ("yes", "auth_self", "auth_self_keep")
PKLA_STATES = ("any", "inactive", "active")
LIBVIRT_MANAGE = "org.libvirt.unix.manage"


def _gpattern(glob: str) -> re.Pattern:
    """GLib's GPatternSpec: '*' and '?' only (no brackets, no escapes)."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob) + r"\Z", re.S)


def _pkla_libvirt_actions(entries: list[dict]) -> list[str]:
    """The libvirt action ids to evaluate: org.libvirt.unix.manage, plus every Action pattern naming
    org.libvirt.* itself (api actions under access_drivers = ["polkit"]), taken literally."""
    acts = {LIBVIRT_MANAGE}
    for e in entries:
        acts.update(a for a in e["action"] if a.startswith("org.libvirt.") and a != LIBVIRT_MANAGE)
    return sorted(acts)


def _action_matches(sec: dict, action: str) -> bool:
    return any(_gpattern(a).match(action) or a == action for a in sec["action"])


def _pkla_group_order(acc: Accounts, name: str) -> list[str]:
    """The account's groups in the order pkla-check-authorization looks them up (a later group's
    entries override an earlier one's): getgrouplist() gives the primary group first, then the
    /etc/group lines naming the account, and get_groups_for_user() prepends each, reversing that."""
    p = acc.by_name.get(name)
    primary = [g["name"] for g in acc.group if p is not None and g["gid"] == p["gid"]][:1]
    secondary = [g["name"] for g in acc.group if name in g["members"] and g["name"] not in primary]
    return list(reversed(primary + secondary))


def pkla_decisions(pkla_files: list[dict], acc: Accounts, names: list[str]) -> dict:
    """Evaluate the local authority like pkla-check-authorization does, for each account in `names`
    and each libvirt action: {account: {action: {state: (result, file, section) | None}}}.

    Entries are grouped in stores (one per directory, in load order); for each identity — "default",
    then each group of the account, then the account itself — each store's LAST matching entry gives
    its three results, and a result it leaves unset keeps the earlier one (pkla-check-authorization(8)).
    """
    stores: list[list[tuple[dict, dict]]] = []
    for f in pkla_files:
        if not stores or stores[-1][0][0]["dir"] != f["dir"]:
            stores.append([])
        stores[-1].extend((f, sec) for sec in f.get("sections", []) if not sec.get("ignored"))
        if not stores[-1]:
            stores.pop()
    entries = [sec for st in stores for _f, sec in st]
    actions = _pkla_libvirt_actions(entries)
    out: dict = {}
    for name in names:
        identities = ["default"] + [f"unix-group:{g}" for g in _pkla_group_order(acc, name)] + [f"unix-user:{name}"]
        per_action = {}
        for action in actions:
            res: dict = {k: None for k in PKLA_STATES}
            for ident in identities:
                for st in stores:
                    last = None
                    for f, sec in st:
                        if _action_matches(sec, action) and any(
                                (spec == "default" if ident == "default" else _gpattern(spec).match(ident))
                                for spec in sec["identity"]):
                            last = (f, sec)
                    if last is None:
                        continue
                    for k in PKLA_STATES:
                        if last[1][k]:
                            res[k] = (last[1][k], last[0]["path"], last[1]["name"])
            per_action[action] = res
        out[name] = per_action
    return out


def _pkla_wide(sec: dict) -> str | None:
    """The identity of a section that matches every account, if any."""
    for spec in sec["identity"]:
        if spec == "default" or _gpattern(spec).match("unix-user:\x00any") or \
                _gpattern(spec).match("unix-group:\x00any"):
            return spec
    return None


def judge_pkla(src: dict, facts, admin_set) -> list[Result]:
    """M6-POLKIT findings for the .pkla files (one per file that names a libvirt action)."""
    pkla = src.get("pkla") or {}
    for where in ("roots", "dirs"):
        for d, state in (pkla.get(where) or {}).items():
            need(state, d)
    files = pkla.get("files", [])
    results: list[Result] = []
    compat = [f["path"] for f in src.get("files", []) if f["name"] == "49-polkit-pkla-compat.rules"]
    note = (f"read through {compat[0]}" if compat else
            "no 49-polkit-pkla-compat.rules: polkit 0.105 reads .pkla natively, polkit >= 0.106 only through "
            "that rule (without it this file may be inert; judged anyway, the safe side)")
    libvirt_files = []
    for f in files:
        resource = f"file:{f['path']}"
        if "text" in f:  # unreadable
            try:
                need(f["text"], f["path"])
            except EvidenceMissing as exc:
                results.append(Result("error", f"cannot judge {f['path']}: {exc}", resource, {"reason": str(exc)}))
            continue
        if "invalid" in f:
            results.append(Result("warn", f"{f['path']} is not a valid key file ({f['invalid']}): polkit "
                                  "ignores it, vmaudit cannot judge what was meant; fix or remove it",
                                  resource, {"path": f["path"], "invalid": f["invalid"]}))
            continue
        if any(any(a.startswith("org.libvirt") or _gpattern(a).match(LIBVIRT_MANAGE) for a in sec["action"] or [])
               for sec in f["sections"]):
            libvirt_files.append(f)
    if not libvirt_files:
        return results
    acc = Accounts(facts)
    admins = admin_set()
    names = sorted({p["name"] for p in acc.passwd} | {m for g in acc.group for m in g["members"]})
    decisions = pkla_decisions(files, acc, names)
    for f in libvirt_files:
        resource = f"file:{f['path']}"
        secs = [s for s in f["sections"] if not s.get("ignored") and
                any(a.startswith("org.libvirt") or _gpattern(a).match(LIBVIRT_MANAGE) for a in s["action"])]
        evidence = {"path": f["path"], "sections": secs, "pkla_compat": note,
                    "ignored_sections": [s["name"] for s in f["sections"] if s.get("ignored")]}
        granting = [s for s in secs if any((s[k] or "").lower() in PKLA_GRANTS for k in PKLA_STATES)]
        wide = [(s["name"], _pkla_wide(s)) for s in granting if _pkla_wide(s)]
        if wide:
            who = "; ".join(f"[{n}] Identity {i}" for n, i in wide)
            results.append(Result("fail", f"{f['path']} grants libvirt access to every account ({who})", resource,
                                  evidence, expected="unix-group:<admin group>", actual="every account"))
            continue
        # who ends up granted because of a section of this file, after every later override
        outside: dict[str, list[str]] = {}
        granted: dict[str, list[str]] = {}
        for name, per_action in decisions.items():
            for action, res in per_action.items():
                for state, r in res.items():
                    if r and r[1] == f["path"] and r[0].lower() in PKLA_GRANTS:
                        granted.setdefault(name, []).append(f"{action} {state}={r[0]} [{r[2]}]")
        for name, how in granted.items():
            if name not in admins:
                outside[name] = sorted(set(how))
        unknown = []
        for s in granting:
            for spec in s["identity"]:
                kind, _, pattern = spec.partition(":")
                if kind == "unix-netgroup":
                    unknown.append(f"{spec} (netgroup)")
                elif kind == "unix-group" and not any(_gpattern(spec).match(f"unix-group:{g['name']}")
                                                      for g in acc.group) and acc.directory_sources:
                    unknown.append(f"{spec} (not in /etc/group; directory: {', '.join(acc.directory_sources)})")
        evidence.update({"granted": granted, "outside_admins": outside, "unknown_identities": unknown,
                         "admins": sorted(admins)})
        if outside:
            who = ", ".join(sorted(outside))
            results.append(Result("fail", f"{f['path']} grants libvirt access beyond the administrators ({who})",
                                  resource, evidence, expected="administrators only", actual=who))
        elif unknown:
            results.append(Result("warn", f"{f['path']} grants libvirt access to identities vmaudit cannot see "
                                  f"({'; '.join(unknown)}); review it", resource, evidence))
        else:
            results.append(Result("pass", f"{f['path']} grants libvirt access to administrators only"
                                  + ("" if granted else " (no account keeps a grant from it)"), resource, evidence))
    return results


@check("M6-POLKIT", severity="high",
       title="polkit rules for libvirt",
       remediation="Grant org.libvirt.unix.manage / org.libvirt.api.* only with subject.isInGroup() of a "
                   "group holding the declared administrators (in a .pkla: Identity=unix-group:<that group>); "
                   "never return polkit.Result.YES unconditionally, never grant to unix-user:* or default.",
       sources="/etc/polkit-1/rules.d, /run/polkit-1/rules.d, /usr/local/share/polkit-1/rules.d, "
               "/usr/share/polkit-1/rules.d (*.rules); /etc/polkit-1/localauthority, "
               "/var/lib/polkit-1/localauthority (*/*.pkla)")
def polkit(facts, policy):
    """With auth_unix_rw = polkit (the distributions' default), polkit decides who may manage libvirt.
    libvirt's own default for org.libvirt.unix.manage asks for an administrator's password; a rule that
    answers YES (or AUTH_SELF: any user's own password) opens full control of every guest.

    Rule: per rules file (polkitd runs every .rules file of /etc/polkit-1, /run/polkit-1,
    /usr/local/share/polkit-1 and /usr/share/polkit-1 rules.d, ordered by file name, /etc first on a tie;
    a same-named file does not hide another) with a polkit.addRule() function naming org.libvirt actions
    and returning YES, AUTH_SELF or AUTH_SELF_KEEP: no identity condition (subject.isInGroup /
    subject.user) -> fail; a group or user with accounts outside the administrators ([admins] allow,
    else the administrators M6-ADMINS counts) -> fail; a group vmaudit cannot see in /etc/group, or
    JavaScript it cannot judge from text (computed identities, negations, polkit.spawn) -> warn, naming
    the file. Per .pkla file of the local authority (polkit 0.105, or the pkla compatibility rule), its
    entries evaluated like pkla-check-authorization (stores by directory name, /var/lib before /etc;
    default, group, then user identities; later entries override): an entry granting yes/auth_self*
    for a libvirt action to every account (unix-user:*, *, default) -> fail; accounts outside the
    administrators still granted by an entry of the file -> fail; a netgroup or a group not in
    /etc/group under a directory -> warn; a file that is not a valid key file -> warn. An unreadable
    rules or localauthority directory -> error.
    Sources: the polkit rules and localauthority directories; /etc/passwd and /etc/group.
    On a host without libvirt (host.libvirt "absent") -> skip.
    """
    facts.require_libvirt("libvirt's polkit actions")
    src = need(facts.source("polkit_rules"), "polkit_rules")
    for d, state in src.get("dirs", {}).items():
        need(state, d)
    scanned = [f["path"] for f in src.get("files", [])]
    admin_cache: dict = {}

    def admin_set() -> set[str]:
        if "set" not in admin_cache:
            allow = policy.get("admins", "allow")
            admin_cache["set"] = set(allow) if allow is not None else set(admin_accounts(facts, policy)[0]) | {"root"}
        return admin_cache["set"]

    judged = 0
    for f in src.get("files", []):
        resource = f"file:{f['path']}"
        try:
            text = need(f.get("text"), f["path"])
        except EvidenceMissing as exc:
            judged += 1
            yield Result("error", f"cannot judge polkit rules: {exc}", resource, {"reason": str(exc)})
            continue
        rules = [r for r in polkit_rules_of(text) if r["libvirt"]]
        if not rules:
            continue
        judged += 1
        # a rules file of the same name elsewhere is not hidden: polkitd runs both, /etc first
        evidence = {"path": f["path"], "same_name": f.get("same_name", []), "rules": rules}
        granting = [r for r in rules if r["grants"]]
        if not granting:
            if any(r["unjudgeable"] for r in rules):
                yield Result("warn", f"{f['path']}: a rule for libvirt actions returns a value vmaudit "
                             "cannot judge from text; review it", resource, evidence)
            else:
                yield Result("pass", f"{f['path']} names libvirt actions but grants nothing", resource, evidence)
            continue
        if any(r["unconditional"] for r in granting):
            yield Result("fail", f"{f['path']} grants libvirt access to every user "
                         f"({'/'.join(sorted({g for r in granting for g in r['grants']}))} without checking "
                         "the subject's identity)", resource, evidence,
                         expected="subject.isInGroup(<admin group>)", actual="unconditional")
            continue
        try:
            admins = admin_set()
            acc = Accounts(facts)
        except EvidenceMissing as exc:
            yield Result("error", f"cannot compare {f['path']} with the administrators: {exc}", resource,
                         dict(evidence, reason=str(exc)))
            continue
        outside: dict[str, list[str]] = {}
        granted: dict[str, list[str]] = {}  # whom the file lets manage libvirt: named in every verdict
        unknown_groups = []
        for r in granting:
            for g in r["groups"]:
                entry = acc.groups.get(g)
                if entry is None:
                    granted[f"group {g}"] = ["(not in /etc/group)"]
                    if acc.directory_sources:  # a directory group: its members are unknown here
                        unknown_groups.append(g)
                    continue
                granted[f"group {g}"] = sorted(acc.members(entry))
                extra = sorted(set(acc.members(entry)) - admins)
                if extra:
                    outside[f"group {g}"] = extra
            for u in r["users"]:
                granted[f"user {u}"] = [u]
                if u not in admins:
                    outside[f"user {u}"] = [u]
        evidence.update({"grants_to": granted, "outside_admins": outside,
                         "unknown_groups": sorted(set(unknown_groups)), "admins": sorted(admins)})
        whom = "; ".join(f"{k}: {', '.join(v) or 'no members'}" for k, v in granted.items())
        if outside:
            who = "; ".join(f"{k}: {', '.join(v)}" for k, v in outside.items())
            yield Result("fail", f"{f['path']} grants root-equivalent libvirt access to {whom}, beyond the "
                         f"administrators ({who})", resource, evidence, expected="administrators only", actual=who)
        elif unknown_groups or any(r["unjudgeable"] for r in granting):
            why = [f"group {g} not in /etc/group (directory: {', '.join(acc.directory_sources)})"
                   for g in sorted(set(unknown_groups))]
            why += [u for r in granting for u in r["unjudgeable"]]
            yield Result("warn", f"{f['path']} grants libvirt access in a way vmaudit cannot fully judge "
                         f"({'; '.join(why)}); review it", resource, evidence)
        else:
            yield Result("pass", f"{f['path']} grants root-equivalent libvirt access to {whom} "
                         "(administrators only)", resource, evidence)
    try:
        pkla_results = judge_pkla(src, facts, admin_set)
    except EvidenceMissing as exc:
        pkla_results = [Result("error", f"cannot judge the polkit local authority (.pkla): {exc}", "host",
                               {"reason": str(exc)})]
    for r in pkla_results:
        judged += 1
        yield r
    if judged == 0:
        pkla = src.get("pkla") or {}
        yield Result("pass", "no polkit rule or .pkla entry grants libvirt actions: libvirt's default "
                     "(administrator authentication) applies", "host",
                     {"scanned": scanned + [f["path"] for f in pkla.get("files", [])], "dirs": src.get("dirs", {}),
                      "pkla_roots": pkla.get("roots", {})})


# --- sockets ------------------------------------------------------------------------------------

def _mode(value) -> int | None:
    if value is None:
        return None
    try:
        return int(str(value), 8)
    except ValueError:
        return None


def _socket_state(facts, daemon: str, role: str, conf_values: dict, auth: str, live: dict | None,
                  enabled: set[str]) -> dict:
    unit_name, path = DAEMONS[daemon][role]
    activated = DAEMONS[daemon]["rw"][0] in enabled
    unit = socket_unit(facts, unit_name)
    if unit and unit.get("ListenStream"):
        path = unit["ListenStream"][0]
    key = "unix_sock_rw_perms" if role == "rw" else "unix_sock_admin_perms"
    default = ("0777" if auth == "polkit" else "0700") if role == "rw" else "0700"
    conf_mode = str(conf_values.get(key, default))
    state = {"path": path, "daemon": daemon, "socket_unit": unit_name if unit else None,
             "socket_activated": activated, "auth_unix_rw": auth,
             "conf": {key: conf_values.get(key), "unix_sock_group": conf_values.get("unix_sock_group"),
                      "effective_default": default}}
    if live is not None and path in live:
        entry = need(live[path], path)
        state.update(mode=entry["mode"], group=entry.get("group") or str(entry.get("gid")), source="live stat")
    elif activated and unit is not None:
        # systemd creates the socket: the unit's mode (systemd's default 0666) and group win
        state.update(mode=unit.get("SocketMode") or "0666", group=unit.get("SocketGroup") or "root",
                     source=f"socket unit {unit_name} ({unit['path']})")
    else:
        state.update(mode=conf_mode, group=conf_values.get("unix_sock_group") or "root",
                     source=f"/etc/libvirt/{DAEMONS[daemon]['conf']}"
                     + ("" if key in conf_values else " (default)"))
    return state


def _group_beyond_admins(facts, policy, group: str, cache: dict) -> tuple[list[str], str | None]:
    """(login-capable members of `group` who are not administrators, why its members are unknown)."""
    if "admins" not in cache:
        allow = policy.get("admins", "allow")
        cache["accounts"] = Accounts(facts)
        cache["admins"] = set(allow) if allow is not None else set(admin_accounts(facts, policy)[0]) | {"root"}
    acc: Accounts = cache["accounts"]
    entry = acc.groups.get(group) or (acc.groups_by_gid.get(int(group)) if group.isdigit() else None)
    if entry is None:
        if acc.directory_sources or group.isdigit():
            return [], f"group {group} is not in /etc/group"
        return [], None  # a group no file defines has no members
    members = [m for m in acc.members(entry) if login_capable(acc.shell(m))]
    return sorted(set(members) - cache["admins"]), None


@check("M6-SOCKET-PERMS", severity="critical",
       title="Access to libvirt's management socket",
       remediation="Keep auth_unix_rw = \"polkit\" (or restrict unix_sock_rw_perms / SocketMode to 0770 "
                   "with a unix_sock_group of administrators); unix_sock_admin_perms and the admin socket "
                   "unit's SocketMode 0700/0600.",
       sources="libvirtd.conf / virtqemud.conf / virtproxyd.conf; libvirt socket units; /run/libvirt/*-sock")
def socket_perms(facts, policy):
    """A local process that can connect to libvirt's read-write socket without authentication controls
    every guest (and, through them, the host). The admin socket reconfigures the daemon itself.

    Rule: for each daemon in use (enabled units, live sockets, else present config: libvirtd, or
    virtqemud and virtproxyd), the effective mode of its read-write socket — the live stat when there
    is one, else the socket unit's SocketMode under socket activation, else unix_sock_rw_perms (default
    0777 with auth polkit, 0700 otherwise): writable by others with auth_unix_rw = none -> fail,
    critical; writable by its group with auth none, and that group holds login-capable accounts that
    are not administrators ([admins] allow, else those M6-ADMINS counts) -> fail (high). The admin
    socket with any group/other permission -> fail (high).
    Sources: /etc/libvirt/<daemon>.conf, systemd socket units, (live) /run/libvirt/*-sock.
    """
    live = live_sockets(facts)
    enabled = enabled_units(facts)
    admin_cache: dict = {}
    for daemon, why in daemons_in_use(facts):
        try:
            conf = daemon_conf(facts, daemon)
            values = conf.get("values", {})
            auth = str(values.get("auth_unix_rw", "polkit"))
            states = {role: _socket_state(facts, daemon, role, values, auth, live, enabled)
                      for role in ("rw", "admin")}
        except EvidenceMissing as exc:
            for role in ("rw", "admin"):
                yield Result("error", f"cannot judge the {daemon} {role} socket: {exc}",
                             f"socket:{DAEMONS[daemon][role][1]}", {"reason": str(exc), "daemon": daemon})
            continue
        rw = states["rw"]
        rw["in_use_because"] = why
        mode = _mode(rw["mode"])
        res = f"socket:{rw['path']}"
        if mode is None:
            yield Result("error", f"{rw['path']}: mode {rw['mode']!r} is not octal", res, rw)
        elif mode & 0o002 and auth == "none":
            yield Result("fail", f"{rw['path']} is writable by every local user ({rw['mode']}) and "
                         "auth_unix_rw = none: anyone on the host controls every guest", res, rw,
                         expected="auth_unix_rw polkit, or mode 0770 with an admin group",
                         actual=f"mode {rw['mode']}, auth none")
        elif mode & 0o020 and auth == "none":
            try:
                outside, unknown = _group_beyond_admins(facts, policy, str(rw["group"]), admin_cache)
                rw["group_members_outside_admins"] = outside
            except EvidenceMissing as exc:
                outside, unknown = [], None
                rw["reason"] = str(exc)
            if "reason" in rw:
                yield Result("error", f"cannot tell who is in group {rw['group']} of {rw['path']} ({rw['mode']}, "
                             f"auth none): {rw['reason']}", res, rw)
            elif outside:
                yield Result("fail", f"{rw['path']} ({rw['mode']}, auth none) lets group {rw['group']} control "
                             f"every guest, and {', '.join(outside)} of it are not administrators", res, rw,
                             expected="auth_unix_rw polkit, or a group of administrators only",
                             actual=f"mode {rw['mode']}, group {rw['group']}", severity="high")
            elif unknown:
                yield Result("warn", f"{rw['path']} ({rw['mode']}, auth none) is open to group {rw['group']}, "
                             f"whose members vmaudit cannot see ({unknown})", res, rw,
                             actual=f"mode {rw['mode']}, group {rw['group']}")
            else:
                yield Result("pass", f"{rw['path']} ({rw['mode']}, auth none) is open to group {rw['group']}: its "
                             "members are administrators", res, rw,
                             actual=f"mode {rw['mode']}, group {rw['group']}")
        else:
            yield Result("pass", f"{rw['path']} mode {rw['mode']} with auth_unix_rw = {auth}", res, rw,
                         actual=f"mode {rw['mode']}, auth {auth}")
        adm = states["admin"]
        adm["in_use_because"] = why
        mode = _mode(adm["mode"])
        res = f"socket:{adm['path']}"
        if mode is None:
            yield Result("error", f"{adm['path']}: mode {adm['mode']!r} is not octal", res, adm)
        elif mode & 0o077:
            yield Result("fail", f"admin socket {adm['path']} has mode {adm['mode']}: others than root can "
                         "reconfigure the daemon", res, adm, expected="0700 (or 0600)",
                         actual=adm["mode"], severity="high")
        else:
            yield Result("pass", f"admin socket {adm['path']} mode {adm['mode']}", res, adm,
                         expected="0700 (or 0600)", actual=adm["mode"])


# --- sshd ---------------------------------------------------------------------------------------

SSH_DEFAULTS = {"permitrootlogin": "prohibit-password", "passwordauthentication": "yes",
                "kbdinteractiveauthentication": "yes", "usepam": "no"}
SSH_MATCHABLE = ("permitrootlogin", "passwordauthentication", "kbdinteractiveauthentication")  # not UsePAM


@check("M6-SSH-ROOT", severity="high",
       title="SSH root login and password authentication",
       remediation="Set 'PermitRootLogin no' and 'PasswordAuthentication no' (and "
                   "'KbdInteractiveAuthentication no') first in sshd_config or sshd_config.d; administrators "
                   "log in with their own keys and escalate with sudo.",
       sources="/etc/ssh/sshd_config and its Include files")
def ssh_root(facts, policy):
    """A direct root login leaves no trace of which administrator acted and makes root's password or
    key the single secret protecting every guest; passwords over SSH can be guessed.

    Rule: the effective global values (first value wins, Include files expanded in place, keywords case
    insensitive; OpenSSH >= 7.0 defaults: PermitRootLogin prohibit-password, PasswordAuthentication yes,
    KbdInteractiveAuthentication yes, UsePAM no): PermitRootLogin yes -> fail; prohibit-password,
    without-password or forced-commands-only -> warn; PasswordAuthentication yes -> warn;
    KbdInteractiveAuthentication yes with UsePAM yes (passwords through PAM) -> warn. Lines after
    `Match all` apply to every connection over the global values (as sshd -T shows). Other Match blocks
    are not applied globally: one that permits root logins or passwords is named in a warn.
    Sources: /etc/ssh/sshd_config, the files it includes.
    """
    src = need(facts.source("sshd_config"), "sshd_config")
    for path, marker in (src.get("unreadable") or {}).items():
        need(marker, path)
    if not src.get("present"):
        raise NotApplicable("no /etc/ssh/sshd_config: no OpenSSH server is configured on this host")
    effective: dict[str, dict] = {}
    match_all: dict[str, dict] = {}
    matches = []
    for e in src.get("entries", []):
        key = {"challengeresponseauthentication": "kbdinteractiveauthentication"}.get(e["keyword"], e["keyword"])
        if key not in SSH_DEFAULTS:
            continue
        if e["match"] is None:
            effective.setdefault(key, {"value": e["value"].lower(), "at": f"{e['file']}:{e['line']}"})
            if e.get("match_all") and key in SSH_MATCHABLE:
                match_all.setdefault(key, {"value": e["value"].lower(), "at": f"{e['file']}:{e['line']} (Match all)"})
        else:
            matches.append({"match": e["match"], "keyword": key, "value": e["value"].lower(),
                            "at": f"{e['file']}:{e['line']}"})
    effective.update(match_all)  # a matching block's value wins over the global one for every connection
    for key, default in SSH_DEFAULTS.items():
        effective.setdefault(key, {"value": default, "at": "default"})
    evidence = {"effective": effective, "match_blocks": matches, "files": src.get("files", [])}
    prl = effective["permitrootlogin"]["value"]
    fails, warns = [], []
    if prl == "yes":
        fails.append(f"PermitRootLogin yes ({effective['permitrootlogin']['at']})")
    elif prl in ("prohibit-password", "without-password", "forced-commands-only"):
        warns.append(f"root may log in with a key (PermitRootLogin {prl}, {effective['permitrootlogin']['at']})")
    if effective["passwordauthentication"]["value"] == "yes":
        warns.append(f"PasswordAuthentication yes ({effective['passwordauthentication']['at']})")
    if effective["kbdinteractiveauthentication"]["value"] == "yes" and effective["usepam"]["value"] == "yes":
        warns.append("KbdInteractiveAuthentication yes with UsePAM yes accepts passwords "
                     f"({effective['kbdinteractiveauthentication']['at']})")
    for m in matches:
        if (m["keyword"] == "permitrootlogin" and m["value"] != "no") or \
                (m["keyword"] == "passwordauthentication" and m["value"] == "yes"):
            warns.append(f"Match {m['match']}: {m['keyword']} {m['value']} ({m['at']})")
    actual = f"PermitRootLogin {prl}, PasswordAuthentication {effective['passwordauthentication']['value']}"
    expected = "PermitRootLogin no, PasswordAuthentication no"
    if fails:
        yield Result("fail", "root can log in over SSH with a password or key: " + "; ".join(fails + warns),
                     "host", evidence, expected, actual)
    elif warns:
        yield Result("warn", "SSH: " + "; ".join(warns), "host", evidence, expected, actual)
    else:
        yield Result("pass", "SSH refuses root logins and passwords", "host", evidence, expected, actual)
