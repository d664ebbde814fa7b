"""`vmaudit plan` on fixture fleets with known optima, each collected from libvirt's test driver and
written as `vmaudit collect` writes it; every plan is verified with `vmaudit plan --check`."""

from __future__ import annotations

import json
import sys

import pytest
from fleetgen import NO_RESERVE, G, H, write_fleet
from planrun import check, moves, plan, plan_checked


def test_zone_mix_declared_hosts(tmp_path):
    f = write_fleet(tmp_path / "f", [
        H("a", zone="dmz", group="g", guests=[G("d1", zone="dmz"), G("d2", zone="dmz"), G("i1", zone="internal")]),
        H("b", zone="internal", group="g", guests=[G("i2", zone="internal"), G("d3", zone="dmz", mem=2048)]),
    ])
    rc, doc = plan_checked(f)
    assert rc == 0 and doc["status"] == "optimal" and doc["proved_optimal"]
    assert sorted(moves(doc)) == [("d3", "b", "a"), ("i1", "a", "b")]
    assert doc["objective"] == {"moves": 2, "memory_mib": 3072} and doc["lower_bound"] == {"moves": 2}
    assert {v["constraint"] for v in doc["violations_before"]} == {"zone"} and not doc["violations_after"]
    host_a = next(h for h in doc["hosts"] if h["name"] == "a")
    assert host_a["before"]["zones"] == ["dmz", "internal"] and host_a["after"]["zones"] == ["dmz"]


def test_zone_mix_undeclared_hosts_moves_least_memory(tmp_path):
    # c serves zones x (1 GiB) and y (4 GiB); d is empty: one move either way, the smaller guest goes
    f = write_fleet(tmp_path / "f", [
        H("c", group="g", guests=[G("x1", zone="x", mem=1024), G("y1", zone="y", mem=4096)]),
        H("d", group="g"),
    ])
    rc, doc = plan_checked(f)
    assert rc == 0 and moves(doc) == [("x1", "c", "d")] and doc["objective"]["memory_mib"] == 1024


def test_redundancy_group_on_one_host(tmp_path):
    f = write_fleet(tmp_path / "f", [
        H("a", zone="int", group="g", guests=[G(f"web{i}", zone="int", redundancy="shop") for i in range(3)]),
        H("b", zone="int", group="g"), H("c", zone="int", group="g"),
    ])
    rc, doc = plan_checked(f)
    assert rc == 0 and doc["status"] == "optimal"
    dests = sorted(m["to"] for m in doc["moves"])
    assert dests == ["b", "c"] and {m["from"] for m in doc["moves"]} == {"a"}
    assert [v["constraint"] for v in doc["violations_before"]] == ["redundancy", "redundancy"]


def test_full_hosts_need_an_ordered_sequence(tmp_path):
    # a's internal guest must go to b, which is full until b's dmz guest has gone to c
    f = write_fleet(tmp_path / "f", [
        H("a", zone="int", group="g", ram=4096, guests=[G("i1", zone="int", mem=2048), G("x", zone="int", mem=2048)]),
        H("b", zone="int", group="g", ram=4096, guests=[G("i2", zone="int", mem=2048), G("d1", zone="dmz", mem=2048)]),
        H("c", zone="dmz", group="g", ram=4096),
        H("e", zone="dmz", group="g", ram=4096, guests=[G("i3", zone="int", mem=2048)]),
    ])
    rc, doc = plan_checked(f)
    assert rc == 0
    order = moves(doc)
    assert set(order) >= {("d1", "b", "c"), ("i3", "e", "b")} and len(order) == 2
    assert order.index(("d1", "b", "c")) < order.index(("i3", "e", "b"))
    assert not any(m.get("spare_room") for m in doc["moves"])


def test_swap_of_full_hosts_needs_spare_room(tmp_path):
    f = write_fleet(tmp_path / "f", [
        H("a", zone="dmz", group="g", ram=4096, guests=[G("d1", zone="dmz", mem=2048), G("i1", zone="int", mem=2048)]),
        H("b", zone="int", group="g", ram=4096, guests=[G("i2", zone="int", mem=2048), G("d2", zone="dmz", mem=2048)]),
    ])
    rc, doc = plan_checked(f)
    assert rc == 0 and len(doc["moves"]) == 2
    spare = [m for m in doc["moves"] if m.get("spare_room")]
    assert len(spare) == 1 and spare[0]["step"] == 1
    assert spare[0]["spare_room"]["memory_mib"] == 2048 and spare[0]["spare_room"]["host"] == spare[0]["to"]
    # the same plan without the note is an unsafe order, and the verifier says so
    bad = json.loads(json.dumps(doc))
    for m in bad["moves"]:
        m.pop("spare_room", None)
    crc, result = check(f, bad)
    assert crc == 1 and [p["constraint"] for p in result["problems"]] == ["order"]


def test_infeasible_group_gives_fewest_violations(tmp_path):
    # three zones, two hosts without a declared zone: one zone too many is the least that can be left
    f = write_fleet(tmp_path / "f", [
        H("a", group="g", guests=[G("x1", zone="x"), G("y1", zone="y"), G("z1", zone="z")]),
        H("b", group="g", guests=[G("x2", zone="x")]),
    ])
    rc, doc = plan_checked(f)
    assert rc == 1 and doc["status"] == "infeasible"
    assert [v["constraint"] for v in doc["violations_before"]] == ["zone", "zone"]
    assert [v["constraint"] for v in doc["violations_after"]] == ["zone"]
    assert doc["infeasible"] and doc["infeasible"][0]["constraint"] == "zone"
    assert "3 zones" in doc["infeasible"][0]["message"]
    assert len(doc["moves"]) == 1


def test_infeasible_memory_and_redundancy_are_named(tmp_path):
    f = write_fleet(tmp_path / "f", [
        H("a", zone="int", group="g", ram=2048, guests=[G("r1", zone="int", redundancy="db"),
                                                        G("r2", zone="int", redundancy="db"),
                                                        G("r3", zone="int", redundancy="db", mem=2048)]),
        H("b", zone="int", group="g", ram=1024),
    ])
    rc, doc = plan_checked(f)
    assert rc == 1
    kinds = {v["constraint"] for v in doc["infeasible"]}
    assert kinds == {"redundancy", "capacity"}
    assert any("need 4096 MiB" in v["message"] and "offer 3072 MiB" in v["message"] for v in doc["infeasible"])


def test_unreached_host_gives_partial_plan(tmp_path):
    f = write_fleet(tmp_path / "f", [
        H("a", zone="dmz", group="g", guests=[G("d1", zone="dmz"), G("i1", zone="int")]),
        H("b", zone="int", group="g"),
        H("c", zone="int", group="g", unreached="connection refused"),
    ])
    rc, doc = plan_checked(f)
    assert rc == 3 and doc["status"] == "partial"
    assert moves(doc) == [("i1", "a", "b")]
    assert doc["unaudited"] == [{"host": "c", "reason": "not audited: connection refused"}]
    assert next(h for h in doc["hosts"] if h["name"] == "c")["audited"] is False


def test_pinned_guest_stays_and_another_moves(tmp_path):
    f = write_fleet(tmp_path / "f", [
        H("c", group="g", guests=[G("x1", zone="x", mem=1024), G("y1", zone="y", mem=4096)]),
        H("d", group="g"),
    ], policy_text=NO_RESERVE + '[plan]\npinned = ["x*"]\n')
    rc, doc = plan_checked(f)
    assert rc == 0 and moves(doc) == [("y1", "c", "d")]


def test_pinned_misplaced_guest_is_infeasible(tmp_path):
    f = write_fleet(tmp_path / "f", [
        H("a", zone="dmz", group="g", guests=[G("i1", zone="int")]), H("b", zone="int", group="g"),
    ], policy_text=NO_RESERVE + '[plan]\npinned = ["i1"]\n')
    rc, doc = plan_checked(f)
    assert rc == 1 and not doc["moves"] and [v["constraint"] for v in doc["violations_after"]] == ["zone"]


def test_drained_host_is_emptied(tmp_path):
    f = write_fleet(tmp_path / "f", [
        H("a", zone="int", group="g", guests=[G("i1", zone="int"), G("i2", zone="int", running=False)]),
        H("b", zone="int", group="g", ram=1024, guests=[]), H("c", zone="int", group="g"),
    ], policy_text=NO_RESERVE + '[plan]\ndrain = ["a"]\n')
    rc, doc = plan_checked(f)
    assert rc == 0 and {m["from"] for m in doc["moves"]} == {"a"} and len(doc["moves"]) == 2
    assert all(m["to"] in ("b", "c") for m in doc["moves"])
    assert {m["guest"]: m["live"] for m in doc["moves"]} == {"i1": True, "i2": False}
    assert [v["constraint"] for v in doc["violations_before"]] == ["drain", "drain"]


def test_moves_stay_within_migration_peers(tmp_path):
    # a and b are peers, c is not: a's internal guest cannot reach c, the only host of its zone
    f = write_fleet(tmp_path / "f", [
        H("a", zone="dmz", group="g1", guests=[G("i1", zone="int")]), H("b", zone="dmz", group="g1"),
        H("c", zone="int", group="g2"),
    ])
    rc, doc = plan_checked(f)
    assert rc == 1 and not doc["moves"] and len(doc["groups"]) == 2
    # a plan that moves it anyway breaks constraint 4
    forged = dict(doc, moves=[{"step": 1, "guest": "i1", "uuid": "", "from": "a", "to": "c", "memory_mib": 1024,
                              "live": True}], objective={"moves": 1, "memory_mib": 1024})
    forged["moves"][0]["uuid"] = next(g["uuid"] for g in json.loads((f / "facts" / "a.json").read_text())
                                      ["sources"]["libvirt"]["domains"])
    crc, result = check(f, forged)
    assert crc == 1 and "peers" in {p["constraint"] for p in result["problems"]}


def test_capacity_uses_the_memory_reserve_of_m2(tmp_path):
    # default policy: 8 GiB host keeps max(10 %, 2 GiB) = 2 GiB: 6 GiB for guests, so 2 x 4 GiB cannot share
    f = write_fleet(tmp_path / "f", [
        H("a", zone="int", group="g", guests=[G("i1", zone="int", mem=4096), G("i2", zone="int", mem=4096)]),
        H("b", zone="int", group="g"),
    ], policy_text="")
    rc, doc = plan_checked(f)
    assert rc == 0 and len(doc["moves"]) == 1
    cap = next(h for h in doc["hosts"] if h["name"] == "a")["capacity"]
    assert cap["memory_mib"] == 6144 and cap["ram_mib"] == 8192


def test_cpu_overcommit_and_guest_count_limits(tmp_path):
    policy = NO_RESERVE + "cpu_overcommit = 1.0\nmax_running_guests = 2\n"
    f = write_fleet(tmp_path / "f", [
        H("a", zone="int", group="g", cpus=2, guests=[G("v4", zone="int", vcpus=3)]),
        H("b", zone="int", group="g", cpus=4, guests=[G(f"s{i}", zone="int") for i in range(3)]),
        H("c", zone="int", group="g", cpus=4),
    ], policy_text=policy)
    rc, doc = plan_checked(f)
    assert rc == 0
    assert ("v4", "a", "c") in moves(doc) and len(doc["moves"]) == 2
    assert {v["constraint"] for v in doc["violations_before"]} == {"capacity"}


def test_shut_off_guests_take_no_capacity_but_autostart_ones_do(tmp_path):
    f = write_fleet(tmp_path / "f", [
        H("a", zone="int", group="g", ram=2048, guests=[G("run", zone="int", mem=2048), G("off", zone="int", mem=2048, running=False),
                                                        G("boot", zone="int", mem=2048, running=False, autostart=True)]),
        H("b", zone="int", group="g", ram=2048),
    ])
    rc, doc = plan_checked(f)
    assert rc == 0 and len(doc["moves"]) == 1 and doc["moves"][0]["guest"] in ("run", "boot")


def test_empty_plan_for_a_clean_fleet(tmp_path):
    f = write_fleet(tmp_path / "f", [H("a", zone="int", group="g", guests=[G("i1", zone="int")]),
                                    H("b", zone="int", group="g")])
    rc, doc = plan_checked(f)
    assert rc == 0 and doc["moves"] == [] and doc["status"] == "optimal" and doc["violations_before"] == []


def test_text_and_html_outputs(tmp_path):
    f = write_fleet(tmp_path / "f", [
        H("a", zone="dmz", group="g", guests=[G("d1", zone="dmz"), G("evil\u009b31m<b>", zone="int")]),
        H("b", zone="int", group="g"),
    ], collect=False)
    rc, text = plan(f, fmt="text")
    assert rc == 0 and "\u009b" not in text and "evil?31m<b>: a -> b" in text and "1 move(s)" in text
    rc, page = plan(f, fmt="html")
    assert rc == 0 and "evil\u009b31m<b>" not in page
    assert "&lt;b&gt;" in page and "Content-Security-Policy" in page and "<script" not in page


def test_bad_inputs_exit_2(tmp_path, capsys):
    from vmaudit.cli import main

    assert main(["plan", str(tmp_path / "missing")]) == 2
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "fleet.json").write_text('{"schema": "something-else"}')
    assert main(["plan", str(tmp_path / "d")]) == 2
    f = write_fleet(tmp_path / "f", [H("a", zone="int", group="g")], policy_text=NO_RESERVE + '[plan]\ndrain = ["zz"]\n')
    assert main(["plan", str(f), "--policy", str(f / "policy.toml")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "not a vmaudit fleet report" in err and "matches no host" in err


def test_unreadable_facts_make_the_host_unaudited(tmp_path):
    f = write_fleet(tmp_path / "f", [H("a", zone="int", group="g", guests=[G("i1", zone="int")]),
                                    H("b", zone="int", group="g")], collect=False)
    (f / "facts" / "b.json").write_text('{"schema": "vmaudit-facts/1"}')
    rc, doc = plan_checked(f)
    assert rc == 3 and doc["unaudited"][0]["host"] == "b" and "snapshot" in doc["unaudited"][0]["reason"]


def test_without_ortools_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    f = write_fleet(tmp_path / "f", [H("a", zone="int", group="g")], collect=False)
    for mod in [m for m in sys.modules if m == "ortools" or m.startswith("ortools.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "ortools", None)
    rc, _ = plan(f)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["vmaudit plan: vmaudit plan needs OR-Tools: pip install 'vmaudit[plan]' (or: pip install ortools)"]
    # the verifier needs no solver
    from planrun import check

    crc, result = check(f, {"schema": "vmaudit-plan/1", "moves": [], "objective": {"moves": 0, "memory_mib": 0}})
    assert crc == 0 and result["valid"]


@pytest.mark.parametrize("bad", [{"schema": "nope"}, {"schema": "vmaudit-plan/1", "moves": "x"},
                                 {"schema": "vmaudit-plan/1", "moves": [{"from": "a", "to": "b", "guest": "ghost"}]}])
def test_check_rejects_broken_plans(tmp_path, bad):
    f = write_fleet(tmp_path / "f", [H("a", zone="int", group="g"), H("b", zone="int", group="g")], collect=False)
    crc, result = check(f, bad)
    assert crc == 1 and result["problems"]
