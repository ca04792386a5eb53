"""An independent feasibility checker of a run written in the MDRP solution format.

It re-reads the instance and the three solution files and checks every condition of the data README,
without using the simulator's state: each order in at most one assignment; no assignment before an
order's placement; pickups at or before the courier's off_time and at or after the latest ready time
of the bundle; one restaurant per bundle; drop-offs in the bundle's sequence, each at least the
drop-off service after the previous; the orders file agreeing with the assignments and the instance;
courier moves continuous in space (origin = previous destination, the first from ``0``, the on-location,
not before on_time) and in time (arrival = departure + ceil(distance / meters_per_minute), the next
departure not before arrival); and the courier at the restaurant for each pickup and at the order's
location for each drop-off, with half the service time before and half after. It uses the original
travel rule (no weather): check weather-free runs.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from tools.world.mdrp import read_instance

EPS = 1e-6


def _read(path: Path, problems: list[str], min_fields: int) -> list[tuple[int, list[str]]]:
    if not path.is_file():
        problems.append(f"{path.name}: missing")
        return []
    rows = []
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines()[1:], start=2):
        f = line.split()
        if not f:
            continue
        if len(f) < min_fields:
            problems.append(f"{path.name} line {no}: expected at least {min_fields} fields")
            continue
        rows.append((no, f))
    return rows


def _num(v: str, where: str, problems: list[str]) -> float | None:
    try:
        return float(v)
    except ValueError:
        problems.append(f"{where}: {v!r} is not a number")
        return None


def check_solution(*, instance_dir: str | Path, solution_dir: str | Path) -> list[str]:
    """Every violated condition, as readable strings; an empty list means the run is feasible."""
    inst = read_instance(instance_dir)
    sol = Path(solution_dir)
    p = inst.params
    half_p, half_d = p.pickup_service / 2, p.dropoff_service / 2
    orders = {o.id: o for o in inst.orders}
    rests = inst.restaurant_map()
    couriers = {c.id: c for c in inst.couriers}
    problems: list[str] = []

    def loc(courier: str, ident: str) -> tuple[float, float] | None:
        if ident == "0":
            c = couriers[courier]
            return c.x, c.y
        if ident in rests:
            return rests[ident].x, rests[ident].y
        if ident in orders:
            return orders[ident].x, orders[ident].y
        return None

    # ---- assignments
    assigned: dict[str, tuple[str, float, int]] = {}  # order -> (courier, pickup, line)
    bundles: list[tuple[int, str, float, list[str]]] = []
    for no, f in _read(sol / "solution_info_assignments.txt", problems, 4):
        where = f"assignments line {no}"
        at, pick = _num(f[0], where, problems), _num(f[1], where, problems)
        courier, ids = f[2], f[3:]
        if at is None or pick is None:
            continue
        if courier not in couriers:
            problems.append(f"{where}: unknown courier {courier}")
            continue
        c = couriers[courier]
        if pick > c.off_time + EPS:
            problems.append(f"{where}: pickup {pick:g} after courier {courier} off_time {c.off_time:g}")
        known = [i for i in ids if i in orders]
        for i in ids:
            if i not in orders:
                problems.append(f"{where}: unknown order {i}")
            elif i in assigned:
                problems.append(f"{where}: order {i} already in the assignment of line {assigned[i][2]}")
            else:
                assigned[i] = (courier, pick, no)
        for i in known:
            if at < orders[i].placement - EPS:
                problems.append(f"{where}: assigned at {at:g} before order {i} placement {orders[i].placement:g}")
        if known:
            latest = max(orders[i].ready for i in known)
            if pick < latest - EPS:
                problems.append(f"{where}: pickup {pick:g} before the bundle's latest ready time {latest:g}")
            if len({orders[i].restaurant for i in known}) > 1:
                problems.append(f"{where}: orders from more than one restaurant")
        bundles.append((no, courier, pick, known))

    # ---- orders
    delivered: dict[str, tuple[float, float, str]] = {}  # order -> (pickup, dropoff, courier)
    rows = _read(sol / "solution_info_orders.txt", problems, 6)
    path = sol / "solution_info_orders.txt"
    if path.is_file():
        header = path.read_text(encoding="utf-8").splitlines()[:1]
        expected = "order placement_time ready_time pickup_time dropoff_time courier"
        if not header or header[0].split() != expected.split():
            problems.append(f"solution_info_orders.txt: header must be {expected!r}")
    for no, f in rows:
        where = f"orders line {no}"
        oid = f[0]
        if oid not in orders:
            problems.append(f"{where}: unknown order {oid}")
            continue
        vals = [_num(v, where, problems) for v in f[1:5]]
        if any(v is None for v in vals):
            continue
        placed, ready, pick, drop = (float(v) for v in vals)  # type: ignore[arg-type]
        o = orders[oid]
        if abs(placed - o.placement) > EPS or abs(ready - o.ready) > EPS:
            problems.append(f"{where}: placement/ready of {oid} differ from the instance")
        if oid not in assigned:
            problems.append(f"{where}: order {oid} delivered without an assignment")
        else:
            courier, apick, _ = assigned[oid]
            if courier != f[5]:
                problems.append(f"{where}: courier {f[5]} differs from the assignment's {courier}")
            if abs(apick - pick) > EPS:
                problems.append(f"{where}: pickup {pick:g} differs from the assignment's {apick:g}")
        if drop < pick - EPS:
            problems.append(f"{where}: drop-off {drop:g} before pickup {pick:g}")
        if oid in delivered:
            problems.append(f"{where}: order {oid} listed twice")
        delivered[oid] = (pick, drop, f[5])

    for no, _courier, _pick, ids in bundles:
        prev = None
        for i in ids:
            if i not in delivered:
                continue
            drop = delivered[i][1]
            if prev is not None and drop < prev + p.dropoff_service - EPS:
                problems.append(
                    f"assignments line {no}: drop-off of {i} at {drop:g} is not in sequence / less than "
                    f"{p.dropoff_service:g} min after the previous ({prev:g})"
                )
            prev = drop

    # ---- courier moves
    moves: dict[str, list[tuple[int, float, str, str]]] = defaultdict(list)
    for no, f in _read(sol / "solution_info_couriers.txt", problems, 4):
        dep = _num(f[1], f"couriers line {no}", problems)
        if dep is None:
            continue
        if f[0] not in couriers:
            problems.append(f"couriers line {no}: unknown courier {f[0]}")
            continue
        moves[f[0]].append((no, dep, f[2], f[3]))
    # (courier, place) -> list of (arrival, next departure or inf)
    visits: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for cid, ms in moves.items():
        c = couriers[cid]
        prev_dest, prev_arr = "0", c.on_time
        for k, (no, dep, origin, dest) in enumerate(ms):
            where = f"couriers line {no}"
            if origin != prev_dest:
                problems.append(f"{where}: courier {cid} leaves {origin} but is at {prev_dest}")
            if dep < prev_arr - EPS:
                problems.append(f"{where}: courier {cid} departs {dep:g} before arriving ({prev_arr:g})")
            a, b = loc(cid, origin), loc(cid, dest)
            if a is None or b is None or dest == "0":
                problems.append(f"{where}: unknown location {origin if a is None else dest}")
                prev_dest, prev_arr = dest, dep
                continue
            arr = dep + math.ceil(math.hypot(a[0] - b[0], a[1] - b[1]) / p.meters_per_minute - 1e-9)
            nxt = ms[k + 1][1] if k + 1 < len(ms) else math.inf
            visits[(cid, dest)].append((arr, nxt))
            prev_dest, prev_arr = dest, arr

    def present(cid: str, place: str, t: float, half: float) -> bool:
        return any(arr + half <= t + EPS and t + half <= nxt + EPS for arr, nxt in visits.get((cid, place), []))

    for no, courier, pick, ids in bundles:
        if not ids:
            continue
        rest = orders[ids[0]].restaurant
        if not present(courier, rest, pick, half_p):
            problems.append(f"assignments line {no}: courier {courier} is not at {rest} at pickup {pick:g}")
    for oid, (_pick, drop, courier) in delivered.items():
        if courier in couriers and not present(courier, oid, drop, half_d):
            problems.append(f"orders: courier {courier} is not at {oid}'s location at drop-off {drop:g}")
    return problems
