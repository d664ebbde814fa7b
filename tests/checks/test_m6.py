"""M6 checks (administrators, polkit, libvirt sockets, SSH root logins) on the shared fixture hosts and on
small roots built in tmp_path, plus the `access` collectors they read."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from access_helpers import facts, run, tree
from vmtest import REQUIRE_REAL, audit, host_root, one, sshd_privsep_dir

from vmaudit.collectors import Context
from vmaudit.collectors.access import (
    collect_libvirt_sockets,
    collect_polkit_rules,
    collect_sshd_config,
    collect_sudoers,
    parse_pkla,
)
from vmaudit.collectors.polkit_js import analyse_polkit_rule, polkit_rules_of
from vmaudit.facts import unavailable

# --- M6-ADMINS ----------------------------------------------------------------------------------

def test_admins_pass_debian_hardened():
    f = one(run("debian-hardened"), "M6-ADMINS")
    assert f["status"] == "pass"
    assert set(f["evidence"]) >= {"admins", "count", "max", "allow", "uid0_accounts", "sudoers_files"}
    assert sorted(f["evidence"]["admins"]) == ["alice", "bob"]
    assert f["evidence"]["uid0_accounts"] == ["root"]
    # the QEMU service account is in kvm and libvirt-qemu but cannot log in
    assert "libvirt-qemu" in f["evidence"]["not_counted"]
    assert "/etc/sudoers.d/nagios" in f["evidence"]["sudoers_files"]
    assert one(run("debian-hardened"), "M6-ADMINS", "account:alice")["status"] == "pass"


def test_admins_fail_debian_broken():
    report = run("debian-broken")
    f = one(report, "M6-ADMINS")
    assert f["status"] == "fail" and f["severity"] == "high"
    admins = f["evidence"]["admins"]
    assert sorted(admins) == ["alice", "bob", "carol", "dave", "eve", "frank", "svc-virt", "toor"]
    assert any("primary member of group libvirt" in w for w in admins["svc-virt"])  # primary gid counts
    assert any("sudo ALL" in w and "/etc/sudoers.d/ops" in w for w in admins["carol"])  # via User_Alias OPS
    assert any("libvirt tool" in w for w in admins["frank"])  # Cmnd_Alias with virsh
    # sudo ignores sudoers.d names with a dot: mallory's grant in ops.dpkg-old does not count
    assert "mallory" not in admins
    assert any(s["path"].endswith("ops.dpkg-old") for s in f["evidence"]["sudoers_skipped"])
    toor = one(report, "M6-ADMINS", "account:toor")
    assert toor["status"] == "fail" and toor["severity"] == "critical"
    assert toor["evidence"]["uid"] == 0


def test_admins_allowlist():
    report = run("debian-hardened", '[admins]\nallow = ["alice"]\n')
    bob = one(report, "M6-ADMINS", "account:bob")
    assert bob["status"] == "fail" and bob["evidence"]["allow"] == ["alice"]
    assert "member of group libvirt" in " ".join(bob["evidence"]["via"])
    assert one(report, "M6-ADMINS", "account:alice")["status"] == "pass"


def test_admins_directory_accounts_warn():
    # rhel-broken resolves accounts through sssd: a count within the limit cannot be trusted
    f = one(run("rhel-broken", "[admins]\nmax = 10\n"), "M6-ADMINS")
    assert f["status"] == "warn"
    assert "sss" in f["evidence"]["directory_sources"]
    assert sorted(f["evidence"]["admins"]) == ["cloud-user", "dev1", "dev2", "ops1", "ops2"]


def test_admins_error_missing_passwd_and_unreadable_sudoers():
    snap = facts("debian-hardened")
    snap["sources"]["accounts"]["passwd"] = unavailable("cannot read /etc/passwd: Permission denied")
    f = one(run(snap), "M6-ADMINS")
    assert f["status"] == "error" and "Permission denied" in f["evidence"]["reason"]

    snap = facts("debian-hardened")
    snap["sources"]["sudoers"]["files"]["/etc/sudoers.d/nagios"] = unavailable(
        "cannot read /etc/sudoers.d/nagios: Permission denied")
    f = one(run(snap), "M6-ADMINS")
    assert f["status"] == "error" and "nagios" in f["evidence"]["reason"]
    assert not [x for x in run(snap)["findings"] if x["check_id"] == "M6-ADMINS" and x["status"] == "pass"]


def test_sudoers_syntax(tmp_path):
    tree(tmp_path, {
        "/etc/sudoers": ("Defaults env_reset\n#includedir /etc/sudoers.d\n@include extra\n"
                         "%admin ALL=(ALL) ALL\n"),  # Ubuntu's line; no such group, files only: nobody
        "/etc/extra": ("User_Alias ADM = ann, \\\n    ben  # trailing comment\n"
                       "ADM, !ben  ALL = (ALL) NOPASSWD: ALL\n"
                       "cat web1 = (postgres) ALL\n"  # runs as postgres: no root
                       "%#2000 ALL = (root) /bin/bash\n"
                       "#1005 ALL=(ALL:ALL) ALL : db1 = /usr/bin/ls\n"),
        "/etc/sudoers.d/z~": "zed ALL=(ALL) ALL\n",
    })
    src = collect_sudoers(Context(root=tmp_path, live=False))
    assert list(src["files"]) == ["/etc/sudoers", "/etc/extra"]
    assert src["aliases"]["User_Alias"]["ADM"] == ["ann", "ben"]
    spec = next(s for s in src["specs"] if s["users"][0] == "ADM")
    assert spec["users"] == ["ADM", "!ben"] and spec["runas"] == "ALL" and spec["commands"] == ["ALL"]
    assert [s["hosts"] for s in src["specs"] if s["users"] == ["#1005"]] == [["ALL"], ["db1"]]
    files = {"/etc/passwd": ("root:x:0:0:root:/root:/bin/bash\nann:x:1000:1000::/home/ann:/bin/bash\n"
                             "ben:x:1001:1001::/home/ben:/bin/bash\ncat:x:1002:1002::/home/cat:/bin/bash\n"
                             "dan:x:1003:2000::/home/dan:/bin/bash\neli:x:1005:1005::/home/eli:/bin/sh\n"),
             "/etc/group": "root:x:0:\nops:x:2000:\n"}
    tree(tmp_path, files)
    f = one(audit(tmp_path), "M6-ADMINS")
    assert sorted(f["evidence"]["admins"]) == ["ann", "dan", "eli"]
    assert f["status"] == "pass" and f["evidence"]["unresolved_sudoers_users"] == []


def test_sudoers_runas_applies_to_the_commands_after_it(tmp_path):
    # sudoers(5): a Runas_Spec holds for the commands that follow it, up to the next Runas_Spec
    tree(tmp_path, {
        "/etc/sudoers": ("carl ALL = (root) /bin/bash, (nobody) /bin/ls\n"
                         "dora ALL = (nobody) /bin/bash, (root) /usr/bin/id\n"),
        "/etc/passwd": ("root:x:0:0:root:/root:/bin/bash\ncarl:x:1000:1000::/home/carl:/bin/bash\n"
                        "dora:x:1001:1001::/home/dora:/bin/bash\n"),
        "/etc/group": "root:x:0:\n",
    })
    src = collect_sudoers(Context(root=tmp_path, live=False))
    assert [(s["users"], s["runas"], s["commands"]) for s in src["specs"]] == [
        (["carl"], "root", ["/bin/bash"]), (["carl"], "nobody", ["/bin/ls"]),
        (["dora"], "nobody", ["/bin/bash"]), (["dora"], "root", ["/usr/bin/id"])]
    f = one(audit(tmp_path), "M6-ADMINS")
    assert list(f["evidence"]["admins"]) == ["carl"]  # a root shell; dora's shell runs as nobody


def test_admins_root_equivalent_groups():
    """docker, lxd, incus-admin and disk members own the host without sudo: they count (issue 11)."""
    snap = facts("debian-hardened")
    groups = snap["sources"]["accounts"]["group"]
    groups.append({"name": "docker", "gid": 2998, "members": ["carol"]})
    next(g for g in groups if g["name"] == "disk")["members"] = ["dave"]
    f = one(run(snap), "M6-ADMINS")
    assert f["status"] == "fail" and f["evidence"]["count"] == 4
    assert f["evidence"]["admins"]["carol"] == ["secondary member of group docker (root-equivalent)"]
    assert f["evidence"]["admins"]["dave"] == ["secondary member of group disk (root-equivalent)"]
    assert f["evidence"]["root_equivalent_groups"] == ["docker", "lxd", "incus-admin", "disk"]
    # the policy's list replaces the built-in one
    g = one(run(snap, '[admins]\nroot_equivalent_groups = ["docker"]\n'), "M6-ADMINS")
    assert g["status"] == "pass" and "dave" not in g["evidence"]["admins"] and "carol" in g["evidence"]["admins"]
    e = one(run(facts("debian-hardened") | {"sources": {**snap["sources"], "accounts": unavailable("EACCES")}}),
            "M6-ADMINS")
    assert e["status"] == "error"


# --- M6-POLKIT ----------------------------------------------------------------------------------

def test_polkit_pass_packaged_rule():
    f = one(run("debian-hardened"), "M6-POLKIT", "file:/usr/share/polkit-1/rules.d/60-libvirt.rules")
    assert f["status"] == "pass"
    assert f["evidence"]["rules"][0]["groups"] == ["libvirt"]
    # Debian's packaged rule (libvirt-daemon-system 9.0.0-4+deb12u2, byte for byte) is named with whom it
    # lets manage every guest
    assert f["message"] == ("/usr/share/polkit-1/rules.d/60-libvirt.rules grants root-equivalent libvirt access "
                            "to group libvirt: alice, bob (administrators only)")
    assert f["evidence"]["grants_to"] == {"group libvirt": ["alice", "bob"]}
    assert set(f["evidence"]) >= {"path", "rules", "outside_admins", "admins"}


def test_polkit_fail_unconditional_and_wide_group():
    report = run("debian-broken")
    f = one(report, "M6-POLKIT", "file:/etc/polkit-1/rules.d/50-libvirt-everyone.rules")
    assert f["status"] == "fail" and f["evidence"]["rules"][0]["unconditional"] is True
    f = one(report, "M6-POLKIT", "file:/etc/polkit-1/rules.d/60-libvirt.rules")
    assert f["status"] == "fail"
    assert f["evidence"]["outside_admins"] == {"group users": ["mallory"]}
    assert "grants root-equivalent libvirt access to group users: " in f["message"]
    # the /etc rule does not hide the packaged rule of the same name: polkitd runs both, /etc first
    assert f["evidence"]["same_name"] == ["/usr/share/polkit-1/rules.d/60-libvirt.rules"]
    packaged = one(report, "M6-POLKIT", "file:/usr/share/polkit-1/rules.d/60-libvirt.rules")
    assert packaged["status"] == "pass" and packaged["evidence"]["rules"][0]["groups"] == ["libvirt"]


def test_polkit_auth_self_and_unjudgeable():
    report = run("rhel-broken")
    f = one(report, "M6-POLKIT", "file:/etc/polkit-1/rules.d/49-libvirt-devs.rules")
    assert f["status"] == "fail" and f["evidence"]["rules"][0]["grants"] == ["AUTH_SELF_KEEP"]
    assert f["evidence"]["outside_admins"] == {"group virtusers": ["dev3"]}
    f = one(report, "M6-POLKIT", "file:/etc/polkit-1/rules.d/70-libvirt-api.rules")
    assert f["status"] == "warn" and f["evidence"]["rules"][0]["unjudgeable"]


def test_polkit_group_unknown_locally():
    rule = ('polkit.addRule(function(action, subject) {\n  if (action.id == "org.libvirt.unix.manage" &&\n'
            '      subject.isInGroup("virt-admins@corp")) { return polkit.Result.YES; }\n});\n')
    for host, status in (("rhel-broken", "warn"), ("debian-hardened", "pass")):
        snap = facts(host)
        snap["sources"]["polkit_rules"]["files"].append(
            {"name": "80-corp.rules", "path": "/etc/polkit-1/rules.d/80-corp.rules", "same_name": [], "text": rule})
        f = one(run(snap), "M6-POLKIT", "file:/etc/polkit-1/rules.d/80-corp.rules")
        # with sssd the group may have members vmaudit cannot see; with files only it has none
        assert f["status"] == status, host
        assert f["evidence"]["unknown_groups"] == (["virt-admins@corp"] if status == "warn" else [])


def test_polkit_allowlist_narrows_admin_set():
    f = one(run("debian-hardened", '[admins]\nallow = ["alice"]\n'), "M6-POLKIT",
            "file:/usr/share/polkit-1/rules.d/60-libvirt.rules")
    assert f["status"] == "fail" and f["evidence"]["outside_admins"] == {"group libvirt": ["bob"]}


def test_polkit_error_unreadable_rule():
    snap = facts("debian-hardened")
    snap["sources"]["polkit_rules"]["files"][1]["text"] = unavailable("cannot read: Permission denied")
    path = snap["sources"]["polkit_rules"]["files"][1]["path"]
    f = one(run(snap), "M6-POLKIT", f"file:{path}")
    assert f["status"] == "error" and "Permission denied" in f["evidence"]["reason"]
    snap["sources"]["polkit_rules"] = unavailable("cannot list /etc/polkit-1/rules.d: Permission denied")
    assert one(run(snap), "M6-POLKIT")["status"] == "error"


def test_polkit_js_forms():
    regex_rule = """polkit.addRule(function(action, subject) {
        // polkit.Result.YES for org.libvirt in a comment does not count
        if (/^org\\.libvirt\\.api\\./.test(action.id) && subject.local) { return polkit.Result.AUTH_SELF; }
    });"""
    r = polkit_rules_of(regex_rule)[0]
    assert r["libvirt"] and r["grants"] == ["AUTH_SELF"] and r["unconditional"]
    r = analyse_polkit_rule('if (action.id == "org.libvirt.unix.manage" && subject.user == "alice") return "yes";')
    assert r["users"] == ["alice"] and r["grants"] == ["YES"] and not r["unconditional"]
    r = analyse_polkit_rule('if (action.id == "org.libvirt.unix.manage" && !subject.isInGroup("x")) '
                            'return polkit.Result.YES;')
    assert r["unjudgeable"]
    assert polkit_rules_of('/* polkit.addRule(function(a,s){ "org.libvirt"; return polkit.Result.YES; }) */') == []
    r = analyse_polkit_rule('if (action.id == "org.libvirt.unix.manage") return polkit.Result.NO;')
    assert r["libvirt"] and r["grants"] == []


PASSWD = ("root:x:0:0:root:/root:/bin/bash\nann:x:1000:1000::/home/ann:/bin/bash\n"
          "eve:x:1001:100::/home/eve:/bin/bash\nmal:x:1002:100::/home/mal:/bin/bash\n")
GROUP = "root:x:0:\nusers:x:100:\nlibvirt:x:120:ann\n"
GRANT_GROUP = ('polkit.addRule(function(action, subject) {\n  if (action.id == "org.libvirt.unix.manage" &&\n'
               '      subject.isInGroup("%s")) { return polkit.Result.YES; }\n});\n')


def test_polkit_same_name_does_not_hide_and_all_four_dirs(tmp_path):
    # polkit(8): files of every rules.d directory run, ordered by name, /etc first on a tie; a narrowed
    # /etc copy does not stop the packaged file of the same name from granting
    root = tree(tmp_path, {"/etc/passwd": PASSWD, "/etc/group": GROUP,
                           "/etc/polkit-1/rules.d/60-libvirt.rules": GRANT_GROUP % "libvirt",
                           "/usr/share/polkit-1/rules.d/60-libvirt.rules": GRANT_GROUP % "users",
                           "/usr/local/share/polkit-1/rules.d/10-lab.rules": GRANT_GROUP % "libvirt",
                           "/run/polkit-1/rules.d/60-libvirt.rules": GRANT_GROUP % "libvirt"})
    src = collect_polkit_rules(Context(root=tmp_path, live=False))
    assert [f["path"] for f in src["files"]] == [
        "/usr/local/share/polkit-1/rules.d/10-lab.rules", "/etc/polkit-1/rules.d/60-libvirt.rules",
        "/run/polkit-1/rules.d/60-libvirt.rules", "/usr/share/polkit-1/rules.d/60-libvirt.rules"]
    report = audit(root)
    assert one(report, "M6-POLKIT", "file:/etc/polkit-1/rules.d/60-libvirt.rules")["status"] == "pass"
    assert one(report, "M6-POLKIT", "file:/run/polkit-1/rules.d/60-libvirt.rules")["status"] == "pass"
    f = one(report, "M6-POLKIT", "file:/usr/share/polkit-1/rules.d/60-libvirt.rules")
    assert f["status"] == "fail" and f["evidence"]["outside_admins"] == {"group users": ["eve", "mal"]}
    assert "/etc/polkit-1/rules.d/60-libvirt.rules" in f["evidence"]["same_name"]


def test_polkit_rhel_local_rule_next_to_packaged_one():
    report = run("rhel-hardened")
    local = one(report, "M6-POLKIT", "file:/etc/polkit-1/rules.d/50-libvirt.rules")
    assert local["status"] == "pass" and local["evidence"]["rules"][0]["groups"] == ["wheel"]
    assert local["evidence"]["same_name"] == ["/usr/share/polkit-1/rules.d/50-libvirt.rules"]
    assert one(report, "M6-POLKIT", "file:/usr/share/polkit-1/rules.d/50-libvirt.rules")["status"] == "pass"


def test_pkla_debian_broken():
    report = run("debian-broken")
    vendor = one(report, "M6-POLKIT", "file:/var/lib/polkit-1/localauthority/10-vendor.d/60-libvirt.pkla")
    assert vendor["status"] == "pass"  # libvirt's grant to the libvirt group: alice and bob, administrators
    # svc-virt: primary gid. alice and bob are in users too, looked up after libvirt (reverse getgrouplist
    # order), so 50-local.d's users entry decides for them: ResultActive=yes from that file
    assert sorted(vendor["evidence"]["granted"]) == ["svc-virt"]
    assert "49-polkit-pkla-compat.rules" in vendor["evidence"]["pkla_compat"]
    local = one(report, "M6-POLKIT", "file:/etc/polkit-1/localauthority/50-local.d/60-libvirt-desktop.pkla")
    assert local["status"] == "fail" and list(local["evidence"]["outside_admins"]) == ["mallory"]
    assert {"alice", "bob", "mallory"} <= set(local["evidence"]["granted"])
    assert "org.libvirt.unix.manage active=yes [Desktop users manage libvirt]" in \
        local["evidence"]["outside_admins"]["mallory"]


def _pkla(ident: str, result: str = "ResultActive=yes", action: str = "org.libvirt.unix.manage",
          name: str = "grant") -> str:
    return f"[{name}]\nIdentity={ident}\nAction={action}\n{result}\n"


def test_pkla_later_entries_override(tmp_path):
    # pkla-check-authorization(8): stores by directory name (/var/lib before /etc for the same name),
    # then identities default -> groups -> user, later matches overriding earlier ones
    files = {"/etc/passwd": PASSWD, "/etc/group": GROUP,
             "/var/lib/polkit-1/localauthority/10-vendor.d/a.pkla": _pkla("unix-group:users"),
             "/etc/polkit-1/localauthority/10-vendor.d/b.pkla": _pkla(
                 "unix-user:mal;unix-user:eve", "ResultActive=auth_admin", "org.libvirt.*", "deny")}
    root = tree(tmp_path, files)
    f = one(audit(root), "M6-POLKIT", "file:/var/lib/polkit-1/localauthority/10-vendor.d/a.pkla")
    assert f["status"] == "pass" and f["evidence"]["granted"] == {}  # overridden for eve and mal
    # an entry leaving ResultActive unset does not withdraw it: eve keeps the grant
    (tmp_path / "etc/polkit-1/localauthority/10-vendor.d/b.pkla").write_text(
        _pkla("unix-user:eve", "ResultAny=no") + _pkla("unix-user:mal", "ResultActive=no", name="m"))
    f = one(audit(root), "M6-POLKIT", "file:/var/lib/polkit-1/localauthority/10-vendor.d/a.pkla")
    assert f["status"] == "fail" and list(f["evidence"]["outside_admins"]) == ["eve"]
    # a user entry in an earlier store still wins over a group entry in a later one: identities first
    (tmp_path / "etc/polkit-1/localauthority/10-vendor.d/b.pkla").unlink()
    tree(tmp_path, {"/var/lib/polkit-1/localauthority/05-early.d/c.pkla": _pkla(
        "unix-user:eve;unix-user:mal", "ResultActive=no")})
    f = one(audit(root), "M6-POLKIT", "file:/var/lib/polkit-1/localauthority/10-vendor.d/a.pkla")
    assert f["status"] == "pass"


def test_pkla_result_value_polkit_rejects_skips_the_entry(tmp_path):
    # polkit_implicit_authorization_from_string() is an exact strcmp: 'No' is an error and the entry is
    # dropped, so it does not withdraw eve's earlier grant; 'Yes' grants nothing either
    files = {"/etc/passwd": PASSWD, "/etc/group": GROUP,
             "/var/lib/polkit-1/localauthority/10-vendor.d/a.pkla": _pkla("unix-group:users"),
             "/etc/polkit-1/localauthority/50-local.d/b.pkla": _pkla("unix-user:eve", "ResultActive=No")
             + _pkla("unix-user:*", "ResultAny=Yes", name="everyone")}
    report = audit(tree(tmp_path, files))
    f = one(report, "M6-POLKIT", "file:/var/lib/polkit-1/localauthority/10-vendor.d/a.pkla")
    assert f["status"] == "fail" and sorted(f["evidence"]["outside_admins"]) == ["eve", "mal"]
    b = one(report, "M6-POLKIT", "file:/etc/polkit-1/localauthority/50-local.d/b.pkla")
    assert b["status"] == "pass" and b["evidence"]["granted"] == {}
    assert sorted(b["evidence"]["ignored_sections"]) == ["everyone", "grant"]
    sec = parse_pkla(_pkla("unix-user:eve", "ResultActive=No"))["sections"][0]
    assert sec["ignored"] == "not a polkit result: ResultActive=No"


def test_pkla_later_group_overrides_earlier_group_like_getgrouplist(tmp_path):
    # pkla-check-authorization walks the account's groups in reverse getgrouplist() order (primary
    # group last): eve's primary group 'users' denies, her secondary 'vmops' grants -> users wins;
    # mal's primary group 'ops2' grants after 'users' (a secondary group of his) denies -> mal granted
    passwd = PASSWD.replace("mal:x:1002:100:", "mal:x:1002:130:")
    group = (GROUP + "vmops:x:125:eve\nops2:x:130:\n").replace("users:x:100:\n", "users:x:100:mal\n")
    files = {"/etc/passwd": passwd, "/etc/group": group,
             "/etc/polkit-1/localauthority/50-local.d/a.pkla":
                 _pkla("unix-group:vmops;unix-group:ops2", name="grant")
                 + _pkla("unix-group:users", "ResultActive=no", name="deny")}
    f = one(audit(tree(tmp_path, files)), "M6-POLKIT", "file:/etc/polkit-1/localauthority/50-local.d/a.pkla")
    assert f["status"] == "fail" and list(f["evidence"]["outside_admins"]) == ["mal"]


def test_pkla_everyone_netgroup_invalid(tmp_path):
    files = {"/etc/passwd": PASSWD, "/etc/group": GROUP,
             "/etc/polkit-1/localauthority/50-local.d/all.pkla": _pkla("unix-user:*", "ResultAny=auth_self"),
             "/etc/polkit-1/localauthority/50-local.d/ng.pkla": _pkla("unix-netgroup:virtops"),
             "/etc/polkit-1/localauthority/50-local.d/bad.pkla": "[x]\nIdentity=unix-user:*\nnot a pair\n",
             "/etc/polkit-1/localauthority/50-local.d/other.pkla": _pkla("unix-user:*", action="org.gnome.*"),
             "/etc/polkit-1/localauthority/50-local.d/admins.pkla": _pkla("unix-group:libvirt")}
    report = audit(tree(tmp_path, files))
    d = "file:/etc/polkit-1/localauthority/50-local.d"
    f = one(report, "M6-POLKIT", f"{d}/all.pkla")
    assert f["status"] == "fail" and "unix-user:*" in f["message"]
    assert "no 49-polkit-pkla-compat.rules" in f["evidence"]["pkla_compat"]
    assert one(report, "M6-POLKIT", f"{d}/ng.pkla")["status"] == "warn"
    assert one(report, "M6-POLKIT", f"{d}/bad.pkla")["status"] == "warn"
    assert one(report, "M6-POLKIT", f"{d}/admins.pkla")["status"] == "pass"
    assert not [x for x in report["findings"] if x["resource"] == f"{d}/other.pkla"]
    assert parse_pkla("[a]\nIdentity=unix-group:x\nAction=org.libvirt.unix.manage\n")["sections"][0]["ignored"]


def test_pkla_evidence_missing(tmp_path, monkeypatch):
    snap = facts("debian-broken")
    d = "/etc/polkit-1/localauthority/50-local.d"
    snap["sources"]["polkit_rules"]["pkla"]["dirs"][d] = unavailable(f"cannot list {d}: Permission denied")
    f = one(run(snap), "M6-POLKIT")
    assert f["status"] == "error" and "Permission denied" in f["evidence"]["reason"]
    snap = facts("debian-broken")
    path = snap["sources"]["polkit_rules"]["pkla"]["files"][0]["path"]
    snap["sources"]["polkit_rules"]["pkla"]["files"][0] = {
        "path": path, "dir": path.rsplit("/", 1)[0], "text": unavailable(f"cannot read {path}: Permission denied")}
    assert one(run(snap), "M6-POLKIT", f"file:{path}")["status"] == "error"
    # the collector turns a directory it cannot list into that marker
    tree(tmp_path, {"/etc/polkit-1/localauthority/50-local.d/x.pkla": _pkla("unix-group:libvirt")})
    real = Context.listdir

    def listdir(self, p):
        if p.endswith("50-local.d"):
            raise PermissionError(13, "Permission denied")
        return real(self, p)
    monkeypatch.setattr(Context, "listdir", listdir)
    src = collect_polkit_rules(Context(root=tmp_path, live=False))
    assert src["pkla"]["dirs"]["/etc/polkit-1/localauthority/50-local.d"] == {
        "unavailable": "cannot list /etc/polkit-1/localauthority/50-local.d: Permission denied"}


# --- sudo: the last matching entry wins -----------------------------------------------------------

SUDO_PASSWD = ("root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n"
               "bob:x:1001:1001::/home/bob:/bin/bash\n")


def _sudo_admins(tmp_path, sudoers: str, group: str = "root:x:0:\nops:x:2000:alice,bob\n", extra=None) -> dict:
    files = {"/etc/passwd": SUDO_PASSWD, "/etc/group": group, "/etc/sudoers": sudoers}
    files.update(extra or {})
    return one(audit(tree(tmp_path, files)), "M6-ADMINS")["evidence"]


def test_sudo_last_match_withdraws_root(tmp_path):
    ev = _sudo_admins(tmp_path, "%ops ALL=(ALL) ALL\nalice ALL=(ALL) !ALL\n")
    assert list(ev["admins"]) == ["bob"]
    assert "withdrawn by !ALL as root" in ev["sudo_withdrawn"]["alice"][0]
    # a later grant gives root back; a denial before the grant changes nothing
    ev = _sudo_admins(tmp_path, "%ops ALL=(ALL) ALL\nalice ALL=(ALL) !ALL\nalice ALL=(root) /usr/bin/virsh\n"
                                "bob ALL=(ALL) !ALL\n%ops ALL=(ALL) ALL\n")
    assert sorted(ev["admins"]) == ["alice", "bob"]
    assert any("libvirt tool" in w for w in ev["admins"]["alice"])
    # a denial of one command withdraws that command only
    ev = _sudo_admins(tmp_path, "alice ALL=(root) /bin/bash, /bin/su\nalice ALL=(root) !/bin/bash\n"
                                "bob ALL=(root) /bin/bash\nbob ALL=(root) !/bin/bash\n")
    assert list(ev["admins"]) == ["alice"] and ev["admins"]["alice"] == ["sudo shell/su: /bin/su (/etc/sudoers:1)"]


def test_sudo_undecidable_denials_stay_counted(tmp_path):
    ev = _sudo_admins(tmp_path, "Host_Alias DB = db1, db2\n%ops ALL=(ALL) ALL\nalice DB=(ALL) !ALL\n"
                                "bob ALL=(postgres) !ALL\n")
    # alice's denial holds on other hosts only (maybe not this one), bob's for postgres, not root
    assert sorted(ev["admins"]) == ["alice", "bob"]
    assert "may not apply" in ev["sudo_undecided"]["alice"][0] and "bob" not in ev["sudo_undecided"]
    ev = _sudo_admins(tmp_path, "%ops ALL=(ALL, !operator) ALL\nalice ALL=(ALL, !operator) !ALL\n")
    assert "alice" in ev["admins"] and ev["sudo_undecided"]["alice"]


def test_sudo_group_membership_outlives_sudo_denial(tmp_path):
    # wheel members are polkit administrators (50-default.rules): a sudo denial leaves them counted
    ev = _sudo_admins(tmp_path, "%wheel ALL=(ALL) ALL\nalice ALL=(ALL) !ALL\n",
                      group="root:x:0:\nwheel:x:10:alice\n")
    assert ev["admins"]["alice"] == ["secondary member of group wheel"]
    assert ev["sudo_withdrawn"]["alice"]


def test_sudo_includes_read_in_place(tmp_path):
    # sudo suspends the file at an include: the included denial comes before the line after it
    sudoers = "%ops ALL=(ALL) ALL\n@include deny\n@includedir /etc/sudoers.d\nbob ALL=(ALL) ALL\n"
    extra = {"/etc/deny": "alice ALL=(ALL) !ALL\nbob ALL=(ALL) !ALL\n",
             "/etc/sudoers.d/10-alice": "alice ALL=(ALL) ALL\n", "/etc/sudoers.d/20-alice": "alice ALL=(ALL) !ALL\n",
             "/etc/sudoers.d/30.alice": "alice ALL=(ALL) ALL\n"}  # skipped: a '.' in the name
    ev = _sudo_admins(tmp_path, sudoers, extra=extra)
    assert list(ev["admins"]) == ["bob"]
    src = collect_sudoers(Context(root=tmp_path, live=False))
    assert [s["file"] for s in src["specs"]] == ["/etc/sudoers", "/etc/deny", "/etc/deny", "/etc/sudoers.d/10-alice",
                                                 "/etc/sudoers.d/20-alice", "/etc/sudoers"]


# --- M6-SOCKET-PERMS ----------------------------------------------------------------------------

def test_socket_perms_pass_socket_activation():
    report = run("debian-hardened")
    rw = one(report, "M6-SOCKET-PERMS", "socket:/run/libvirt/libvirt-sock")
    assert rw["status"] == "pass" and rw["evidence"]["mode"] == "0666"
    assert rw["evidence"]["auth_unix_rw"] == "polkit" and rw["evidence"]["socket_activated"] is True
    assert rw["evidence"]["source"].startswith("socket unit libvirtd.socket")
    adm = one(report, "M6-SOCKET-PERMS", "socket:/run/libvirt/libvirt-admin-sock")
    assert adm["status"] == "pass" and adm["evidence"]["mode"] == "0600"


def test_socket_perms_fail_auth_none_world_writable():
    report = run("debian-broken")
    rw = one(report, "M6-SOCKET-PERMS", "socket:/run/libvirt/libvirt-sock")
    assert rw["status"] == "fail" and rw["severity"] == "critical"
    assert rw["evidence"]["socket_activated"] is False  # units masked: libvirtd.conf decides
    assert rw["evidence"]["source"] == "/etc/libvirt/libvirtd.conf" and rw["evidence"]["mode"] == "0777"
    adm = one(report, "M6-SOCKET-PERMS", "socket:/run/libvirt/libvirt-admin-sock")
    assert adm["status"] == "fail" and adm["severity"] == "high" and adm["evidence"]["mode"] == "0770"


def test_socket_perms_group_writable_auth_none_counts_the_group(tmp_path):
    # auth none and mode 0770: the socket's group controls every guest. 'libvirt' holding only the
    # administrators passes; 'users' (every account's primary group) fails.
    files = {
        "/etc/libvirt/libvirtd.conf": ('auth_unix_rw = "none"\nunix_sock_rw_perms = "0770"\n'
                                       'unix_sock_group = "libvirt"\n'),
        "/etc/passwd": ("root:x:0:0:root:/root:/bin/bash\nann:x:1000:100::/home/ann:/bin/bash\n"
                        "eve:x:1001:100::/home/eve:/bin/bash\n"),
        "/etc/group": "root:x:0:\nusers:x:100:\nlibvirt:x:120:ann\n",
    }
    root = tree(tmp_path, files)
    rw = one(audit(root), "M6-SOCKET-PERMS", "socket:/run/libvirt/libvirt-sock")
    assert rw["status"] == "pass" and rw["evidence"]["group_members_outside_admins"] == []
    (tmp_path / "etc/libvirt/libvirtd.conf").write_text(files["/etc/libvirt/libvirtd.conf"].replace("libvirt\"", "users\""))
    report = audit(root)
    rw = one(report, "M6-SOCKET-PERMS", "socket:/run/libvirt/libvirt-sock")
    assert rw["status"] == "fail" and rw["severity"] == "high"
    assert rw["evidence"]["group_members_outside_admins"] == ["eve"]  # ann is in libvirt: an administrator
    assert one(report, "M6-SOCKET-PERMS", "socket:/run/libvirt/libvirt-admin-sock")["status"] == "pass"


def test_socket_perms_modular_with_drop_in():
    report = run("rhel-broken")
    rw = one(report, "M6-SOCKET-PERMS", "socket:/run/libvirt/virtqemud-sock")
    assert rw["status"] == "fail" and rw["evidence"]["daemon"] == "virtqemud"
    adm = one(report, "M6-SOCKET-PERMS", "socket:/run/libvirt/virtqemud-admin-sock")
    assert adm["status"] == "fail" and adm["evidence"]["mode"] == "0660"  # from the drop-in
    assert one(report, "M6-SOCKET-PERMS", "socket:/run/libvirt/libvirt-sock")["evidence"]["daemon"] == "virtproxyd"


def test_socket_perms_live_stat_wins():
    snap = facts("debian-hardened")
    snap["sources"]["libvirt_sockets"] = {
        "/run/libvirt/libvirt-sock": {"mode": "0666", "uid": 0, "gid": 0, "owner": "root", "group": "root"},
        "/run/libvirt/libvirt-admin-sock": {"mode": "0666", "uid": 0, "gid": 0, "owner": "root", "group": "root"}}
    f = one(run(snap), "M6-SOCKET-PERMS", "socket:/run/libvirt/libvirt-admin-sock")
    assert f["status"] == "fail" and f["evidence"]["source"] == "live stat"


def test_socket_perms_error():
    snap = facts("debian-hardened")
    snap["sources"]["libvirt_config"]["libvirtd.conf"] = unavailable("/etc/libvirt/libvirtd.conf: line 3: bad")
    f = one(run(snap), "M6-SOCKET-PERMS", "socket:/run/libvirt/libvirt-sock")
    assert f["status"] == "error" and "line 3" in f["evidence"]["reason"]
    snap["sources"]["systemd_units"] = unavailable("cannot list /etc/systemd/system")
    assert one(run(snap), "M6-SOCKET-PERMS")["status"] == "error"


def test_libvirt_sockets_collector(tmp_path):
    d = tmp_path / "run/libvirt"
    d.mkdir(parents=True)
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(d / "virtqemud-sock"))
        os.chmod(d / "virtqemud-sock", 0o666)
        (d / "virtqemud-sock.lock").write_text("")  # not a socket
        out = collect_libvirt_sockets(Context(root=tmp_path, live=True))
    finally:
        s.close()
    entry = out["/run/libvirt/virtqemud-sock"]
    assert entry["mode"] == "0666" and entry["uid"] == os.getuid()
    assert list(out) == ["/run/libvirt/virtqemud-sock"]


# --- M6-SSH-ROOT --------------------------------------------------------------------------------

def test_ssh_pass_and_fail_on_fixtures():
    f = one(run("debian-hardened"), "M6-SSH-ROOT")
    assert f["status"] == "pass"
    assert f["evidence"]["effective"]["permitrootlogin"] == {
        "value": "no", "at": "/etc/ssh/sshd_config.d/10-hardening.conf:2"}
    f = one(run("debian-broken"), "M6-SSH-ROOT")
    assert f["status"] == "fail"
    assert f["evidence"]["effective"]["permitrootlogin"]["at"] == "/etc/ssh/sshd_config.d/60-root.conf:1"
    assert f["evidence"]["match_blocks"][0]["match"] == "User backup"
    f = one(run("rhel-broken"), "M6-SSH-ROOT")
    assert f["status"] == "fail"
    assert f["evidence"]["effective"]["permitrootlogin"]["at"].endswith("01-permitrootlogin.conf:3")
    # RHEL's 50-redhat.conf: ChallengeResponseAuthentication is the old name of KbdInteractiveAuthentication
    assert f["evidence"]["effective"]["kbdinteractiveauthentication"]["value"] == "no"


def test_ssh_defaults_warn_and_first_value_wins(tmp_path):
    root = tree(tmp_path, {"/etc/ssh/sshd_config": "Include sshd_config.d/*.conf\nUsePAM yes\n"
                                                   "PermitRootLogin yes\nKbdInteractiveAuthentication no\n",
                           "/etc/ssh/sshd_config.d/20-b.conf": "permitrootlogin=yes\n",
                           "/etc/ssh/sshd_config.d/10-a.conf": "PERMITROOTLOGIN no\n"})
    f = one(audit(root), "M6-SSH-ROOT")
    assert f["evidence"]["effective"]["permitrootlogin"]["at"] == "/etc/ssh/sshd_config.d/10-a.conf:1"
    assert f["status"] == "warn"  # PasswordAuthentication defaults to yes
    assert f["evidence"]["effective"]["passwordauthentication"]["at"] == "default"
    (tmp_path / "etc/ssh/sshd_config.d/10-a.conf").write_text("PermitRootLogin no\nPasswordAuthentication no\n")
    assert one(audit(root), "M6-SSH-ROOT")["status"] == "pass"
    (tmp_path / "etc/ssh/sshd_config.d/10-a.conf").unlink()
    (tmp_path / "etc/ssh/sshd_config.d/20-b.conf").unlink()
    (tmp_path / "etc/ssh/sshd_config").write_text("PasswordAuthentication no\nKbdInteractiveAuthentication no\n")
    f = one(audit(root), "M6-SSH-ROOT")
    assert f["status"] == "warn" and f["evidence"]["effective"]["permitrootlogin"]["value"] == "prohibit-password"


def test_ssh_match_all_overrides_the_global_values(tmp_path):
    # sshd applies a matching block over the global lines; "Match all" matches every connection
    conf = ("PermitRootLogin no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "Match all\nPermitRootLogin yes\nUsePAM yes\n")
    root = tree(tmp_path, {"/etc/ssh/sshd_config": conf})
    f = one(audit(root), "M6-SSH-ROOT")
    assert f["status"] == "fail"
    assert f["evidence"]["effective"]["permitrootlogin"] == {"value": "yes", "at": "/etc/ssh/sshd_config:5 (Match all)"}
    assert f["evidence"]["effective"]["usepam"]["value"] == "yes"  # global-only: read in file order
    if os.path.exists("/usr/sbin/sshd") and os.geteuid() == 0:
        assert _sshd_effective(str(tmp_path / "etc/ssh/sshd_config"))["permitrootlogin"] == "yes"


def test_ssh_error_and_skip(tmp_path):
    snap = facts("debian-hardened")
    snap["sources"]["sshd_config"]["unreadable"] = {
        "/etc/ssh/sshd_config.d/10-hardening.conf": unavailable("cannot read: Permission denied")}
    f = one(run(snap), "M6-SSH-ROOT")
    assert f["status"] == "error" and "Permission denied" in f["evidence"]["reason"]
    assert one(audit(tree(tmp_path, {"/etc/passwd": ""})), "M6-SSH-ROOT")["status"] == "skip"


def _sshd_effective(path: str) -> dict:
    sshd_privsep_dir()
    out = subprocess.run(["/usr/sbin/sshd", "-T", "-f", path], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)


@pytest.mark.parametrize("host", ["debian-hardened", "debian-broken", "rhel-hardened", "rhel-broken"])
def test_ssh_matches_real_sshd(host, tmp_path):
    """Our reading of each fixture's sshd_config agrees with OpenSSH's own (`sshd -T`)."""
    if not os.path.exists("/usr/sbin/sshd"):
        if REQUIRE_REAL:
            pytest.fail("OpenSSH's sshd is required (openssh-server)")
        pytest.skip("needs /usr/sbin/sshd")
    if os.geteuid() != 0:
        pytest.skip("sshd -T reads the host keys: needs root")
    src = host_root(host) / "etc/ssh"
    shutil.copytree(src, tmp_path / "ssh")
    main = tmp_path / "ssh/sshd_config"
    # point the absolute Include at the copy; RHEL's crypto-policy include does not exist here
    text = main.read_text().replace("/etc/ssh/sshd_config.d", str(tmp_path / "ssh/sshd_config.d"))
    main.write_text(text)
    real = _sshd_effective(str(main))
    ours = collect_sshd_config(Context(root=host_root(host), live=False))
    entries = [e for e in ours["entries"] if e["match"] is None]
    for key in ("permitrootlogin", "passwordauthentication", "kbdinteractiveauthentication", "usepam"):
        mine = next((e["value"].lower() for e in entries
                     if e["keyword"] in (key, "challengeresponseauthentication" if key.startswith("kbd") else key)),
                    None)
        expected = {"permitrootlogin": "without-password"}.get(key) if mine is None else mine
        if mine is None and key != "permitrootlogin":
            continue  # a compiled-in default
        # sshd -T prints prohibit-password as its old name without-password
        assert real[key] == {"prohibit-password": "without-password"}.get(expected, expected), key


def test_sshd_runs_where_nothing_made_its_privsep_dir(tmp_path):
    """On a host without systemd /run/sshd does not exist before the first sshd test: the helper every
    sshd test calls creates it (proved in a mount namespace whose /run is empty)."""
    if os.geteuid() != 0 or not os.path.exists("/usr/sbin/sshd") or shutil.which("unshare") is None:
        (pytest.fail if REQUIRE_REAL else pytest.skip)("needs root, sshd and unshare")
    config = host_root("debian-hardened") / "etc/ssh/sshd_config"
    tests = Path(__file__).resolve().parents[1]
    script = ("mount -t tmpfs tmpfs /run && test ! -e /run/sshd && "
              f"{sys.executable} -c 'import sys; sys.path.insert(0, \"{tests}\"); import vmtest; "
              f"vmtest.sshd_privsep_dir()' && /usr/sbin/sshd -T -f {config} >/dev/null")
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
