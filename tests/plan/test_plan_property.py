"""Property: on random small fleets the solver's plan is optimal. Brute force over every placement
(each guest on its host or one of its migration peers, pinned guests fixed) finds the fewest
violations, then moves, then memory moved, counted by the verifier; the plan must pass --check and
reach the same three numbers."""

from __future__ import annotations

import itertools
import random

import pytest
from fleetgen import NO_RESERVE, G, H, write_fleet
from planrun import plan_checked

from vmaudit.plan.fleet import load_fleet
from vmaudit.plan.verify import evaluate
from vmaudit.policy import load_policy


def random_fleet(rng: random.Random) -> tuple[list[H], str]:
    n = rng.randint(2, 3)
    names = [f"h{i}" for i in range(n)]
    hosts = []
    for name in names:
        hosts.append(H(name, ram=rng.choice([2048, 3072, 4096]), cpus=rng.choice([2, 4]),
                       zone=rng.choice([None, "x", "y"]), group="g"))
    if n == 3 and rng.random() < 0.3:  # a chain of peers: h0-h1, h1-h2, not h0-h2
        for h in hosts:
            h.group = None
        hosts[0].peers = ("h1",)
        hosts[2].peers = ("h1",)
    for i in range(rng.randint(1, 5)):
        hosts[rng.randrange(n)].guests.append(G(
            f"g{i}", mem=rng.choice([512, 1024, 2048]), vcpus=rng.choice([1, 2]),
            zone=rng.choice([None, "x", "y", "y"]), redundancy=rng.choice([None, None, "r"]),
            running=rng.random() < 0.8, autostart=rng.random() < 0.3))
    policy = NO_RESERVE + "cpu_overcommit = 1.0\nmax_running_guests = 3\n"
    plan_keys = []
    if rng.random() < 0.2:
        plan_keys.append('pinned = ["g1"]')
    if rng.random() < 0.2:
        plan_keys.append(f'drain = ["{rng.choice(names)}"]')
    if plan_keys:
        policy += "[plan]\n" + "\n".join(plan_keys) + "\n"
    return hosts, policy


def brute_force(fleet) -> tuple[int, int, int]:
    guests = fleet.guests
    choices = [[g.host] if g.pinned else [g.host] + list(fleet.hosts[g.host].peers) for g in guests]
    best = None
    for combo in itertools.product(*choices):
        where = {g.key: h for g, h in zip(guests, combo)}
        moved = [g for g, h in zip(guests, combo) if h != g.host]
        score = (len(evaluate(fleet, where)), len(moved), sum(g.memory_mib for g in moved))
        best = score if best is None or score < best else best
    return best


@pytest.mark.parametrize("seed", range(100))
def test_solver_matches_brute_force(tmp_path, seed):
    rng = random.Random(seed)
    hosts, policy = random_fleet(rng)
    f = write_fleet(tmp_path / "f", hosts, collect=False, policy_text=policy)
    fleet = load_fleet(str(f), load_policy(str(f / "policy.toml")))
    want = brute_force(fleet)
    rc, doc = plan_checked(f)
    got = (len(doc["violations_after"]), doc["objective"]["moves"], doc["objective"]["memory_mib"])
    assert got == want, (seed, doc["moves"], doc["violations_after"])
    assert doc["proved_optimal"]
    assert rc == (1 if want[0] else 0)
    if not want[0]:
        assert doc["status"] == "optimal" and doc["lower_bound"]["moves"] == want[1]


def _order_problems(fleet, doc: dict, moves: list[dict]) -> int:
    from vmaudit.plan.verify import check_plan

    trial = dict(doc, moves=[{k: v for k, v in m.items() if k != "spare_room"} for m in moves])
    return sum(1 for p in check_plan(fleet, trial)[0] if p.constraint == "order")


@pytest.mark.parametrize("seed", range(100, 160))
def test_spare_room_only_when_no_order_fits(tmp_path, seed):
    """A step is marked as needing spare room only when no order of the plan's moves avoids it."""
    rng = random.Random(seed)
    hosts, policy = random_fleet(rng)
    for h in hosts:   # full hosts: tight memory makes orders matter
        h.ram = rng.choice([1024, 2048])
    f = write_fleet(tmp_path / "f", hosts, collect=False, policy_text=policy)
    fleet = load_fleet(str(f), load_policy(str(f / "policy.toml")))
    _, doc = plan_checked(f)
    marked = [m for m in doc["moves"] if m.get("spare_room")]
    if not marked or len(doc["moves"]) > 6:
        return
    best = min(_order_problems(fleet, doc, list(p)) for p in itertools.permutations(doc["moves"]))
    assert best > 0, (seed, doc["moves"])
