"""Helpers for the M1/M4/M5/M8 tests: host roots with dated per-guest files, snapshots of the libvirt
test-driver hosts guests-mixed / guests-clean taken at a fixed time, audits under a policy."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from vmtest import FIXTURES, audit, make_policy, test_uri

from vmaudit.audit import collect_facts
from vmaudit.inventory import load_inventory

# Every age in these tests is measured against this collection time, never against the clock.
NOW_ISO = "2026-11-28T12:00:00Z"
NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc).timestamp()
DAY = 86400

INVENTORY_CSV = FIXTURES / "inventory" / "guests.csv"
INVENTORY_JSON = FIXTURES / "inventory" / "guests.json"

MIXED_POLICY = """
[host]
zone = "dmz"

[zones.networks]
"br-dmz" = "dmz"
"br-int" = "internal"
"vlan:20" = "internal"
"vlan:30" = "dmz"
"""

QEMU_LOG = """2026-05-02 08:14:51.212+0000: starting up libvirt version: 9.0.0, package: 9.0.0-4+deb12u2 (Debian), qemu version: 7.2.11Debian 1:7.2+dfsg-7+deb12u12, kernel: 6.1.0-37-amd64, hostname: hv-broken
LC_ALL=C \\
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin \\
HOME=/var/lib/libvirt/qemu/domain-3-{name} \\
/usr/bin/qemu-system-x86_64 \\
-name guest={name},debug-threads=on \\
-S \\
-machine pc-q35-7.2,usb=off,vmport=off,dump-guest-core=off,memory-backend=pc.ram \\
-accel kvm \\
-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny \\
-msg timestamp=on
char device redirected to /dev/pts/3 (label charserial0)
2026-05-09 17:02:13.480+0000: shutting down, reason=shutdown
"""


def write_dated(path: Path, text: str, age_days: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    t = NOW - age_days * DAY
    os.utime(path, (t, t))


def guest_root(tmp_path: Path, logs: dict | None = None, configs: dict | None = None,
               saves: dict | None = None, log_dir: bool = True, config_dir: bool = True) -> Path:
    """A host root whose per-guest files have the given ages in days: logs {guest: age},
    configs {guest: age}, saves {file name: age}."""
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    if log_dir:
        (root / "var/log/libvirt/qemu").mkdir(parents=True, exist_ok=True)
    if config_dir:
        (root / "etc/libvirt/qemu/networks/autostart").mkdir(parents=True, exist_ok=True)
    for name, age in (logs or {}).items():
        write_dated(root / "var/log/libvirt/qemu" / f"{name}.log", QEMU_LOG.format(name=name), age)
    for name, age in (configs or {}).items():
        write_dated(root / "etc/libvirt/qemu" / f"{name}.xml",
                    "<!--\nWARNING: THIS IS AN AUTO-GENERATED FILE. CHANGES TO IT ARE LIKELY TO BE\n"
                    f"OVERWRITTEN AND LOST. Changes to this xml configuration should be made using:\n"
                    f"  virsh edit {name}\nor other application using the libvirt API.\n-->\n\n"
                    f"<domain type='kvm'>\n  <name>{name}</name>\n</domain>\n", age)
    for fname, age in (saves or {}).items():
        write_dated(root / "var/lib/libvirt/qemu/save" / fname, "LibvirtQemudSave", age)
    return root


# Files of the guests-mixed host, ages in days at NOW: web01/web02 run (logs fresh), db01 off for
# 200 days, lab-old off for 40 days with a managed save 40 days old, never defined 45 days ago and
# never started, plus a stray save file of a guest that no longer exists.
MIXED_LOGS = {"web01": 0.5, "web02": 0.2, "db01": 200, "lab-old": 40, "scratch": 0.1}
MIXED_CONFIGS = {"web01": 300, "web02": 300, "db01": 210, "lab-old": 400, "never": 45}
MIXED_SAVES = {"lab-old.save": 40, "old-erp.save": 120}


def facts_of(fixture: str, root: Path, collected_at: str = NOW_ISO) -> dict:
    facts = collect_facts(root=str(root), uri=test_uri(fixture))
    facts["collected_at"] = collected_at
    return facts


def mixed_facts(tmp_path: Path, **overrides) -> dict:
    args = {"logs": MIXED_LOGS, "configs": MIXED_CONFIGS, "saves": MIXED_SAVES}
    args.update(overrides)
    return facts_of("guests-mixed", guest_root(tmp_path, **args))


def clean_facts(tmp_path: Path) -> dict:
    root = guest_root(tmp_path, logs={"shop-a": 1, "mail-a": 1}, configs={"shop-a": 100, "mail-a": 100})
    return facts_of("guests-clean", root)


def run(facts: dict, policy: str = "", inventory: Path | None = None) -> dict:
    inv = load_inventory(str(inventory)) if inventory else None
    return audit(facts=facts, policy=make_policy(policy, inventory=inv))
