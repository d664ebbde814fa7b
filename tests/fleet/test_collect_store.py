"""Several `vmaudit collect` at once, one shard each, into one real PostgreSQL store (the SSH lab of
conftest.py, the cluster of tests/store/pgcluster.py); then `vmaudit fleet --store` over all of them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sshlab import ADDR, FLEET, PORT
from test_collect_ssh import VMAUDIT
from vmtest import REQUIRE_REAL

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "store"))
from pgcluster import Cluster, unavailable  # noqa: E402

from vmaudit.fleet.central import shard_of  # noqa: E402


@pytest.fixture
def pg():
    why = unavailable()
    if why:
        (pytest.fail if REQUIRE_REAL else pytest.skip)(f"PostgreSQL unavailable: {why}")
    cluster = Cluster("collect")
    try:
        cluster.start()
        yield cluster, cluster.url(cluster.new_database())
    finally:
        cluster.stop()


def test_sharded_collectors_write_one_store_concurrently(lab, pg, tmp_path):
    cluster, url = pg
    names = [f"hv{i:02d}" for i in range(12)]
    lines = ["[all:vars]", f"ansible_port={PORT}", "ansible_user=root", "", "[site]"]
    for i, name in enumerate(names):
        fixture = ("hv-a", "hv-b", "hv-c", "hv-d")[i % 4]
        lines.append(f"{name} ansible_host={ADDR['inst']} vmaudit_connect=test://{FLEET}/{fixture}.xml "
                     f"vmaudit_root={FLEET}/roots/{fixture} vmaudit_zone=z{i % 2}")
    inv = tmp_path / "inv.ini"
    inv.write_text("\n".join(lines) + "\n")
    procs = []
    for k in (1, 2, 3):
        cmd = [VMAUDIT, "collect", "-i", str(inv), "--shard", f"{k}/3", "--store", url, "--no-html",
               "--output", str(tmp_path / f"site{k}"), "--identity", str(lab.client_key), "--no-agent",
               "--known-hosts", str(lab.known_hosts), "--ssh-config", str(lab.ssh_config), "--no-progress",
               "--connect-timeout", "5", "--command-timeout", "60"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env=cluster.env()))
    for k, p in enumerate(procs, 1):
        _out, err = p.communicate(timeout=300)
        assert p.returncode in (1, 3), err
        report = json.loads((tmp_path / f"site{k}" / "fleet.json").read_text())
        mine = sorted(n for n in names if shard_of(n, 3) == k)
        assert sorted(h["name"] for h in report["hosts"]) == mine
        assert all(h["reached"] for h in report["hosts"]), [h["reason"] for h in report["hosts"]]
    db = url.split("/")[3].split("?")[0]
    assert cluster.psql_admin("SELECT count(*), sum(complete) FROM runs", db) == "3|3"
    assert cluster.psql_admin("SELECT count(*), count(DISTINCT name) FROM hosts", db) == "12|12"
    assert cluster.psql_admin("SELECT count(*), count(DISTINCT name) FROM host_facts", db) == "12|12"
    # the whole fleet from the store, merged across the three collectors, with their zones
    done = subprocess.run([VMAUDIT, "fleet", "--store", url, "--no-html", "--output", str(tmp_path / "all")],
                          capture_output=True, text=True, env=cluster.env(), timeout=300)
    report = json.loads((tmp_path / "all" / "fleet.json").read_text())
    assert done.returncode == 1, done.stderr
    assert report["summary"]["hosts"] == report["summary"]["reached"] == 12
    assert {h["name"]: h["zone"] for h in report["hosts"]} == {n: f"z{i % 2}" for i, n in enumerate(names)}
