"""M3-PATCH-AGE on RHEL/Fedora beyond dnf.rpm.log: the dnf4 and dnf5 transaction history databases
(real sqlite files in their schemas, built here: libdnf libdnf/transaction/sql/create_tables.sql and
dnf5 libdnf5/transaction/db/sql/create_tables.sql, tables and columns the collector reads) and
RHEL 7's yum.log without years. Ages are measured against a fixed collected_at.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import sqlite3
import tempfile
from datetime import datetime, timezone

import pytest
from vmtest import audit, one

from vmaudit.audit import collect_facts
from vmaudit.collectors import Context, hardening
from vmaudit.collectors.hardening import apply_wal, collect_package_history, parse_yum_log

NOW = "2026-11-25T12:00:00Z"
DNF4 = "var/lib/dnf/history.sqlite"
DNF5 = "usr/lib/sysimage/libdnf5/transaction_history.sqlite"

DNF4_SCHEMA = """
CREATE TABLE trans (id INTEGER PRIMARY KEY AUTOINCREMENT, dt_begin INTEGER NOT NULL, dt_end INTEGER,
    rpmdb_version_begin TEXT, rpmdb_version_end TEXT, releasever TEXT NOT NULL, user_id INTEGER NOT NULL,
    cmdline TEXT, state INTEGER NOT NULL, comment TEXT DEFAULT '', persistence INTEGER DEFAULT 0);
CREATE TABLE repo (id INTEGER PRIMARY KEY, repoid TEXT NOT NULL);
CREATE TABLE item (id INTEGER PRIMARY KEY, item_type INTEGER NOT NULL);
CREATE TABLE trans_item (id INTEGER PRIMARY KEY AUTOINCREMENT, trans_id INTEGER REFERENCES trans(id),
    item_id INTEGER REFERENCES item(id), repo_id INTEGER REFERENCES repo(id), action INTEGER NOT NULL,
    reason INTEGER NOT NULL, state INTEGER NOT NULL);
CREATE TABLE rpm (item_id INTEGER UNIQUE NOT NULL, name TEXT NOT NULL, epoch INTEGER NOT NULL,
    version TEXT NOT NULL, release TEXT NOT NULL, arch TEXT NOT NULL,
    FOREIGN KEY(item_id) REFERENCES item(id),
    CONSTRAINT rpm_unique_nevra UNIQUE (name, epoch, version, release, arch));
CREATE TABLE comps_group (item_id INTEGER UNIQUE NOT NULL, groupid TEXT NOT NULL, name TEXT NOT NULL,
    translated_name TEXT NOT NULL, pkg_types INTEGER NOT NULL, FOREIGN KEY(item_id) REFERENCES item(id));
CREATE TABLE config (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO config VALUES ('version', '1.3');
INSERT INTO repo VALUES (1, 'rhel-9-for-x86_64-baseos-rpms');
"""

DNF5_SCHEMA = """
CREATE TABLE "trans_state" ("id" INTEGER, "name" TEXT, PRIMARY KEY("id"));
INSERT INTO "trans_state" VALUES (1, 'Started'), (2, 'Ok'), (3, 'Error');
CREATE TABLE "trans" ("id" INTEGER, "dt_begin" INTEGER NOT NULL, "dt_end" INTEGER, "rpmdb_version_begin" TEXT,
    "rpmdb_version_end" TEXT, "releasever" TEXT NOT NULL, "user_id" INTEGER NOT NULL, "description" TEXT,
    "comment" TEXT, "state_id" INTEGER, PRIMARY KEY("id" AUTOINCREMENT),
    FOREIGN KEY("state_id") REFERENCES "trans_state"("id"));
CREATE TABLE "repo" ("id" INTEGER, "repoid" TEXT NOT NULL, PRIMARY KEY("id"));
CREATE TABLE "pkg_name" ("id" INTEGER, "name" TEXT NOT NULL UNIQUE, PRIMARY KEY("id"));
CREATE TABLE "arch" ("id" INTEGER, "name" TEXT NOT NULL UNIQUE, PRIMARY KEY("id"));
CREATE TABLE "item" ("id" INTEGER, PRIMARY KEY("id"));
CREATE TABLE "trans_item_action" ("id" INTEGER, "name" TEXT, PRIMARY KEY("id"));
INSERT INTO "trans_item_action" VALUES (1, 'Install'), (2, 'Upgrade'), (3, 'Downgrade'), (4, 'Reinstall'),
    (5, 'Remove'), (6, 'Replaced'), (7, 'Reason Change');
CREATE TABLE "trans_item_reason" ("id" INTEGER, "name" TEXT, PRIMARY KEY("id"));
INSERT INTO "trans_item_reason" VALUES (0, 'None'), (1, 'Dependency'), (2, 'User'), (3, 'Clean'),
    (4, 'Weak Dependency'), (5, 'Group'), (6, 'External User');
CREATE TABLE "trans_item_state" ("id" INTEGER, "name" TEXT, PRIMARY KEY("id"));
INSERT INTO "trans_item_state" VALUES (1, 'Started'), (2, 'Ok'), (3, 'Error');
CREATE TABLE "trans_item" ("id" INTEGER, "trans_id" INTEGER, "item_id" INTEGER, "repo_id" INTEGER,
    "action_id" INTEGER NOT NULL, "reason_id" INTEGER NOT NULL, "state_id" INTEGER NOT NULL,
    PRIMARY KEY("id" AUTOINCREMENT));
CREATE TABLE "rpm" ("item_id" INTEGER NOT NULL UNIQUE, "name_id" INTEGER NOT NULL, "epoch" INTEGER NOT NULL,
    "version" TEXT NOT NULL, "release" TEXT NOT NULL, "arch_id" INTEGER NOT NULL,
    CONSTRAINT "rpm_unique_nevra" UNIQUE ("name_id", "epoch", "version", "release", "arch_id"));
CREATE TABLE "config" ("key" TEXT, "value" TEXT NOT NULL, PRIMARY KEY("key"));
INSERT INTO "config" VALUES ('version', '1.1');
INSERT INTO "repo" VALUES (1, 'fedora'), (2, 'updates');
INSERT INTO "arch" VALUES (1, 'x86_64'), (2, 'noarch');
"""


def epoch(stamp: str) -> int:
    return int(datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp())


class Dnf4:
    """history.sqlite as dnf4 writes it: trans.state 1 DONE / 2 ERROR, trans_item.action 1 INSTALL,
    6 UPGRADE, 7 UPGRADED, 8 REMOVE."""

    def __init__(self, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.con = sqlite3.connect(path)
        self.con.execute("PRAGMA journal_mode = TRUNCATE")  # what libdnf sets
        self.con.executescript(DNF4_SCHEMA)
        self.items = 0

    def trans(self, end: str, actions, state: int = 1):
        cur = self.con.execute("INSERT INTO trans (dt_begin, dt_end, releasever, user_id, cmdline, state) "
                               "VALUES (?, ?, '9', 0, 'dnf -y upgrade', ?)", (epoch(end) - 40, epoch(end), state))
        for name, action in actions:
            self.items += 1
            self.con.execute("INSERT INTO item VALUES (?, 1)", (self.items,))
            self.con.execute("INSERT INTO rpm VALUES (?, ?, 0, '1.0', ?, 'x86_64')", (self.items, name, str(self.items)))
            self.con.execute("INSERT INTO trans_item (trans_id, item_id, repo_id, action, reason, state) "
                             "VALUES (?, ?, 1, ?, 2, 1)", (cur.lastrowid, self.items, action))
        self.con.commit()
        return self

    def close(self):
        self.con.close()


class Dnf5:
    """transaction_history.sqlite as dnf5 writes it (journal_mode WAL): state and action ids named in
    trans_state / trans_item_action."""

    def __init__(self, path, wal: bool = True):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.con = sqlite3.connect(path, isolation_level=None)
        if wal:
            self.con.execute("PRAGMA journal_mode = WAL")
            self.con.execute("PRAGMA wal_autocheckpoint = 0")  # keep the transactions in the WAL
        self.con.executescript(DNF5_SCHEMA)
        self.items = 0

    def trans(self, end: str, actions, state: str = "Ok"):
        with self.con:
            self.con.execute("BEGIN")
            cur = self.con.execute(
                "INSERT INTO trans (dt_begin, dt_end, releasever, user_id, description, state_id) VALUES "
                "(?, ?, '41', 0, 'dnf5 upgrade', (SELECT id FROM trans_state WHERE name = ?))",
                (epoch(end) - 40, epoch(end), state))
            for name, action in actions:
                self.items += 1
                self.con.execute("INSERT OR IGNORE INTO pkg_name (name) VALUES (?)", (name,))
                self.con.execute("INSERT INTO item VALUES (?)", (self.items,))
                self.con.execute("INSERT INTO rpm VALUES (?, (SELECT id FROM pkg_name WHERE name = ?), 0, '1', ?, 1)",
                                 (self.items, name, str(self.items)))
                self.con.execute(
                    "INSERT INTO trans_item (trans_id, item_id, repo_id, action_id, reason_id, state_id) VALUES "
                    "(?, ?, 2, (SELECT id FROM trans_item_action WHERE name = ?), 2, 2)",
                    (cur.lastrowid, self.items, action))
        return self

    def close(self):
        self.con.close()


def tree_digest(root) -> dict:
    """Every path under root with its content hash, mode and mtime: what 'nothing written' means."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            digest = hashlib.sha256(open(p, "rb").read()).hexdigest() if os.path.isfile(p) else None
            out[os.path.relpath(p, root)] = (digest, st.st_mode, st.st_mtime_ns, st.st_size)
    return out


def patch_age(root, collected_at: str = NOW) -> dict:
    facts = collect_facts(root=str(root), uri="test:///default")
    facts["collected_at"] = collected_at
    return one(audit(facts=facts), "M3-PATCH-AGE")


def history(root) -> dict:
    return {e["path"]: e for e in collect_package_history(Context(root=root, live=False))["logs"]}


# --- dnf4 history.sqlite --------------------------------------------------------------------------

def test_dnf4_history_dates_the_newest_successful_upgrade(tmp_path):
    db = Dnf4(tmp_path / DNF4)
    db.trans("2026-09-01T10:00:00", [("kernel", 1)])  # the installation
    db.trans("2026-11-20T06:30:00", [("qemu-kvm", 6), ("qemu-kvm", 7)])
    db.trans("2026-11-22T09:00:00", [("htop", 1)])  # install only: not patching
    db.trans("2026-11-24T09:00:00", [("openssl", 6)], state=2)  # failed
    db.close()
    f = patch_age(tmp_path)
    assert f["status"] == "pass"
    assert f["evidence"]["newest"] == "2026-11-20T06:30:00"
    assert f["evidence"]["newest_from"] == "/" + DNF4 and f["evidence"]["newest_source"] == "dnf-history"
    entry = f["evidence"]["logs"]["/" + DNF4]
    assert entry["upgrades"] == 1 and entry["installs"] == 2 and entry["newest_install"] == "2026-11-22T09:00:00"


def test_dnf4_history_outlives_rotated_logs_and_fails_an_old_host(tmp_path):
    # dnf.rpm.log rotated down to a recent stretch without upgrades; the database remembers the last one
    (tmp_path / "var/log").mkdir(parents=True)
    (tmp_path / "var/log/dnf.rpm.log").write_text(
        "2026-11-10T08:00:01+0000 SUBDEBUG Installed: htop-3.3.0-4.el9.x86_64\n")
    Dnf4(tmp_path / DNF4).trans("2026-08-14T09:04:45", [("openssl-libs", 6)]).close()
    f = patch_age(tmp_path)
    assert f["status"] == "fail" and f["evidence"]["newest"] == "2026-08-14T09:04:45"
    assert f["evidence"]["basis"] == "upgrade" and f["evidence"]["newest_source"] == "dnf-history"


def test_newest_upgrade_across_sources_wins(tmp_path):
    (tmp_path / "var/log").mkdir(parents=True)
    (tmp_path / "var/log/dnf.rpm.log").write_text(
        "2026-11-21T08:00:01+0000 SUBDEBUG Upgrade: bash-5.1.8-10.el9_5.x86_64\n")
    Dnf4(tmp_path / DNF4).trans("2026-11-01T09:00:00", [("bash", 6)]).close()
    f = patch_age(tmp_path)
    assert f["status"] == "pass" and f["evidence"]["newest_from"] == "/var/log/dnf.rpm.log"
    assert f["evidence"]["logs"]["/" + DNF4]["newest_upgrade"] == "2026-11-01T09:00:00"


# --- dnf5 transaction_history.sqlite (WAL) --------------------------------------------------------

def test_dnf5_history_reads_transactions_still_in_the_wal_and_writes_nothing(tmp_path):
    (tmp_path / "var/log").mkdir(parents=True)  # Fedora 41+: no dnf.rpm.log
    db = Dnf5(tmp_path / DNF5)
    db.trans("2026-06-01T12:00:00", [("kernel", "Install")])
    db.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the main file holds the install only
    db.trans("2026-11-23T07:15:00", [("qemu-kvm-core", "Upgrade"), ("qemu-kvm-core", "Replaced")])
    db.trans("2026-11-24T07:15:00", [("libvirt-daemon", "Upgrade")], state="Error")
    db.con.execute("BEGIN IMMEDIATE")  # a dnf5 run holds the write lock while vmaudit reads
    wal = tmp_path / (DNF5 + "-wal")
    assert wal.stat().st_size > 0
    # immutable alone would miss the upgrade: it is only in the WAL
    probe = sqlite3.connect(f"file:{tmp_path / DNF5}?mode=ro&immutable=1", uri=True)
    assert probe.execute("SELECT COUNT(*) FROM trans").fetchone()[0] == 1
    probe.close()
    before = tree_digest(tmp_path)
    f = patch_age(tmp_path)
    entry = history(tmp_path)["/" + DNF5]
    assert tree_digest(tmp_path) == before
    db.con.execute("ROLLBACK")
    db.close()
    assert f["status"] == "pass" and f["evidence"]["newest"] == "2026-11-23T07:15:00"
    assert f["evidence"]["newest_source"] == "dnf5-history"
    assert entry["wal_frames"] > 0 and entry["transactions"] == 2  # the failed one is not counted
    assert entry["newest_install"] == "2026-06-01T12:00:00"


def test_without_deserialize_a_private_scratch_copy_is_used(tmp_path, monkeypatch):
    # Python 3.9/3.10 (RHEL 9's python3): the WAL-applied image goes through a temporary file
    # outside the audited root; the root stays untouched and the scratch directory is gone after.
    monkeypatch.setattr(hardening, "_DESERIALIZE", False)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    root = tmp_path / "root"
    db = Dnf5(root / DNF5)
    db.trans("2026-11-23T07:15:00", [("qemu-kvm-core", "Upgrade")])
    before = tree_digest(root)
    entry = history(root)["/" + DNF5]
    assert tree_digest(root) == before and list(scratch.iterdir()) == []
    db.close()
    assert entry["wal_frames"] > 0 and entry["newest_upgrade"] == "2026-11-23T07:15:00"


def test_dnf4_database_locked_by_a_running_dnf_is_still_read(tmp_path):
    db = Dnf4(tmp_path / DNF4).trans("2026-11-20T06:30:00", [("qemu-kvm", 6)])
    db.con.execute("BEGIN EXCLUSIVE")  # another process could not even read it through locks
    before = tree_digest(tmp_path)
    f = patch_age(tmp_path)
    assert tree_digest(tmp_path) == before
    db.con.execute("ROLLBACK")
    db.close()
    assert f["status"] == "pass" and f["evidence"]["newest"] == "2026-11-20T06:30:00"


def test_dnf5_old_upgrade_fails_and_no_wal_reads_the_file_directly(tmp_path):
    db = Dnf5(tmp_path / DNF5, wal=False)
    db.trans("2026-09-30T10:00:00", [("glibc", "Upgrade")])
    db.close()
    before = tree_digest(tmp_path)
    f = patch_age(tmp_path)
    assert tree_digest(tmp_path) == before  # no -shm, -wal or -journal created
    assert f["status"] == "fail" and f["evidence"]["newest"] == "2026-09-30T10:00:00"
    assert "wal_frames" not in history(tmp_path)["/" + DNF5]


def test_apply_wal_matches_sqlite_and_ignores_uncommitted_and_torn_frames(tmp_path):
    db = Dnf5(tmp_path / "h.sqlite")
    for day in range(1, 21):
        db.trans(f"2026-11-{day:02d}T10:00:00", [(f"pkg{day}", "Upgrade")])
    db.con.execute("BEGIN")
    db.con.execute("INSERT INTO trans (dt_begin, releasever, user_id, state_id) VALUES (1, '41', 0, 1)")
    db.con.execute("PRAGMA cache_spill = 1")
    main = (tmp_path / "h.sqlite").read_bytes()
    wal = (tmp_path / "h.sqlite-wal").read_bytes()
    image, frames = apply_wal(main, wal)
    assert frames > 0
    check = sqlite3.connect(":memory:")
    if not hasattr(check, "deserialize"):
        pytest.skip("Python < 3.11 cannot load an image to compare")
    image = bytearray(image)
    image[18:20] = b"\x01\x01"
    check.deserialize(bytes(image))
    assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert check.execute("SELECT COUNT(*) FROM trans").fetchone()[0] == 20
    # a torn last frame and a WAL of another database generation are ignored, never half-applied
    torn, n = apply_wal(main, wal[:-7])
    assert n < frames
    assert apply_wal(main, wal[:32] + b"\x00" * 24 + wal[56:]) == (main, 0)
    db.con.execute("ROLLBACK")
    db.close()


def test_apply_wal_refuses_a_log_that_claims_pages_it_does_not_hold(tmp_path):
    """A log whose checksums are right but whose page number lies beyond anything the database plus its
    log could hold is damaged: it is ignored, never allocated for."""
    import struct

    from vmaudit.collectors.hardening import _wal_checksum

    db = Dnf5(tmp_path / "h.sqlite")
    db.trans("2026-11-01T10:00:00", [("pkg", "Upgrade")])
    main = (tmp_path / "h.sqlite").read_bytes()
    wal = bytearray((tmp_path / "h.sqlite-wal").read_bytes())
    db.close()
    magic, _v, page_size = struct.unpack(">3I", wal[:12])
    assert apply_wal(main, bytes(wal))[1] > 0
    big = bool(magic & 1)
    struct.pack_into(">I", wal, 32, 1_000_000)  # the first frame's page number, checksums redone
    sums = _wal_checksum(bytes(wal[:24]), 0, 0, big)
    off = 32
    while off + 24 + page_size <= len(wal):
        sums = _wal_checksum(bytes(wal[off:off + 8]), *sums, big)
        sums = _wal_checksum(bytes(wal[off + 24:off + 24 + page_size]), *sums, big)
        struct.pack_into(">2I", wal, off + 16, *sums)
        off += 24 + page_size
    assert apply_wal(main, bytes(wal)) == (main, 0)


# --- unreadable, corrupt, mid-write ---------------------------------------------------------------

def test_corrupt_and_unreadable_databases_are_reported_and_others_still_count(tmp_path):
    (tmp_path / "var/log").mkdir(parents=True)
    (tmp_path / "var/log/dnf.rpm.log").write_text(
        "2026-11-21T08:00:01+0000 SUBDEBUG Upgrade: bash-5.1.8-10.el9_5.x86_64\n")
    bad = tmp_path / DNF4
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"SQLite format 3\x00" + os.urandom(8000))
    (tmp_path / DNF5).mkdir(parents=True)  # not a file at all
    f = patch_age(tmp_path)
    assert f["status"] == "pass" and f["evidence"]["newest_from"] == "/var/log/dnf.rpm.log"
    assert "cannot query /" + DNF4 in f["evidence"]["unreadable"]["/" + DNF4]
    assert "Is a directory" in f["evidence"]["unreadable"]["/" + DNF5]


def test_a_damaged_transaction_time_loses_that_row_only(tmp_path):
    # dt_end out of datetime's range or not a number: before, OverflowError/ValueError escaped the
    # collector and took every package history source (apt, dnf logs, the other database) with it
    db = Dnf4(tmp_path / DNF4).trans("2026-11-20T06:30:00", [("qemu-kvm", 6)])
    db.trans("2026-11-21T06:30:00", [("libvirt", 6)])
    db.con.execute("UPDATE trans SET dt_end = ? WHERE id = 2", (-1e20,))
    db.trans("2026-11-22T06:30:00", [("bash", 6)])
    db.con.execute("UPDATE trans SET dt_end = 'yesterday' WHERE id = 3")
    db.con.commit()
    db.close()
    (tmp_path / "var/log").mkdir(parents=True)
    (tmp_path / "var/log/dnf.rpm.log").write_text(
        "2026-11-10T08:00:01+0000 SUBDEBUG Upgrade: bash-5.1.8-10.el9_5.x86_64\n")
    entry = history(tmp_path)["/" + DNF4]
    assert entry["transactions"] == 3 and entry["undated"] == 2 and entry["upgrades"] == 1
    f = patch_age(tmp_path)
    assert f["status"] == "pass" and f["evidence"]["newest"] == "2026-11-20T06:30:00"
    assert f["evidence"]["newest_from"] == "/" + DNF4


def test_only_a_corrupt_database_is_an_error_naming_it(tmp_path):
    path = tmp_path / DNF4
    path.parent.mkdir(parents=True)
    path.write_text("this is not a database\n")
    f = patch_age(tmp_path)
    assert f["status"] == "error" and "dnf/dnf5 history database" in f["evidence"]["reason"]
    assert "not an SQLite 3 database" in f["evidence"]["unreadable"]["/" + DNF4]


def test_hot_rollback_journal_is_not_guessed_through(tmp_path):
    Dnf4(tmp_path / DNF4).trans("2026-11-20T06:30:00", [("qemu-kvm", 6)]).close()
    journal = tmp_path / (DNF4 + "-journal")
    journal.write_bytes(bytes.fromhex("d9d505f920a163d7") + b"\x00" * 504)
    f = patch_age(tmp_path)
    assert f["status"] == "error" and "unfinished write" in f["evidence"]["unreadable"]["/" + DNF4]
    journal.write_bytes(b"")  # journal_mode TRUNCATE after a commit: an empty journal is harmless
    assert patch_age(tmp_path)["status"] == "pass"


def test_empty_database_file_is_history_without_transactions(tmp_path):
    path = tmp_path / DNF5
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    f = patch_age(tmp_path)
    assert f["status"] == "error" and f["evidence"]["logs"]["/" + DNF5]["upgrades"] == 0


# --- yum.log (RHEL 7) -----------------------------------------------------------------------------

YUM_2026 = """Dec 28 10:00:01 Installed: htop-2.2.0-3.el7.x86_64
Dec 30 23:59:01 Updated: 1:openssl-libs-1.0.2k-26.el7_9.x86_64
Jan 02 03:04:05 Updated: qemu-kvm-1.5.3-175.el7_9.6.x86_64
Jan 05 08:00:00 Erased: telnet
"""


def test_yum_log_year_from_mtime_across_new_year():
    out = parse_yum_log(YUM_2026, datetime(2027, 1, 5, 8, 0, 0))
    assert out["newest_upgrade"] == "2027-01-02T03:04:05" and out["upgrades"] == 2
    assert out["newest_install"] == "2026-12-28T10:00:01"
    # a line a few hours after the UTC reference (local time east of UTC) stays in the same year
    assert parse_yum_log("Jan 01 09:00:00 Updated: a-1-1.el7.x86_64\n",
                         datetime(2026, 12, 31, 23, 0))["newest_upgrade"] == "2027-01-01T09:00:00"
    # Feb 29 belongs to the last leap year not after the reference
    assert parse_yum_log("Feb 29 10:00:00 Updated: a-1-1.el7.x86_64\n",
                         datetime(2027, 3, 1))["newest_upgrade"] == "2024-02-29T10:00:00"


def test_yum_logs_rotated_by_date_and_live_by_mtime(tmp_path):
    log = tmp_path / "var/log"
    log.mkdir(parents=True)
    # logrotate's yearly dateext rotation: yum.log-20260101 holds 2025
    (log / "yum.log-20260101").write_text("Mar 03 10:00:00 Updated: bash-4.2.46-35.el7_9.x86_64\n"
                                          "Dec 31 22:00:00 Updated: kernel-3.10.0-1160.119.1.el7.x86_64\n")
    (log / "yum.log").write_text("Jan 02 09:00:00 Installed: htop-2.2.0-3.el7.x86_64\n")
    os.utime(log / "yum.log", (epoch("2026-01-02T09:00:00"),) * 2)
    f = patch_age(tmp_path, "2026-01-10T00:00:00Z")
    assert f["status"] == "pass" and f["evidence"]["newest"] == "2025-12-31T22:00:00"
    assert f["evidence"]["newest_source"] == "yum"
    entries = history(tmp_path)
    assert entries["/var/log/yum.log-20260101"]["year_from"] == "file name (20260101)"
    assert entries["/var/log/yum.log"]["year_from"].startswith("mtime (2026-01-02")
    g = patch_age(tmp_path, "2026-03-01T00:00:00Z")
    assert g["status"] == "fail" and g["evidence"]["age_days"] == pytest.approx(59.1, abs=0.1)


def test_yum_log_gz_rotation_and_corrupt_one(tmp_path):
    log = tmp_path / "var/log"
    log.mkdir(parents=True)
    (log / "yum.log-20261101.gz").write_bytes(gzip.compress(b"Oct 30 10:00:00 Updated: bash-4.2.46-35.el7_9.x86_64\n"))
    (log / "yum.log-20260101.gz").write_bytes(b"not gzip")
    f = patch_age(tmp_path)
    assert f["status"] == "warn" and f["evidence"]["newest"] == "2026-10-30T10:00:00"
    assert "/var/log/yum.log-20260101.gz" in f["evidence"]["unreadable"]
