"""The order of the moves: every intermediate placement within capacity (constraint 3).

A move may be made when its destination, with the guest, stays within its capacity (or within what it
holds at the end, for a host a soft plan leaves over capacity). Moves out of a host only free room,
so moves are made as soon as they fit, those freeing room on a host that others wait for first. When
none fits (a cycle of full hosts, e.g. two full hosts swapping guests), the move that overflows its
destination least is made anyway and marked `spare_room` with what it needs beyond the capacity:
the operator has to make that room (a temporary host, a guest shut down) for that step.
"""

from __future__ import annotations

import heapq

from .fleet import PlanFleet, PlanGuest

RESOURCES = ("memory_mib", "vcpus", "guests")


def _load(g: PlanGuest) -> tuple:
    return (g.memory_mib, g.vcpus, 1) if g.counted else (0, 0, 0)


def order_moves(fleet: PlanFleet, placement: dict) -> list[dict]:
    by_key = {g.key: g for g in fleet.guests}
    moves = sorted(((by_key[k], dst) for k, dst in placement.items() if dst != k[0]),
                   key=lambda m: (m[0].host, m[0].name, m[0].uuid))
    use: dict[str, list[int]] = {}
    final: dict[str, list[int]] = {}
    for g in fleet.guests:
        for table, host in ((use, g.host), (final, placement.get(g.key, g.host))):
            row = table.setdefault(host, [0, 0, 0])
            for i, v in enumerate(_load(g)):
                row[i] += v

    def limit(h: str) -> list[int]:
        ph = fleet.hosts[h]
        f = final.get(h, [0, 0, 0])
        return [max(c, v) for c, v in zip((ph.memory_mib, ph.vcpus, ph.max_guests), f)]

    limits = {h: limit(h) for h in fleet.hosts if fleet.hosts[h].known}

    def excess(i: int) -> list[int]:
        g, dst = moves[i]
        row = use.setdefault(dst, [0, 0, 0])
        return [max(0, row[k] + v - limits[dst][k]) for k, v in enumerate(_load(g))]

    waiting: dict[str, set] = {}          # destination -> indexes of moves not yet made
    for i, (_, dst) in enumerate(moves):
        waiting.setdefault(dst, set()).add(i)
    done = [False] * len(moves)
    queued = [False] * len(moves)
    ready: list[tuple] = []

    def push(i: int) -> None:
        g, _ = moves[i]
        frees = 0 if waiting.get(g.host) else 1   # its departure lets a waiting move in
        heapq.heappush(ready, (0 if not g.counted else 1, frees, i))
        queued[i] = True

    for i in range(len(moves)):
        if not any(excess(i)):
            push(i)
    out: list[dict] = []
    remaining = len(moves)
    while remaining:
        spare = None
        i = None
        while ready:
            _, _, j = heapq.heappop(ready)
            queued[j] = False
            if done[j]:
                continue
            if any(excess(j)):
                continue  # another arrival took the room; re-queued when room frees again
            i = j
            break
        if i is None:
            # a cycle: make the move that needs the least extra room
            candidates = [j for j in range(len(moves)) if not done[j]]
            i = min(candidates, key=lambda j: (sum(e > 0 for e in excess(j)), excess(j), j))
            spare = excess(i)
        g, dst = moves[i]
        src = g.host
        for k, v in enumerate(_load(g)):
            use.setdefault(src, [0, 0, 0])[k] -= v
            use.setdefault(dst, [0, 0, 0])[k] += v
        done[i] = True
        remaining -= 1
        waiting[dst].discard(i)
        entry = {"step": len(out) + 1, "guest": g.name, "uuid": g.uuid, "from": src, "to": dst,
                 "memory_mib": g.memory_mib, "vcpus": g.vcpus, "live": g.live}
        if spare is not None:
            entry["spare_room"] = {"host": dst} | {r: e for r, e in zip(RESOURCES, spare) if e}
        out.append(entry)
        if g.counted:
            for j in list(waiting.get(src, ())):
                if not done[j] and not queued[j] and not any(excess(j)):
                    push(j)
    return out


__all__ = ["order_moves"]
