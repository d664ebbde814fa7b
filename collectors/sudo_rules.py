"""What sudoers (read in place by collectors/access.py as `sudoers`) lets each account do as root, with
sudo's own semantics: User/Runas/Cmnd_Alias expansion, %group, %#gid and #uid users, (runas) lists, the
last matching entry winning (a later '!ALL' withdraws earlier grants), and which commands are
root-equivalent (ALL, a shell, su, libvirt's tools). Used by M6-ADMINS.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

from vmaudit.facts import EvidenceMissing, need, partial

NOLOGIN_SHELLS = ("nologin", "false")


SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "mksh", "csh", "tcsh", "fish", "su", "sudo", "sudoedit"}


LIBVIRT_TOOLS = re.compile(r"^(virsh|virt-[a-z-]+|qemu-system-.*|qemu-kvm|libvirtd|virtqemud|virt.*d)$")


def login_capable(shell: str | None) -> bool:
    if shell is None:
        return True  # unknown account (a name only in /etc/group): assume it can log in
    return posixpath.basename(shell.strip() or "/bin/sh") not in NOLOGIN_SHELLS


class Sudo:
    """Who sudoers lets run everything (or a shell, su, libvirt's tools) as root."""

    def __init__(self, facts, accounts: Any):  # checks/m6_admins.py Accounts
        self.src = need(facts.source("sudoers"), "sudoers")
        for _path, entry, gap in partial(self.src.get("files", {})):
            if gap is not None:  # sudo stops at a file it cannot read: so does the judgement
                raise EvidenceMissing(gap.reason)
            entry.get("included_from")  # a marker raises
        self.acc = accounts
        self.aliases = self.src.get("aliases", {})
        self.unresolved: list[str] = []

    def _expand(self, items: list[str], kind: str, depth: int = 0) -> list[str]:
        out = []
        for item in items:
            neg = item.startswith("!")
            name = item[1:].strip() if neg else item
            if depth < 16 and name in self.aliases.get(kind, {}):
                out += [("!" + x if neg else x) for x in self._expand(self.aliases[kind][name], kind, depth + 1)]
            else:
                out.append(item)
        return out

    def _grant(self, spec: dict) -> str | None:
        """What root-equivalent power a spec grants, or None."""
        runas = spec.get("runas")
        if runas is not None:
            users = runas.split(":", 1)[0].strip()
            ulist = self._expand([u.strip() for u in users.split(",") if u.strip()], "Runas_Alias")
            if not any(u in ("ALL", "root", "#0") for u in ulist):
                return None  # runs as another user (or only with another group): not root
        cmds = self._expand(spec.get("commands", []), "Cmnd_Alias")
        if "ALL" in cmds:
            return "ALL"
        for c in cmds:
            if c.startswith("!"):
                continue
            exe = c.split()[0] if c.split() else ""
            exe = re.sub(r"^(sha\d+|sha224|sha256|sha384|sha512):\S+\s*", "", exe)
            base = posixpath.basename(exe)
            if base in SHELLS:
                return f"shell/su: {c}"
            if LIBVIRT_TOOLS.match(base):
                return f"libvirt tool: {c}"
        return None

    def _users(self, items: list[str]) -> set[str]:
        incl, excl = set(), set()
        for item in self._expand(items, "User_Alias"):
            neg = item.startswith("!")
            name = item[1:].strip() if neg else item
            found: set[str] = set()
            if name == "ALL":
                found = {p["name"] for p in self.acc.passwd if login_capable(p["shell"])}
            elif name.startswith("%:") or name.startswith("+") or name.startswith("%+"):
                self.unresolved.append(name)
            elif name.startswith("%#"):
                g = self.acc.groups_by_gid.get(int(name[2:])) if name[2:].isdigit() else None
                found = set(self.acc.members(g)) if g else set()
            elif name.startswith("%"):
                g = self.acc.groups.get(name[1:])
                if g is None and self.acc.directory_sources:
                    self.unresolved.append(name)  # may be a directory group; else it has no members
                found = set(self.acc.members(g)) if g else set()
            elif name.startswith("#") and name[1:].isdigit():
                found = {p["name"] for p in self.acc.passwd if p["uid"] == int(name[1:])}
            else:
                found = {name}
            (excl if neg else incl).update(found)
        return incl - excl

    def _denial_scope(self, spec: dict) -> str | None:
        """Whether the spec's denials ('!cmd') hold as root on this host: 'certain'; 'uncertain' when it
        names hosts or a Runas list with exclusions vmaudit cannot match; None when it runs as another
        user (or only with another group), so root is untouched."""
        runas = spec.get("runas")
        certain = True
        if runas is not None:
            users = runas.split(":", 1)[0].strip()
            if not users and ":" in runas:
                return None  # "(:group)": the invoking user with another group, never root
            ulist = self._expand([u.strip() for u in users.split(",") if u.strip()], "Runas_Alias")
            if not any(u in ("ALL", "root", "#0") for u in ulist):
                return None
            certain = not any(u.startswith("!") for u in ulist)
        hosts = self._expand(spec.get("hosts", []), "Host_Alias")
        if "ALL" not in hosts or any(h.startswith("!") for h in hosts):
            certain = False  # vmaudit does not know which host names sudo matches here
        return "certain" if certain else "uncertain"

    def _negates_root(self, spec: dict) -> str | None:
        """The denial scope when the spec's last ALL-command is '!ALL' (every command denied), else None."""
        cmds = self._expand(spec.get("commands", []), "Cmnd_Alias")
        last_all = next((c for c in reversed(cmds) if c.lstrip("!").strip() == "ALL"), None)
        if last_all is None or not last_all.startswith("!"):
            return None
        return self._denial_scope(spec)

    def grants(self) -> dict[str, list[str]]:
        """account -> ['sudo <what> (<file>:<line>)', ...] for the grants still in force.

        sudo applies the LAST entry that matches a command (sudoers(5)), so a later entry denying ALL
        as root ('alice ALL=(ALL) !ALL') withdraws every earlier grant of that account, and a later
        grant gives root back. A denial of one command withdraws a grant of that same command only.
        Denials vmaudit cannot be sure of (other hosts, Runas lists with exclusions) withdraw nothing:
        over-counting is the safe side. self.revoked / self.undecided say what happened.
        """
        out: dict[str, list[tuple[str, str]]] = {}
        self.revoked: dict[str, list[str]] = {}
        self.undecided: dict[str, list[str]] = {}
        for spec in self.src.get("specs", []):
            where = f"{spec['file']}:{spec['line']}"
            negation = self._negates_root(spec)
            what = None if negation else self._grant(spec)
            if not what and not negation:
                if self._denial_scope(spec) != "certain":
                    continue
                denied = {c[1:].strip() for c in self._expand(spec.get("commands", []), "Cmnd_Alias")
                          if c.startswith("!")}
                if not denied:
                    continue
            users = self._users(spec.get("users", []))
            for user in users:
                if negation == "certain":
                    if out.get(user):
                        self.revoked.setdefault(user, []).extend(
                            f"{w} withdrawn by !ALL as root ({where})" for _c, w in out[user])
                    out[user] = []
                elif negation == "uncertain":
                    if out.get(user):
                        self.undecided.setdefault(user, []).append(
                            f"!ALL at {where} may not apply to this host or to root: still counted")
                elif what:
                    # one entry per root-equivalent command, so that a later '!cmd' withdraws just that one
                    for c in self._expand(spec.get("commands", []), "Cmnd_Alias"):
                        w = None if c.startswith("!") else self._grant(dict(spec, commands=[c]))
                        if w:
                            out.setdefault(user, []).append((c, f"sudo {w} ({where})"))
                else:
                    kept = [(c, w) for c, w in out.get(user, []) if c not in denied]
                    for c, w in out.get(user, []):
                        if c in denied:
                            self.revoked.setdefault(user, []).append(f"{w} withdrawn by !{c} ({where})")
                    out[user] = kept
        return {u: [w for _c, w in g] for u, g in out.items() if g}
